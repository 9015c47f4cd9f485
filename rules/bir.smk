# The BI-R family's conv layers (docs/bir.md#conv-pretraining): pretrained once per source dataset on a plain
# classifier (CIFAR-10 for the paper, the shapes auxiliary categories by default), then frozen or fine-tuned
# by every run that loads them. `bir_conv.source: upstream_file` converts [BIR]'s own file instead.
from clcore.methods import bir


rule pretrain_bir_conv:
    input:
        data=lambda wc: [] if wc.tag == "upstream" else PREPARED / bir.CONV_PRETRAINING[wc.source].prepared / "meta.json",
    output:
        conv=RESULTS / bir.CONV,
        meta=RESULTS / bir.CONV_META,
    wildcard_constraints:
        tag=r"e\d+|upstream",
    params:
        prepared_dir=PREPARED,
        weights_dir=config["bir_conv"]["weights_dir"],
        device=config["device"],
        gpu=config["gpu"],  # slot allocator settings (clcore.device.claim_device)
    threads: config["threads_per_run"]
    resources:
        gpu=config["gpus_per_run"],
    log:
        "logs/pretrain_bir_conv/{source}/{tag}.log",
    conda:
        "../workflow/envs/train.yaml"
    script:
        "../workflow/scripts/pretrain_bir_conv.py"
