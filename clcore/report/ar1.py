"""The AR1 family's report per experiment block (rule ar1_report, docs/ar1.md#tables-and-figure): the accuracy after
batches ⌊n/4⌋, ⌊n/2⌋, ⌊3n/4⌋ of an n-batch stream and at its end, beside the published values
(config/reference/ar1.csv), with the block's pairs compared over seeds on the final accuracy; and the accuracy along
the stream, one curve per method (the papers' main plot)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..collect import read_run, run_identity
from ..io import atomic_path
from ..results import STREAM_SETTING
from .figures import _save, plt
from .stats import paired
from .tables import MISSING, block_markdown, paper_cell, published, read_reference, seed_cell

KEYS = ["benchmark", "run_name", "buffer_size"]
POINTS = {"after_q1": "after ¼", "after_q2": "after ½", "after_q3": "after ¾", "final": "final"}
HEADER = {"run_name": "method", "buffer_size": "memory", "seeds": "seeds", **POINTS, "paper_final": "paper final",
          "paper_curve": "paper ¼ / ½ / ¾", "max": "best along the stream", "train_s_per_batch": "s / batch"}


def run_frame(run_dirs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run with its stream summary, the accuracy after every batch of every run)."""
    runs, curves = [], []
    for run_dir in map(Path, run_dirs):
        info, metrics = read_run(run_dir)
        ident = run_identity(info)
        runs.append({**ident, **info["summary"][STREAM_SETTING],
                     "train_s_per_batch": sum(info["phases"]["train_s"]) / len(info["phases"]["train_s"])})
        acc = metrics[(metrics.metric == "accuracy") & (metrics.setting == STREAM_SETTING)]
        curves.append(acc[["after_task", "value"]].assign(**ident))
    return pd.DataFrame(runs), pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def _published(reference: pd.DataFrame | None) -> dict:
    """(benchmark, method, buffer) -> {metric: cell} of the published stream values."""
    out: dict = {}
    if reference is None or not len(reference):
        return out
    for metric in POINTS:
        for r in published(reference, metric).itertuples(index=False):
            out.setdefault((r.benchmark, r.method, int(r.buffer_size)), {})[metric] = paper_cell(r, STREAM_SETTING)
    return out


def _paper_cells(cells: dict) -> dict:
    curve = [cells.get(m, MISSING) for m in ("after_q1", "after_q2", "after_q3")]
    return {"paper_final": cells.get("final", MISSING),
            "paper_curve": MISSING if all(c == MISSING for c in curve) else " / ".join(curve)}


def ar1_table(runs: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (benchmark, run, memory): mean ± std over seeds at the stream's points, the published values of the run's
    method, then the published rows of the block's benchmarks that no run stands beside (printed only)."""
    paper, out, shown = _published(reference), [], set()
    for (benchmark, name, buffer), g in runs.groupby(KEYS, sort=False):
        key = (benchmark, g.method.iloc[0], int(buffer))
        shown.add(key)
        out.append({"benchmark": benchmark, "run_name": name, "buffer_size": buffer, "seeds": len(g),
                    **{m: seed_cell(g[m]) for m in (*POINTS, "max")}, **_paper_cells(paper.get(key, {})),
                    "train_s_per_batch": f"{g.train_s_per_batch.mean():.2f}"})
    for (benchmark, method, buffer), cells in paper.items():
        if benchmark in set(runs.benchmark) and (benchmark, method, buffer) not in shown:
            out.append({"benchmark": benchmark, "run_name": f"{method} (published only)", "buffer_size": buffer,
                        "seeds": 0, **dict.fromkeys([*POINTS, "max", "train_s_per_batch"], MISSING),
                        **_paper_cells(cells)})
    return pd.DataFrame(out, columns=["benchmark", *HEADER])


def pair_lines(runs: pd.DataFrame, pairs) -> list[str]:
    """`method − base` on the final accuracy, per benchmark, over the seeds both ran: mean, 95 % interval, p."""
    lines = []
    for benchmark, g in runs.groupby("benchmark", sort=False):
        for method, base in pairs:
            ours, theirs = g[g.run_name == method], g[g.run_name == base]
            if ours.empty or theirs.empty:
                continue
            p = paired(dict(zip(ours.seed, ours.final)), dict(zip(theirs.seed, theirs.final)))
            lines.append(f"- {benchmark}, final accuracy: {method} − {base} = {p.diff.mean:+.2f} "
                         f"[{p.diff.ci_low:+.2f}, {p.diff.ci_high:+.2f}], p = {p.p_value:.3f}, "
                         f"seeds {', '.join(map(str, p.seeds))}")
    return lines


NOTE = ("Accuracy (%) on the stream's test set over all classes after batches ⌊n/4⌋, ⌊n/2⌋, ⌊3n/4⌋ (0-based) of an "
        "n-batch stream and after the last; mean ± std over seeds. Paper: config/reference/ar1.csv (for the "
        "rehearsal-free block, the Caffe code's 10-run means, whose model, layout and BRN differ from ours). "
        "s / batch: training seconds per incremental batch.")


def stream_figure(curves: pd.DataFrame, title: str):
    """Accuracy after every batch, one panel per benchmark, one curve per (method, memory): mean over seeds ± std."""
    benchmarks = list(dict.fromkeys(curves.benchmark)) if len(curves) else []
    fig, axes = plt.subplots(1, max(1, len(benchmarks)), figsize=(5.5 * max(1, len(benchmarks)), 4), squeeze=False)
    for ax, benchmark in zip(axes[0], benchmarks):
        for (name, buffer), g in curves[curves.benchmark == benchmark].groupby(["run_name", "buffer_size"], sort=False):
            by_batch = g.groupby("after_task").value
            mean, std = by_batch.mean(), by_batch.std().fillna(0.0)
            label = f"{name}" + (f" (R = {buffer})" if buffer else "")
            line, = ax.plot(mean.index, mean.values, label=label)
            ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set(title=benchmark, xlabel="incremental batch", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def write_ar1_report(run_dirs, title: str, out_md, out_csv, out_png, out_pdf, pairs=(), reference_csv=(),
                     paper: str | None = None) -> pd.DataFrame:
    runs, curves = run_frame(run_dirs)
    table = ar1_table(runs, read_reference(reference_csv, paper) if paper else None)
    with atomic_path(out_md) as tmp:
        tmp.write_text(block_markdown(title, [NOTE], table, HEADER, pair_lines(runs, pairs)), encoding="utf-8")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    _save(stream_figure(curves, title), out_png, out_pdf)
    return table
