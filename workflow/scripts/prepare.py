def main(smk):
    from clcore.data import prepare
    from clcore.pipeline import job

    with job(smk):
        prepare(smk.wildcards.prepared, smk.params.prepared_dir, expected_hashes=smk.params.expected_hashes,
                raw_dir=smk.params.raw_dir, sources=smk.params.sources, needed_by=smk.params.needed_by,
                threads=smk.threads)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
