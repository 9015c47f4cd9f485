def main(smk):
    from pathlib import Path

    import torch

    from clcore.device import claim_device
    from clcore.io import redirect_output
    from clcore.robust import DEFAULT_EPS, write_robust_eval

    run_dir = Path(smk.input.run).parent  # train kept final.pt beside run.json (param keep_final)
    params = smk.params
    with redirect_output(smk.log[0]):
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
