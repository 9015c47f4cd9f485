def main(smk):
    from clcore.io import redirect_output
    from clcore.report.figures import write_experiment_figure

    with redirect_output(smk.log[0]):
        missing = write_experiment_figure(smk.wildcards.kind, smk.input.runs, smk.input.accuracy, smk.params.rows,
                                          smk.params.title, smk.output.png, smk.output.pdf, smk.input.task_metrics,
                                          dict(smk.params.options))
        if missing:
            print(f"drawn as missing (no runs): {', '.join(missing)}")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
