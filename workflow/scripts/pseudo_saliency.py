def main(smk):
    from pathlib import Path

    from clcore.device import pick_device
    from clcore.methods.ser import write_pseudo_maps
    from clcore.pipeline import gpu_job

    with gpu_job(smk, f"pseudo saliency maps of '{smk.wildcards.prepared}' (rule pseudo_saliency)") as (device, _):
        write_pseudo_maps(smk.input.predictor, smk.wildcards.prepared, smk.params.prepared_dir,
                          Path(smk.output[0]).parent, device=str(pick_device(device)))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
