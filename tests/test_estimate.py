"""`clcore estimate`: planned steps by hand, and device-hours from finished runs or a backbone proxy."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import clcore.estimate as est
from clcore.hparams import make_hparams, resolve
from clcore.methods import get_method
from clcore.pipeline import load_config
from clcore.results import RUNS_SCHEMA, write_table
from clcore.scenarios import get_benchmark


def test_planned_steps_by_hand(prepared_dir):
    sizes = est.task_sizes(get_benchmark("seq-digits"), prepared_dir)
    y = np.load(prepared_dir / "digits/train.y.npy")
    assert sizes == [int(((y // 2) == t).sum()) for t in range(5)] and sum(sizes) == len(y)
    steps = lambda method, buffer=0, **o: get_method(method)[0].planned_steps(  # noqa: E731
        make_hparams(method, resolve(method, "seq-digits", buffer, o)), sizes, buffer)
    assert steps("sgd") == sum(20 * math.ceil(n / 16) for n in sizes)          # 20 epochs, batch 16
    assert steps("joint") == 20 * math.ceil(sum(sizes) / 16)                   # once, on the union
    assert steps("icarl", 100) == sum(20 * math.ceil((n + (100 if t else 0)) / 16) for t, n in enumerate(sizes))
    assert steps("bir") == 5 * resolve("bir", "seq-digits", 0)["iters"]        # iterations per task
    assert est.task_sizes(get_benchmark("seq-cifar10"), prepared_dir) == [10000] * 5  # not prepared: known sizes


def config(tmp_path, methods):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"experiments": [{"id": "b", "benchmarks": ["seq-digits"], "methods": methods,
                                                "buffers": [100], "seeds": [0, 1]}]}))
    return load_config([cfg])


def test_device_hours_from_finished_runs_then_from_the_backbone_proxy(tmp_path, prepared_dir, monkeypatch):
    run_json = tmp_path / "results/runs/seq-digits/sgd/buf0/seed0/run.json"
    run_json.parent.mkdir(parents=True)
    run_json.write_text(json.dumps({"hparams": resolve("sgd", "seq-digits", 0)}))
    steps = est.steps_of(est.Run("seq-digits", "sgd", 0, 0, "sgd", resolve("sgd", "seq-digits", 0)), prepared_dir)
    row = dict(benchmark="seq-digits", method="sgd", run_name="sgd", buffer_size=0, seed=0, wall_time_s=2.0 * steps,
               device="cpu", device_hours=2.0 * steps / 3600, run_json="results/runs/seq-digits/sgd/buf0/seed0/run.json")
    runs = tmp_path / "results/tables/runs.parquet"
    write_table(pd.DataFrame([row]).reindex(columns=RUNS_SCHEMA.names), RUNS_SCHEMA, runs)
    monkeypatch.setattr(est, "backbone_step_s", lambda spec, prepared_dir, device: 0.5)
    table, notes = est.estimate(config(tmp_path, ["sgd", "derpp", "bir"]), [runs], True, "cpu", prepared_dir)
    by = {(r.run_name, r.seed): r for r in table.itertuples()}
    assert by[("sgd", 1)].s_per_step == pytest.approx(2.0) and by[("sgd", 1)].source.startswith("finished runs (1")
    # DER++ on seq-digits: the stream batch of 16 and two replay draws of 32, 5 passes' worth
    assert by[("derpp", 0)].s_per_step == pytest.approx(0.5 * 5) and "x 5 passes" in by[("derpp", 0)].source
    assert by[("derpp", 0)].device_hours == pytest.approx(by[("derpp", 0)].steps * 2.5 / 3600)
    assert math.isnan(by[("bir", 0)].s_per_step) and by[("bir", 0)].source == "unmeasured"
    lines = est.summary_lines(table, notes)
    assert any(line.startswith("total: ") and "for 4 of 6 runs" in line for line in lines)
    assert any("bir on seq-digits" in line for line in lines) and any("backbone step 500.0 ms" in n for n in notes)
