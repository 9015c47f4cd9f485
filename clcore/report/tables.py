"""Summary tables over seeds: runs.parquet -> one row per (benchmark, run_name, buffer_size) with
mean ± std of the summary metrics, as Markdown (for reading) and CSV (raw numbers).

A run the config asked for but that has no result is shown as missing ("–", 0 seeds), never as 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..io import atomic_path
from ..results import RUNS_SCHEMA, SETTINGS, SUMMARY_METRICS, block_entries, read_table

KEYS = ["benchmark", "run_name", "buffer_size"]
ORDER = ["benchmark", "buffer_size", "run_name"]
MISSING = "–"
NOT_TRANSCRIBED = "NA"  # listed in config/reference/ with confidence "missing"
NOT_PUBLISHED = "n/a"   # confidence "not_published": the paper makes a claim but gives no number ([MC])
SPREADS = {"std": "std", "sem": "SEM"}  # ± over seeds: sample std, or std/√n as the BI-R papers report
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


# ---- One table per experiment block, laid out like the paper's, with the published numbers beside ours.

PAPER_SETTINGS = {"class_il": "Class-IL", "task_il": "Task-IL"}


def experiment_table(runs: pd.DataFrame, rows: list[dict], reference: pd.DataFrame | None = None,
                     spread: str = "std") -> pd.DataFrame:
    """One row per (benchmark, method, run_name, buffer_size) the experiment asks for (`rows`, with
    n_seeds_expected): our FAA mean ± std per setting (and `<setting>_faa_sem` = std/√n when `spread` is
    "sem") and, where `reference` has it, the published mean, its ± as published, confidence and
    ours − published. A run without results keeps NaN (shown as missing)."""
    runs = block_entries(runs, rows)
    ours = summary_table(runs) if len(runs) else pd.DataFrame(columns=KEYS + ["n_seeds"])
    table = pd.DataFrame(rows).drop(columns="seeds", errors="ignore").merge(ours, on=KEYS, how="left")
    table["n_seeds"] = table.n_seeds.fillna(0).astype(int)
    for setting in PAPER_SETTINGS:
        for col in (f"{setting}_faa_mean", f"{setting}_faa_std"):
            table[col] = table[col].astype(float) if col in table else float("nan")
        if spread == "sem":
            table[f"{setting}_faa_sem"] = table[f"{setting}_faa_std"] / table.n_seeds.clip(lower=1) ** 0.5
    if reference is not None and len(reference):
        table = table.merge(_published(reference), on=["benchmark", "method", "buffer_size"], how="left")
        for setting in PAPER_SETTINGS:
            if f"{setting}_paper_mean" in table:
                table[f"{setting}_diff"] = table[f"{setting}_faa_mean"] - table[f"{setting}_paper_mean"]
    return table.sort_values(ORDER, kind="stable").reset_index(drop=True)


def _published(reference: pd.DataFrame) -> pd.DataFrame:
    """(benchmark, method, buffer_size) -> `<setting>_paper_{mean,std,confidence,approx}`; the first source wins."""
    faa = reference[reference.metric == "faa"].drop_duplicates(["dataset", "method", "buffer", "setting"])
    faa = faa.assign(approx=faa["approx"].fillna(False).astype(bool) if "approx" in faa else False)
    wide = faa.pivot(index=["dataset", "method", "buffer"], columns="setting",
                     values=["mean", "std", "confidence", "approx"])
    wide.columns = [f"{setting}_paper_{value}" for value, setting in wide.columns]
    return wide.reset_index().rename(columns={"dataset": "benchmark", "buffer": "buffer_size"})


def _has_reference(table: pd.DataFrame) -> bool:
    """True where the reference lists any cell of the table, even one not transcribed yet (NA)."""
    return any(f"{s}_paper_confidence" in table and table[f"{s}_paper_confidence"].notna().any()
               for s in PAPER_SETTINGS)


def _paper_cell(row, setting: str) -> str:
    """The published value; NA where the reference lists the cell but its value is still unknown, n/a where
    the paper publishes no number, and "≈" before a value read off a plot."""
    paper = getattr(row, f"{setting}_paper_mean", float("nan"))
    confidence = getattr(row, f"{setting}_paper_confidence", None)
    if _missing(paper) and confidence in ("missing", "not_published"):
        return NOT_TRANSCRIBED if confidence == "missing" else NOT_PUBLISHED
    approx = getattr(row, f"{setting}_paper_approx", False)
    approx = "≈" if not _missing(approx) and bool(approx) else ""
    return approx + format_mean_std(paper, getattr(row, f"{setting}_paper_std", float("nan")))


def _paper_cells(row, with_reference: bool, settings, spread: str) -> list[str]:
    cells = []
    for setting in settings:
        cells.append(format_mean_std(getattr(row, f"{setting}_faa_mean"), getattr(row, f"{setting}_faa_{spread}")))
        if with_reference:
            cells.append(_paper_cell(row, setting))
            diff = getattr(row, f"{setting}_diff", float("nan"))
            cells.append(MISSING if _missing(diff) else f"{diff:+.2f}")
    return cells


def _paper_header(with_reference: bool, settings) -> list[str]:
    header = ["method", "buffer", "seeds"]
    for label in (PAPER_SETTINGS[s] for s in settings):
        header += [f"{label} (ours)", f"{label} (paper)", "Δ"] if with_reference else [label]
    return header


def experiment_markdown(table: pd.DataFrame, title: str, settings=tuple(PAPER_SETTINGS), spread: str = "std") -> str:
    with_reference = _has_reference(table)
    header = _paper_header(with_reference, settings)
    lines = [f"# {title}", "", f"Final average accuracy (%), mean ± {SPREADS[spread]} over seeds; – = no result."
             + (" Paper values as published (see config/reference/ for source, confidence and whether ± is a std"
                " or an SEM); Δ = ours − paper; ≈ = read off a plot." if with_reference else "")
             + (f" {NOT_TRANSCRIBED} = a published value not transcribed yet; {NOT_PUBLISHED} = no number published."
                if with_reference else ""), ""]
    for benchmark, rows in table.groupby("benchmark", sort=False):
        lines += [f"## {benchmark}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows.itertuples(index=False):
            lines.append("| " + " | ".join([row.run_name, str(row.buffer_size), _seeds_cell(row),
                                            *_paper_cells(row, with_reference, settings, spread)]) + " |")
        lines.append("")
    return "\n".join(lines)


def experiment_latex(table: pd.DataFrame, title: str, settings=tuple(PAPER_SETTINGS), spread: str = "std") -> str:
    with_reference = _has_reference(table)
    header = _paper_header(with_reference, settings)
    tex = lambda s: str(s).replace("_", r"\_").replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--")
    lines = [rf"% {title}", r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}", r"\toprule",
             " & ".join(map(tex, header)) + r" \\", r"\midrule"]
    for benchmark, rows in table.groupby("benchmark", sort=False):
        lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{tex(benchmark)}}}}} \\")
        for row in rows.itertuples(index=False):
            cells = [row.run_name, row.buffer_size, _seeds_cell(row), *_paper_cells(row, with_reference, settings, spread)]
            lines.append(" & ".join(map(tex, cells)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_experiment_table(runs_parquet, rows: list[dict], title: str, out_md, out_tex, out_csv,
                           reference_csv=None, settings=tuple(PAPER_SETTINGS), spread: str = "std") -> pd.DataFrame:
    """The table of one experiment block as Markdown, LaTeX and CSV, written atomically: the accuracy
    columns of `settings`, ± the `spread` over seeds (std or SEM)."""
    runs = read_table(runs_parquet, RUNS_SCHEMA)
    paths = [reference_csv] if isinstance(reference_csv, (str, Path)) else list(reference_csv or [])
    reference = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True) if paths else None
    table = experiment_table(runs, rows, reference, spread)
    for path, text in ((out_md, experiment_markdown(table, title, settings, spread)),
                       (out_tex, experiment_latex(table, title, settings, spread))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table
