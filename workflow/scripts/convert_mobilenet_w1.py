def main(smk):
    from pathlib import Path

    from clcore.methods.ar1 import convert_mobilenet_w1
    from clcore.pipeline import job

    with job(smk):
        print(convert_mobilenet_w1(smk.input[0], Path(smk.output.backbone).parent))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
