"""Generative replay and brain-inspired replay (van de Ven, Siegelmann & Tolias, Nat. Commun. 2020),
docs/bir.md#components.

One class, `GenerativeReplay`; every variant is a registry preset of its component flags:
rtf = `feedback` (the VAE is the classifier, its frozen copy generates and labels the replay), con = `prior: gmm`,
gat = `dg_prop > 0`, int = `internal_replay` (+ `freeze_conv`), dis = `distill`. Per iteration
(docs/bir.md#losses):

    L_cur = L_rec + L_KL + CE(logits[:, active], y)
    L_rpl = L_rec + L_KL + (T² KD(logits[:, active], s̃) or CE on ŷ = argmax s̃)      (mean over heads in task-IL)
    L     = (1/t) L_cur + (1 − 1/t) L_rpl + c_SI L_SI                               (t = 1: L = L_cur + penalties)

Hooks for subclasses (bir_exag.py): `replay_terms(rep, out)` adds weighted terms to L_rpl; `after_backward(rep, out)`
runs between the main backward and the optimiser steps. `Replay` and `VAEPass` are the data they receive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...scenarios import ClassOrder
from .. import register
from ..base import ContinualMethod, Hparams, LossLog
from ..baselines import SIImportance
from .vae import BIRVAE, Prior


@dataclass
class GRHparams(Hparams):
    scenario: Literal["class", "task"] = "class"  # labels and heads used in training ([BIR] --scenario)
    class_order: ClassOrder = "bir_seeded"  # RandomState(seed).permutation of the labels ([BIR] data/load.py)
    iters: int = 2000                  # optimiser steps per task ([BIR] options.py, split MNIST)
    batch_size: int = 128              # B, also the replay batch B_r ([BIR] options.py, split MNIST)
    lr: float = 1e-3                   # Adam, betas (0.9, 0.999), one optimiser for the run ([BIR] options.py, MNIST)
    fc_units: int = 400                # fc hidden units ([BIR] options.py, split MNIST)
    fc_layers: int = 2                 # hidden fc layers: fcE = [D_h, U, U] ([BIR] --fc-lay 3)
    z_dim: int = 100                   # latent size ([BIR] options.py)
    conv: Literal["none", "pretrained", "scratch"] = "none"  # pretrained: artefact bir_conv ([BIR] --pre-convE)
    c0: int = 16                       # convE start channels ([BIR] --channels)
    freeze_conv: bool = False          # convE frozen, BN in eval mode ([BIR] --freeze-convE)
    internal_replay: bool = False      # replay convE features instead of pixels ([BIR] --hidden)
    feedback: bool = False             # replay-through-feedback: one VAE is classifier and generator ([BIR] --feedback)
    prior: Prior = "standard"          # gmm: one learnable mode per class ([BIR] --prior GMM --per-class)
    dg_prop: float = 0.0               # probability of a zero in the decoder gate masks, 0 = no gates ([BIR] --dg-prop)
    distill: bool = False              # teacher soft targets on replay, else hard ŷ ([BIR] --distill)
    temperature: float = 2.0           # distillation temperature T ([BIR] --temp)
    recon_loss: Literal["bce", "mse"] = "bce"  # bce: [0,1] pixels, sigmoid | mse: normalised ([BIR] --recon-loss)
    si_c: float = 0.0                  # SI strength, 0 = off ([BIR] --si --c)
    si_xi: float = 0.1                 # SI damping ξ ([BIR] --epsilon)
    si_scope: Literal["encoder_classifier", "all"] = "encoder_classifier"  # [BIR]; all: [CL] (docs/bir.md#si-scope)
    kl_divisor: Literal["input", "features"] = "input"  # D_in [BIR] | reconstructed units [CL] (docs/bir.md#kl-divisor)
    replay_gate: Literal["teacher", "sampled_class"] = "teacher"  # π or one-hot ŷ [BIR] (docs/bir.md#replay-gate)
    taskil_gate_global: bool = False   # task-IL current-data gate from the global label (docs/bir.md#task-il-gate-rows)


@dataclass
class Replay:
    """One replayed batch, as the current model's forward pass sees it (hook API).

    x: model-input rows (pixels in model space, or conv features with internal replay); scores: the teacher's raw
    logits over `prev_classes` [B_r, n_prev] (None where no teacher labels the batch, e.g. ER); prev_classes: the
    class ids of those columns (class-IL: C_{t-1}; task-IL: the replayed task's); gate: gate rows [B_r, n_classes]
    of the current model's forward, or None; targets: hard labels as global class ids (argmax of scores, or stored
    labels); head: the [lo, hi) logit range trained on this batch (class-IL: C_t; task-IL: the replayed task);
    sampled: the generator's sampled classes, or None."""

    x: torch.Tensor
    scores: torch.Tensor | None
    prev_classes: torch.Tensor
    gate: torch.Tensor | None
    targets: torch.Tensor
    head: tuple[int, int]
    sampled: torch.Tensor | None = None


@dataclass
class VAEPass:
    """The current model's forward pass on a batch: top hidden e, posterior (mu, logvar), sample z, reconstruction
    x_hat (None without decoder), logits over all classes (None without classifier) and the reconstruction target."""

    e: torch.Tensor
    mu: torch.Tensor | None
    logvar: torch.Tensor | None
    z: torch.Tensor | None
    x_hat: torch.Tensor | None
    logits: torch.Tensor | None
    recon_target: torch.Tensor | None


# -- the loss terms of docs/bir.md#losses (per-sample; log N drops the 2π constant) ---------------------
def log_normal(z, mean, logvar):
    return -0.5 * (logvar + (z - mean) ** 2 / logvar.exp()).sum(-1)


def log_mixture(z, means, logvars, pi):
    """log Σ_c π_c N(z; μ_c, σ_c²) for z [B, d], modes [K, d], weights pi [B, K] (max shift, clamp at 1e-40)."""
    a = log_normal(z[:, None], means[None], logvars[None])
    a_max = a.max(1, keepdim=True).values
    return torch.log(torch.clamp((pi * (a - a_max).exp()).sum(1), min=1e-40)) + a_max[:, 0]


def kl_standard(mu, logvar):
    return -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)


def kd_loss(logits, target_scores, temperature: float):
    """T² · mean_i Σ_c −π_ic log softmax(logits_i / T)_c, π = softmax(target / T) zero-padded to the logits."""
    pi = F.softmax(target_scores / temperature, dim=1)
    pi = F.pad(pi, (0, logits.shape[1] - pi.shape[1]))
    return temperature ** 2 * -(pi * F.log_softmax(logits / temperature, dim=1)).sum(1).mean()


def mix(loss_cur, loss_rpl, t: int):
    """(1/t) L_cur + (1 − 1/t) L_rpl; L_cur alone without replay."""
    return loss_cur if loss_rpl is None else loss_cur / t + (1 - 1 / t) * loss_rpl


def si_accumulate(si: SIImportance, in_scope: list[bool]) -> None:
    """W += −g ⊙ Δθ for the parameters in scope; the others keep W = 0, hence Ω = 0 (docs/bir.md#si-and-ewc)."""
    si.after_step(0.0, [p.grad if s else None for p, s in zip(si.params, in_scope)])


def _adam(model, lr: float):
    # foreach: one multi-tensor kernel per update step instead of ~10 ops per parameter (same arithmetic)
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.999), foreach=True)


class GenerativeReplay(ContinualMethod):
    Hparams = GRHparams
    uses_generator = True  # False: the classifier-only gr_ baselines (no VAE anywhere)

    def __init__(self, net, hp: GRHparams, ctx):
        if hp.internal_replay and not hp.freeze_conv and hp.conv != "none":
            raise ValueError("internal_replay needs freeze_conv (replayed features must keep their meaning)")
        rtf = hp.feedback and self.uses_generator
        super().__init__(self.build(hp, ctx, classifier=True, decoder=rtf), hp, ctx)  # `net` is unused: BI-R's own
        self.gen = self.build(hp, ctx, classifier=False, decoder=True) if self.uses_generator and not rtf else None
        self.prev = self.frozen_copy(self.net)  # teacher; refreshed at every task boundary, saved in state_dict
        self.frozen = ("prev",)
        if self.gen is not None:
            self.opt_gen = _adam(self.gen, hp.lr)
            self.prev_gen = self.frozen_copy(self.gen)
            self.frozen = ("prev", "prev_gen")
        self.internal = self.net.internal
        d_in = math.prod(ctx.input_shape)
        self.kl_div = self.net.convE.out_features if self.internal and hp.kl_divisor == "features" else d_in
        self.si = None
        if hp.si_c > 0:
            named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
            self.si = SIImportance([p for _, p in named], hp.si_xi, "path_integral")
            self.si_scope = [hp.si_scope == "all" or n.split(".")[0] in ("convE", "fcE", "classifier")
                             for n, _ in named]

    @staticmethod
    def build(hp: GRHparams, ctx, classifier: bool, decoder: bool) -> BIRVAE:
        model = BIRVAE(ctx.input_shape, ctx.n_classes, hp.fc_units, hp.fc_layers, hp.z_dim, conv=hp.conv != "none",
                       c0=hp.c0, internal=hp.internal_replay, freeze_conv=hp.freeze_conv, classifier=classifier,
                       decoder=decoder, prior=hp.prior, dg_prop=hp.dg_prop,
                       out="sigmoid" if hp.recon_loss == "bce" else "linear", seed=ctx.seed)
        if hp.conv == "pretrained":
            if "bir_conv" not in ctx.artefacts:
                raise InputError("conv: pretrained needs the artefact 'bir_conv' (conv.pt of rule pretrain_bir_conv; by "
                                 "hand: `clcore pretrain bir-conv`, then `clcore train ... --artefact bir_conv=PATH`)")
            state = torch.load(ctx.artefacts["bir_conv"], map_location="cpu", weights_only=False)
            model.convE.load_state_dict(state.get("state", state))  # plain state_dict, or upstream's {'state': ...}
        # channels-last conv weights: the protocol's CPU speed-up (numerics equal up to rounding)
        return model.to(ctx.device, memory_format=torch.channels_last if hp.channels_last else torch.preserve_format)

    def make_optimizer(self):
        return _adam(self.net, self.hp.lr)

    # -- data ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def rows(self, x):
        """uint8 images -> model-input rows: pixels in [0,1] (bce) or normalised (mse); frozen-conv features with
        internal replay (no augmentation, so a task's features are computed once)."""
        x = x.float() / self.transform.pixel_max if self.hp.recon_loss == "bce" else self.transform.normalize(x)
        if self.internal:
            x = torch.cat([self.net.convE.eval()(x[i:i + 1024]) for i in range(0, x.shape[0], 1024)])
        return x

    def predict(self, x):
        if self.hp.recon_loss == "bce":  # evaluation hands normalised images; the model sees [0,1] pixels
            x = x * self.transform.std[:, None, None] + self.transform.mean[:, None, None]
        return self.net.logits(x)

    def head(self, k: int) -> tuple[int, int]:
        """[lo, hi) of the logits trained for task k: task k's classes (task-IL) or all classes so far (class-IL)."""
        classes = self.ctx.task_classes
        return (classes[k][0] if self.hp.scenario == "task" else 0), classes[k][-1] + 1

    def task_data(self, task):
        """Rows and labels the current batches are drawn from, and their batch size."""
        return self.rows(task.x), task.y, self.hp.batch_size

    def batches(self, n: int, batch_size: int):
        """Index batches: a fresh permutation per pass, the incomplete last batch dropped."""
        if n < batch_size:
            raise InputError(f"a task has {n} training examples, fewer than the batch size {batch_size}")
        while True:
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            for start in range(0, n - batch_size + 1, batch_size):
                yield perm[start:start + batch_size]

    def n_iters(self, task) -> int:
        return self.hp.iters

    @classmethod
    def planned_steps(cls, hp, task_sizes, buffer_size) -> int:
        return len(task_sizes) * hp.iters

    # -- the run (docs/bir.md#iterations-and-optimiser) --------------------------------------------------
    def begin_task(self, task):
        self.task = task.index  # the optimisers are created once and never reset

    def train_task(self, task, on_epoch=None):
        log = LossLog(task.index, self.device)
        x_all, y_all, batch_size = self.task_data(task)
        batches = self.batches(x_all.shape[0], batch_size)
        self.train()
        for _ in range(self.n_iters(task)):
            idx = next(batches)
            log.add(self.train_step(x_all[idx], y_all[idx]))
        rows = log.flush(0, log.steps)
        if on_epoch:
            on_epoch(0)
        return rows

    def end_task(self, task):
        if self.si is not None:
            self.si.consolidate()
        self.prev.load_state_dict(self.net.state_dict())
        if self.gen is not None:
            self.prev_gen.load_state_dict(self.gen.state_dict())

    def train_step(self, x, y):
        t = self.task + 1
        reps = self.replay(x, y) if self.task > 0 else []
        cur, _ = self.current_terms(self.net, x, y)
        rpl, last = self.replay_losses(self.net, reps, hooks=True)
        loss = mix(sum(cur.values()), sum(rpl.values()) if reps else None, t)
        penalties = self.penalties()
        loss = loss + sum(penalties.values())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.si is not None:
            self.si.before_step()
        self.after_backward(*last)
        self.opt.step()
        if self.si is not None:
            si_accumulate(self.si, self.si_scope)
        logs = {"loss": loss, **cur, **rpl, **penalties}
        if self.gen is not None:
            g_cur, _ = self.current_terms(self.gen, x, y)
            g_rpl, _ = self.replay_losses(self.gen, reps, hooks=False)
            g_loss = mix(sum(g_cur.values()), sum(g_rpl.values()) if reps else None, t)
            self.opt_gen.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_gen.step()
            logs.update({"gen_loss": g_loss, **{f"gen_{k}": v for k, v in {**g_cur, **g_rpl}.items()}})
        return logs

    def penalties(self) -> dict[str, torch.Tensor]:
        """Weighted regularisers added to L (SI here; EWC in gr_baselines)."""
        return {} if self.si is None or self.si.omega is None else {"si": self.hp.si_c * self.si.penalty()}

    # -- hooks for subclasses (bir_exag.py) -----------------------------------------------------------
    def replay_terms(self, rep: Replay, out: VAEPass) -> dict[str, torch.Tensor]:
        """Extra, already weighted terms added to L_rpl of the main model (logged under their names)."""
        return {}

    def after_backward(self, rep: Replay | None, out: VAEPass | None) -> None:
        """Called after the main loss's backward, before the optimiser steps (SI's θ_before is taken already).
        rep/out: the main model's last replay batch and its pass (class-IL: the only one); None at t = 1."""

    # -- losses ---------------------------------------------------------------------------------------
    def forward_pass(self, model: BIRVAE, x, gate) -> VAEPass:
        e = model.encode(x, from_features=self.internal)
        logits = model.classifier(e) if model.classifier is not None else None
        if not model.decoder:
            return VAEPass(e, None, None, None, None, logits, None)
        mu, logvar = model.toZ_mu(e), model.toZ_logvar(e)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=self.generator, device=mu.device)
        return VAEPass(e, mu, logvar, z, model.decode(z, gate if model.gated else None), logits, x)

    def rec_loss(self, out: VAEPass):
        x_hat, x = out.x_hat.flatten(1), out.recon_target.flatten(1)
        if self.hp.recon_loss == "bce":
            return F.binary_cross_entropy(x_hat, x, reduction="none").mean(1).mean()
        return (0.5 * (x - x_hat) ** 2).mean(1).mean()

    def kl_loss(self, model: BIRVAE, out: VAEPass, y=None, pi=None, head=None):
        """KL to the prior / divisor: analytic for N(0, I); else single-sample estimate against the mode of y or
        the mixture over the head's modes weighted by pi."""
        if model.prior == "standard":
            kl = kl_standard(out.mu, out.logvar)
        else:
            means, logvars = model.z_class_means, model.z_class_logvars
            log_p = (log_normal(out.z, means[y], logvars[y]) if pi is None else
                     log_mixture(out.z, means[head[0]:head[1]], logvars[head[0]:head[1]], pi))
            kl = log_normal(out.z, out.mu, out.logvar) - log_p
        return kl.mean() / self.kl_div

    def current_terms(self, model: BIRVAE, x, y):
        lo, hi = self.head(self.task)
        # task-IL: the within-task label by default (docs/bir.md#task-il-gate-rows)
        gate_y = y - lo if self.hp.scenario == "task" and not self.hp.taskil_gate_global else y
        out = self.forward_pass(model, x, F.one_hot(gate_y, self.ctx.n_classes).float() if model.gated else None)
        terms = {}
        if model.decoder:
            terms.update(rec=self.rec_loss(out), kl=self.kl_loss(model, out, y=y))
        if model.classifier is not None:
            terms["ce"] = F.cross_entropy(out.logits[:, lo:hi], y - lo)
        return terms, out

    def replay_losses(self, model: BIRVAE, reps: list[Replay], hooks: bool):
        """Mean over the replay batches (task-IL: one per previous task) of each L_rpl term; the last (rep, out)."""
        total, last, prev_out = {}, (None, None), None
        for rep in reps:
            same_input = last[0] is not None and rep.x is last[0].x and rep.gate is None and last[0].gate is None
            out = prev_out if same_input else self.forward_pass(model, rep.x, rep.gate)  # upstream: one pass
            lo, hi = rep.head
            soft = self.hp.distill and rep.scores is not None
            terms = {}
            if model.decoder:
                pi = None  # soft: the teacher's π zero-padded to the head's classes
                if soft:
                    pi = F.pad(F.softmax(rep.scores / self.hp.temperature, 1), (0, hi - lo - rep.scores.shape[1]))
                terms["rec_r"] = self.rec_loss(out)
                terms["kl_r"] = self.kl_loss(model, out, y=rep.targets, pi=pi, head=rep.head)
            if model.classifier is not None:
                if soft:
                    terms["kd_r"] = kd_loss(out.logits[:, lo:hi], rep.scores, self.hp.temperature)
                else:
                    terms["ce_r"] = F.cross_entropy(out.logits[:, lo:hi], rep.targets - lo)
            if hooks:
                terms.update(self.replay_terms(rep, out))
            for name, value in terms.items():
                total[name] = total.get(name, 0) + value / len(reps)
            last, prev_out = (rep, out), out
        return total, last

    # -- replay (docs/bir.md#replay-sampling) ----------------------------------------------------------
    @property
    def gated(self) -> bool:
        return self.net.gated or (self.gen is not None and self.gen.gated)

    def classes(self, lo: int, hi: int) -> torch.Tensor:
        return torch.arange(lo, hi, device=self.device)

    @torch.no_grad()
    def replay(self, x, y) -> list[Replay]:
        """Samples of the previous model: class-IL one batch over C_{t-1}; task-IL with a conditional generator
        ceil(B_r/(t−1)) per previous task, otherwise one batch scored by every previous task's head."""
        gen, t, batch = (self.prev_gen if self.gen is not None else self.prev), self.task, self.hp.batch_size
        if self.hp.scenario == "task" and (gen.prior == "gmm" or gen.gated):
            per_task = math.ceil(batch / t)
            return [self.labelled(*gen.sample(per_task, self.classes(*self.head(k)), self.generator), k)
                    for k in range(t)]
        x_r, c = gen.sample(batch, self.classes(0, self.ctx.task_classes[t - 1][-1] + 1), self.generator)
        return [self.labelled(x_r, c, k) for k in range(t)] if self.hp.scenario == "task" else [self.labelled(x_r, c)]

    @torch.no_grad()
    def labelled(self, x, sampled=None, k: int | None = None) -> Replay:
        """A replay batch scored by the teacher: over C_{t-1} (class-IL, k None) or over task k's classes."""
        lo, hi = (0, self.ctx.task_classes[self.task - 1][-1] + 1) if k is None else self.head(k)
        scores = self.prev.logits(x, from_features=self.internal)[:, lo:hi]
        targets = scores.argmax(1) + lo
        gate = None
        if self.gated:
            if self.hp.replay_gate == "sampled_class":
                gate = F.one_hot(sampled, self.ctx.n_classes).float()
            elif self.hp.distill:  # teacher's π, zero-padded around its classes
                gate = F.pad(F.softmax(scores / self.hp.temperature, 1), (lo, self.ctx.n_classes - hi))
            else:
                gate = F.one_hot(targets, self.ctx.n_classes).float()
        return Replay(x, scores, self.classes(lo, hi), gate, targets, self.head(self.task if k is None else k), sampled)

    # -- checkpointing --------------------------------------------------------------------------------
    def extra_state(self):
        state = super().extra_state()
        if self.gen is not None:
            state["opt_gen"] = self.opt_gen.state_dict()
        if self.si is not None:
            state["si"] = self.si.state_dict()
        return state

    def load_extra(self, state):
        super().load_extra(state)
        if self.gen is not None:
            self.opt_gen.load_state_dict(state["opt_gen"])
        if self.si is not None:
            self.si.load_state_dict(state["si"])


# Registry presets (docs/bir.md#generative-replay-presets). dg_prop defaults: [BIR] split CIFAR-100 class-IL
# (options.py, compare_CIFAR100_bir.py); config/hparams/bir.yaml sets the per-benchmark values. conv/fc sizes
# come from the YAML too.
_INT = dict(internal_replay=True, freeze_conv=True)
_BIR = dict(feedback=True, prior="gmm", dg_prop=0.7, distill=True, **_INT)
PRESETS = {
    "dgr": {},
    "dgr_distill": dict(distill=True),
    "dgr_rtf": dict(feedback=True),
    "dgr_con": dict(prior="gmm"),
    "dgr_gat": dict(dg_prop=0.7),
    "dgr_int": dict(_INT),
    "bir": dict(_BIR),
    "bir_si": {**_BIR, "dg_prop": 0.6, "si_c": 1e8},
    "bir_no_rtf": {**_BIR, "feedback": False},
    "bir_no_con": {**_BIR, "prior": "standard", "dg_prop": 0.6},
    "bir_no_gat": {**_BIR, "dg_prop": 0.0},
    "bir_no_int": {**_BIR, "internal_replay": False, "dg_prop": 0.9},  # frozen conv kept, pixel replay
    "bir_no_dis": {**_BIR, "distill": False, "dg_prop": 0.8},
}
for _name, _defaults in PRESETS.items():
    register(_name, **_defaults)(GenerativeReplay)
