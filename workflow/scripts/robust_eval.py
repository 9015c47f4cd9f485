def main(smk):
    from pathlib import Path

    import torch

    from clcore.device import claim_device
    from clcore.errors import exit_on_error, gpu_oom_as_error
    from clcore.io import redirect_output
    from clcore.robust import DEFAULT_EPS, write_robust_eval

    run_dir = Path(smk.input.run).parent  # train kept final.pt beside run.json (param keep_final)
    params = smk.params
    # a GPU out-of-memory error exits with its own code and says what to do (clcore.errors.GpuOutOfMemoryError)
    with exit_on_error(), redirect_output(smk.log[0]), \
            gpu_oom_as_error(f"robustness evaluation of {run_dir} (rule robust_eval; batch_size in the experiment's "
                             "robust_eval settings)"):
        device, _ = claim_device(params.device, params.gpu)  # before CUDA is initialised
        if smk.threads:
            torch.set_num_threads(smk.threads)
        write_robust_eval(run_dir, smk.output[0], prepared_dir=params.prepared_dir, device=device,
                          eps=tuple(float(e) for e in getattr(params, "eps", DEFAULT_EPS)),
                          n_per_class=int(params.n_per_class),
                          sal_grad=tuple(getattr(params, "sal_grad", ("through",))),
                          seed=int(getattr(params, "seed", 0)), batch_size=int(getattr(params, "batch_size", 256)),
                          attack_setting=getattr(params, "attack_setting", "class"),
                          conflict=getattr(params, "conflict", None))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
