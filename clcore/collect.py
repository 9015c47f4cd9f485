"""Consolidate finished runs into the pipeline's tables: runs.parquet (one row per run),
accuracy.parquet (every accuracy matrix entry), task_metrics.parquet (other per-task evaluation
metrics, e.g. SER's saliency metrics) and summary.tsv (for the Snakemake report).

Reads only the explicit list of run directories it is given, never a glob of the results tree, so
runs of a removed configuration cannot leak in.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import DamagedOutputError
from .io import atomic_path, read_json
from .results import (ACCURACY_SCHEMA, METRICS_SCHEMA, RUNS_SCHEMA, SETTINGS, SUMMARY_METRICS, TASK_METRICS_SCHEMA,
                      read_table, write_table)


def run_identity(info: dict) -> dict:
    """The identity columns of a run, from its run.json."""
    return {"benchmark": info["benchmark"], "method": info["method"], "run_name": info["run_name"],
            "buffer_size": int(info["buffer_size"]), "seed": int(info["seed"])}


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(run.json, metrics.parquet) of a finished run; a damaged one raises a DamagedOutputError that names the
    run and how to train it again."""
    try:
        return read_json(run_dir / "run.json"), read_table(run_dir / "metrics.parquet", METRICS_SCHEMA)
    except (OSError, ValueError, DamagedOutputError) as err:  # ValueError: a truncated run.json
        reason = (f"metrics.parquet {err.reason}" if isinstance(err, DamagedOutputError)
                  else f"run.json cannot be read ({err}), the file is damaged")
        benchmark, name, buffer, seed = run_dir.parts[-4:]
        by_hand = (f"; by hand: `clcore train -b {benchmark} -m {name} --buffer {buffer[3:]} --seed {seed[4:]}`"
                   if "-" not in name else "")  # an override's values are in its damaged run.json
        raise DamagedOutputError(f"run {run_dir}", reason, "Train it again (nothing to delete by hand): "
                                 f"`snakemake --cores all --forcerun {run_dir / 'metrics.parquet'}`{by_hand}.") from err


def collect(run_dirs, out_runs, out_accuracy, out_summary=None, out_task_metrics=None) -> pd.DataFrame:
    runs, accuracy, task_metrics = [], [], []
    for run_dir in map(Path, run_dirs):
        info, metrics = read_run(run_dir)
        ident = run_identity(info)
        row = {**ident, "hparam_hash": info["run_name"].partition("-h")[2] or None,
               "wall_time_s": info["wall_time_s"], "device": info["device"],
               "device_hours": info["wall_time_s"] / 3600, "peak_host_mem_mb": info.get("peak_host_mem_mb"),
               "peak_gpu_mem_mb": info.get("peak_gpu_mem_mb"), "git_commit": info["git_commit"],
               "clcore_version": info["versions"]["clcore"], "run_json": str(run_dir / "run.json")}
        row.update({f"{s}_{m}": info["summary"][s][m] for s in SETTINGS for m in SUMMARY_METRICS})
        runs.append(row)
        acc = metrics[metrics.metric == "accuracy"][["setting", "after_task", "eval_task", "value"]]
        accuracy.append(acc.assign(**ident))
        per_task = metrics[(metrics.metric != "accuracy") & metrics.eval_task.notna() & (metrics.after_task >= 0)]
        task_metrics.append(per_task[["metric", "after_task", "eval_task", "value"]].assign(**ident))
    runs_df = pd.DataFrame(runs, columns=RUNS_SCHEMA.names)
    accuracy_df = pd.concat(accuracy, ignore_index=True) if accuracy else pd.DataFrame(columns=ACCURACY_SCHEMA.names)
    write_table(runs_df, RUNS_SCHEMA, out_runs)
    write_table(accuracy_df, ACCURACY_SCHEMA, out_accuracy)
    if out_task_metrics:
        frames = [f for f in task_metrics if len(f)]
        write_table(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TASK_METRICS_SCHEMA.names),
                    TASK_METRICS_SCHEMA, out_task_metrics)
    if out_summary:
        with atomic_path(out_summary) as tmp:
            runs_df.drop(columns=["run_json"]).to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    return runs_df
