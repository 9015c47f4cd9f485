def main(smk):
    from clcore.io import redirect_output
    from clcore.robust import robustness_table

    parquets = list(smk.input.parquets) if hasattr(smk.input, "parquets") else list(smk.input)
    with redirect_output(smk.log[0]):
        robustness_table(parquets, smk.output.md, smk.output.csv, smk.params.title,
                         expected=getattr(smk.params, "rows", None), eps=getattr(smk.params, "eps", None))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
