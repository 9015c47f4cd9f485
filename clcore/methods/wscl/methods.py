"""Wake-Sleep Consolidated Learning (Sorrenti et al., IEEE TNNLS 2024), as its public code implements it
(docs/wscl.md): code-faithful WSCL, without the NREM plasticity rule, which is not public.

Four mechanisms around a replay method (ER-ACE, ER or DER++), each a boolean hyperparameter:
  dreams         images of auxiliary classes train the still-free output heads, one class per head, plain CE;
  head_matching  a new task's classes take the free heads the model already maps most of their images to;
  freezing       in the first epoch of tasks >= 2, copies of the model with no new freezing or with the backbone
                 frozen up to each candidate block train side by side; the copy of least held-out loss wins;
  replay         the base method replays real samples; dreams never enter its buffer.
Everything the base method sees is in head indices; `predict` reads the heads back as classes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...buffers import ReservoirBuffer
from ...errors import InputError
from ...results import RANDOM_INIT_ROW, SETTINGS, accuracy_rows, metric_rows
from .. import register
from ..base import ContinualMethod, LossLog
from ..baselines import DER, ER, ERACE, ERACEHparams
from .freezing import CANDIDATES, FreezingEval, criterion, freeze_up_to, frozen_blocks, pick, trainable_candidates
from .heads import Holdout, draw_dream_classes, holdout_positions, match_heads

BASES = {"er_ace": ERACE, "er": ER, "derpp": DER}


@dataclass
class WSCLHparams(ERACEHparams):
    base: Literal["er_ace", "er", "derpp"] = "er_ace"  # the replay method WSCL trains through
    alpha: float = 0.1    # DER++ logit replay (base derpp): WSCL best_args seq-cifar10 buffer 200
    beta: float = 0.5     # DER++ label replay, idem
    dreams: bool = True         # auxiliary classes on the free heads
    head_matching: bool = True  # greedy forward head assignment; false: free heads in order
    freezing: bool = True       # the epoch-0 freezing search
    replay: bool = True         # false: no buffer, the paper's "Wake+REM" row (registry er_ace_wscl_norehearsal)
    val_dataset_size: int = 1000   # V, held out of each task >= 2 for the search: WSCL default (--validation 1)
    freezing_buff_size: int = 200  # F, held out of each task for the next task's search: WSCL default
    freezing_eval: FreezingEval = "training_and_buff"  # the paper setting
    freezing_candidates: tuple[str, ...] = CANDIDATES  # upstream: layer1.0 .. layer3.1, in forward order
    dream_per_class: int | None = None  # images per dream class, a seeded subset; null = all (paper)
    # upstream quirks, faithful by default (docs/wscl.md#upstream-quirks)
    epoch0_state: Literal["legacy", "winner"] = "legacy"  # legacy: only the winner's network is kept
    freeze_eval_mode: Literal["train", "eval"] = "train"  # copies ranked with batch BN statistics
    freeze_eval_aug: Literal["train", "none"] = "train"   # held-out images augmented as training images
    freeze_round: int | None = 2                           # losses rounded before the arg-min
    holdout: Holdout = "legacy"
    fwt_reference: Literal["identity", "matched"] = "identity"  # the heads the untrained network is read through
    forward_subset: float = 0.9                        # share of each new class's images head matching looks at
    forward_aug: Literal["train", "none"] = "train"    # ... augmented as training images


class RealSamplesOnly(ReservoirBuffer):
    """The base method's reservoir, offered only samples whose label is a head of the current task: dream images
    never enter it. `heads` is None while replay is off."""

    heads: torch.Tensor | None = None

    def add(self, **fields: torch.Tensor) -> None:
        if self.heads is not None:
            keep = torch.isin(fields["y"], self.heads)
            super().add(**{name: value[keep] for name, value in fields.items()})


@dataclass
class TrainingSet:
    """A task's training set as indices, so that no image is copied: its kept real rows, then its dream rows
    (a paper-scale dream set holds tens of GB), with the head of each."""

    real_x: torch.Tensor
    real_rows: torch.Tensor
    dream_x: torch.Tensor | None
    dream_rows: torch.Tensor
    heads: torch.Tensor

    def __len__(self) -> int:
        return self.heads.shape[0]

    @property
    def n_real(self) -> int:
        return self.real_rows.shape[0]

    @property
    def n_dreams(self) -> int:
        return self.dream_rows.shape[0]

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Raw images at positions `idx` of the set (real first, then dreams), gathered without a host sync."""
        if not self.n_dreams:
            return self.real_x[self.real_rows[idx]]
        if not self.n_real:
            return self.dream_x[self.dream_rows[idx - self.n_real]]
        real = self.real_x[self.real_rows[idx.clamp(max=self.n_real - 1)]]
        dream = self.dream_x[self.dream_rows[(idx - self.n_real).clamp(min=0)]]
        return torch.where((idx < self.n_real)[:, None, None, None], real, dream)


class _InitialWeights:
    """The untrained network read through the final head map (fwt_reference: matched), for `train.evaluate`."""

    def __init__(self, wscl: "WSCL"):
        self.wscl, self.hp = wscl, wscl.hp

    def eval(self):
        self.wscl.initial_net.eval()

    def train(self):
        pass

    def predict(self, x):
        return self.wscl.initial_net(x)[:, self.wscl.class_head]


class WSCL(ContinualMethod):
    Hparams = WSCLHparams
    uses_buffer = True

    @classmethod
    def planned_steps(cls, hp, task_sizes, buffer_size):
        """An upper bound: every candidate copy in each search epoch, and dream classes as large as a real one
        on every free head."""
        steps = 0
        for t, n in enumerate(task_sizes):
            dreams = n * (len(task_sizes) - 1 - t) if hp.dreams else 0
            copies = 1 + len(hp.freezing_candidates) if hp.freezing and t > 0 else 1
            steps += int(np.ceil((n + dreams) / hp.batch_size)) * (hp.n_epochs - 1 + copies)
        return steps

    def __init__(self, net: nn.Module, hp: WSCLHparams, ctx):
        nn.Module.__init__(self)  # the base method owns the network, optimiser, generator and buffer
        if hp.replay != self.uses_buffer:
            raise InputError("WSCL without replay (replay: false) runs without a buffer: use the registry name "
                             "er_ace_wscl_norehearsal, with buffer size 0" if self.uses_buffer else
                             "er_ace_wscl_norehearsal trains without a buffer (replay: false); replay is er_ace_wscl")
        self.hp, self.ctx, self.transform, self.device = hp, ctx, ctx.transform, ctx.device
        self.base = BASES[hp.base](net, hp, ctx)
        self.base.buffer = RealSamplesOnly(ctx.buffer_size, ctx.device, self.base.generator)
        self.task = -1
        self.random_init_probe = hp.fwt_reference == "identity"
        if hp.fwt_reference == "matched":
            self.initial_net, self.frozen = self.frozen_copy(net), ("initial_net",)
        n, cpt = ctx.n_classes, len(ctx.task_classes[0])
        # the head map: head_class[h] = the class on head h (-1 while free); class_head its inverse, free heads
        # standing in for the classes not assigned yet, in order
        self.register_buffer("head_class", torch.full((n,), -1, dtype=torch.long, device=ctx.device))
        self.register_buffer("class_head", torch.arange(n, device=ctx.device))
        self._assign(ctx.task_classes[0], list(range(cpt)))
        self.register_buffer("dream_rows", torch.zeros(0, dtype=torch.long, device=ctx.device))
        self.register_buffer("dream_head", torch.zeros(0, dtype=torch.long, device=ctx.device))
        if hp.dreams:
            self._draw_dreams()
        self.freezing_buffer: dict[str, torch.Tensor] | None = None  # B of the previous task: images, heads
        if hp.freezing and (hp.freezing_eval != "buffer" and hp.val_dataset_size <= 0
                            or hp.freezing_eval != "training" and hp.freezing_buff_size <= 0):
            raise InputError(f"the freezing search ranks copies on held-out images: freezing_eval "
                             f"'{hp.freezing_eval}' needs val_dataset_size and/or freezing_buff_size > 0")

    # the base method's state, read through
    net = property(lambda self: self.base.net)
    opt = property(lambda self: self.base.opt)
    generator = property(lambda self: self.base.generator)
    buffer = property(lambda self: self.base.buffer)

    # -- heads and dreams -------------------------------------------------------------------------------
    def _assign(self, classes, heads) -> None:
        self.head_class[torch.tensor(heads, device=self.device)] = torch.tensor(classes, device=self.device)
        assigned = self.head_class >= 0
        unassigned = torch.ones_like(assigned)
        unassigned[self.head_class[assigned]] = False
        self.class_head[self.head_class[assigned]] = assigned.nonzero().flatten()
        self.class_head[unassigned.nonzero().flatten()] = (~assigned).nonzero().flatten()

    def free_heads(self) -> list[int]:
        return (self.head_class < 0).nonzero().flatten().tolist()

    def _draw_dreams(self) -> None:
        """Head h dreams of auxiliary class D[h], drawn once from the run's generator; `dream_per_class` keeps a
        seeded subset of each class's images."""
        if "dream_y" not in self.ctx.extra_data:
            raise InputError("this benchmark has no dream source (docs/wscl.md#dream-sources): run WSCL with "
                             "dreams: false, or on a benchmark that has one")
        aux_y = self.ctx.extra_data["dream_y"]
        classes = draw_dream_classes(int(aux_y.max()) + 1, self.ctx.n_classes, self.generator)
        rows, heads = [], []
        for h, c in enumerate(classes.tolist()):
            idx = (aux_y == c).nonzero().flatten()
            if self.hp.dream_per_class is not None:
                keep = torch.randperm(idx.numel(), generator=self.generator, device=self.device)
                idx = idx[keep[: self.hp.dream_per_class].sort().values]
            rows.append(idx), heads.append(torch.full_like(idx, h))
        self.dream_rows, self.dream_head = torch.cat(rows), torch.cat(heads)

    def look_ahead(self, scenario, next_task: int) -> None:
        """The next task's classes take their heads before the evaluation that probes them (FWT), as upstream
        assigns them before its forward-transfer evaluation."""
        task = scenario.task(next_task)
        free = self.free_heads()
        if not self.hp.head_matching:
            self._assign(task.classes, free[: len(task.classes)])
            return
        counts = torch.zeros(len(task.classes), len(free), device=self.device)
        free_t = torch.tensor(free, device=self.device)
        self.net.eval()
        with torch.no_grad():
            for r, c in enumerate(task.classes):
                idx = (task.y == c).nonzero().flatten()
                take = torch.randperm(idx.numel(), generator=self.generator, device=self.device)
                x = task.x[idx[take[: round(self.hp.forward_subset * idx.numel())]]]
                for start in range(0, x.shape[0], 256):
                    batch = x[start:start + 256]
                    batch = (self.transform.train(batch, self.generator) if self.hp.forward_aug == "train"
                             else self.transform.test(batch))
                    predicted = self.net(batch).argmax(1)
                    counts[r] += (predicted[:, None] == free_t[None, :]).sum(0)
        self.net.train()
        self._assign(task.classes, match_heads(counts.cpu().numpy(), free))

    # -- one task -----------------------------------------------------------------------------------------
    def begin_task(self, task) -> None:
        self.task = task.index
        self.base.begin_task(task)
        heads = self.class_head[torch.tensor(task.classes, device=self.device)]
        self.buffer.heads = heads if self.hp.replay else None

    def _task_data(self, task) -> tuple["TrainingSet", dict, dict]:
        """(training set, validation set, freezing buffer) of a task: the task's images minus the held-out
        ones, then the dream images of every head still free."""
        keep = torch.ones(task.y.shape[0], dtype=torch.bool, device=self.device)
        held = {"val": [], "buffer": []}
        for c in task.classes:
            idx = (task.y == c).nonzero().flatten()
            train, buf, val = holdout_positions(idx.numel(), task.index == 0, self.hp.val_dataset_size,
                                                self.hp.freezing_buff_size, len(task.classes), self.hp.holdout)
            keep[idx[: train.start]] = False
            held["buffer"].append(idx[buf.start:buf.stop]), held["val"].append(idx[val.start:val.stop])
        sets = {name: {"x": task.x[torch.cat(rows)], "y": self.class_head[task.y[torch.cat(rows)]]}
                for name, rows in held.items()}
        real_rows = keep.nonzero().flatten()
        dream_rows, heads = real_rows[:0], self.class_head[task.y[real_rows]]
        if self.hp.dreams:
            free = torch.isin(self.dream_head, torch.tensor(self.free_heads(), dtype=torch.long, device=self.device))
            dream_rows = self.dream_rows[free]
            heads = torch.cat([heads, self.dream_head[free]])
        return TrainingSet(task.x, real_rows, self.ctx.extra_data.get("dream_x"), dream_rows, heads), sets["val"], \
            sets["buffer"]

    def train_task(self, task, on_epoch=None) -> list[dict]:
        t, hp, g = task.index, self.hp, self.generator
        data, val_set, freezing_set = self._task_data(task)
        rows = [metric_rows(f"wscl/head/class{c}", h, after_task=t)
                for c, h in zip(task.classes, self.class_head[list(task.classes)].tolist())]
        rows.append(metric_rows("wscl/dream_images", data.n_dreams, after_task=t))
        log = LossLog(t, self.device)
        for epoch in range(hp.n_epochs):
            start_steps = log.steps
            batches = self._batches(data, g)
            if hp.freezing and t > 0 and epoch == 0:
                rows += self._freezing_search(batches, val_set, t)
            else:
                self.base.begin_epoch(epoch, task)
                for x, y, x_raw in batches:
                    log.add(self.base.observe(x, y, x_raw))
                rows += log.flush(epoch, log.steps - start_steps)
            if data.n_dreams:
                rows.append(metric_rows("wscl/dream_train_accuracy", self._dream_accuracy(data), after_task=t,
                                        epoch=epoch))
            if on_epoch:
                on_epoch(epoch)
        rows.append(metric_rows("wscl/frozen_blocks", len(frozen_blocks(self.net, hp.freezing_candidates)),
                                after_task=t))
        self.freezing_buffer = freezing_set
        return rows

    def _batches(self, data: "TrainingSet", g):
        """The epoch's shuffled, augmented batches, drawn lazily from the main generator."""
        perm = torch.randperm(len(data), generator=g, device=self.device)
        for start in range(0, len(data), self.hp.batch_size):
            idx = perm[start:start + self.hp.batch_size]
            x_raw = data.images(idx)
            yield self.transform.train(x_raw, g), data.heads[idx], x_raw

    @torch.no_grad()
    def _dream_accuracy(self, data: "TrainingSet", at_most: int = 2048) -> float:
        """Training accuracy (%) on the task's dream images, in eval mode, arg-max over all heads; on an evenly
        strided subset of at most `at_most` of them (a paper-scale task has ~10^5 dream images)."""
        idx = torch.arange(data.n_real, len(data), -(-data.n_dreams // at_most), device=self.device)
        self.net.eval()
        correct = sum(int((self.net(self.transform.test(data.images(i))).argmax(1) == data.heads[i]).sum())
                      for i in idx.split(256))
        self.net.train()
        return 100.0 * correct / idx.numel()

    # -- the epoch-0 freezing search ----------------------------------------------------------------------
    def _freezing_search(self, batches, val_set, t: int) -> list[dict]:
        """Train copies 0..K through the epoch on the same batches, rank them on held-out loss, keep the winner's
        network (and, with epoch0_state: winner, its buffer, optimiser and replay state too)."""
        hp = self.hp
        candidates = trainable_candidates(self.net, hp.freezing_candidates)
        copies = [self._copy(t, k) for k in range(len(candidates) + 1)]
        for copy_k, block in zip(copies[1:], candidates):
            freeze_up_to(copy_k.net, block)
        logs = [LossLog(t, self.device) for _ in copies]
        for copy_k in copies:
            copy_k.begin_epoch(0, None)
        for x, y, x_raw in batches:
            for copy_k, log in zip(copies, logs):
                log.add(copy_k.observe(x, y, x_raw))
        epoch_rows = [log.flush(0, log.steps) for log in logs]  # a non-finite loss in any copy stops the run
        held = {"val": self._held_out(val_set), "buffer": self._held_out(self.freezing_buffer)}
        rows, scores = [], []
        for k, copy_k in enumerate(copies):
            (val_loss, val_acc), (buf_loss, _) = (self._held_out_loss(copy_k.net, held[s]) for s in ("val", "buffer"))
            scores.append(criterion(val_loss, buf_loss, hp.freezing_eval, hp.freeze_round))
            rows += [metric_rows(f"wscl/search/k{k}/{name}", value, after_task=t, epoch=0) for name, value in
                     (("val_loss", val_loss), ("val_accuracy", val_acc), ("buffer_loss", buf_loss),
                      ("criterion", scores[-1]))]
        k = pick(scores)
        winner = copies[k]
        if hp.epoch0_state == "winner":
            self.base.load_state_dict(winner.state_dict())
        else:
            self.base.net.load_state_dict(winner.net.state_dict())
        if k > 0:
            freeze_up_to(self.net, candidates[k - 1])
        return [*epoch_rows[k], *rows, metric_rows("wscl/freeze_choice", k, after_task=t)]

    def _copy(self, t: int, k: int):
        """An independent copy of the base method (network, optimiser, buffer, replay state), whose generator is
        reseeded from (seed, task, copy) so its replay draws do not depend on the other copies."""
        clone = copy.deepcopy(self.base)
        clone.generator.manual_seed(int(np.random.SeedSequence([self.ctx.seed, t, k]).generate_state(1)[0]))
        return clone

    def _held_out(self, held: dict | None) -> dict | None:
        """A held-out set as the copies see it: augmented once like training images (legacy) or not."""
        if held is None or held["y"].numel() == 0:
            return None
        x = (self.transform.train(held["x"], self.generator) if self.hp.freeze_eval_aug == "train"
             else self.transform.test(held["x"]))
        return {"x": x, "y": held["y"]}

    @torch.no_grad()
    def _held_out_loss(self, net, held: dict | None) -> tuple[float, float]:
        """(mean over batches of the all-head CE, accuracy %) of a copy; NaN without a held-out set. Train mode
        (legacy) normalises with each batch's statistics and updates the copy's running statistics."""
        if held is None:
            return float("nan"), float("nan")
        net.train(self.hp.freeze_eval_mode == "train")
        losses, correct = [], 0
        for start in range(0, held["y"].shape[0], self.hp.batch_size):
            logits = net(held["x"][start:start + self.hp.batch_size])
            y = held["y"][start:start + self.hp.batch_size]
            losses.append(float(F.cross_entropy(logits, y)))
            correct += int((logits.argmax(1) == y).sum())
        net.train()
        return float(np.mean(losses)), 100.0 * correct / held["y"].shape[0]

    # -- evaluation -----------------------------------------------------------------------------------------
    def forward(self, x):
        return self.net(x)

    def predict(self, x):
        """Scores by class: each class reads its head (a not-yet-assigned class a free head, in order), so the
        class-IL arg-max runs over all heads and task-IL masks a task's assigned heads."""
        return self.net(x)[:, self.class_head]

    def evaluation_rows(self, scenario, after_task: int) -> list[dict]:
        """With fwt_reference: matched, the untrained network's row read through the final head map."""
        if self.hp.fwt_reference != "matched" or after_task != scenario.n_tasks - 1:
            return []
        from ...train import evaluate

        acc = evaluate(_InitialWeights(self), scenario, RANDOM_INIT_ROW)
        return [r for s in SETTINGS for r in accuracy_rows(acc[s], s, RANDOM_INIT_ROW)]

    # -- checkpointing: the base method carries its own state; this carries WSCL's --------------------------
    def get_extra_state(self):
        return {"task": self.task, "freezing_buffer": self.freezing_buffer,
                "frozen": frozen_blocks(self.net, self.hp.freezing_candidates)}

    def set_extra_state(self, state):
        self.task, self.freezing_buffer = state["task"], state["freezing_buffer"]
        if state["frozen"]:
            freeze_up_to(self.net, state["frozen"][-1])


register("er_ace_wscl")(WSCL)
register("er_wscl", base="er")(WSCL)
register("derpp_wscl", base="derpp")(WSCL)
register("er_ace_wscl_nodream", dreams=False)(WSCL)
register("er_ace_wscl_nomatch", head_matching=False)(WSCL)
register("er_ace_wscl_nofreeze", freezing=False)(WSCL)


@register("er_ace_wscl_norehearsal", replay=False)
class WSCLWithoutReplay(WSCL):
    """The paper's buffer-free "Wake+REM" row: ER-ACE's masked stream loss, no buffer."""

    uses_buffer = False
