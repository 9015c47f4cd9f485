# AKR (docs/akr.md): no pretrained input and no extra dataset. Per block with an AKR-family method or of the AKR
# paper (its "iCaRL" row is a block of icarl alone, under iCaRL's original schedule): average
# incremental accuracy over all phases with the nearest-mean and the head's classifier, last-phase accuracy and the
# mixing weights' spread, beside the AKR figure's values; the block's pairs compared over seeds.
AKR_BLOCKS = [e for e in PIPELINE.blocks
              if e in PIPELINE.family_blocks("akr") or PIPELINE.block(e).get("paper") == "lee2023akr"]
AKR_REPORTS = [TABLES / "akr" / f"{e}.{ext}" for e in AKR_BLOCKS for ext in ("md", "csv")]


rule akr_report:
    input:
        metrics=lambda wc: PIPELINE.run_files("metrics.parquet", PIPELINE.block_runs(wc.experiment)),
        runs=lambda wc: PIPELINE.run_files("run.json", PIPELINE.block_runs(wc.experiment)),
        reference=REFERENCE_CSVS,  # published numbers
    output:
        md=TABLES / "akr" / "{experiment}.md",
        csv=TABLES / "akr" / "{experiment}.csv",
    params:
        title=lambda wc: PIPELINE.block_title(wc.experiment),
        pairs=lambda wc: PIPELINE.block(wc.experiment)["pairs"],
        reference_names=lambda wc: PIPELINE.block(wc.experiment).get("reference_names", {}),
    log:
        "logs/akr_report/{experiment}.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/akr_report.py"
