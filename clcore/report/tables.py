"""Summary tables over seeds: runs.parquet -> one row per (benchmark, run_name, buffer_size) with mean ± std
and the 95 % confidence interval of the summary metrics (clcore.report.stats), as Markdown (for reading) and
CSV (raw numbers); per experiment block, the paper's layout with the published numbers, the paired
comparisons the block declares, and what the runs cost.

A run the config asked for but that has no result is shown as missing ("–", 0 seeds), never as 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..io import atomic_path
from ..results import RUNS_SCHEMA, SETTINGS, SUMMARY_METRICS, block_entries, read_table
from .stats import LEVEL, paired, seed_stats

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


STATS = ("mean", "std", "sem", "ci_low", "ci_high")


def summary_table(runs: pd.DataFrame, metrics=("faa",), settings=SETTINGS) -> pd.DataFrame:
    """One row per (benchmark, run_name, buffer_size): n_seeds, `<setting>_<metric>_{mean,std,sem,ci_low,ci_high}`
    and `device_hours`, the runs' total cost.

    The std is the sample std over seeds (ddof=1, NaN with one seed), the interval Student's t at 95 %; seeds
    where a metric is NaN (undefined) are left out of that metric's statistics.
    """
    cols = [f"{s}_{m}" for s in settings for m in metrics]
    rows = []
    for key, group in runs.groupby(KEYS, sort=False):
        row = {**dict(zip(KEYS, key)), "n_seeds": len(group), "device_hours": group.device_hours.sum()}
        for col in cols:
            st = seed_stats(group[col])
            row.update({f"{col}_{name}": getattr(st, name) for name in STATS})
        rows.append(row)
    columns = KEYS + ["n_seeds", "device_hours"] + [f"{c}_{name}" for c in cols for name in STATS]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(ORDER, kind="stable").reset_index(drop=True)


def format_mean_std(mean, std, digits: int = 2, ci=None) -> str:
    """Format as "64.88 ± 1.17", or with the interval `ci` as "64.88 ± 1.17 [62.10, 67.66]"; a missing mean is
    "–" (never 0), a missing std leaves just the mean."""
    if _missing(mean):
        return MISSING
    if _missing(std):
        return f"{mean:.{digits}f}"
    interval = "" if ci is None or any(_missing(v) for v in ci) else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return f"{mean:.{digits}f} ± {std:.{digits}f}{interval}"


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
             f"Accuracies in %, mean ± std [{LEVEL:.0%} confidence interval, Student's t] over seeds. – = no result; "
             "seeds k/n = k of n expected seeds finished."]
    if table.empty:
        lines += ["", "No runs."]
    for benchmark, rows in table.groupby("benchmark", sort=False):
        lines += ["", f"## {benchmark}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows.itertuples(index=False):
            cells = [row.run_name, str(row.buffer_size), _seeds_cell(row)]
            cells += [_stats_cell(row, f"{s}_{m}", "std") for s, m in MARKDOWN_COLUMNS.values()]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _stats_cell(row, column: str, spread: str) -> str:
    """`<column>_mean` ± `<column>_<spread>` [`_ci_low`, `_ci_high`] of a summary row."""
    value = lambda name: getattr(row, f"{column}_{name}", float("nan"))  # noqa: E731
    return format_mean_std(value("mean"), value(spread), ci=(value("ci_low"), value("ci_high")))


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


def experiment_table(runs: pd.DataFrame, rows: list[dict], reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (benchmark, method, run_name, buffer_size) the experiment asks for (`rows`, with
    n_seeds_expected): our FAA statistics per setting (clcore.report.stats: mean, std, SEM, 95 % interval), the
    runs' cost in device-hours and, where `reference` has it, the published mean, its ± as published, confidence
    and ours − published. A run without results keeps NaN (shown as missing)."""
    ours = summary_table(block_entries(runs, rows))
    table = pd.DataFrame(rows).drop(columns="seeds", errors="ignore").merge(ours, on=KEYS, how="left")
    table["n_seeds"] = table.n_seeds.fillna(0).astype(int)
    if reference is not None and len(reference):
        table = table.merge(published(reference), on=["benchmark", "method", "buffer_size"], how="left")
        for setting in PAPER_SETTINGS:
            if f"{setting}_paper_mean" in table:
                table[f"{setting}_diff"] = table[f"{setting}_faa_mean"] - table[f"{setting}_paper_mean"]
    return table.sort_values(ORDER, kind="stable").reset_index(drop=True)


def paired_table(runs: pd.DataFrame, rows: list[dict], pairs, settings=tuple(PAPER_SETTINGS)) -> pd.DataFrame:
    """For each declared (method, base) pair of run names, per benchmark and buffer size of the method's rows: the
    final average accuracy of method − base over the seeds both ran (the base at the same buffer, or buffer 0 where
    it has none), its 95 % interval and the paired t-test's p-value, and the seeds that only one side ran."""
    runs = block_entries(runs, rows)
    faa = {(r.benchmark, r.run_name, r.buffer_size, r.seed): {s: getattr(r, f"{s}_faa") for s in settings}
           for r in runs.itertuples(index=False)}
    asked = {(r["benchmark"], r["run_name"], r["buffer_size"]) for r in rows}
    out = []
    for method, base in pairs:
        for benchmark, name, buffer in sorted(k for k in asked if k[1] == method):
            base_buffer = buffer if (benchmark, base, buffer) in asked else 0
            row = dict(benchmark=benchmark, run_name=method, base=base, buffer_size=buffer)
            for setting in settings:
                by_seed = lambda n, b: {k[3]: v[setting] for k, v in faa.items() if k[:3] == (benchmark, n, b)}  # noqa: E731
                result = paired(by_seed(method, buffer), by_seed(base, base_buffer))
                row.update({f"{setting}_diff_{name}": getattr(result.diff, name) for name in STATS},
                           **{f"{setting}_p_value": result.p_value, f"{setting}_excludes_zero": result.excludes_zero})
            row.update(n_pairs=len(result.seeds), seeds=list(result.seeds), only_method=list(result.only_method),
                       only_base=list(result.only_base))
            out.append(row)
    columns = (["benchmark", "run_name", "base", "buffer_size", "n_pairs", "seeds", "only_method", "only_base"]
               + [f"{s}_{c}" for s in settings for c in (*(f"diff_{n}" for n in STATS), "p_value", "excludes_zero")])
    return pd.DataFrame(out, columns=columns)


def seed_cell(values) -> str:
    """Mean ± std over seeds of the finite `values`; `MISSING` without any."""
    s = seed_stats(values)
    return format_mean_std(s.mean, s.std) if s.n else MISSING


def benchmark_sections(table: pd.DataFrame, header: dict) -> list[str]:
    """Markdown lines of one table per benchmark (`## <benchmark>`), the columns `header` maps to their titles."""
    lines = []
    for benchmark, rows in table.groupby("benchmark", sort=False):
        lines += [f"## {benchmark}", "", "| " + " | ".join(header.values()) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(getattr(r, k)) for k in header) + " |" for r in rows.itertuples(index=False)]
        lines.append("")
    return lines


def block_markdown(title: str, notes: list[str], table: pd.DataFrame, header: dict, pairs_text: list[str]) -> str:
    """A family report's page: the block's title, its notes (one paragraph each), one table per benchmark, and the
    block's pairs compared over seeds."""
    lines = [f"# {title}", ""] + [line for note in notes for line in (note, "")]
    lines += benchmark_sections(table, header)
    if pairs_text:
        lines += ["Paired over seeds, 95 % interval:", "", *pairs_text, ""]
    return "\n".join(lines)


def read_reference(reference_csv, paper: str | None = None) -> pd.DataFrame | None:
    """The published numbers of config/reference/*.csv (one path or several; None without any), those of `paper`
    only when it is given."""
    paths = [reference_csv] if isinstance(reference_csv, (str, Path)) else list(reference_csv or [])
    reference = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True) if paths else None
    return reference[reference.paper == paper] if reference is not None and paper is not None else reference


def published(reference: pd.DataFrame, metric: str = "faa") -> pd.DataFrame:
    """(benchmark, method, buffer_size) -> `<setting>_paper_{mean,std,confidence,approx}` of `metric`; the first
    source wins."""
    faa = reference[reference.metric == metric].drop_duplicates(["dataset", "method", "buffer", "setting"])
    faa = faa.assign(approx=faa["approx"].fillna(False).astype(bool) if "approx" in faa else False)
    wide = faa.pivot(index=["dataset", "method", "buffer"], columns="setting",
                     values=["mean", "std", "confidence", "approx"])
    wide.columns = [f"{setting}_paper_{value}" for value, setting in wide.columns]
    return wide.reset_index().rename(columns={"dataset": "benchmark", "buffer": "buffer_size"})


def _has_reference(table: pd.DataFrame) -> bool:
    """True where the reference lists any cell of the table, even one not transcribed yet (NA)."""
    return any(f"{s}_paper_confidence" in table and table[f"{s}_paper_confidence"].notna().any()
               for s in PAPER_SETTINGS)


def paper_cell(row, setting: str) -> str:
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
        cells.append(_stats_cell(row, f"{setting}_faa", spread))
        if with_reference:
            cells.append(paper_cell(row, setting))
            diff = getattr(row, f"{setting}_diff", float("nan"))
            cells.append(MISSING if _missing(diff) else f"{diff:+.2f}")
    return cells + [MISSING if _missing(row.device_hours) or row.n_seeds == 0 else f"{row.device_hours:.3f}"]


def _paper_header(with_reference: bool, settings) -> list[str]:
    header = ["method", "buffer", "seeds"]
    for label in (PAPER_SETTINGS[s] for s in settings):
        header += [f"{label} (ours)", f"{label} (paper)", "Δ"] if with_reference else [label]
    return header + ["device-h"]


def _paired_lines(paired_rows: pd.DataFrame, settings) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, cells per row, notes on seeds only one side ran) of a benchmark's paired comparisons."""
    header = ["method − base", "buffer", "pairs"] + [h for s in settings for h in (f"{PAPER_SETTINGS[s]} Δ", "p")]
    cells, notes = [], []
    for r in paired_rows.itertuples(index=False):
        row = [f"{r.run_name} − {r.base}", str(r.buffer_size), str(r.n_pairs)]
        for setting in settings:
            diff = getattr(r, f"{setting}_diff_mean")
            if _missing(diff):
                row += [MISSING, MISSING]
                continue
            mark = "*" if getattr(r, f"{setting}_excludes_zero") else ""
            ci = (getattr(r, f"{setting}_diff_ci_low"), getattr(r, f"{setting}_diff_ci_high"))
            interval = "" if any(_missing(v) for v in ci) else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
            p = getattr(r, f"{setting}_p_value")
            row += [f"{diff:+.2f}{mark}{interval}", MISSING if _missing(p) else f"{p:.3g}"]
        cells.append(row)
        for side, seeds in ((r.run_name, r.only_method), (r.base, r.only_base)):
            if len(seeds):
                notes.append(f"{r.run_name} − {r.base}, buffer {r.buffer_size}: seed(s) {', '.join(map(str, seeds))} "
                             f"ran only for {side}, so they are not in the pair.")
    return header, cells, notes


def _cost_line(table: pd.DataFrame, devices) -> str:
    runs = int(table.n_seeds.sum())
    return (f"Cost: {table.device_hours.sum():.3f} device-hours over {runs} runs on {', '.join(devices) or 'no device'} "
            "(one device per run for its wall time; a run shared with another block counts in both).")


def experiment_markdown(table: pd.DataFrame, title: str, settings=tuple(PAPER_SETTINGS), spread: str = "std",
                        paired_rows: pd.DataFrame | None = None, devices=()) -> str:
    with_reference = _has_reference(table)
    header = _paper_header(with_reference, settings)
    lines = [f"# {title}", "",
             f"Final average accuracy (%), mean ± {SPREADS[spread]} [{LEVEL:.0%} confidence interval, Student's t] "
             "over seeds; – = no result; device-h = the row's runs' device-hours."
             + (" Paper values as published (see config/reference/ for source, confidence and whether ± is a std"
                " or an SEM); Δ = ours − paper; ≈ = read off a plot." if with_reference else "")
             + (f" {NOT_TRANSCRIBED} = a published value not transcribed yet; {NOT_PUBLISHED} = no number published."
                if with_reference else ""), ""]
    paired_rows = paired_rows if paired_rows is not None else paired_table(pd.DataFrame(), [], ())
    for benchmark, rows in table.groupby("benchmark", sort=False):
        lines += [f"## {benchmark}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows.itertuples(index=False):
            lines.append("| " + " | ".join([row.run_name, str(row.buffer_size), _seeds_cell(row),
                                            *_paper_cells(row, with_reference, settings, spread)]) + " |")
        lines.append("")
        pair_header, pair_cells, notes = _paired_lines(paired_rows[paired_rows.benchmark == benchmark], settings)
        if pair_cells:
            lines += [f"Paired with the base over the seeds both ran: mean difference [{LEVEL:.0%} interval], "
                      "p of the paired t-test; * = the interval excludes 0.", "",
                      "| " + " | ".join(pair_header) + " |", "|" + "---|" * len(pair_header)]
            lines += ["| " + " | ".join(cells) + " |" for cells in pair_cells]
            lines += ["", *notes, ""] if notes else [""]
    lines += [_cost_line(table, devices), ""]
    return "\n".join(lines)


def experiment_latex(table: pd.DataFrame, title: str, settings=tuple(PAPER_SETTINGS), spread: str = "std",
                     paired_rows: pd.DataFrame | None = None, devices=()) -> str:
    with_reference = _has_reference(table)
    header = _paper_header(with_reference, settings)
    tex = lambda s: (str(s).replace("_", r"\_").replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--")  # noqa: E731
                     .replace("−", "--").replace("*", r"$^*$"))
    lines = [rf"% {title}", r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}", r"\toprule",
             " & ".join(map(tex, header)) + r" \\", r"\midrule"]
    for benchmark, rows in table.groupby("benchmark", sort=False):
        lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{tex(benchmark)}}}}} \\")
        for row in rows.itertuples(index=False):
            cells = [row.run_name, row.buffer_size, _seeds_cell(row), *_paper_cells(row, with_reference, settings, spread)]
            lines.append(" & ".join(map(tex, cells)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if paired_rows is not None and len(paired_rows):
        pair_header, pair_cells, _ = _paired_lines(paired_rows, settings)
        lines += ["", r"\begin{tabular}{ll" + "r" * (len(pair_header) - 2) + "}", r"\toprule",
                  " & ".join(map(tex, pair_header)) + r" \\", r"\midrule",
                  *[" & ".join(map(tex, cells)) + r" \\" for cells in pair_cells], r"\bottomrule", r"\end{tabular}"]
    lines.append(f"% {_cost_line(table, devices)}")
    return "\n".join(lines) + "\n"


def write_experiment_table(runs_parquet, rows: list[dict], title: str, out_md, out_tex, out_csv,
                           reference_csv=None, settings=tuple(PAPER_SETTINGS), spread: str = "std",
                           pairs=(), paper: str | None = None) -> pd.DataFrame:
    """The table of one experiment block as Markdown, LaTeX and CSV, written atomically: the accuracy columns of
    `settings` (± the `spread` over seeds, std or SEM, and the 95 % interval), the declared `pairs` (method, base)
    compared over shared seeds, and the cost. The CSV holds the rows (`kind` "run") and the pairs ("paired").
    `paper` keeps the published numbers of that paper only."""
    runs = read_table(runs_parquet, RUNS_SCHEMA)
    table = experiment_table(runs, rows, read_reference(reference_csv, paper))
    pairs_table = paired_table(runs, rows, pairs, settings)
    devices = sorted(block_entries(runs, rows).device.dropna().unique())
    for path, text in ((out_md, experiment_markdown(table, title, settings, spread, pairs_table, devices)),
                       (out_tex, experiment_latex(table, title, settings, spread, pairs_table, devices))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    with atomic_path(out_csv) as tmp:
        pd.concat([table.assign(kind="run"), pairs_table.assign(kind="paired")], ignore_index=True).to_csv(
            tmp, index=False)
    return table
