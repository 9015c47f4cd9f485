def main(smk):
    from pathlib import Path

    from clcore.device import claim_device
    from clcore.io import redirect_output
    from clcore.train import run_training

    with redirect_output(smk.log[0]):
        device, slot = claim_device(smk.params.device, smk.params.gpu)  # before CUDA is initialised
        run_training(benchmark=smk.wildcards.dataset, method=smk.params.method, buffer_size=int(smk.wildcards.buffer),
                     seed=int(smk.wildcards.seed), hparams=dict(smk.params.hparams),
                     prepared_dir=smk.params.prepared_dir, out_dir=Path(smk.output.metrics).parent,
                     run_name=smk.wildcards.method, device=device, threads=smk.threads,
                     artefacts={name: smk.input[name] for name in ("saliency_predictor", "pseudo_saliency")
                                if name in smk.input.keys()},
                     keep_final=bool(smk.params.keep_final), gpu_slot=slot.as_dict())


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
