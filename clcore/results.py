"""The Parquet schemas of every result table, and their writers and readers.

Schemas are versioned through the `schema_version` metadata key. Per-run files carry no identity
columns (benchmark, method, buffer, seed live in the run's path and run.json); `collect` adds them
once, with explicit types (docs/protocol.md#schemas-and-versions).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DamagedOutputError
from .io import atomic_path

SCHEMA_VERSION = "1"  # of every table below but RUNS_SCHEMA; each schema carries its own in its metadata
SETTINGS = ("class_il", "task_il")
SUMMARY_METRICS = ("faa", "aia", "forgetting", "forgetting_mammoth", "bwt", "fwt")
RANDOM_INIT_ROW = -1  # `after_task` of the randomly initialised network's evaluation (FWT probe)
STREAM_SETTING = "nic"  # a stream's accuracy rows: after_task = the incremental batch, over all classes
STREAM_EVAL_TASK = -1   # eval_task of a row pooled over the whole test set

_meta = {"schema_version": SCHEMA_VERSION}

METRICS_SCHEMA = pa.schema(
    [
        pa.field("metric", pa.string(), nullable=False),  # accuracy, loss/<name>, or a method extra
        pa.field("setting", pa.string()),                  # class_il | task_il | nic (a stream) | "" (not per setting)
        pa.field("after_task", pa.int16()),                # -1 = random-init probe
        pa.field("eval_task", pa.int16()),                 # null when not per evaluated task
        pa.field("epoch", pa.int16()),
        pa.field("step", pa.int64()),
        pa.field("value", pa.float64()),
    ],
    metadata=_meta,
)

_identity = [
    pa.field("benchmark", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),   # registry name
    pa.field("run_name", pa.string(), nullable=False),  # path component: method or method-h<hash>
    pa.field("buffer_size", pa.int32(), nullable=False),
    pa.field("seed", pa.int32(), nullable=False),
]

RUNS_SCHEMA = pa.schema(
    _identity
    + [
        pa.field("hparam_hash", pa.string()),
        *[pa.field(f"{s}_{m}", pa.float64()) for s in SETTINGS for m in SUMMARY_METRICS],
        pa.field("wall_time_s", pa.float64()),
        pa.field("device", pa.string()),
        # what the run cost: one device for its wall time (the CPU, or the GPU it held), and its peak memory
        pa.field("device_hours", pa.float64()),
        pa.field("peak_host_mem_mb", pa.float64()),
        pa.field("peak_gpu_mem_mb", pa.float64()),  # null on CPU
        pa.field("git_commit", pa.string()),
        pa.field("clcore_version", pa.string()),
        pa.field("run_json", pa.string()),
    ],
    metadata={"schema_version": "2"},  # 2: the cost columns
)

ACCURACY_SCHEMA = pa.schema(
    _identity
    + [
        pa.field("setting", pa.string(), nullable=False),
        pa.field("after_task", pa.int16(), nullable=False),
        pa.field("eval_task", pa.int16(), nullable=False),
        pa.field("value", pa.float64()),
    ],
    metadata=_meta,
)


TASK_METRICS_SCHEMA = pa.schema(  # per-task evaluation metrics other than accuracy (SER: sal_kld/cc/sim)
    _identity
    + [
        pa.field("metric", pa.string(), nullable=False),
        pa.field("after_task", pa.int16(), nullable=False),
        pa.field("eval_task", pa.int16(), nullable=False),  # -1 = pooled over the seen tasks' images
        pa.field("value", pa.float64()),
    ],
    metadata=_meta,
)


def write_table(df: pd.DataFrame, schema: pa.Schema, path) -> None:
    """Write `df` with exactly `schema` (column order, types, version metadata), atomically."""
    missing = set(schema.names) - set(df.columns)
    if missing:
        raise ValueError(f"table for {path} lacks columns {sorted(missing)}")
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path, schema: pa.Schema) -> pd.DataFrame:
    """A table written by `write_table`; one that cannot be read, or is of another schema version, raises a
    DamagedOutputError that names it and the command that makes it again."""
    redo = f"Make it again (nothing to delete by hand): `snakemake --cores all --forcerun {path}`."
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DamagedOutputError(path, f"cannot be read ({str(err).strip().splitlines()[0]}), the file is damaged",
                                 redo) from err
    version = (table.schema.metadata or {}).get(b"schema_version", b"?").decode()
    expected = schema.metadata[b"schema_version"].decode()
    missing = set(schema.names) - set(table.schema.names)
    if version != expected or missing:
        raise DamagedOutputError(path, f"schema_version {version} (this clcore reads {expected})"
                                 + (f", lacks {sorted(missing)}" if missing else ""), redo)
    return table.to_pandas()


def metric_rows(metric, value, setting="", after_task=None, eval_task=None, epoch=None, step=None):
    return dict(metric=metric, setting=setting, after_task=after_task, eval_task=eval_task,
                epoch=epoch, step=step, value=float(value))


def accuracy_rows(acc, setting: str, after_task: int) -> list[dict]:
    """One row per evaluated task of one evaluation (one row of the accuracy matrix)."""
    return [metric_rows("accuracy", a, setting, after_task, i) for i, a in enumerate(acc)]


def accuracy_matrix(metrics: pd.DataFrame, setting: str):
    """(acc [T, T], random_init [T] or None) from a run's long metrics table."""
    rows = metrics[(metrics.metric == "accuracy") & (metrics.setting == setting)]
    probe = rows[rows.after_task == RANDOM_INIT_ROW].sort_values("eval_task")
    trained = rows[rows.after_task >= 0].pivot(index="after_task", columns="eval_task", values="value")
    random_init = probe.value.to_numpy() if len(probe) else None
    return trained.sort_index().sort_index(axis=1).to_numpy(), random_init


def save_metrics(rows: list[dict], path) -> None:
    write_table(pd.DataFrame(rows, columns=METRICS_SCHEMA.names), METRICS_SCHEMA, path)


def load_metrics(path) -> pd.DataFrame:
    return read_table(path, METRICS_SCHEMA)


def run_dir(results_root, benchmark: str, run_name: str, buffer_size: int, seed: int) -> Path:
    return Path(results_root) / "runs" / benchmark / run_name / f"buf{buffer_size}" / f"seed{seed}"


def block_entries(df: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """The entries of `df` (runs, accuracy or task metrics) that an experiment block asks for: its rows'
    (benchmark, run_name, buffer_size) at the block's `seeds` (rows without `seeds`: every entry of the
    block's benchmarks), so that a
    run shared with a block of more seeds counts only at this block's seeds."""
    df = df[df.benchmark.isin({r["benchmark"] for r in rows})]
    if df.empty or any("seeds" not in r for r in rows):
        return df
    wanted = {(r["benchmark"], r["run_name"], int(r["buffer_size"]), int(s)) for r in rows for s in r["seeds"]}
    keys = zip(df.benchmark, df.run_name, df.buffer_size.astype(int), df.seed.astype(int))
    return df[[key in wanted for key in keys]]


# SER's robustness studies (clcore/methods/ser/attacks.py): one row per (run, attack, eps, sal_grad, setting)
ROBUST_SCHEMA = pa.schema(
    [
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("run_name", pa.string(), nullable=False),
        pa.field("buffer_size", pa.int32(), nullable=False),
        pa.field("seed", pa.int32(), nullable=False),
        pa.field("attack", pa.string(), nullable=False),          # clean | fgsm | pgd | conflict
        pa.field("eps", pa.float64(), nullable=False),            # L∞ radius on [0,1] pixels; 0 for clean/conflict
        pa.field("sal_grad", pa.string(), nullable=False),        # through | stop (SER attacks) | n/a
        pa.field("attack_setting", pa.string(), nullable=False),  # class | task (loss the attack ascends) | n/a
        pa.field("images", pa.string(), nullable=False),          # stratified (attack subset) | all (test set)
        pa.field("setting", pa.string(), nullable=False),         # class_il | task_il
        pa.field("accuracy", pa.float64()),                       # %
        pa.field("n_images", pa.int32(), nullable=False),
    ],
    metadata={"schema_version": SCHEMA_VERSION},
)

