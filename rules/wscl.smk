# WSCL (docs/wscl.md): no pretrained input; its dream sets are prepared datasets that rule train waits for
# (the family's DREAM_SOURCES). Per block with a WSCL method: forgetting, task-IL, FWT with its reference
# and the freezing depth after each task, beside the published numbers.
WSCL_BLOCKS = PIPELINE.family_blocks("wscl")
WSCL_REPORTS = [TABLES / "wscl" / f"{e}.{ext}" for e in WSCL_BLOCKS for ext in ("md", "csv")] + [
    FIGURE_DIR / "wscl" / f"{e}_freezing_depth.{ext}" for e in WSCL_BLOCKS for ext in ("png", "pdf")]


rule wscl_report:
    input:
        metrics=lambda wc: PIPELINE.run_files("metrics.parquet", PIPELINE.block_runs(wc.experiment)),
        runs=lambda wc: PIPELINE.run_files("run.json", PIPELINE.block_runs(wc.experiment)),
        reference=REFERENCE_CSVS,  # published numbers
    output:
        md=TABLES / "wscl" / "{experiment}.md",
        csv=TABLES / "wscl" / "{experiment}.csv",
        png=report(FIGURE_DIR / "wscl" / "{experiment}_freezing_depth.png", category="Figures", subcategory="WSCL",
                   caption="../workflow/report/wscl_freezing.rst", labels={"experiment": "{experiment}"}),
        pdf=FIGURE_DIR / "wscl" / "{experiment}_freezing_depth.pdf",
    params:
        title=lambda wc: PIPELINE.block_title(wc.experiment),
    log:
        "logs/wscl_report/{experiment}.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/wscl_report.py"
