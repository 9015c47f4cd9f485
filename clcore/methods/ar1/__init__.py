"""The AR1 family (docs/ar1.md): AR1*, CWR* and naive fine-tuning on a NIC stream, each with or without latent
replay (`naive_nic`, `cwr_star`, `ar1_star_free`, `ar1_star`, `cwr_star_lr`, `ar1_star_free_lr`, `ar1_star_lr`);
its components: the consolidated output layer (CWR*), the latent replay memory with its minibatch plan, and the
pretrained MobileNetV1 with batch renormalisation (the backbone `mobilenet_v1`).

What the pipeline needs: a pretrained backbone per stream (rules/ar1.smk): pytorchcv's ImageNet MobileNetV1
converted once for CORe50, pretrained on the shapes auxiliary categories for the embedded streams.
"""

from __future__ import annotations

from ..family import Family
from . import methods  # noqa: F401  (registers the AR1 family's methods)
from .cwr import CWRStar, Multiplicity, current_classes
from .latent_replay import LatentMemory, insert_count, minibatch_plan, pad_to_multiple
from .methods import AR1, AR1LatentReplay, load_pretrained
from .pretraining import (
    BACKBONE,
    BACKBONE_META,
    MOBILENET_W1_FILE,
    MOBILENET_W1_URL,
    SOURCES,
    backbone_file,
    convert_mobilenet_w1,
    fetch_mobilenet_w1,
    pretrain_shapes_backbone,
)


def artefacts(method: str, hparams: dict, benchmark: str, config: dict) -> dict[str, str]:
    return {"ar1_backbone": backbone_file(benchmark)} if hparams.get("pretrained", True) else {}


FAMILY = Family("ar1", artefacts=artefacts)

__all__ = ["AR1", "AR1LatentReplay", "BACKBONE", "BACKBONE_META", "CWRStar", "FAMILY", "LatentMemory",
           "MOBILENET_W1_FILE", "MOBILENET_W1_URL", "Multiplicity", "SOURCES", "backbone_file", "convert_mobilenet_w1",
           "current_classes", "fetch_mobilenet_w1", "insert_count", "load_pretrained", "minibatch_plan",
           "pad_to_multiple", "pretrain_shapes_backbone"]
