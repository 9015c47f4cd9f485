def main(smk):
    from pathlib import Path

    from clcore.collect import collect
    from clcore.pipeline import job

    with job(smk):
        collect([Path(p).parent for p in smk.input.runs], smk.output.runs, smk.output.accuracy, smk.output.summary,
                smk.output.task_metrics)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
