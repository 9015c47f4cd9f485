"""Hyperparameter grid search on a held-out validation split (`clcore search`).

Each point of the grid trains on 90 % of the benchmark's training data and is scored by the final
average accuracy on the held-out 10 % (seed 100; docs/protocol.md#clcore-search), never on the test set. The result is a
table of every point and seed, and the best point by mean accuracy, to be copied into
`config/hparams/*.yaml` with the search recorded next to it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from .hparams import resolve, run_name
from .train import run_training


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the order given."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_search(benchmark: str, method: str, grid: dict[str, list], seeds=(0,), buffer_size: int = 0,
                scenario: str = "class", hparams_dir="config/hparams", prepared_dir="resources/prepared",
                out_dir="results/search", artefacts: dict | None = None, device: str = "auto",
                threads: int | None = None) -> pd.DataFrame:
    """One row per (grid point, seed): the point's values, the seed and the validation accuracy of the
    scenario's setting; written to `<out_dir>/<benchmark>/<method>/search.csv`."""
    setting = "task_il" if scenario == "task" else "class_il"
    base = {"scenario": scenario} if scenario == "task" else {}
    rows = []
    for point in grid_points(grid):
        overrides = {**base, **point}
        hparams = resolve(method, benchmark, buffer_size, overrides, hparams_dir, "search grid")
        for seed in seeds:
            run_dir = Path(out_dir) / benchmark / method / run_name(method, overrides) / f"seed{seed}"
            info = run_training(benchmark, method, buffer_size, seed, hparams, prepared_dir, run_dir,
                                device=device, threads=threads, artefacts=artefacts, validation=True)
            rows.append({**point, "seed": seed, "scenario": scenario, f"val_{setting}_faa": info["summary"][setting]["faa"]})
    table = pd.DataFrame(rows)
    out = Path(out_dir) / benchmark / method / "search.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


def best_point(table: pd.DataFrame, grid_keys) -> dict:
    """The grid point with the highest mean validation accuracy over seeds (ties: the first listed)."""
    metric = next(c for c in table.columns if c.startswith("val_"))
    means = table.groupby(list(grid_keys), sort=False)[metric].mean()
    best = means.idxmax()
    best = best if isinstance(best, tuple) else (best,)
    return {**{k: getattr(v, "item", lambda: v)() for k, v in zip(grid_keys, best)}, metric: float(means.max())}

