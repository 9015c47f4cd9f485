def main(smk):
    from pathlib import Path

    from clcore.methods.bir import CONV_PRETRAINING, pretrain_conv, upstream_conv
    from clcore.pipeline import gpu_job

    out_dir = Path(smk.output.conv).parent
    with gpu_job(smk, f"BI-R conv pretraining on '{smk.wildcards.source}' (rule pretrain_bir_conv)") as (device, _):
        if smk.wildcards.tag == "upstream":
            print(upstream_conv(smk.params.weights_dir, out_dir))
        else:
            print(pretrain_conv(CONV_PRETRAINING[smk.wildcards.source], smk.params.prepared_dir, out_dir, seed=0,
                                device=device))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
