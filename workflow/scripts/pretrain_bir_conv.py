def main(smk):
    from pathlib import Path

    import torch

    from clcore.bir_conv import pretrain_bir_conv, upstream_conv
    from clcore.device import claim_device
    from clcore.errors import exit_on_error, gpu_oom_as_error
    from clcore.io import redirect_output
    from clcore.scenarios import BIR_CONV_PRETRAINING

    out_dir = Path(smk.output.conv).parent
    # a GPU out-of-memory error exits with its own code and says what to do (clcore.errors.GpuOutOfMemoryError)
    with exit_on_error(), redirect_output(smk.log[0]), \
            gpu_oom_as_error(f"BI-R conv pretraining on '{smk.wildcards.source}' (rule pretrain_bir_conv)"):
        if smk.wildcards.tag == "upstream":
            print(upstream_conv(smk.params.weights_dir, out_dir))
            return
        device, _ = claim_device(smk.params.device, smk.params.gpu)  # before CUDA is initialised
        torch.set_num_threads(smk.threads)
        print(pretrain_bir_conv(BIR_CONV_PRETRAINING[smk.wildcards.source], smk.params.prepared_dir, out_dir,
                                seed=0, device=device))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
