def main(smk):
    from pathlib import Path

    from clcore.pipeline import job
    from clcore.report.akr import write_akr_report

    with job(smk):
        write_akr_report([Path(p).parent for p in smk.input.metrics], smk.params.title, smk.output.md,
                         smk.output.csv, pairs=smk.params.pairs, reference_csv=smk.input.reference,
                         reference_names=smk.params.reference_names)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
