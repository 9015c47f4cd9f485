"""The BI-R family (docs/bir.md): generative replay (DGR) and brain-inspired replay (BI-R, BI-R+SI, the
ablations), the exaggeration variants, the classifier-only `gr_` baselines of the BI-R protocol, their VAE,
and the pretraining of the conv layers.

What the pipeline needs: runs with `conv: pretrained` load the conv layers pretrained for their benchmark
(rule `pretrain_bir_conv`, rules/bir.smk), or [BIR]'s own file converted once (`bir_conv.source:
upstream_file` in the pipeline config).
"""

from __future__ import annotations

from ...errors import InputError
from ..family import Family
from . import exaggeration, generative_replay, gr_baselines  # noqa: F401  (register the BI-R methods)
from .conv_pretraining import CONV_PRETRAINING, ConvPretraining, pretrain_conv, upstream_conv

# where rule pretrain_bir_conv writes, under the results directory; tag: e<epochs> or "upstream"
CONV = "pretrained/bir_conv/{source}/{tag}/conv.pt"
CONV_META = "pretrained/bir_conv/{source}/{tag}/meta.json"  # recipe, validation accuracy, sha256 of conv.pt

# benchmark -> key of CONV_PRETRAINING: the conv layers its `conv: pretrained` runs load
BENCHMARK_CONV = {"seq-cifar100-bir": "cifar10", "seq-shapes": "shapes"}


def conv_file(source: str, upstream: bool = False) -> str:
    """conv.pt of the conv pretraining `source`, or of [BIR]'s converted file."""
    return CONV.format(source=source, tag="upstream" if upstream else CONV_PRETRAINING[source].tag)


def artefacts(method: str, hparams: dict, benchmark: str, config: dict) -> dict[str, str]:
    if hparams.get("conv") != "pretrained":
        return {}
    if benchmark not in BENCHMARK_CONV:
        raise InputError(f"benchmark '{benchmark}' has no BI-R conv pretraining: run {method} there with "
                         f"conv: none or scratch (benchmarks with one: {', '.join(BENCHMARK_CONV)})")
    upstream = config.get("bir_conv", {}).get("source") == "upstream_file"
    return {"bir_conv": conv_file(BENCHMARK_CONV[benchmark], upstream)}


FAMILY = Family("bir", artefacts=artefacts)

__all__ = ["FAMILY", "CONV", "CONV_META", "BENCHMARK_CONV", "CONV_PRETRAINING", "ConvPretraining", "conv_file",
           "pretrain_conv", "upstream_conv"]
