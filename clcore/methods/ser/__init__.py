"""SER, saliency-driven experience replay (docs/ser.md): the SER methods and their ablations, the saliency
predictor with its metrics, pretraining and pseudo maps, and the robustness studies (FGSM/PGD, test_conflict).

What the pipeline needs: every SER method loads the saliency predictor pretrained for its benchmark
(rule `pretrain_saliency`, rules/ser.smk); the methods that learn from the stream's maps train on the
predictor's pseudo maps (rule `pseudo_saliency`) where the benchmark's targets are `pseudo`.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ..family import Family
from . import methods  # noqa: F401  (registers the SER methods)
from .attacks import DEFAULT_EPS, NOT_APPLICABLE, PGD_STEPS, SAL_GRADS, write_robust_eval
from .pretraining import SALIENCY_PRETRAINING, SaliencyPretraining, run_pretraining, write_pseudo_maps

# where the SER rules write, under the results directory
PREDICTOR = "saliency/{source}/saliency_predictor.pt"
PRETRAIN_METRICS = "saliency/{source}/pretrain_metrics.parquet"
PSEUDO_MAPS = "saliency/{source}/pseudo/{prepared}/meta.json"

# benchmark -> (key of SALIENCY_PRETRAINING: the predictor its SER runs load, the maps SER trains on:
# "pseudo" = the pretrained predictor's maps, the paper's presumed pipeline (docs/ser.md#reconstructions),
# or "shipped" = the dataset's own `sal` field)
BENCHMARK_SALIENCY = {
    "seq-fgimagenet": ("salicon@288x384", "pseudo"),
    "seq-miniimagenet": ("salicon@288x384", "pseudo"),
    "seq-miniimagenet-spurious": ("salicon@288x384", "pseudo"),
    "seq-shapes-ser": ("shapes", "pseudo"),
    "seq-shapes-ser-spurious": ("shapes", "pseudo"),
}


def artefacts(method: str, hparams: dict, benchmark: str, config: dict) -> dict[str, str]:
    """The pretrained predictor, and the pseudo maps of the benchmark's dataset for methods that learn
    from the stream's maps (`sal` among their stream fields)."""
    from ...scenarios import get_benchmark
    from .. import get_method

    if benchmark not in BENCHMARK_SALIENCY:
        raise InputError(f"benchmark '{benchmark}' has no saliency setting: {method} cannot run on it "
                      f"(SER benchmarks: {', '.join(BENCHMARK_SALIENCY)})")
    source, targets = BENCHMARK_SALIENCY[benchmark]
    out = {"saliency_predictor": PREDICTOR.format(source=source)}
    if "sal" in get_method(method)[0].stream_fields and targets == "pseudo":
        out["pseudo_saliency"] = PSEUDO_MAPS.format(source=source, prepared=get_benchmark(benchmark).prepared)
    return out


def prepare_scenario(scenario, artefacts: dict, hparams=None) -> list[str]:
    """Runs given pseudo maps train and are scored on them; the dataset's own maps stay as `sal_true`."""
    if "pseudo_saliency" not in artefacts:
        return []
    scenario.replace_field("sal", Path(artefacts["pseudo_saliency"]).parent, keep_original_as="sal_true")
    return ["SER targets are pseudo maps of our pretrained predictor (rule pseudo_saliency)"]


FAMILY = Family("ser", artefacts=artefacts, prepare_scenario=prepare_scenario)

__all__ = ["FAMILY", "PREDICTOR", "PRETRAIN_METRICS", "PSEUDO_MAPS", "BENCHMARK_SALIENCY", "SALIENCY_PRETRAINING",
           "SaliencyPretraining", "run_pretraining", "write_pseudo_maps", "write_robust_eval", "DEFAULT_EPS",
           "NOT_APPLICABLE", "PGD_STEPS", "SAL_GRADS"]
