# One job per (benchmark, method, buffer, seed). A killed job leaves `checkpoint.pt` in its run
# directory (not a declared output, so Snakemake keeps it) and resumes from it when re-run.


rule train:
    input:
        data=prepared_meta,
    output:
        metrics=RUN_DIR + "/metrics.parquet",
        run=RUN_DIR + "/run.json",
    params:
        method=lambda wc: run_info(wc)["method"],
        hparams=lambda wc: run_info(wc)["hparams"],
        prepared_dir=PREPARED,
        device=config["device"],
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/train/{dataset}/{method}/buf{buffer}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{method}/buf{buffer}/seed{seed}.tsv"
    script:
        "../workflow/scripts/train.py"
