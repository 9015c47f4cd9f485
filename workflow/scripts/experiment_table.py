def main(smk):
    from clcore.pipeline import job
    from clcore.report.tables import write_experiment_table

    with job(smk):
        write_experiment_table(smk.input.runs, smk.params.rows, smk.params.title, smk.output.md, smk.output.tex,
                               smk.output.csv, reference_csv=smk.input.reference,
                               settings=smk.params.settings, spread=smk.params.spread, pairs=smk.params.pairs,
                               paper=smk.params.paper)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
