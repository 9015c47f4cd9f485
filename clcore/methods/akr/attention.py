"""The attention module of AKR and how its scores tilt the mixing weight: our reconstruction, since the official
code is not public (docs/akr.md#the-attention-module-our-reconstruction).

One small network S scores every image of a minibatch from how its features moved between the previous phase's
model and the current one; a pair (k, π(k)) then mixes with the weight

    a_k = σ((s_k − s_π(k)) / τ + logit(λ_k))  =  λ_k e^{s_k/τ} / (λ_k e^{s_k/τ} + (1 − λ_k) e^{s_π(k)/τ})

(`tilt`): the Beta draw λ_k is the prior and equal scores give plain mixup.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...results import metric_rows

Combine = Literal["tilt", "average", "scores_only"]
AttentionInput = Literal["feature_delta", "old_new_concat", "current"]

LAMBDA_CLAMP = 1e-6  # λ is clamped to [1e-6, 1 − 1e-6] before its logit
COLLAPSE_BAND = (0.02, 0.98)  # a run collapses where more than half of its weights lie outside this band
COLLAPSE_SHARE = 0.5


class AttentionModule(nn.Module):
    """Linear(d, h) → ReLU → Linear(h, 1), applied with shared weights to every image; with `zero_init` the last
    layer starts at zero, so an untrained module scores every image 0 and AKR starts as mixup. The weights are drawn
    from `generator` (nn.Linear's default scheme), so building the module leaves the run's global generators alone:
    AKR's stream of random numbers stays that of mixup."""

    def __init__(self, in_features: int, hidden: int, zero_init: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own initialisation draws from the global CPU generator
            self.hidden, self.out = nn.Linear(in_features, hidden), nn.Linear(hidden, 1)
        for layer in (self.hidden, self.out):
            bound = 1 / math.sqrt(layer.in_features)
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(delta))).squeeze(1)


def attention_input(f_old: torch.Tensor, f_cur: torch.Tensor, kind: AttentionInput, normalise: bool) -> torch.Tensor:
    """What S reads: the feature change f_cur − f_old (default), both features side by side, or f_cur alone;
    each feature optionally L2-normalised first."""
    if normalise:
        f_old, f_cur = F.normalize(f_old, dim=1), F.normalize(f_cur, dim=1)
    if kind == "feature_delta":
        return f_cur - f_old
    if kind == "old_new_concat":
        return torch.cat([f_old, f_cur], dim=1)
    return f_cur


def input_size(feature_dim: int, kind: AttentionInput) -> int:
    return 2 * feature_dim if kind == "old_new_concat" else feature_dim


def mixing_weight(scores: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor, combine: Combine,
                  tau: float) -> torch.Tensor:
    """a_k from the scores s (of the minibatch), the partner index π and the Beta draws λ."""
    tilt = (scores - scores[partner]) / tau
    if combine == "tilt":
        lam = lam.clamp(LAMBDA_CLAMP, 1 - LAMBDA_CLAMP)
        return torch.sigmoid(tilt + torch.log(lam / (1 - lam)))
    if combine == "average":  # ½ λ + ½ softmax(s_k, s_π(k))₁
        return 0.5 * lam + 0.5 * torch.sigmoid(tilt)
    return torch.sigmoid(tilt)  # scores_only: no Beta prior


class ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward: S ascends the loss it is trained through
    (`attn_objective: maximize`)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class WeightStats:
    """Per-epoch moments, band share and histograms of a and of a − λ, accumulated on the device (no host
    synchronisation in the step) and turned into metric rows once per epoch."""

    A_BINS, DIFF_BINS = 10, 20  # a: width 0.1 over [0, 1]; a − λ: width 0.1 over [−1, 1]

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.n = 0  # a host count: no synchronisation
        self.sums = torch.zeros(5, dtype=torch.float64, device=self.device)  # Σa, Σa², Σd, Σd², n outside band
        self.a_hist = torch.zeros(self.A_BINS, dtype=torch.float64, device=self.device)
        self.diff_hist = torch.zeros(self.DIFF_BINS, dtype=torch.float64, device=self.device)
        self.attentive = False

    def add(self, a: torch.Tensor, lam: torch.Tensor, attentive: bool) -> None:
        a, d = a.detach().double(), (a - lam).detach().double()
        outside = ((a < COLLAPSE_BAND[0]) | (a > COLLAPSE_BAND[1])).double().sum()
        self.n += a.numel()
        self.sums += torch.stack([a.sum(), (a * a).sum(), d.sum(), (d * d).sum(), outside])
        self.a_hist += torch.histc(a, self.A_BINS, 0.0, 1.0)
        self.diff_hist += torch.histc(d, self.DIFF_BINS, -1.0, 1.0)
        self.attentive |= attentive

    def rows(self, task: int, epoch: int) -> list[dict]:
        n, (sa, sa2, sd, sd2, outside) = self.n, self.sums.tolist()
        if not n:
            return []
        values = {"akr/a_mean": sa / n, "akr/a_std": max(sa2 / n - (sa / n) ** 2, 0.0) ** 0.5,
                  "akr/a_minus_lambda_mean": sd / n, "akr/a_minus_lambda_std": max(sd2 / n - (sd / n) ** 2, 0.0) ** 0.5,
                  "akr/a_outside_band": outside / n, "akr/attentive": float(self.attentive)}
        values |= {f"akr/a_hist/b{k:02d}": v / n for k, v in enumerate(self.a_hist.tolist())}
        values |= {f"akr/a_minus_lambda_hist/b{k:02d}": v / n for k, v in enumerate(self.diff_hist.tolist())}
        self.reset()
        return [metric_rows(name, value, after_task=task, epoch=epoch) for name, value in values.items()]


def collapse_report(rows: list[dict]) -> dict:
    """The collapse flag of a run from its per-epoch rows: the attentive epochs where more than half of the
    weights a lie outside [0.02, 0.98] (docs/akr.md#collapse-check)."""
    attentive = {(r["after_task"], r["epoch"]) for r in rows if r["metric"] == "akr/attentive" and r["value"]}
    flagged = [[r["after_task"], r["epoch"], round(r["value"], 4)] for r in rows
               if r["metric"] == "akr/a_outside_band" and (r["after_task"], r["epoch"]) in attentive
               and r["value"] > COLLAPSE_SHARE]
    return {"collapsed": bool(flagged), "band": list(COLLAPSE_BAND), "share": COLLAPSE_SHARE,
            "attentive_epochs": len(attentive), "flagged_epochs": flagged}
