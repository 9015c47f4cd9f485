def main(smk):
    from pathlib import Path

    from clcore.pipeline import job
    from clcore.report.ar1 import write_ar1_report

    with job(smk):
        write_ar1_report([Path(p).parent for p in smk.input.metrics], smk.params.title, smk.output.md, smk.output.csv,
                         smk.output.png, smk.output.pdf, pairs=smk.params.pairs, reference_csv=smk.input.reference,
                         paper=smk.params.paper)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
