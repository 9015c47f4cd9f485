# The AR1 family (docs/ar1.md): every run starts from a pretrained MobileNetV1 with batch renormalisation. CORe50's
# streams: pytorchcv's ImageNet checkpoint, downloaded once (sha1-checked) and converted to our block names; the
# embedded shapes streams: the width-0.25 network pretrained on the shapes auxiliary objects. Per block on streams:
# accuracy after a quarter, half and three quarters of the stream and at its end, beside the published
# values, and the accuracy along the stream (the papers' main plot).
from clcore.methods import ar1

AR1_WEIGHTS = Path(config["ar1"]["weights_dir"])
AR1_BLOCKS = PIPELINE.stream_blocks()
AR1_REPORTS = [TABLES / "ar1" / f"{e}.{ext}" for e in AR1_BLOCKS for ext in ("md", "csv")] + [
    FIGURE_DIR / "ar1" / f"{e}_stream.{ext}" for e in AR1_BLOCKS for ext in ("png", "pdf")]


rule fetch_mobilenet_w1:
    output:
        AR1_WEIGHTS / ar1.MOBILENET_W1_FILE,
    params:
        url=ar1.MOBILENET_W1_URL,
    retries: 3
    log:
        "logs/fetch_mobilenet_w1.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/fetch_mobilenet_w1.py"


rule convert_mobilenet_w1:
    input:
        AR1_WEIGHTS / ar1.MOBILENET_W1_FILE,
    output:
        backbone=RESULTS / ar1.BACKBONE.format(source=ar1.SOURCES["core50"]),
        meta=RESULTS / ar1.BACKBONE_META.format(source=ar1.SOURCES["core50"]),
    log:
        "logs/convert_mobilenet_w1.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/convert_mobilenet_w1.py"


rule pretrain_ar1_backbone:
    input:
        PREPARED / "shapes" / "meta.json",
    output:
        backbone=RESULTS / ar1.BACKBONE.format(source=ar1.SOURCES["shapes"]),
        meta=RESULTS / ar1.BACKBONE_META.format(source=ar1.SOURCES["shapes"]),
    params:
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],  # slot allocator settings (clcore.device.claim_device)
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/pretrain_ar1_backbone.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/pretrain_ar1_backbone.py"


rule ar1_report:
    input:
        metrics=lambda wc: PIPELINE.run_files("metrics.parquet", PIPELINE.block_runs(wc.experiment)),
        runs=lambda wc: PIPELINE.run_files("run.json", PIPELINE.block_runs(wc.experiment)),
        reference=REFERENCE_CSVS,  # published numbers
    output:
        md=TABLES / "ar1" / "{experiment}.md",
        csv=TABLES / "ar1" / "{experiment}.csv",
        png=report(FIGURE_DIR / "ar1" / "{experiment}_stream.png", caption="../workflow/report/figure.rst",
                   category="Figures", subcategory="AR1"),
        pdf=FIGURE_DIR / "ar1" / "{experiment}_stream.pdf",
    params:
        title=lambda wc: PIPELINE.block_title(wc.experiment),
        pairs=lambda wc: PIPELINE.block(wc.experiment)["pairs"],
        paper=lambda wc: PIPELINE.block(wc.experiment).get("paper"),
    log:
        "logs/ar1_report/{experiment}.log",
    conda:
        "../workflow/envs/report.yaml"
    script:
        "../workflow/scripts/ar1_report.py"
