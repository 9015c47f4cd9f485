def main(smk):
    from pathlib import Path

    from clcore.device import claim_device
    from clcore.errors import exit_on_error, gpu_oom_as_error
    from clcore.io import redirect_output
    from clcore.scenarios import get_benchmark
    from clcore.train import run_training

    out_dir = Path(smk.output.metrics).parent
    run = f"run {smk.wildcards.dataset}/{smk.wildcards.method}/buf{smk.wildcards.buffer}/seed{smk.wildcards.seed}"
    # a GPU out-of-memory error exits with its own code and says what to do (clcore.errors.GpuOutOfMemoryError)
    with exit_on_error(), redirect_output(smk.log[0]), \
            gpu_oom_as_error(run, out_dir, get_benchmark(smk.wildcards.dataset).n_tasks):
        device, slot = claim_device(smk.params.device, smk.params.gpu)  # before CUDA is initialised
        run_training(benchmark=smk.wildcards.dataset, method=smk.params.method, buffer_size=int(smk.wildcards.buffer),
                     seed=int(smk.wildcards.seed), hparams=dict(smk.params.hparams),
                     prepared_dir=smk.params.prepared_dir, out_dir=out_dir,
                     run_name=smk.wildcards.method, device=device, threads=smk.threads,
                     artefacts={name: smk.input[name] for name in smk.input.keys() if name != "data"},  # pretrained inputs
                     keep_final=bool(smk.params.keep_final), gpu_slot=slot.as_dict())


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
