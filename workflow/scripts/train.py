def main(smk):
    from pathlib import Path

    from clcore.pipeline import gpu_job
    from clcore.scenarios import get_benchmark
    from clcore.train import run_training

    wc, out_dir = smk.wildcards, Path(smk.output.metrics).parent
    what = f"run {wc.benchmark}/{wc.run}/buf{wc.buffer}/seed{wc.seed}"
    with gpu_job(smk, what, out_dir, get_benchmark(wc.benchmark).n_tasks) as (device, slot):
        run_training(benchmark=wc.benchmark, method=smk.params.method, buffer_size=int(wc.buffer),
                     seed=int(wc.seed), hparams=dict(smk.params.hparams), prepared_dir=smk.params.prepared_dir,
                     out_dir=out_dir, run_name=wc.run, device=device,
                     artefacts={name: smk.input[name] for name in smk.input.keys() if name != "data"},
                     keep_final=bool(smk.params.keep_final), gpu_slot=slot.as_dict())


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
