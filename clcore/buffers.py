"""Replay buffers as preallocated device tensors.

Images are stored non-augmented as uint8 and augmented when sampled. `num_seen` is a host int, so
`len(buffer)` never synchronises with the device.
"""

from __future__ import annotations

import typing
from typing import Literal

import torch

Selection = Literal["herding", "random"]  # how ClassBalancedBuffer picks exemplars
# herding as Mammoth (`exclude`: each pick among the unpicked) or as the original iCaRL code and inclearn
# (`icarl_w`: a running target that may re-pick an exemplar; docs/baselines.md#herding-variants)
HerdingVariant = Literal["exclude", "icarl_w"]


class ReservoirBuffer:
    """Reservoir sampling (Vitter's algorithm R) over every example offered, as Mammoth's buffer.

    Fields are allocated on the first `add`, from the tensors given (e.g. x, y, logits, task). Storage
    has one extra "discard" row: losing and dropped samples are written there, so a batch insertion is
    one scatter whose real slots are all distinct (no reliance on index_put_ ordering).
    """

    def __init__(self, capacity: int, device, generator: torch.Generator):
        self.capacity, self.device, self.generator = capacity, torch.device(device), generator
        self.num_seen = 0
        self.data: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return min(self.num_seen, self.capacity)

    def is_empty(self) -> bool:
        return self.num_seen == 0

    def draw(self, n: torch.Tensor) -> torch.Tensor:
        """One uniform integer in {0..n_k} per offered sample (a method so tests can stub it)."""
        u = torch.rand(n.shape[0], generator=self.generator, device=self.device, dtype=torch.float64)
        return (u * (n + 1)).floor().long()

    def target_slots(self, batch_size: int) -> torch.Tensor:
        """Slot of each offered sample (`capacity` = discarded), later samples winning duplicates."""
        m = self.capacity
        n = self.num_seen + torch.arange(batch_size, device=self.device)
        r = self.draw(n)
        slot = torch.where(n < m, n, torch.where(r < m, r, torch.full_like(r, m)))
        position = torch.arange(batch_size, device=self.device)
        winner = torch.full((m + 1,), -1, dtype=torch.long, device=self.device)
        winner.scatter_reduce_(0, slot, position, reduce="amax")
        return torch.where(winner[slot] == position, slot, torch.full_like(slot, m))

    def add(self, **fields: torch.Tensor) -> None:
        batch_size = next(iter(fields.values())).shape[0]
        if not self.data:
            self.data = {k: torch.zeros((self.capacity + 1, *v.shape[1:]), device=self.device,  # logits fp32 in bf16
                                        dtype=torch.float32 if v.is_floating_point() else v.dtype)
                         for k, v in fields.items()}
        slots = self.target_slots(batch_size)
        for k, v in fields.items():
            self.data[k][slots] = v.detach().to(self.data[k].dtype)
        self.num_seen += batch_size

    def sample_indices(self, k: int) -> torch.Tensor:
        """min(k, len) distinct filled slots, uniformly without replacement."""
        return torch.randperm(len(self), generator=self.generator, device=self.device)[:k]

    def sample(self, k: int, transform=None) -> dict[str, torch.Tensor]:
        """Stored fields of k distinct slots; images augmented and normalised when `transform` is given."""
        idx = self.sample_indices(k)
        out = {name: t[idx] for name, t in self.data.items()}
        if transform is not None:
            out["x"] = transform.train(out["x"], self.generator)
        out["index"] = idx
        return out

    def state_dict(self) -> dict:
        return {"num_seen": self.num_seen, "data": self.data, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.num_seen = state["num_seen"]
        self.data = {k: v.to(self.device) for k, v in state["data"].items()}
        self.generator.set_state(state["rng"])


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL's herding: greedily pick m rows whose running mean stays closest to the mean feature."""
    mu = features.mean(0)
    picked = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    running_sum = torch.zeros_like(mu)
    order = []
    for k in range(min(m, features.shape[0])):
        cost = torch.linalg.vector_norm(mu - (running_sum + features) / (k + 1), dim=1)
        i = int(torch.argmin(cost.masked_fill(picked, float("inf"))))
        order.append(i)
        picked[i] = True
        running_sum += features[i]
    return torch.tensor(order, dtype=torch.long, device=features.device)


def herding_icarl_w(features: torch.Tensor, m: int, max_iterations: int = 1000) -> torch.Tensor:
    """The original iCaRL code's herding: w starts at the mean feature μ; each iteration picks the feature of
    largest ⟨w, φ⟩, appends it if it is new, and moves w by μ − φ, until m distinct picks or `max_iterations`;
    indices never picked fill what is left, in ascending order."""
    mu, n = features.mean(0), features.shape[0]
    w, order = mu.clone(), []
    for _ in range(max_iterations):
        if len(order) == min(m, n):
            break
        k = int(torch.argmax(features @ w))
        if k not in order:
            order.append(k)
        w += mu - features[k]
    order += [i for i in range(n) if i not in order][: min(m, n) - len(order)]
    return torch.tensor(order, dtype=torch.long, device=features.device)


HERDING = {"exclude": herding, "icarl_w": herding_icarl_w}


class ClassBalancedBuffer:
    """Exemplar memory with m = capacity // seen_classes examples per class (iCaRL, AKR, BI-R).

    `update` keeps the first m stored exemplars of each past class and selects m exemplars of every
    new class by herding on the given features (or uniformly at random).
    """

    def __init__(self, capacity: int, device, generator: torch.Generator, selection: Selection = "herding",
                 herding_variant: HerdingVariant = "exclude"):
        if selection not in typing.get_args(Selection):
            raise ValueError(f"selection must be one of {typing.get_args(Selection)}, not {selection!r}")
        self.capacity, self.device, self.generator, self.selection = capacity, torch.device(device), generator, selection
        self.herd = HERDING[herding_variant]
        self.x = self.y = None

    def __len__(self) -> int:
        return 0 if self.y is None else self.y.shape[0]

    def update(self, x_new: torch.Tensor, y_new: torch.Tensor, n_seen_classes: int, features=None) -> None:
        """x_new/y_new: the finished task's non-augmented images; features: callable x -> φ(x)."""
        m = self.capacity // n_seen_classes
        xs, ys = [], []
        if self.y is not None:
            for c in self.y.unique(sorted=True).tolist():
                idx = (self.y == c).nonzero().flatten()[:m]
                xs.append(self.x[idx]), ys.append(self.y[idx])
        for c in y_new.unique(sorted=True).tolist():
            idx = (y_new == c).nonzero().flatten()
            if self.selection == "herding":
                chosen = idx[self.herd(features(x_new[idx]), m)]
            else:
                chosen = idx[torch.randperm(idx.numel(), generator=self.generator, device=self.device)[:m]]
            xs.append(x_new[chosen]), ys.append(y_new[chosen])
        self.x, self.y = torch.cat(xs), torch.cat(ys)

    def state_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.x = None if state["x"] is None else state["x"].to(self.device)
        self.y = None if state["y"] is None else state["y"].to(self.device)
        self.generator.set_state(state["rng"])
