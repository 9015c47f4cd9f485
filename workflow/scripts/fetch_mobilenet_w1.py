def main(smk):
    from pathlib import Path

    from clcore.methods.ar1 import fetch_mobilenet_w1
    from clcore.pipeline import job

    with job(smk):
        print(fetch_mobilenet_w1(Path(smk.output[0]).parent, smk.params.url))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
