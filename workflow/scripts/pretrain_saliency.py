def main(smk):
    from pathlib import Path

    import torch

    from clcore.device import claim_device, pick_device
    from clcore.io import redirect_output
    from clcore.saliency import run_pretraining
    from clcore.scenarios import SALIENCY_PRETRAINING

    with redirect_output(smk.log[0]):
        device, _ = claim_device(smk.params.device, smk.params.gpu)  # before CUDA is initialised
        torch.set_num_threads(smk.threads)
        recipe = SALIENCY_PRETRAINING[smk.wildcards.source]
        summary = run_pretraining(recipe.prepared, recipe.train_split, recipe.val_split, smk.params.prepared_dir,
                                  Path(smk.output.model).parent, nf=recipe.nf, widths=recipe.widths,
                                  epochs=recipe.epochs, batch_size=recipe.batch_size, seed=0,
                                  normalization=recipe.normalization,
                                  device=str(pick_device(device)))
        print(summary)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
