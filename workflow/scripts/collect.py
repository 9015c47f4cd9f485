def main(smk):
    from pathlib import Path

    from clcore.collect import collect
    from clcore.io import redirect_output

    with redirect_output(smk.log[0]):
        collect([Path(p).parent for p in smk.input.runs], smk.output.runs, smk.output.accuracy, smk.output.summary,
                smk.output.task_metrics)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
