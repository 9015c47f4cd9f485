def main(smk):
    from clcore.pipeline import job
    from clcore.report.figures import write_figure

    with job(smk):
        write_figure(smk.wildcards.kind, smk.input.runs, smk.input.accuracy, smk.wildcards.benchmark,
                     smk.output.png, smk.output.pdf)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
