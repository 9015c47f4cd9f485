def main(smk):
    from pathlib import Path

    from clcore.pipeline import job
    from clcore.report.wscl import write_wscl_report

    with job(smk):
        write_wscl_report([Path(p).parent for p in smk.input.metrics], smk.params.title, smk.output.md,
                          smk.output.csv, smk.output.png, smk.output.pdf, reference_csv=smk.input.reference)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
