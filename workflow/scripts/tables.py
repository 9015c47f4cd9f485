def main(smk):
    import pandas as pd

    from clcore.io import redirect_output
    from clcore.report.tables import write_summary

    with redirect_output(smk.log[0]):
        write_summary(smk.input.runs, smk.output.md, smk.output.csv, expected=pd.DataFrame(smk.params.expected))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
