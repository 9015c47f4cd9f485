"""Summary tables over seeds: runs.parquet -> one row per (benchmark, run_name, buffer_size) with
mean ± std of the summary metrics, as Markdown (for reading) and CSV (raw numbers).

A run the config asked for but that has no result is shown as missing ("–", 0 seeds), never as 0.
"""

from __future__ import annotations

import math

import pandas as pd

from ..io import atomic_path
from ..results import RUNS_SCHEMA, SETTINGS, SUMMARY_METRICS, read_table

KEYS = ["benchmark", "run_name", "buffer_size"]
ORDER = ["benchmark", "buffer_size", "run_name"]
MISSING = "–"
# Markdown column -> (setting, metric)
MARKDOWN_COLUMNS = {
    "Class-IL FAA": ("class_il", "faa"),
    "Task-IL FAA": ("task_il", "faa"),
    "Class-IL forgetting": ("class_il", "forgetting_mammoth"),
}


def summary_table(runs: pd.DataFrame, metrics=("faa",), settings=SETTINGS) -> pd.DataFrame:
    """One row per (benchmark, run_name, buffer_size): n_seeds and `<setting>_<metric>_{mean,std}`.

    The std is the sample std over seeds (ddof=1, NaN with one seed); seeds where a metric is NaN
    (undefined) are left out of that metric's mean and std.
    """
    cols = [f"{s}_{m}" for s in settings for m in metrics]
    grouped = runs.groupby(KEYS, sort=False)
    mean, std = grouped[cols].mean(), grouped[cols].std(ddof=1)
    table = grouped.size().rename("n_seeds").to_frame()
    for col in cols:
        table[f"{col}_mean"] = mean[col].astype(float)
        table[f"{col}_std"] = std[col].astype(float)
    return table.reset_index().sort_values(ORDER, kind="stable").reset_index(drop=True)


def format_mean_std(mean, std, digits: int = 2) -> str:
    """Format as "64.88 ± 1.17"; a missing mean is "–" (never 0), a missing std leaves just the mean."""
    if _missing(mean):
        return MISSING
    if _missing(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def _with_expected(table: pd.DataFrame, expected) -> pd.DataFrame:
    """Add every expected (benchmark, run_name, buffer_size) and its `n_seeds_expected`."""
    expected = pd.DataFrame(expected) if expected is not None else pd.DataFrame()
    if expected.empty:
        table = table.assign(n_seeds_expected=pd.NA)
    else:
        expected = expected[KEYS + ["n_seeds_expected"]].astype({"buffer_size": table.buffer_size.dtype})
        table = table.merge(expected, on=KEYS, how="outer")
    table["n_seeds"] = table.n_seeds.fillna(0).astype(int)
    table["n_seeds_expected"] = table.n_seeds_expected.astype("Int64")
    columns = KEYS + ["n_seeds", "n_seeds_expected"]
    table = table[columns + [c for c in table.columns if c not in columns]]
    return table.sort_values(ORDER, kind="stable").reset_index(drop=True)


def _seeds_cell(row) -> str:
    """Seeds finished; "k/n" when some (not all) of n expected seeds are missing."""
    if not _missing(row.n_seeds_expected) and 0 < row.n_seeds < row.n_seeds_expected:
        return f"{row.n_seeds}/{row.n_seeds_expected}"
    return str(row.n_seeds)


def summary_markdown(table: pd.DataFrame) -> str:
    """The Markdown report: one section per benchmark, one row per (run_name, buffer_size)."""
    header = ["method", "buffer", "seeds", *MARKDOWN_COLUMNS]
    lines = ["# Summary", "",
             "Accuracies in %, mean ± std over seeds. – = no result; seeds k/n = k of n expected seeds finished."]
    if table.empty:
        lines += ["", "No runs."]
    for benchmark, rows in table.groupby("benchmark", sort=False):
        lines += ["", f"## {benchmark}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows.itertuples(index=False):
            cells = [row.run_name, str(row.buffer_size), _seeds_cell(row)]
            cells += [format_mean_std(getattr(row, f"{s}_{m}_mean"), getattr(row, f"{s}_{m}_std"))
                      for s, m in MARKDOWN_COLUMNS.values()]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(runs_parquet, out_md, out_csv, expected=None) -> pd.DataFrame:
    """runs.parquet -> summary Markdown and CSV (every summary metric, mean and std), atomically.

    `expected` (DataFrame or records with benchmark, run_name, buffer_size, n_seeds_expected) lists
    the runs the config asked for; those without results appear with 0 seeds and "–" cells.
    """
    runs = read_table(runs_parquet, RUNS_SCHEMA)
    table = _with_expected(summary_table(runs, metrics=SUMMARY_METRICS), expected)
    with atomic_path(out_md) as tmp:
        tmp.write_text(summary_markdown(table), encoding="utf-8")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table
