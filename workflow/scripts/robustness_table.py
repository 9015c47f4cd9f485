def main(smk):
    from clcore.pipeline import job
    from clcore.report.robustness import robustness_table

    with job(smk):
        robustness_table(list(smk.input.parquets), smk.output.md, smk.output.csv, smk.params.title,
                         expected=smk.params.rows, eps=smk.params.eps)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
