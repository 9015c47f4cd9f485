# All runs -> consolidated Parquet tables -> summary tables and figures.


rule collect:
    input:
        metrics=PIPELINE.run_files("metrics.parquet"),
        runs=PIPELINE.run_files("run.json"),
    output:
        runs=TABLES / "runs.parquet",
        accuracy=TABLES / "accuracy.parquet",
        task_metrics=TABLES / "task_metrics.parquet",
        summary=report(TABLES / "summary.tsv", category="Tables", caption="../workflow/report/summary.rst"),
    log:
        "logs/collect.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/collect.py"


rule tables:
    input:
        runs=TABLES / "runs.parquet",
    output:
        md=TABLES / "summary.md",
        csv=report(TABLES / "summary.csv", category="Tables", caption="../workflow/report/summary.rst"),
    params:
        expected=PIPELINE.expected_runs(),
    log:
        "logs/tables.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/tables.py"


rule figures:
    input:
        runs=TABLES / "runs.parquet",
        accuracy=TABLES / "accuracy.parquet",
    output:
        png=report(
            FIGURE_DIR / "{benchmark}_{kind}.png",
            caption="../workflow/report/figure.rst",
            category="Figures",
            subcategory="{benchmark}",
            labels={"benchmark": "{benchmark}", "figure": "{kind}"},
        ),
        pdf=FIGURE_DIR / "{benchmark}_{kind}.pdf",
    log:
        "logs/figures/{benchmark}_{kind}.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/figures.py"


# One table per experiment block, laid out like the paper's, with the published numbers beside ours.
rule experiment_table:
    input:
        runs=TABLES / "runs.parquet",
        reference=REFERENCE_CSVS,  # published numbers
    output:
        md=TABLES / "experiments" / "{experiment}.md",
        tex=TABLES / "experiments" / "{experiment}.tex",
        csv=report(TABLES / "experiments" / "{experiment}.csv", category="Tables",
                   caption="../workflow/report/summary.rst"),
    params:
        rows=lambda wc: PIPELINE.block_rows(wc.experiment),
        title=lambda wc: PIPELINE.block_title(wc.experiment),
        settings=lambda wc: PIPELINE.block(wc.experiment)["settings"],
        spread=lambda wc: PIPELINE.block(wc.experiment)["spread"],
        pairs=lambda wc: PIPELINE.block(wc.experiment)["pairs"],
        paper=lambda wc: PIPELINE.block(wc.experiment).get("paper"),
    log:
        "logs/experiment_table/{experiment}.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/experiment_table.py"


# The papers' result plots per experiment block (accuracy after each task, forgetting), one panel per benchmark.
rule experiment_figure:
    input:
        runs=TABLES / "runs.parquet",
        accuracy=TABLES / "accuracy.parquet",
        task_metrics=TABLES / "task_metrics.parquet",
    output:
        png=report(
            FIGURE_DIR / "experiments" / "{experiment}_{kind}.png",
            caption="../workflow/report/experiment_figure.rst",
            category="Figures",
            subcategory="experiments",
            labels={"experiment": "{experiment}", "figure": "{kind}"},
        ),
        pdf=FIGURE_DIR / "experiments" / "{experiment}_{kind}.pdf",
    # Both wildcards may contain "_": without the closed list of kinds, "x_accuracy_curve" would parse
    # as experiment "x_accuracy", kind "curve".
    wildcard_constraints:
        kind="|".join(EXPERIMENT_FIGURE_KINDS),
    params:
        rows=lambda wc: PIPELINE.block_rows(wc.experiment),
        title=lambda wc: PIPELINE.block_title(wc.experiment),
        options=lambda wc: PIPELINE.figure_options(wc.experiment),
    log:
        "logs/experiment_figure/{experiment}_{kind}.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/experiment_figure.py"
