# One job per (benchmark, method, buffer, seed). A killed job leaves `checkpoint.pt` in its run
# directory (not a declared output, so Snakemake keeps it) and resumes from it when re-run.


rule train:
    input:
        unpack(artefact_inputs),  # SER's pretrained predictor and pseudo maps (rules/saliency.smk)
        data=prepared_meta,
    output:
        metrics=RUN_DIR + "/metrics.parquet",
        run=RUN_DIR + "/run.json",
    params:
        method=lambda wc: run_info(wc)["method"],
        hparams=lambda wc: run_info(wc)["hparams"],
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],  # slot allocator settings (clcore.device.claim_device)
        keep_final=keeps_final,
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/train/{dataset}/{method}/buf{buffer}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{method}/buf{buffer}/seed{seed}.tsv"
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/train.py"


# SER's robustness studies (ser.md §4, [OURS] protocols) on the kept final weights of a run: FGSM and PGD
# at each eps, and test_conflict (the next class's signature on every test image) on spurious studies.
rule robust_eval:
    input:
        run=RUN_DIR + "/run.json",
    output:
        RUN_DIR + "/robust_adv.parquet",
    params:
        prepared_dir=PREPARED,
        device=config["device"],
        gpu=config["gpu"],  # slot allocator settings (clcore.device.claim_device)
        eps=lambda wc: robust_settings(wc)["eps"],
        n_per_class=lambda wc: robust_settings(wc)["n_per_class"],
        sal_grad=lambda wc: robust_settings(wc)["sal_grad"],
        batch_size=lambda wc: robust_settings(wc)["batch_size"],
        # conflict rows for every run of a study with a spurious benchmark, so recovery can pair them
        conflict=lambda wc: any(get_benchmark(b).spurious_fraction > 0 for exp in robust_experiments()
                                if exp["id"] in run_info(wc)["experiments"] for b in exp["benchmarks"]) or None,
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/robust_eval/{dataset}/{method}/buf{buffer}/seed{seed}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/robust_eval.py"
