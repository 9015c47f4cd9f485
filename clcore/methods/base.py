"""The method protocol and the default task loop.

A method owns its network, optimiser, generator and (if any) buffer. The default `train_task` loops
epochs and batches of a task's device-resident data and calls `observe`, which performs one optimiser
step and returns its losses as device tensors ({"loss": total, ...components}). Nothing in the loop
synchronises with the device: losses are summed on the device and copied once per epoch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..augment import Transform
from ..buffers import ReservoirBuffer
from ..errors import NonFiniteLossError
from ..results import metric_rows
from ..scenarios import ClassILRows
from ..speed import Precision


@dataclass
class Hparams:
    lr: float = 0.1          # Mammoth best_args seq-cifar10 sgd (docs/baselines.md#sources-of-the-values)
    n_epochs: int = 1        # set by the benchmark protocol
    batch_size: int = 32     # set by the benchmark protocol
    optim_wd: float = 0.0    # Mammoth default: no weight decay
    optim_mom: float = 0.0   # Mammoth default: plain SGD
    lr_milestones: tuple[int, ...] = ()  # set by the benchmark protocol: epochs where lr *= lr_gamma, every task
    lr_gamma: float = 0.1
    # speed options (docs/speed.md): how the run computes, not what; set by the benchmark protocol
    channels_last: bool = False  # NHWC conv weights and activations
    precision: Precision = "fp32"  # bf16: training steps and evaluations under autocast
    compile: bool = False  # torch.compile of the backbone's forward
    class_il_rows: ClassILRows = "seen"  # set by the benchmark protocol: the classes a class-IL row chooses among


@dataclass
class Context:
    """What a method knows about the benchmark and the run."""

    n_classes: int
    task_classes: list[tuple[int, ...]]
    transform: Transform
    device: torch.device
    seed: int
    buffer_size: int
    make_net: Callable[[], nn.Module]  # a freshly initialised backbone (Joint re-initialises)
    reset_optimizer_each_task: bool = False
    artefacts: dict = field(default_factory=dict)  # pretrained inputs by name, e.g. "saliency_predictor": path
    input_shape: tuple[int, ...] = ()  # (C, H, W) of one input (models that build their own network: BI-R)
    extra_data: dict = field(default_factory=dict)  # tensors the family added to the benchmark (WSCL: dreams)


class LossLog:
    """Per-epoch sums of a task's losses on the device, and the first step with a non-finite loss."""

    def __init__(self, task: int, device):
        self.task, self.sums, self.steps = task, {}, 0
        self.first_bad_step = torch.tensor(-1, device=device)

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            value = value.detach()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        if "loss" in losses:
            bad = ~torch.isfinite(losses["loss"].detach()) & (self.first_bad_step < 0)
            self.first_bad_step = torch.where(bad, self.steps, self.first_bad_step)
        self.steps += 1

    def flush(self, epoch: int, steps_in_epoch: int) -> list[dict]:
        """Rows of per-epoch mean losses; raises NonFiniteLossError naming the task and step."""
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise NonFiniteLossError(
                f"non-finite loss in task {self.task + 1} (index {self.task}), epoch {epoch + 1}, "
                f"step {bad + 1} of the task; the last checkpoint holds the state after the previous task. "
                f"Lower the learning rate or check the inputs."
            )
        rows = [metric_rows(f"loss/{name}", float(total) / max(steps_in_epoch, 1), after_task=self.task, epoch=epoch,
                            step=self.steps) for name, total in self.sums.items()]
        self.sums = {}
        return rows


class ContinualMethod(nn.Module):
    Hparams = Hparams
    uses_buffer = False  # True: the run's buffer size is the method's memory
    random_init_probe = True  # False where the untrained model cannot predict (FWT undefined)
    full_accuracy_matrix = True  # False where rows before the last task are not a trained model's
    frozen: tuple[str, ...] = ()  # submodules kept in eval mode (teacher copies)
    stream_fields: tuple[str, ...] = ()  # per-sample dataset fields observe() receives (SER: "sal")

    @classmethod
    def planned_steps(cls, hp, task_sizes: list[int], buffer_size: int) -> int:
        """The optimiser steps a run will take, before it runs (clcore.estimate): `n_epochs` passes over each
        task's training examples in batches of `batch_size`."""
        return sum(hp.n_epochs * math.ceil(n / hp.batch_size) for n in task_sizes)

    def __init__(self, net: nn.Module, hp: Hparams, ctx: Context):
        super().__init__()
        self.net, self.hp, self.ctx = net, hp, ctx
        self.transform, self.device = ctx.transform, ctx.device
        self.generator = torch.Generator(device=ctx.device).manual_seed(ctx.seed)
        self.opt = self.make_optimizer()
        self.buffer = self.make_buffer() if self.uses_buffer else None
        self.task = -1

    # -- protocol -----------------------------------------------------------------------------------
    def begin_task(self, task) -> None:
        self.task = task.index
        if self.ctx.reset_optimizer_each_task and task.index > 0:
            self.opt = self.make_optimizer()

    def observe(self, x: torch.Tensor, y: torch.Tensor, x_raw: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def end_task(self, task) -> None:
        pass

    def begin_epoch(self, epoch: int, task) -> None:
        """Before each epoch of the default task loop: the learning rate of the protocol's step schedule."""
        for group in self.opt.param_groups:
            group["lr"] = self.epoch_lr(epoch)

    def end_epoch(self, epoch: int) -> list[dict]:
        """After each epoch of the default task loop: metric rows the method logs per epoch (AKR: its mixing
        weights)."""
        return []

    def run_info(self, rows: list[dict]) -> dict:
        """Entries the method adds to run.json, from the run's metric rows (AKR: its reconstruction version and
        the collapse flag of its mixing weights)."""
        return {}

    def look_ahead(self, scenario, next_task: int) -> None:
        """Called after a task ends, before the evaluation whose row probes task `next_task` (FWT). WSCL
        assigns that task's output heads here; other methods do nothing."""

    def forward(self, x):
        return self.net(x)

    def classify(self, x, stream: bool = False):
        """Logits of the classifier; `stream` marks the current batch (SER conditions it on the saliency
        features computed in its saliency step, and a replayed batch on fresh ones)."""
        return self.net(x)

    def predict(self, x):
        """Scores over all classes; the arg-max is the class-IL prediction."""
        return self.classify(x)

    def test_scores(self, x_raw: torch.Tensor, transform, batch_size: int) -> torch.Tensor:
        """`predict` over raw test images in batches (AR1 overrides it to reuse its frozen layers' activations)."""
        return torch.cat([self.predict(transform.test(x_raw[start:start + batch_size]))
                          for start in range(0, x_raw.shape[0], batch_size)])

    def evaluation_rows(self, scenario, after_task: int) -> list[dict]:
        """Metric rows beyond accuracy, logged after every task (SER: saliency metrics)."""
        return []

    def train_task(self, task, on_epoch=None) -> list[dict]:
        log, rows = LossLog(task.index, self.device), []
        n, bs = task.x.shape[0], self.hp.batch_size
        for epoch in range(self.hp.n_epochs):
            self.begin_epoch(epoch, task)
            start_steps = log.steps
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                x_raw, y = task.x[idx], task.y[idx]
                extras = {name: values[idx] for name, values in task.fields.items()}
                log.add(self.observe(self.transform.train(x_raw, self.generator), y, x_raw, **extras))
            rows += log.flush(epoch, log.steps - start_steps) + self.end_epoch(epoch)
            if on_epoch:
                on_epoch(epoch)
        return rows

    # -- helpers ------------------------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=self.hp.lr, momentum=self.hp.optim_mom,
                               weight_decay=self.hp.optim_wd)

    def epoch_lr(self, epoch: int) -> float:
        """The protocol's step schedule, restarted at every task (Mammoth's per-task MultiStepLR)."""
        return self.hp.lr * self.hp.lr_gamma ** sum(epoch >= m for m in self.hp.lr_milestones)

    def make_buffer(self):
        """The replay memory of methods with `uses_buffer` (default: a reservoir of ctx.buffer_size)."""
        return ReservoirBuffer(self.ctx.buffer_size, self.device, self.generator)

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def frozen_copy(self, module: nn.Module) -> nn.Module:
        """A deep copy with gradients off (the caller registers it under a name listed in `frozen`)."""
        teacher = copy.deepcopy(module).eval()
        return teacher.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    # -- checkpointing: nn.Module.state_dict() carries parameters; this carries the rest -----------------
    def extra_state(self) -> dict:
        return {"buffer": self.buffer.state_dict()} if self.uses_buffer else {}

    def load_extra(self, state: dict) -> None:
        if self.uses_buffer:
            self.buffer.load_state_dict(state["buffer"])

    def get_extra_state(self):
        return {"opt": self.opt.state_dict(), "rng": self.generator.get_state(), "task": self.task,
                "method": self.extra_state()}

    def set_extra_state(self, state):
        self.opt.load_state_dict(state["opt"])
        self.generator.set_state(state["rng"])
        self.task = state["task"]
        self.load_extra(state["method"])


@torch.no_grad()
def classifier_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, transform: Transform,
                        batch_size: int = 512) -> float:
    """Top-1 accuracy (%) of a plain classifier in eval mode on uint8 images `x` (the families' pretraining
    recipes keep their best or report their final epoch by it)."""
    model.eval()
    correct = sum(int((model(transform.test(x[i:i + batch_size])).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    model.train()
    return 100.0 * correct / len(y)

