"""AKR, attentive knowledge replay (docs/akr.md): iCaRL trained on mixup virtual samples (`icarl_mixup`) and on
virtual samples whose mixing weights an attention module tilts (`akr`). The official code is not public: the
module and the way it enters the loss are our reconstruction, every choice an option; run.json records
`akr_reconstruction_version`. The iCaRL they build on is the baselines' `icarl`, run with the inclearn protocol
options on the AKR benchmarks.

What the pipeline needs: nothing beyond the benchmark's data (no pretrained input, no extra dataset).
"""

from __future__ import annotations

from ..family import Family
from . import methods  # noqa: F401  (registers the AKR methods)
from .attention import (
           AttentionModule,
           WeightStats,
           attention_input,
           collapse_report,
           mixing_weight,
)
from .methods import AKR, RECONSTRUCTION_VERSION, ICaRLMixup

FAMILY = Family("akr")

__all__ = ["AKR", "AttentionModule", "FAMILY", "ICaRLMixup", "RECONSTRUCTION_VERSION", "WeightStats",
           "attention_input", "collapse_report", "mixing_weight"]
