"""Continual-learning metrics from an accuracy matrix.

`acc[t, i]` is the accuracy (percent) on task i after training task t; every task is evaluated after
every task, so entries above the diagonal (i > t) are the forward-transfer probes. `r[i]` is the
accuracy of the randomly initialised network on task i. Aggregates are means of per-task accuracies,
not sample-weighted (Mammoth; docs/baselines.md#accuracy-aggregation).
"""

from __future__ import annotations

import numpy as np


def final_average_accuracy(acc: np.ndarray) -> float:
    return float(np.mean(acc[-1]))


def average_incremental_accuracy(acc: np.ndarray) -> float:
    """Mean over t of the accuracy on the tasks seen after task t (iCaRL/AKR's AIA)."""
    return float(np.mean([np.mean(acc[t, : t + 1]) for t in range(acc.shape[0])]))


def _previous_best(acc: np.ndarray, include_last: bool) -> np.ndarray:
    """max over rows i <= t < T (or <= T) of acc[t, i], for every task i < T."""
    last = acc.shape[0] if include_last else acc.shape[0] - 1
    return np.array([np.max(acc[i:last, i]) for i in range(acc.shape[0] - 1)])


def forgetting(acc: np.ndarray) -> float:
    """DESIGN's forgetting: mean over i < T of max_{i<=t<T} a[t,i] - a[T,i] (can be negative)."""
    if acc.shape[0] < 2:
        return float("nan")
    return float(np.mean(_previous_best(acc, include_last=False) - acc[-1, :-1]))


def forgetting_mammoth(acc: np.ndarray) -> float:
    """Mammoth's forgetting: the max also runs over the last row, so it is never negative."""
    if acc.shape[0] < 2:
        return float("nan")
    return float(np.mean(_previous_best(acc, include_last=True) - acc[-1, :-1]))


def backward_transfer(acc: np.ndarray) -> float:
    if acc.shape[0] < 2:
        return float("nan")
    return float(np.mean([acc[-1, i] - acc[i, i] for i in range(acc.shape[0] - 1)]))


def forward_transfer(acc: np.ndarray, random_init: np.ndarray | None) -> float:
    """mean over i >= 2 of a[i-1, i] - r[i]; NaN when the random-init probe does not exist."""
    if random_init is None or acc.shape[0] < 2:
        return float("nan")
    return float(np.mean([acc[i - 1, i] - random_init[i] for i in range(1, acc.shape[0])]))


def summarize(acc: np.ndarray, random_init: np.ndarray | None = None) -> dict[str, float]:
    acc = np.asarray(acc, dtype=float)
    return {
        "faa": final_average_accuracy(acc),
        "aia": average_incremental_accuracy(acc),
        "forgetting": forgetting(acc),
        "forgetting_mammoth": forgetting_mammoth(acc),
        "bwt": backward_transfer(acc),
        "fwt": forward_transfer(acc, None if random_init is None else np.asarray(random_init, float)),
    }


def stream_summary(acc) -> dict[str, float]:
    """A stream's accuracy after each incremental batch -> the AR1* papers' points: after batches ⌊n/4⌋, ⌊n/2⌋,
    ⌊3n/4⌋ (0-based), the final value, the best value along the stream, and the stream's mean."""
    acc = np.asarray(acc, dtype=float)
    n = len(acc)
    return {"after_q1": float(acc[n // 4]), "after_q2": float(acc[n // 2]), "after_q3": float(acc[3 * n // 4]),
            "final": float(acc[-1]), "max": float(acc.max()), "mean": float(acc.mean())}
