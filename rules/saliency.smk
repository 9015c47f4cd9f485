# SER's saliency predictor: pretrained once per source dataset (SALICON for the paper, the embedded
# aux split by default), then an input of every run whose method needs it (ser.md §4, rule pretrain_saliency).
from clcore.scenarios import SALIENCY_PRETRAINING

rule pretrain_saliency:
    input:
        data=lambda wc: PREPARED / SALIENCY_PRETRAINING[wc.source].prepared / "meta.json",
    output:
        model=SALIENCY_DIR / "{source}" / "saliency_predictor.pt",
        metrics=SALIENCY_DIR / "{source}" / "pretrain_metrics.parquet",
    params:
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],  # slot allocator settings (clcore.device.claim_device)
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/pretrain_saliency/{source}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/pretrain_saliency.py"


# Pseudo ground-truth maps of a SER dataset from the pretrained predictor (ser.md §4, rule pseudo_saliency):
# the paper's maps are presumed to come from the authors' predictor this way.
rule pseudo_saliency:
    input:
        predictor=SALIENCY_DIR / "{source}" / "saliency_predictor.pt",
        data=PREPARED / "{prepared}" / "meta.json",
    output:
        SALIENCY_DIR / "{source}" / "pseudo" / "{prepared}" / "meta.json",
    params:
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],  # slot allocator settings (clcore.device.claim_device)
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/pseudo_saliency/{source}/{prepared}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/pseudo_saliency.py"
