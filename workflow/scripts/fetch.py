def main(smk):
    from clcore.data.download import fetch_all
    from clcore.io import write_json
    from clcore.pipeline import job

    with job(smk):
        write_json(smk.output[0], fetch_all(smk.wildcards.raw, smk.params.raw_dir, smk.params.sources))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
