def main(smk):
    import pandas as pd

    from clcore.pipeline import job
    from clcore.report.tables import write_summary

    with job(smk):
        write_summary(smk.input.runs, smk.output.md, smk.output.csv, expected=pd.DataFrame(smk.params.expected))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
