def main(smk):
    from clcore.io import redirect_output
    from clcore.report.figures import write_figure

    with redirect_output(smk.log[0]):
        write_figure(smk.wildcards.kind, smk.input.runs, smk.input.accuracy, smk.wildcards.benchmark,
                     smk.output.png, smk.output.pdf)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
