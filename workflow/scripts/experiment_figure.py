def main(smk):
    from clcore.pipeline import job
    from clcore.report.figures import write_experiment_figure

    with job(smk):
        missing = write_experiment_figure(smk.wildcards.kind, smk.input.runs, smk.input.accuracy, smk.params.rows,
                                          smk.params.title, smk.output.png, smk.output.pdf, smk.input.task_metrics,
                                          dict(smk.params.options))
        if missing:
            print(f"drawn as missing (no runs): {', '.join(missing)}")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
