"""What the pipeline needs from a method family, in one small interface.

Each family package (`clcore/methods/<family>/`) defines `FAMILY = Family(...)`. The pipeline asks it
which pretrained inputs and other prepared datasets a run needs (`clcore.pipeline`, rule `train`'s inputs)
and lets it adapt the benchmark's data before a run trains (`clcore.train`). The rules that make a family's
pretrained inputs live in `rules/<family>.smk` and write to the paths the family names here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def no_artefacts(method: str, hparams: dict, benchmark: str, config: dict) -> dict[str, str]:
    return {}


def data_as_prepared(scenario, artefacts: dict, hparams) -> list[str]:
    return []


def no_extra_datasets(method: str, hparams: dict, benchmark: str) -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    name: str
    # (method name, resolved hyperparameters, benchmark, pipeline config) -> {artefact name: path under the
    # results directory}; the run receives them as Context.artefacts. Fails with a clear message where the
    # benchmark has no recipe for an input the run needs.
    artefacts: Callable[[str, dict, str, dict], dict[str, str]] = no_artefacts
    # (Scenario, {artefact name: path}, the run's Hparams) -> deviations recorded in run.json; may change the
    # scenario's data (SER: its targets become the pretrained predictor's pseudo maps) or add to its
    # `extra_data` (WSCL: the dream images).
    prepare_scenario: Callable[..., list[str]] = data_as_prepared
    # (method name, resolved hyperparameters, benchmark) -> prepared datasets the run loads besides its
    # benchmark's (WSCL: the auxiliary classes it dreams of); rule `train` waits for them.
    datasets: Callable[[str, dict, str], list[str]] = no_extra_datasets
