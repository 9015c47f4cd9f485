def main(smk):
    from pathlib import Path

    from clcore.methods.ar1 import pretrain_shapes_backbone
    from clcore.pipeline import gpu_job

    with gpu_job(smk, "AR1 backbone pretraining on the shapes aux objects (rule pretrain_ar1_backbone)") as (device, _):
        print(pretrain_shapes_backbone(smk.params.prepared_dir, Path(smk.output.backbone).parent, seed=0,
                                       device=str(device)))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
