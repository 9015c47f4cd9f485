def main(smk):
    from pathlib import Path

    from clcore.device import pick_device
    from clcore.methods.ser import SALIENCY_PRETRAINING, run_pretraining
    from clcore.pipeline import gpu_job

    with gpu_job(smk, f"saliency pretraining on '{smk.wildcards.source}' (rule pretrain_saliency)") as (device, _):
        recipe = SALIENCY_PRETRAINING[smk.wildcards.source]
        print(run_pretraining(recipe.prepared, recipe.train_split, recipe.val_split, smk.params.prepared_dir,
                              Path(smk.output.model).parent, nf=recipe.nf, widths=recipe.widths, epochs=recipe.epochs,
                              batch_size=recipe.batch_size, seed=0, normalization=recipe.normalization,
                              device=str(pick_device(device))))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
