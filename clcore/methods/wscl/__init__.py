"""WSCL, wake-sleep consolidated learning (docs/wscl.md): code-faithful WSCL without the NREM plasticity rule
(not public). ER-ACE, ER and DER++ trained with dreams on the free output heads, forward head matching, the
epoch-0 freezing search and replay of real samples; the ablations switch one mechanism off each.

What the pipeline needs: a run that dreams loads its benchmark's auxiliary classes (DREAM_SOURCES), a prepared
dataset that rule `train` waits for; WSCL needs no pretrained input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ... import data
from ...data.classic import wscl_dream_labels
from ...errors import InputError
from ..family import Family
from . import methods  # noqa: F401  (registers the WSCL methods)
from .freezing import CANDIDATES, criterion, freeze_up_to, frozen_blocks, pick, trainable_candidates
from .heads import draw_dream_classes, holdout_positions, match_heads
from .methods import WSCL, RealSamplesOnly, WSCLHparams


@dataclass(frozen=True)
class DreamSource:
    prepared: str  # the prepared dataset holding the auxiliary images
    split: str
    # how its labels become auxiliary classes 0..|A|-1: as they are; CIFAR-100's superclasses minus the 8 close
    # to CIFAR-10 (12 kept); Tiny-ImageNet's labels 100-199 (the half seq-tinyimg-half leaves out)
    labels: Literal["as_is", "cifar100_superclasses", "upper_half"] = "as_is"


# benchmark -> its dream set (docs/wscl.md#dream-sources)
DREAM_SOURCES = {
    "seq-cifar10": DreamSource("cifar100", "train", "cifar100_superclasses"),
    "seq-tinyimg-half": DreamSource("tinyimagenet", "train", "upper_half"),
    "seq-fgimagenet-256": DreamSource("aux-imagenet100@256x256", "train"),
    "seq-cifar100": DreamSource("aux-imagenet100@32x32", "train"),
    "seq-shapes-wscl": DreamSource("shapes", "aux_train"),  # the 10 auxiliary shape categories
}


def _dream_source(method: str, hparams: dict, benchmark: str) -> DreamSource | None:
    if not hparams.get("dreams", False):
        return None
    if benchmark not in DREAM_SOURCES:
        raise InputError(f"benchmark '{benchmark}' has no dream source: {method} cannot dream on it (benchmarks with "
                         f"one: {', '.join(DREAM_SOURCES)}; or set dreams: false)")
    return DREAM_SOURCES[benchmark]


def datasets(method: str, hparams: dict, benchmark: str) -> list[str]:
    source = _dream_source(method, hparams, benchmark)
    return [source.prepared] if source else []


def artefacts(method: str, hparams: dict, benchmark: str, config: dict) -> dict[str, str]:
    _dream_source(method, hparams, benchmark)  # fails at DAG time where a dreaming run has no dream source
    return {}


def load_dreams(source: DreamSource, prepared_dir, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8, auxiliary class 0..|A|-1) of a dream source, on `device`."""
    fields = data.load(source.prepared, source.split, prepared_dir, device)
    if source.labels == "cifar100_superclasses":
        labels = torch.from_numpy(wscl_dream_labels(fields["coarse"].cpu().numpy()).astype(np.int64)).to(device)
    elif source.labels == "upper_half":
        labels = torch.where(fields["y"] >= 100, fields["y"] - 100, -1)
    else:
        labels = fields["y"]
    keep = labels >= 0
    return fields["x"][keep], labels[keep]


def prepare_scenario(scenario, artefacts: dict, hparams) -> list[str]:
    """A dreaming run's auxiliary images go into the scenario's `extra_data` (dream_x, dream_y)."""
    source = _dream_source("WSCL", {"dreams": hparams.dreams}, scenario.spec.name)
    if source is None:
        return []
    if source.labels == "upper_half" and int(scenario.train_y.max()) >= 100:
        raise InputError("Tiny-ImageNet dreams are labels 100-199: the benchmark must use exactly labels 0-99")
    x, y = load_dreams(source, scenario.prepared_dir, scenario.device)
    scenario.extra_data.update(dream_x=x, dream_y=y)
    return []


FAMILY = Family("wscl", artefacts=artefacts, prepare_scenario=prepare_scenario, datasets=datasets)

__all__ = ["FAMILY", "DREAM_SOURCES", "DreamSource", "load_dreams", "WSCL", "WSCLHparams", "RealSamplesOnly",
           "CANDIDATES", "criterion", "freeze_up_to", "frozen_blocks", "pick", "trainable_candidates",
           "draw_dream_classes", "holdout_positions", "match_heads"]
