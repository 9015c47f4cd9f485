def main(smk):
    from clcore.io import redirect_output
    from clcore.report.robustness import robustness_table

    with redirect_output(smk.log[0]):
        robustness_table(list(smk.input.parquets), smk.output.md, smk.output.csv, smk.params.title,
                         expected=smk.params.rows, eps=smk.params.eps)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
