def main(smk):
    from pathlib import Path

    import torch

    from clcore.device import claim_device, pick_device
    from clcore.io import redirect_output
    from clcore.saliency import write_pseudo_maps

    with redirect_output(smk.log[0]):
        device, _ = claim_device(smk.params.device, smk.params.gpu)  # before CUDA is initialised
        torch.set_num_threads(smk.threads)
        write_pseudo_maps(smk.input.predictor, smk.wildcards.prepared, smk.params.prepared_dir,
                          Path(smk.output[0]).parent, device=str(pick_device(device)))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
