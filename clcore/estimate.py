"""What a config will cost before it runs (`clcore estimate`, docs/protocol.md#cost): the device-hours of every
run, from the optimiser steps it will take (each method's `planned_steps`) and a measured time per step.

Where the time per step comes from, in this order, and the estimate says which one each run used:
1. finished runs of the same benchmark and method (`runs.parquet` of an earlier run of the pipeline): their
   median wall time per planned step, evaluation and checkpoints included;
2. the benchmark's backbone step (forward, cross-entropy, backward, SGD step on random inputs of the
   benchmark's real shape and batch size) timed now on this machine's device, times the method's forward and
   backward passes per step (`clcore.bench.expected_passes`); methods with their own networks (the BI-R
   family) or no known pass count get no estimate this way and are listed as unmeasured.
No dataset is needed: task sizes come from the prepared data where it exists, else from the datasets' known
training-set sizes below.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .backbones import build_backbone
from .bench import _time_windows, bare_step, expected_passes
from .data import metadata
from .data.prepared import parse_name, read_split
from .device import describe, pick_device
from .hparams import make_hparams
from .io import read_json
from .methods import get_method
from .pipeline import Pipeline, Run
from .results import RUNS_SCHEMA, read_table
from .scenarios import BenchmarkSpec, StreamSpec, class_permutation, get_benchmark

# training images per class and image shape of each dataset, for datasets not prepared on this machine;
# ≈: FG-ImageNet has about 1,300 per class, SER's Mini-ImageNet about 600 (docs/datasets.md#manual-datasets)
KNOWN_DATASETS = {
    "mnist": (6000, (1, 28, 28)), "cifar10": (5000, (3, 32, 32)), "cifar100": (500, (3, 32, 32)),
    "tinyimagenet": (500, (3, 64, 64)), "digits": (144, (1, 8, 8)), "shapes": (240, (3, 32, 32)),
    "fg-imagenet": (1300, None), "mini-imagenet": (600, None), "core50": (2400, (3, 128, 128)),
}


def task_sizes(spec: BenchmarkSpec, prepared_dir) -> list[int]:
    """Training examples per task: counted in the prepared data where it exists, else from KNOWN_DATASETS."""
    return list(_task_sizes(spec.name, str(prepared_dir)))


@functools.lru_cache
def _task_sizes(benchmark: str, prepared_dir: str) -> tuple[int, ...]:  # one read of the labels per benchmark
    spec = get_benchmark(benchmark)
    if isinstance(spec, StreamSpec):  # NICv2: batch 0 then equal shares of the other videos (docs/datasets.md#core50)
        first, rest = (2999, 119894 - 2999) if spec.prepared == "core50" else (10 * 6, 390 * 6)
        return (first,) + (round(rest / (spec.n_tasks - 1)),) * (spec.n_tasks - 1)
    if (Path(prepared_dir) / spec.prepared / "meta.json").exists():
        y = np.asarray(read_split(Path(prepared_dir) / spec.prepared, "train")["y"])
        y = y[y < spec.n_classes]
        perm = class_permutation(spec.class_order, spec, 0)
        task = spec.task_of_class()[y if perm is None else perm[y]]
        return tuple(int((task == t).sum()) for t in range(spec.n_tasks))
    return tuple(KNOWN_DATASETS[parse_name(spec.prepared)[0]][0] * size for size in spec.task_sizes)


def input_shape(spec: BenchmarkSpec, prepared_dir) -> tuple[int, ...]:
    try:
        return tuple(metadata(spec.prepared, prepared_dir)["splits"]["train"]["fields"]["x"]["shape"][1:])
    except (OSError, KeyError):
        return known_input_shape(spec)


def known_input_shape(spec: BenchmarkSpec) -> tuple[int, ...]:
    """The image shape of the benchmark's dataset as released (or at its prepared @HxW size)."""
    base, size = parse_name(spec.prepared)
    shape = KNOWN_DATASETS[base][1]
    return shape if shape else (3, *size)


def steps_of(run: Run, prepared_dir) -> int:
    cls, _ = get_method(run.method)
    spec = get_benchmark(run.benchmark)
    return cls.planned_steps(make_hparams(run.method, run.hparams), task_sizes(spec, prepared_dir), run.buffer_size)


def measured_step_times(runs_parquets, prepared_dir) -> tuple[dict[tuple[str, str], dict], int]:
    """(benchmark, method) -> median seconds per planned step over finished runs, with the devices they ran on;
    and how many runs were left out because their run.json (with the hyperparameters that set their steps) is
    gone. A run.json path is read as written by collect, or relative to the pipeline directory of the parquet
    file (`<dir>/results/tables/runs.parquet`)."""
    times: dict[tuple[str, str], list] = {}
    skipped = 0
    for parquet in map(Path, runs_parquets):
        for row in read_table(parquet, RUNS_SCHEMA).itertuples(index=False):
            run_json = next((p for p in (Path(row.run_json), parquet.parents[2] / row.run_json) if p.exists()), None)
            if run_json is None:
                skipped += 1
                continue
            run = Run(row.benchmark, row.run_name, row.buffer_size, row.seed, row.method,
                      read_json(run_json)["hparams"])
            steps = steps_of(run, prepared_dir)
            if steps:
                times.setdefault((row.benchmark, row.method), []).append((row.wall_time_s / steps, row.device))
    return {key: {"s_per_step": statistics.median(t for t, _ in values), "n": len(values),
                  "device": ", ".join(sorted({d for _, d in values}))} for key, values in times.items()}, skipped


def backbone_step_s(spec: BenchmarkSpec, prepared_dir, device, budget_s: float = 2.0) -> float:
    """Seconds of one bare backbone step on random inputs of the benchmark's shape and batch size: the median of
    up to 8 timed steps after one warm-up, fewer where steps are slow (a 288x384 ResNet-18 step on a CPU)."""
    dev = pick_device(device)
    shape = input_shape(spec, prepared_dir)
    torch.manual_seed(0)
    net = build_backbone(spec.backbone, shape, spec.n_classes, **spec.backbone_options).to(dev)
    if spec.channels_last:
        net = net.to(memory_format=torch.channels_last)
    step = bare_step(net, torch.randn(spec.batch_size, *shape, device=dev),
                     torch.randint(0, spec.n_classes, (spec.batch_size,), device=dev))
    warmup_ms = _time_windows(step, 1, 0, 1, dev)[0]
    n = int(min(8, max(2, 1000 * budget_s // max(warmup_ms, 1e-3))))
    return statistics.median(_time_windows(step, n, 0, n, dev)) / 1000


def estimate(config: dict, measured=(), measure_backbones: bool = False, device: str = "auto",
             prepared_dir="resources/prepared") -> tuple[pd.DataFrame, list[str]]:
    """One row per run of the config (block, benchmark, run, buffer, seed, steps, s_per_step, device_hours, source)
    and the lines that say which measurements were used."""
    pipeline = Pipeline(config)
    by_method, skipped = measured_step_times(measured, prepared_dir)
    dev_name = describe(pick_device(device))
    backbone: dict[tuple, float] = {}
    rows, notes = [], []
    if measured:
        notes.append(f"measured runs: {', '.join(map(str, measured))} ({sum(v['n'] for v in by_method.values())} "
                     f"finished runs of {len(by_method)} (benchmark, method) pairs"
                     + (f"; {skipped} left out, their run.json is gone)" if skipped else ")"))
    for run in pipeline.runs.values():
        steps = steps_of(run, prepared_dir)
        hit = by_method.get((run.benchmark, run.method))
        passes = expected_passes(run.method, make_hparams(run.method, run.hparams))
        if hit:
            s_per_step, source = hit["s_per_step"], f"finished runs ({hit['n']} on {hit['device']})"
        elif measure_backbones and passes is not None:
            spec = get_benchmark(run.benchmark)
            key = (spec.backbone, str(spec.backbone_options), input_shape(spec, prepared_dir), spec.batch_size,
                   spec.channels_last)  # benchmarks that differ only in their data share one measurement
            if key not in backbone:
                started = time.time()
                backbone[key] = backbone_step_s(spec, prepared_dir, device)
                notes.append(f"{run.benchmark} (and benchmarks of the same backbone and input): backbone step "
                             f"{1000 * backbone[key]:.1f} ms on {dev_name} ({torch.get_num_threads()} threads; "
                             f"measured in {time.time() - started:.0f} s)")
            s_per_step, source = backbone[key] * passes, f"backbone step on {dev_name} x {passes:g} passes"
        else:
            s_per_step, source = float("nan"), "unmeasured"
        rows.append(dict(block=run.experiments[0], benchmark=run.benchmark, run_name=run.name,
                         buffer_size=run.buffer_size, seed=run.seed, steps=steps, s_per_step=s_per_step,
                         device_hours=steps * s_per_step / 3600, source=source))
    return pd.DataFrame(rows), notes


def summary_lines(table: pd.DataFrame, notes: list[str]) -> list[str]:
    """Per block and in total: runs, steps and device-hours, and what was not measured."""
    lines = ["device-hours per block (a run shared by blocks counts in the first):"]
    for block, rows in table.groupby("block", sort=False):
        known = rows.dropna(subset=["s_per_step"])
        lines.append(f"  {block:32s} {len(rows):5d} runs  {rows.steps.sum():>12,d} steps  "
                     f"{known.device_hours.sum():10.2f} h" + (f"  ({len(rows) - len(known)} unmeasured)"
                                                              if len(known) < len(rows) else ""))
    known = table.dropna(subset=["s_per_step"])
    lines.append(f"total: {known.device_hours.sum():.2f} device-hours for {len(known)} of {len(table)} runs")
    missing = sorted({(r.benchmark, r.run_name.split("-")[0]) for r in table.itertuples() if math.isnan(r.s_per_step)})
    if missing:
        lines.append("unmeasured (no finished runs, and no backbone proxy): "
                     + ", ".join(f"{m} on {b}" for b, m in missing[:20]) + (" ..." if len(missing) > 20 else ""))
    return lines + ["measurements used:", *(f"  {n}" for n in notes)]
