"""Figures per benchmark from `collect`'s tables, written as PNG (dpi 150) and PDF.

Every figure shows one entry per (run_name, buffer_size), averaged over seeds, in the summary
table's order (buffer size, then run name).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..io import atomic_path  # noqa: E402
from ..results import ACCURACY_SCHEMA, RUNS_SCHEMA, read_table  # noqa: E402

FIGURES = ("accuracy_matrix", "final_accuracy", "accuracy_curve")
_LINESTYLES = ("-", "--", ":", "-.")


def _groups(runs: pd.DataFrame) -> list[tuple[str, int]]:
    """The (run_name, buffer_size) pairs of a benchmark's runs, by buffer size then name."""
    keys = runs[["run_name", "buffer_size"]].drop_duplicates().sort_values(["buffer_size", "run_name"])
    return [(name, int(buffer)) for name, buffer in keys.itertuples(index=False)]


def _label(run_name: str, buffer_size: int) -> str:
    return run_name if buffer_size == 0 else f"{run_name} (buf {buffer_size})"


def _select(df: pd.DataFrame, run_name: str, buffer_size: int) -> pd.DataFrame:
    return df[(df.run_name == run_name) & (df.buffer_size == buffer_size)]


def _final_only(runs: pd.DataFrame, run_name: str, buffer_size: int) -> bool:
    """True where only the last accuracy row is a trained model's (Joint in `final` mode: NaN AIA)."""
    return bool(_select(runs, run_name, buffer_size).class_il_aia.isna().all())


def _class_il(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Class-IL entries of the trained network (the random-init probe row left out)."""
    return accuracy[(accuracy.setting == "class_il") & (accuracy.after_task >= 0)]


def _legend_outside(ax) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize="small")


def accuracy_matrix(runs: pd.DataFrame, accuracy: pd.DataFrame, benchmark: str):
    """A grid of class-IL accuracy heatmaps (mean over seeds), one per (run_name, buffer_size)."""
    groups = _groups(runs)
    ncols = min(4, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.2 * nrows), squeeze=False, layout="constrained")
    acc = _class_il(accuracy)
    image = None
    for ax, (name, buffer) in zip(axes.flat, groups):
        ax.set_title(_label(name, buffer), fontsize="medium")
        mean = _select(acc, name, buffer).groupby(["after_task", "eval_task"]).value.mean().unstack()
        if _final_only(runs, name, buffer):
            mean.loc[mean.index < mean.index.max()] = np.nan
        if mean.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        image = ax.imshow(mean.to_numpy(), cmap="viridis", vmin=0, vmax=100)
        n_rows, n_cols = mean.shape
        fontsize = max(4.0, min(9.0, 70.0 / max(n_rows, n_cols)))
        for (t, i), value in np.ndenumerate(mean.to_numpy()):
            if not np.isnan(value):
                ax.text(i, t, f"{value:.0f}", ha="center", va="center", fontsize=fontsize,
                        color="black" if value > 60 else "white")
        ax.set_xticks(range(n_cols), [str(i + 1) for i in mean.columns])
        ax.set_yticks(range(n_rows), [str(t + 1) for t in mean.index])
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after training task")
    for ax in axes.flat[len(groups):]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes, label="class-IL accuracy (%)", shrink=0.8)
    fig.suptitle(f"{benchmark}: class-IL accuracy matrix (mean over seeds)")
    return fig


def final_accuracy(runs: pd.DataFrame, accuracy: pd.DataFrame, benchmark: str):
    """Grouped bars of the final average accuracy (class-IL and task-IL), mean ± std over seeds."""
    groups = _groups(runs)
    x = np.arange(len(groups))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(groups) + 3.0), 4.5), layout="constrained")
    for offset, (setting, label) in zip((-width / 2, width / 2), [("class_il", "Class-IL"), ("task_il", "Task-IL")]):
        values = [_select(runs, name, buffer)[f"{setting}_faa"] for name, buffer in groups]
        mean = np.array([v.mean() for v in values])
        std = np.nan_to_num(np.array([v.std(ddof=1) if v.count() > 1 else 0.0 for v in values]))
        ax.bar(x + offset, mean, width, yerr=std, capsize=3, label=label)
    ax.set_xticks(x, [_label(name, buffer) for name, buffer in groups], rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("final average accuracy (%)")
    ax.set_title(f"{benchmark}: final average accuracy (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    _legend_outside(ax)
    return fig


def accuracy_curve(runs: pd.DataFrame, accuracy: pd.DataFrame, benchmark: str):
    """Class-IL accuracy on the tasks seen so far after each task, mean over seeds ± std band."""
    acc = _class_il(accuracy)
    acc = acc[acc.eval_task <= acc.after_task]
    fig, ax = plt.subplots(figsize=(8.0, 4.5), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for k, (name, buffer) in enumerate(_groups(runs)):
        per_seed = _select(acc, name, buffer).groupby(["seed", "after_task"]).value.mean()
        if per_seed.empty:
            continue
        if _final_only(runs, name, buffer):  # one marker at the last task, no curve through untrained rows
            after = per_seed.index.get_level_values("after_task")
            per_seed = per_seed[after == after.max()]
        stats = per_seed.groupby("after_task").agg(["mean", "std"]).sort_index()
        tasks = stats.index.to_numpy() + 1
        std = stats["std"].fillna(0.0).to_numpy()
        color, style = colors[k % len(colors)], _LINESTYLES[(k // len(colors)) % len(_LINESTYLES)]
        ax.plot(tasks, stats["mean"], color=color, linestyle=style, marker="o", markersize=3,
                label=_label(name, buffer))
        ax.fill_between(tasks, stats["mean"] - std, stats["mean"] + std, color=color, alpha=0.15, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("class-IL accuracy on seen tasks (%)")
    ax.set_title(f"{benchmark}: accuracy on the tasks seen so far (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if ax.lines:
        _legend_outside(ax)
    return fig


_PLOTS = {"accuracy_matrix": accuracy_matrix, "final_accuracy": final_accuracy, "accuracy_curve": accuracy_curve}


def write_figure(kind: str, runs_parquet, accuracy_parquet, benchmark: str, out_png, out_pdf) -> None:
    """Draw figure `kind` (one of FIGURES) for `benchmark` and write it as PNG and PDF, atomically."""
    if kind not in _PLOTS:
        raise ValueError(f"unknown figure '{kind}'; choose one of {', '.join(FIGURES)}")
    runs = read_table(runs_parquet, RUNS_SCHEMA)
    runs = runs[runs.benchmark == benchmark]
    if runs.empty:
        raise ValueError(f"no runs for benchmark '{benchmark}' in {runs_parquet}")
    accuracy = read_table(accuracy_parquet, ACCURACY_SCHEMA)
    fig = _PLOTS[kind](runs, accuracy[accuracy.benchmark == benchmark], benchmark)
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
        with atomic_path(out_pdf) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    finally:
        plt.close(fig)
