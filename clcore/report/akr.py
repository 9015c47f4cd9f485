"""AKR's table per experiment block (rule akr_report, docs/akr.md#tables): average incremental accuracy over all
phases, phase 0 included, of the nearest-mean (NME) and the head's (CNN) classifier, per image of the seen classes,
beside the AKR figure's values; last-phase accuracy; the mixing weights' spread and collapse flag of `akr` runs;
and the block's pairs compared over seeds on AIA (NME)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..collect import read_run, run_identity
from ..io import atomic_path
from .stats import paired
from .tables import MISSING, block_markdown, paper_cell, published, read_reference, seed_cell

PAPER = "lee2023akr"  # the paper column of config/reference/akr.csv
CAVEAT = ("AKR's official code is not public: its attention module and the way it enters the loss are our "
          "reconstruction (akr_reconstruction_version {version}); the table's metric is inferred to be AIA.")
ICARL_ONLY = ("This block trains no AKR-family method (no reconstructed component); the table's metric is inferred "
              "to be AIA.")
KEYS = ["benchmark", "run_name", "buffer_size"]


def incremental_accuracy(per_phase) -> tuple[float, float]:
    """(AIA, last): the mean over phases t = 0..T−1 of the accuracy on the classes seen after phase t, and the
    last phase's accuracy (inclearn's metrics)."""
    values = np.asarray(list(per_phase), dtype=float)
    return (float(values.mean()), float(values[-1])) if len(values) else (float("nan"), float("nan"))


def last_attentive_spread(metrics: pd.DataFrame) -> float:
    """Mean over phases t > 0 of the std of a − λ in the phase's last epoch (NaN where never attentive)."""
    rows = metrics[(metrics.metric == "akr/a_minus_lambda_std") & (metrics.after_task > 0)]
    if rows.empty:
        return float("nan")
    last = rows[rows.epoch == rows.groupby("after_task").epoch.transform("max")]
    return float(last.value.mean())


def run_frame(run_dirs) -> pd.DataFrame:
    rows = []
    for run_dir in map(Path, run_dirs):
        info, metrics = read_run(run_dir)
        row = {**run_identity(info), "class_il_faa": info["summary"]["class_il"]["faa"],
               "reconstruction": info.get("akr_reconstruction_version"),
               "collapsed": info.get("akr_collapse", {}).get("collapsed"),
               "a_minus_lambda_std": last_attentive_spread(metrics)}
        for classifier in ("nme", "cnn"):
            per_phase = metrics[metrics.metric == f"accuracy_seen/{classifier}"].sort_values("after_task").value
            row[f"aia_{classifier}"], row[f"last_{classifier}"] = incremental_accuracy(per_phase)
        rows.append(row)
    return pd.DataFrame(rows)


def _published_aia(reference: pd.DataFrame | None) -> dict:
    if reference is None or not len(reference):
        return {}
    return {(r.benchmark, r.method, int(r.buffer_size)): paper_cell(r, "class_il")
            for r in published(reference, "aia").itertuples(index=False)}


def akr_table(runs: pd.DataFrame, reference: pd.DataFrame | None = None, reference_names: dict | None = None
              ) -> pd.DataFrame:
    """Per (benchmark, run, buffer): mean ± std over seeds of AIA (NME, CNN) and last-phase accuracy (NME), the
    published AIA of the run's method (or of the reference label `reference_names` gives it), and for `akr` the
    spread of a − λ and the collapsed runs; then the published rows of the block's benchmarks that no run stands
    beside (the figure's other methods, printed only)."""
    paper, names = _published_aia(reference), reference_names or {}
    out, shown = [], set()
    for (benchmark, name, buffer), g in runs.groupby(KEYS, sort=False):
        key = (benchmark, names.get(g.method.iloc[0], g.method.iloc[0]), buffer)
        shown.add(key)
        attentive = g.a_minus_lambda_std.notna().any()
        out.append({"benchmark": benchmark, "run_name": name, "buffer_size": buffer, "seeds": len(g),
                    "aia_nme": seed_cell(g.aia_nme), "paper_aia": paper.get(key, MISSING),
                    "aia_cnn": seed_cell(g.aia_cnn), "last_nme": seed_cell(g.last_nme),
                    "class_il_faa": seed_cell(g.class_il_faa),
                    "a_minus_lambda_std": f"{g.a_minus_lambda_std.mean():.4f}" if attentive else MISSING,
                    "collapsed": f"{int(g.collapsed.fillna(False).sum())}/{len(g)}" if attentive else MISSING})
    benchmarks = set(runs.benchmark)
    for (benchmark, method, buffer), cell in paper.items():
        if benchmark in benchmarks and (benchmark, method, buffer) not in shown:
            out.append({"benchmark": benchmark, "run_name": f"{method} (published only)", "buffer_size": buffer,
                        "seeds": 0, **dict.fromkeys(["aia_nme", "aia_cnn", "last_nme", "class_il_faa",
                                                     "a_minus_lambda_std", "collapsed"], MISSING), "paper_aia": cell})
    columns = ["benchmark", "run_name", "buffer_size", "seeds", "aia_nme", "paper_aia", "aia_cnn", "last_nme",
               "class_il_faa", "a_minus_lambda_std", "collapsed"]
    return pd.DataFrame(out, columns=columns)


def pair_lines(runs: pd.DataFrame, pairs) -> list[str]:
    """`method − base` over the seeds both ran, per benchmark and memory of `method` (a buffer-free base, SGD, pairs
    with every memory): mean, 95 % interval, p; on AIA (NME), or on class-IL final accuracy where a side has no
    nearest-mean classifier."""
    lines = []
    for benchmark, g in runs.groupby("benchmark", sort=False):
        for method, base in pairs:
            for buffer, ours in g[g.run_name == method].groupby("buffer_size", sort=False):
                theirs = g[g.run_name == base]
                theirs = theirs[theirs.buffer_size == buffer] if theirs.buffer_size.nunique() > 1 else theirs
                if theirs.empty:
                    continue
                metric = "aia_nme" if ours.aia_nme.notna().all() and theirs.aia_nme.notna().all() else "class_il_faa"
                p = paired(dict(zip(ours.seed, ours[metric])), dict(zip(theirs.seed, theirs[metric])))
                lines.append(f"- {benchmark}, memory {buffer}, {LABELS[metric]}: {method} − {base} = "
                             f"{p.diff.mean:+.2f} [{p.diff.ci_low:+.2f}, {p.diff.ci_high:+.2f}], p = {p.p_value:.3f}, "
                             f"seeds {', '.join(map(str, p.seeds))}")
    return lines


LABELS = {"aia_nme": "AIA (NME)", "class_il_faa": "class-IL FAA"}
HEADER = {"run_name": "method", "buffer_size": "memory", "seeds": "seeds", "aia_nme": "AIA (NME)", "paper_aia": "paper",
          "aia_cnn": "AIA (CNN)", "last_nme": "last phase (NME)", "class_il_faa": "class-IL FAA",
          "a_minus_lambda_std": "std(a − λ)", "collapsed": "collapsed"}


def akr_markdown(table: pd.DataFrame, title: str, pairs_text: list[str], version) -> str:
    return block_markdown(title, [
        CAVEAT.format(version=version) if version else ICARL_ONLY,
        "Mean ± std over seeds (%). AIA = mean over all phases, phase 0 included, of the accuracy on the test "
        "images of the classes seen so far; NME = nearest mean of exemplars, CNN = the head's arg-max; "
        "class-IL FAA = the final accuracy matrix row's mean (every method has it). Paper: "
        "the AKR figure's values (config/reference/akr.csv), seeds and classifier not stated. std(a − λ): "
        "spread of the attention's tilt in each phase's last epoch, mean over phases ≥ 1 and seeds; collapsed: "
        "runs with an epoch where more than half of the weights lie outside [0.02, 0.98]."], table, HEADER, pairs_text)


def write_akr_report(run_dirs, title: str, out_md, out_csv, pairs=(), reference_csv=(),
                     reference_names: dict | None = None) -> pd.DataFrame:
    runs = run_frame(run_dirs)
    table = akr_table(runs, read_reference(reference_csv, PAPER), reference_names)
    versions = ", ".join(map(str, sorted({int(v) for v in runs.reconstruction.dropna()})))
    with atomic_path(out_md) as tmp:
        tmp.write_text(akr_markdown(table, title, pair_lines(runs, pairs), versions), encoding="utf-8")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table
