# SER (docs/ser.md): the saliency predictor pretrained once per source dataset (SALICON for the paper, the
# shapes aux split by default), its pseudo maps of a SER dataset, and the robustness studies on the kept
# final weights of the runs of a block with `robust_eval:`. The paths are the SER package's.
from clcore.methods import ser


rule pretrain_saliency:
    input:
        data=lambda wc: PREPARED / ser.SALIENCY_PRETRAINING[wc.source].prepared / "meta.json",
    output:
        model=RESULTS / ser.PREDICTOR,
        metrics=RESULTS / ser.PRETRAIN_METRICS,
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


# The paper's target maps are presumed to come from the authors' predictor this way (docs/ser.md#reconstructions).
rule pseudo_saliency:
    input:
        predictor=RESULTS / ser.PREDICTOR,
        data=PREPARED / "{prepared}" / "meta.json",
    output:
        RESULTS / ser.PSEUDO_MAPS,
    params:
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/pseudo_saliency/{source}/{prepared}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/pseudo_saliency.py"


# FGSM and PGD at each eps, and test_conflict (the next class's signature on every test image) on spurious
# studies (docs/ser.md#robustness-studies).
rule robust_eval:
    input:
        run=RUN_DIR + "/run.json",
    output:
        RUN_DIR + "/robust_adv.parquet",
    params:
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],
        settings=lambda wc: PIPELINE.robust_settings(run_of(wc)),
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/robust_eval/{benchmark}/{run}/buf{buffer}/seed{seed}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/robust_eval.py"


rule robustness_table:
    input:
        parquets=lambda wc: PIPELINE.run_files("robust_adv.parquet", PIPELINE.block_runs(wc.experiment)),
    output:
        md=TABLES / "robustness" / "{experiment}.md",
        csv=report(TABLES / "robustness" / "{experiment}.csv", category="Tables",
                   caption="../workflow/report/summary.rst"),
    params:
        title=lambda wc: PIPELINE.block_title(wc.experiment) + ": robustness",
        rows=lambda wc: PIPELINE.block_rows(wc.experiment),
        eps=lambda wc: PIPELINE.block(wc.experiment)["robust_eval"]["eps"],
    log:
        "logs/robustness_table/{experiment}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/robustness_table.py"
