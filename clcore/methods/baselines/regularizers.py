"""Parameter-importance regularisers shared by EWC, SI, AR1* and BI-R (docs/baselines.md#importance-regularisers).

Both keep per-parameter lists and penalise Σ_k importance_k · (θ_k − θ*_k)².
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F


SIEstimator = Literal["lr_grad_sq", "path_integral"]  # Mammoth's lr·g² | Zenke's path integral −g·Δθ
FisherKind = Literal["mammoth", "empirical", "expected"]
FisherBN = Literal["train", "eval"]
FisherNorm = Literal["batches_times_b", "n_samples"]


def quadratic_penalty(params, importance, anchor) -> torch.Tensor:
    return sum(((p - a) ** 2 * w).sum() for p, w, a in zip(params, importance, anchor))


class SIImportance:
    """Synaptic Intelligence (Zenke et al. 2017).

    estimator `lr_grad_sq` (Mammoth): W += lr·g² with g the (clipped) gradient used in the step;
    `path_integral` (Zenke, BI-R): W += −g ⊙ (θ_after − θ_before), valid for any optimiser.
    At the end of a task Ω += W / ((θ − θ_start)² + ξ) and θ* ← θ.
    """

    def __init__(self, params, xi: float, estimator: SIEstimator = "lr_grad_sq", omega_max: float | None = None,
                 clip: Literal["stored", "read"] = "stored", omega_min: float | None = None):
        if estimator not in typing.get_args(SIEstimator):
            raise ValueError(f"SI estimator must be one of {typing.get_args(SIEstimator)}, not {estimator!r}")
        self.params = list(params)
        # omega_max (and omega_min) bound Ω in the stored sum (`stored`) or only where the penalty reads it, the sum
        # staying unbounded (`read`: AR1*'s reference code, docs/ar1.md#synaptic-intelligence)
        self.xi, self.estimator, self.omega_max, self.omega_min, self.clip = xi, estimator, omega_max, omega_min, clip
        self.anchor = [p.detach().clone() for p in self.params]  # θ_start of task 1 = initial weights
        self.omega = None
        self.small_omega = [torch.zeros_like(p) for p in self.params]
        self._before = None

    def importance(self) -> list[torch.Tensor] | None:
        """Ω as the penalty weighs it."""
        if self.omega is None or (self.omega_max is None and self.omega_min is None) or self.clip == "stored":
            return self.omega
        return [o.clamp(min=self.omega_min, max=self.omega_max) for o in self.omega]

    def penalty(self) -> torch.Tensor | float:
        return 0.0 if self.omega is None else quadratic_penalty(self.params, self.importance(), self.anchor)

    def before_step(self) -> None:
        if self.estimator == "path_integral":
            self._before = [p.detach().clone() for p in self.params]

    def after_step(self, lr: float, grads=None) -> None:
        """Accumulate W from `grads` (default: each parameter's .grad, the gradient the step used)."""
        grads = [p.grad for p in self.params] if grads is None else grads
        for i, (w, p, g) in enumerate(zip(self.small_omega, self.params, grads)):
            if g is None:
                continue
            if self.estimator == "lr_grad_sq":
                w.add_(lr * g.detach() ** 2)
            else:
                w.add_(-g.detach() * (p.detach() - self._before[i]))

    def consolidate(self) -> None:
        new = [w / ((p.detach() - a) ** 2 + self.xi) for w, p, a in zip(self.small_omega, self.params, self.anchor)]
        self.omega = new if self.omega is None else [o + n for o, n in zip(self.omega, new)]
        if (self.omega_max is not None or self.omega_min is not None) and self.clip == "stored":
            self.omega = [o.clamp(min=self.omega_min, max=self.omega_max) for o in self.omega]
        self.anchor = [p.detach().clone() for p in self.params]
        self.small_omega = [torch.zeros_like(p) for p in self.params]

    def state_dict(self) -> dict:
        return {"anchor": self.anchor, "omega": self.omega, "small_omega": self.small_omega}

    def load_state_dict(self, state) -> None:
        self.anchor, self.omega, self.small_omega = state["anchor"], state["omega"], state["small_omega"]


class EWCFisher:
    """Online EWC (Schwarz et al. 2018) as in Mammoth's `ewc_on`: F ← γ·F + F_new, θ* ← θ.

    `fisher`: `mammoth` weights each squared log-likelihood gradient by p(y|x) (upstream),
    `empirical` does not, `expected` sums over classes c weighted by p(c|x) (van de Ven).
    `fisher_bn`: `train` keeps the network in train mode during estimation (upstream: every
    single-sample forward updates BN running statistics), `eval` does not.
    `fisher_norm`: `batches_times_b` divides by N_batches·B (upstream, over-counts a partial last
    batch), `n_samples` by the sample count.
    """

    def __init__(self, net, gamma: float = 1.0, fisher: FisherKind = "mammoth", fisher_bn: FisherBN = "train",
                 fisher_norm: FisherNorm = "batches_times_b", half: bool = False):
        for name, value, kind in (("fisher", fisher, FisherKind), ("fisher_bn", fisher_bn, FisherBN),
                                  ("fisher_norm", fisher_norm, FisherNorm)):
            if value not in typing.get_args(kind):
                raise ValueError(f"{name} must be one of {typing.get_args(kind)}, not {value!r}")
        self.net, self.gamma, self.fisher, self.fisher_bn, self.fisher_norm = net, gamma, fisher, fisher_bn, fisher_norm
        self.half = half
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.importance = None
        self.anchor = None

    def penalty(self) -> torch.Tensor | float:
        if self.importance is None:
            return 0.0
        r = quadratic_penalty(self.params, self.importance, self.anchor)
        return 0.5 * r if self.half else r

    def estimate(self, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        """Diagonal Fisher from single-example gradients over `inputs` (already transformed)."""
        was_training = self.net.training
        self.net.train(self.fisher_bn == "train")
        fisher = [torch.zeros_like(p) for p in self.params]
        for x, y in zip(inputs, labels):
            log_p = F.log_softmax(self.net(x[None]), dim=1)[0]
            classes = range(log_p.shape[0]) if self.fisher == "expected" else [int(y)]
            for c in classes:
                grads = torch.autograd.grad(log_p[c], self.params, retain_graph=True, allow_unused=True)
                weight = 1.0 if self.fisher == "empirical" else log_p[c].detach().exp()
                for f, g in zip(fisher, grads):
                    if g is not None:
                        f.add_(weight * g ** 2)
        n = len(labels)
        norm = -(-n // batch_size) * batch_size if self.fisher_norm == "batches_times_b" else n
        self.net.train(was_training)
        return [f / norm for f in fisher]

    def update(self, new_fisher: list[torch.Tensor]) -> None:
        self.importance = new_fisher if self.importance is None else [
            self.gamma * f + n for f, n in zip(self.importance, new_fisher)]
        self.anchor = [p.detach().clone() for p in self.params]

    def state_dict(self) -> dict:
        return {"importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, state) -> None:
        self.importance, self.anchor = state["importance"], state["anchor"]
