# One job per (benchmark, run, buffer, seed). A killed job leaves `checkpoint.pt` in its run directory (not
# a declared output, so Snakemake keeps it) and resumes from it when re-run.


rule train:
    input:
        unpack(lambda wc: PIPELINE.artefact_inputs(run_of(wc))),  # pretrained inputs of the method's family
        data=lambda wc: PIPELINE.prepared_inputs(run_of(wc)),  # the benchmark's dataset and the family's extras
    output:
        metrics=RUN_DIR + "/metrics.parquet",
        run=RUN_DIR + "/run.json",
    params:
        method=lambda wc: run_of(wc).method,
        hparams=lambda wc: run_of(wc).hparams,
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],  # slot allocator settings (clcore.device.claim_device)
        keep_final=lambda wc: PIPELINE.keeps_final(run_of(wc)),
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/train/{benchmark}/{run}/buf{buffer}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{benchmark}/{run}/buf{buffer}/seed{seed}.tsv"
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/train.py"
