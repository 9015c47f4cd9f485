def main(smk):
    from pathlib import Path

    import torch

    from clcore.device import claim_device, pick_device
    from clcore.errors import exit_on_error, gpu_oom_as_error
    from clcore.io import redirect_output
    from clcore.saliency import run_pretraining
    from clcore.scenarios import SALIENCY_PRETRAINING

    # a GPU out-of-memory error exits with its own code and says what to do (clcore.errors.GpuOutOfMemoryError)
    with exit_on_error(), redirect_output(smk.log[0]), \
            gpu_oom_as_error(f"saliency pretraining on '{smk.wildcards.source}' (rule pretrain_saliency)"):
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
