"""Joint training, the upper bound (Mammoth `models/joint.py` @7ab9db9): nothing is learned while
the tasks stream by; after the last task the network is re-initialised and trained on the union.

`joint_mode: final` (faithful) leaves the accuracy rows before the last task to the untrained network,
so forgetting/BWT/FWT are not meaningful; `incremental` [OURS] retrains from scratch on tasks 1..t
after every task, filling the whole matrix at T times the cost.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...scenarios import Task
from .. import register
from ..base import ContinualMethod, Hparams


@dataclass
class JointHparams(Hparams):
    joint_mode: Literal["final", "incremental"] = "final"


@register("joint")
class Joint(ContinualMethod):
    Hparams = JointHparams

    def __init__(self, net, hp, ctx):
        super().__init__(net, hp, ctx)
        self.seen: list[Task] = []

    @classmethod
    def planned_steps(cls, hp, task_sizes, buffer_size):
        """One training on the union after the last task (`final`), or on tasks 1..t after every task."""
        prefixes = [sum(task_sizes[:t + 1]) for t in range(len(task_sizes))]
        unions = prefixes[-1:] if hp.joint_mode == "final" else prefixes
        return sum(hp.n_epochs * math.ceil(n / hp.batch_size) for n in unions)

    @property
    def full_accuracy_matrix(self) -> bool:
        return self.hp.joint_mode == "incremental"

    def observe(self, x, y, x_raw):
        loss = F.cross_entropy(self.net(x), y)
        self.step(loss)
        return {"loss": loss}

    def train_task(self, task, on_epoch=None):
        self.seen.append(task)
        last = task.index == len(self.ctx.task_classes) - 1
        if not (last or self.hp.joint_mode == "incremental"):
            return []
        self.net.load_state_dict(self.ctx.make_net().to(self.device).state_dict())
        self.opt = self.make_optimizer()
        union = Task(task.index, sum((t.classes for t in self.seen), ()), torch.cat([t.x for t in self.seen]),
                     torch.cat([t.y for t in self.seen]))
        return super().train_task(union, on_epoch)

    def extra_state(self):
        return {"seen": [(t.index, t.classes, t.x, t.y) for t in self.seen]}

    def load_extra(self, state):
        self.seen = [Task(i, c, x.to(self.device), y.to(self.device)) for i, c, x, y in state["seen"]]
