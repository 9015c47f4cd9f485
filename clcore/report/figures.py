"""Figures from `collect`'s tables, written as PNG (dpi 150) and PDF: per benchmark (FIGURES) and
per experiment block of the config (EXPERIMENT_FIGURES, one panel per benchmark of the block).

Every figure shows one entry per (run_name, buffer_size), averaged over seeds, in the summary
table's order (buffer size, then run name). An entry the experiment asks for but that has no runs
yet is drawn as missing ("(missing)" in the legend or tick label, no bar), never as 0.
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
from ..results import ACCURACY_SCHEMA, RUNS_SCHEMA, TASK_METRICS_SCHEMA, block_entries, read_table  # noqa: E402

FIGURES = ("accuracy_matrix", "final_accuracy", "accuracy_curve")
EXPERIMENT_FIGURES = ("accuracy_curve", "forgetting")
_LINESTYLES = ("-", "--", ":", "-.")
_SPREAD_LABEL = {"std": "std", "sem": "SEM"}


def _groups(runs: pd.DataFrame) -> list[tuple[str, int]]:
    """The (run_name, buffer_size) pairs of a benchmark's runs, by buffer size then name."""
    keys = runs[["run_name", "buffer_size"]].drop_duplicates().sort_values(["buffer_size", "run_name"])
    return [(name, int(buffer)) for name, buffer in keys.itertuples(index=False)]


def _label(run_name: str, buffer_size: int) -> str:
    return run_name if buffer_size == 0 else f"{run_name} (buf {buffer_size})"


def _missing_label(run_name: str, buffer_size: int) -> str:
    return f"{_label(run_name, buffer_size)} (missing)"


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


def _bars(ax, runs: pd.DataFrame, groups: list[tuple[str, int]], metric: str) -> None:
    """Class-IL and task-IL bars of `<setting>_<metric>` side by side per group, mean ± std over seeds.
    A group without runs keeps a NaN bar (nothing drawn) and says so, so that it never reads as 0."""
    x = np.arange(len(groups))
    width = 0.4
    drawn = False
    for offset, (setting, label) in zip((-width / 2, width / 2), [("class_il", "Class-IL"), ("task_il", "Task-IL")]):
        values = [_select(runs, name, buffer)[f"{setting}_{metric}"] for name, buffer in groups]
        mean = np.array([v.mean() for v in values])
        std = np.nan_to_num(np.array([v.std(ddof=1) if v.count() > 1 else 0.0 for v in values]))
        ax.bar(x + offset, mean, width, yerr=std, capsize=3, label=label)
        drawn |= bool(np.isfinite(mean).any())
    if not drawn:  # the default ±0.05 scale would read as measured values
        ax.set_yticks([])
    labels = []
    for i, (name, buffer) in enumerate(groups):
        selected = _select(runs, name, buffer)
        has_runs = not selected.empty
        labels.append(_label(name, buffer) if has_runs else _missing_label(name, buffer))
        if selected[[f"class_il_{metric}", f"task_il_{metric}"]].isna().all(axis=None):  # also Joint's forgetting
            ax.text(i, 0.7, "n/a" if has_runs else "no runs", rotation=90, ha="center", va="center",
                    color="gray", transform=ax.get_xaxis_transform())
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_xlim(-0.6, len(groups) - 0.4)  # NaN bars do not count for autoscaling: keep their slots
    ax.grid(axis="y", alpha=0.3)
    _legend_outside(ax)


def _bars_width(groups) -> float:
    return max(6.0, 0.7 * len(groups) + 3.0)


def final_accuracy(runs: pd.DataFrame, accuracy: pd.DataFrame, benchmark: str):
    """Grouped bars of the final average accuracy (class-IL and task-IL), mean ± std over seeds."""
    groups = _groups(runs)
    fig, ax = plt.subplots(figsize=(_bars_width(groups), 4.5), layout="constrained")
    _bars(ax, runs, groups, "faa")
    ax.set_ylim(0, 100)
    ax.set_ylabel("final average accuracy (%)")
    ax.set_title(f"{benchmark}: final average accuracy (mean ± std over seeds)")
    return fig


def _spread(values: pd.Series | pd.core.groupby.SeriesGroupBy, spread: str):
    """Sample std over seeds, or the SEM std/√n (the BI-R papers' bands and error bars)."""
    std = values.std(ddof=1)
    return std if spread == "std" else std / values.count() ** 0.5


def _curves(ax, runs: pd.DataFrame, accuracy: pd.DataFrame, groups: list[tuple[str, int]], benchmark: str,
            setting: str = "class_il", spread: str = "std") -> None:
    """Accuracy (class-IL or task-IL) on the tasks seen so far after each task, one curve per group (mean
    over seeds ± std or SEM band). A group without data is a legend entry "(missing)" with nothing drawn."""
    acc = accuracy[(accuracy.setting == setting) & (accuracy.after_task >= 0)]
    acc = acc[acc.eval_task <= acc.after_task]
    colors = plt.get_cmap("tab10").colors
    drawn = False
    for k, (name, buffer) in enumerate(groups):
        color, style = colors[k % len(colors)], _LINESTYLES[(k // len(colors)) % len(_LINESTYLES)]
        per_seed = _select(acc, name, buffer).groupby(["seed", "after_task"]).value.mean()
        if per_seed.empty:
            ax.plot([], [], color=color, linestyle=style, label=_missing_label(name, buffer))
            continue
        if _final_only(runs, name, buffer):  # one marker at the last task, no curve through untrained rows
            after = per_seed.index.get_level_values("after_task")
            per_seed = per_seed[after == after.max()]
        by_task = per_seed.groupby("after_task")
        stats = pd.DataFrame({"mean": by_task.mean(), "spread": _spread(by_task, spread)}).sort_index()
        tasks = stats.index.to_numpy() + 1
        std = stats["spread"].fillna(0.0).to_numpy()
        ax.plot(tasks, stats["mean"], color=color, linestyle=style, marker="o", markersize=3,
                label=_label(name, buffer))
        ax.fill_between(tasks, stats["mean"] - std, stats["mean"] + std, color=color, alpha=0.15, linewidth=0)
        drawn = True
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not drawn:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", color="gray", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_ylim(0, 100)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel(f"{'class' if setting == 'class_il' else 'task'}-IL accuracy on seen tasks (%)")
    ax.set_title(f"{benchmark}: accuracy on the tasks seen so far (mean ± {_SPREAD_LABEL[spread]} over seeds)")
    ax.grid(alpha=0.3)
    if ax.lines:
        _legend_outside(ax)


def accuracy_curve(runs: pd.DataFrame, accuracy: pd.DataFrame, benchmark: str):
    """Class-IL accuracy on the tasks seen so far after each task, mean over seeds ± std band."""
    fig, ax = plt.subplots(figsize=(8.0, 4.5), layout="constrained")
    _curves(ax, runs, accuracy, _groups(runs), benchmark)
    return fig


_PLOTS = {"accuracy_matrix": accuracy_matrix, "final_accuracy": final_accuracy, "accuracy_curve": accuracy_curve}


def _save(fig, out_png, out_pdf) -> None:
    """Write `fig` as PNG and PDF atomically (no creation date, so that reruns give identical PDFs), then close it."""
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
        with atomic_path(out_pdf) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    finally:
        plt.close(fig)


def write_figure(kind: str, runs_parquet, accuracy_parquet, benchmark: str, out_png, out_pdf) -> None:
    """Draw figure `kind` (one of FIGURES) for `benchmark` and write it as PNG and PDF, atomically."""
    if kind not in _PLOTS:
        raise ValueError(f"unknown figure '{kind}'; choose one of {', '.join(FIGURES)}")
    runs = read_table(runs_parquet, RUNS_SCHEMA)
    runs = runs[runs.benchmark == benchmark]
    if runs.empty:
        raise ValueError(f"no runs for benchmark '{benchmark}' in {runs_parquet}")
    accuracy = read_table(accuracy_parquet, ACCURACY_SCHEMA)
    _save(_PLOTS[kind](runs, accuracy[accuracy.benchmark == benchmark], benchmark), out_png, out_pdf)


# ---- One figure per experiment block: the rows it asks for (dicts with benchmark, run_name,
# buffer_size, as `experiment_rows` in rules/common.smk gives them), one panel per benchmark.

def _panels(rows: list[dict]) -> list[tuple[str, list[tuple[str, int]]]]:
    """(benchmark, its (run_name, buffer_size) groups) in the order the benchmarks first appear in `rows`."""
    asked = pd.DataFrame(rows)
    return [(b, _groups(asked[asked.benchmark == b])) for b in asked.benchmark.drop_duplicates()]


def missing_rows(runs: pd.DataFrame, rows: list[dict]) -> list[str]:
    """'benchmark: label' of every row without any run."""
    return [f"{r['benchmark']}: {_label(r['run_name'], r['buffer_size'])}" for r in rows
            if _select(runs[runs.benchmark == r["benchmark"]], r["run_name"], r["buffer_size"]).empty]


def _suptitle(fig, runs: pd.DataFrame, rows: list[dict], title: str) -> None:
    missing = len(missing_rows(runs, rows))
    if missing == len(rows):
        title += "\n(no runs yet)"
    elif missing:
        title += f"\n({missing} of {len(rows)} rows missing: no runs yet)"
    fig.suptitle(title)


def experiment_accuracy_curve(runs: pd.DataFrame, accuracy: pd.DataFrame, rows: list[dict], title: str,
                              setting: str = "class_il", spread: str = "std", **_):
    """The benchmark figure `accuracy_curve`, one panel per benchmark of the experiment."""
    panels = _panels(rows)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.0, 4.5 * len(panels)), squeeze=False, layout="constrained")
    for ax, (benchmark, groups) in zip(axes.flat, panels):
        _curves(ax, runs[runs.benchmark == benchmark], accuracy[accuracy.benchmark == benchmark], groups, benchmark,
                setting, spread)
    _suptitle(fig, runs, rows, title)
    return fig


def _asked_order(rows: list[dict], benchmark: str) -> list[tuple[str, int]]:
    """The benchmark's (run_name, buffer_size) in the order the experiment lists its methods."""
    return list(dict.fromkeys((r["run_name"], int(r["buffer_size"])) for r in rows if r["benchmark"] == benchmark))


def experiment_ablation_bars(runs: pd.DataFrame, accuracy: pd.DataFrame, rows: list[dict], title: str,
                             setting: str = "class_il", spread: str = "std", chance: dict | None = None, **_):
    """BI-R Fig. 8: one bar per method in the block's order (final average accuracy, mean ± spread), every
    seed as a dot, and the chance level as a dashed line; one panel per benchmark."""
    panels = [(b, _asked_order(rows, b)) for b, _ in _panels(rows)]
    width = max(_bars_width(groups) for _, groups in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 4.5 * len(panels)), squeeze=False, layout="constrained")
    column = f"{setting}_faa"
    for ax, (benchmark, groups) in zip(axes.flat, panels):
        selected = [_select(runs[runs.benchmark == benchmark], name, buffer)[column].dropna() for name, buffer in groups]
        x = np.arange(len(groups))
        mean = np.array([v.mean() if len(v) else np.nan for v in selected])
        err = np.nan_to_num(np.array([_spread(v, spread) if len(v) > 1 else 0.0 for v in selected]))
        ax.bar(x, mean, 0.6, yerr=err, capsize=3, color="lightsteelblue", edgecolor="black", linewidth=0.6)
        for i, values in enumerate(selected):
            ax.plot(np.full(len(values), i), values, "o", color="black", markersize=2.5)
            if not len(values):
                ax.text(i, 0.5, "no runs", rotation=90, ha="center", va="center", color="gray",
                        transform=ax.get_xaxis_transform())
        if chance and benchmark in chance:
            ax.axhline(chance[benchmark], color="gray", linestyle="--", linewidth=1, label="chance")
            ax.legend(loc="upper right", fontsize="small")
        ax.set_xticks(x, [_label(n, b) if len(v) else _missing_label(n, b) for (n, b), v in zip(groups, selected)],
                      rotation=45, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{PAPER_LABEL[setting]} final accuracy (%)")
        ax.set_title(f"{benchmark}: final average accuracy (mean ± {_SPREAD_LABEL[spread]}, dots = seeds)")
    _suptitle(fig, runs, rows, title)
    return fig


def experiment_final_task_accuracy(runs: pd.DataFrame, accuracy: pd.DataFrame, rows: list[dict], title: str,
                                   setting: str = "class_il", spread: str = "std", **_):
    """Accuracy on each task after the last one, one group of bars per method ([MC]'s claim concerns the
    early classes); one panel per benchmark."""
    panels = [(b, _asked_order(rows, b)) for b, _ in _panels(rows)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10.0, 4.5 * len(panels)), squeeze=False, layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for ax, (benchmark, groups) in zip(axes.flat, panels):
        acc = accuracy[(accuracy.benchmark == benchmark) & (accuracy.setting == setting)]
        acc = acc[acc.after_task == acc.after_task.max()] if len(acc) else acc
        width = 0.8 / max(len(groups), 1)
        for k, (name, buffer) in enumerate(groups):
            per_task = _select(acc, name, buffer).groupby("eval_task").value
            if not len(acc) or _select(acc, name, buffer).empty:
                ax.bar([], [], label=_missing_label(name, buffer), color=colors[k % len(colors)])
                continue
            tasks = np.array(sorted(per_task.groups)) + 1
            ax.bar(tasks - 0.4 + width * (k + 0.5), per_task.mean().to_numpy(), width,
                   yerr=np.nan_to_num(_spread(per_task, spread).to_numpy()), capsize=2,
                   color=colors[k % len(colors)], label=_label(name, buffer))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 100)
        ax.set_xlabel("task")
        ax.set_ylabel(f"{PAPER_LABEL[setting]} accuracy after the last task (%)")
        ax.set_title(f"{benchmark}: accuracy per task after the last task (mean ± {_SPREAD_LABEL[spread]})")
        _legend_outside(ax)
    _suptitle(fig, runs, rows, title)
    return fig


def experiment_forgetting(runs: pd.DataFrame, accuracy: pd.DataFrame, rows: list[dict], title: str, **_):
    """Bars of the final forgetting (class-IL and task-IL), mean ± std over seeds, one panel per benchmark."""
    panels = _panels(rows)
    width = max(_bars_width(groups) for _, groups in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 4.5 * len(panels)), squeeze=False, layout="constrained")
    for ax, (benchmark, groups) in zip(axes.flat, panels):
        _bars(ax, runs[runs.benchmark == benchmark], groups, "forgetting")
        ax.axhline(0.0, color="black", linewidth=0.8)  # forgetting can be negative
        ax.set_ylabel("forgetting (%)")
        ax.set_title(f"{benchmark}: final forgetting (mean ± std over seeds)")
    _suptitle(fig, runs, rows, title)
    return fig


def experiment_saliency(runs: pd.DataFrame, accuracy: pd.DataFrame, task_metrics: pd.DataFrame, rows: list[dict],
                        title: str):
    """SER's Figure 1: on the first task's test data, class-IL accuracy (the classifier forgets) beside the
    saliency SIM (the predictor does not), after each task; one line per SER row, mean ± std over seeds."""
    sim = task_metrics[(task_metrics.metric == "sal_sim") & (task_metrics.eval_task == 0)]
    first = _class_il(accuracy)
    first = first[first.eval_task == 0]
    groups = [(b, name, buffer) for b, g in _panels(rows) for name, buffer in g
              if not _select(sim[sim.benchmark == b], name, buffer).empty]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.2), layout="constrained")
    colors = plt.get_cmap("tab10").colors
    for k, (benchmark, name, buffer) in enumerate(groups):
        label = _label(name, buffer) + (f" [{benchmark}]" if len({b for b, *_ in groups}) > 1 else "")
        for ax, frame in ((left, first), (right, sim)):
            stats = _select(frame[frame.benchmark == benchmark], name, buffer).groupby("after_task").value.agg(
                ["mean", "std"]).sort_index()
            tasks = stats.index.to_numpy() + 1
            ax.errorbar(tasks, stats["mean"], yerr=stats["std"].fillna(0.0), color=colors[k % len(colors)],
                        marker="o", markersize=3, capsize=2, label=label)
    for ax, ylabel in ((left, "class-IL accuracy on task 1 (%)"), (right, "saliency SIM on task 1")):
        ax.set_xlabel("after training task")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if not groups:
            ax.text(0.5, 0.5, "no runs with saliency metrics", ha="center", va="center", color="gray",
                    transform=ax.transAxes)
    left.set_ylim(0, 100)
    right.set_ylim(0, 1)
    if groups:
        _legend_outside(right)
    fig.suptitle(title + "\nfirst task: classification forgets, saliency does not (SER Fig. 1); "
                 "error bars: ± std over seeds")
    return fig


_EXPERIMENT_PLOTS = {"accuracy_curve": experiment_accuracy_curve, "forgetting": experiment_forgetting,
                     "ablation_bars": experiment_ablation_bars, "final_task_accuracy": experiment_final_task_accuracy}
OPTIONAL_EXPERIMENT_FIGURES = ("ablation_bars", "final_task_accuracy")  # asked for by a block's `figures:`
PAPER_LABEL = {"class_il": "class-IL", "task_il": "task-IL"}
SALIENCY_FIGURE = "saliency"  # only for experiments whose methods log saliency metrics (SER)
EXPERIMENT_FIGURE_KINDS = (*EXPERIMENT_FIGURES, *OPTIONAL_EXPERIMENT_FIGURES, SALIENCY_FIGURE)


def write_experiment_figure(kind: str, runs_parquet, accuracy_parquet, rows: list[dict], title: str,
                            out_png, out_pdf, task_metrics_parquet=None, options: dict | None = None) -> list[str]:
    """Draw figure `kind` (one of EXPERIMENT_FIGURES or OPTIONAL_EXPERIMENT_FIGURES, or SALIENCY_FIGURE
    with `task_metrics_parquet`) of one experiment block and write it as PNG and PDF, atomically.
    `options`: setting (class_il | task_il: the block's training scenario), spread (std | sem), chance
    ({benchmark: %}). Returns the rows drawn as missing."""
    if kind == SALIENCY_FIGURE:
        runs = block_entries(read_table(runs_parquet, RUNS_SCHEMA), rows)
        accuracy, task_metrics = (block_entries(read_table(p, schema), rows) for p, schema in
                                  ((accuracy_parquet, ACCURACY_SCHEMA), (task_metrics_parquet, TASK_METRICS_SCHEMA)))
        _save(experiment_saliency(runs, accuracy, task_metrics, rows, title), out_png, out_pdf)
        return missing_rows(runs, rows)
    if kind not in _EXPERIMENT_PLOTS:
        raise ValueError(f"unknown experiment figure '{kind}'; choose one of "
                         f"{', '.join((*EXPERIMENT_FIGURES, *OPTIONAL_EXPERIMENT_FIGURES))}")
    if not rows:
        raise ValueError(f"experiment '{title}' asks for no runs")
    runs = block_entries(read_table(runs_parquet, RUNS_SCHEMA), rows)
    accuracy = block_entries(read_table(accuracy_parquet, ACCURACY_SCHEMA), rows)
    _save(_EXPERIMENT_PLOTS[kind](runs, accuracy, rows, title, **(options or {})), out_png, out_pdf)
    return missing_rows(runs, rows)
