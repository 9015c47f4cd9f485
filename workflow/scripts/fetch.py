def main(smk):
    from clcore.data.download import fetch_all
    from clcore.io import redirect_output, write_json

    with redirect_output(smk.log[0]):
        write_json(smk.output[0], fetch_all(smk.wildcards.raw, smk.params.raw_dir, smk.params.sources))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
