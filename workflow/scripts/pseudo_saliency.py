def main(smk):
    from pathlib import Path

    import torch

    from clcore.device import claim_device, pick_device
    from clcore.errors import exit_on_error, gpu_oom_as_error
    from clcore.io import redirect_output
    from clcore.saliency import write_pseudo_maps

    # a GPU out-of-memory error exits with its own code and says what to do (clcore.errors.GpuOutOfMemoryError)
    with exit_on_error(), redirect_output(smk.log[0]), \
            gpu_oom_as_error(f"pseudo saliency maps of '{smk.wildcards.prepared}' (rule pseudo_saliency)"):
        device, _ = claim_device(smk.params.device, smk.params.gpu)  # before CUDA is initialised
        torch.set_num_threads(smk.threads)
        write_pseudo_maps(smk.input.predictor, smk.wildcards.prepared, smk.params.prepared_dir,
                          Path(smk.output[0]).parent, device=str(pick_device(device)))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
