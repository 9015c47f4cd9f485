"""The clcore command line as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from click.testing import CliRunner

from clcore.bench import BENCH_SCHEMA
from clcore.cli import main
from clcore.results import load_metrics
from helpers import wait_for_checkpoint_writes

REPO = Path(__file__).resolve().parents[1]


def clcore(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "clcore.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_list_and_unknown_names():
    runner = CliRunner()
    out = runner.invoke(main, ["list", "methods"])
    assert out.exit_code == 0 and "derpp" in out.output and "icarl" in out.output
    out = runner.invoke(main, ["train", "-b", "seq-digits", "-m", "der_pp", "--buffer", "10"])
    assert out.exit_code == 2 and "Did you mean 'derpp'" in out.output
    out = runner.invoke(main, ["prepare", "digitz"])
    assert out.exit_code == 2 and "Did you mean 'digits'" in out.output


def test_prepare_is_idempotent_and_verifies(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["prepare", "digits", "--prepared-dir", tmp_path]).exit_code == 0
    meta = json.loads((tmp_path / "digits/meta.json").read_text())
    assert meta["splits"]["train"]["n"] == 1438 and meta["splits"]["test"]["n"] == 359
    assert meta["pixel_max"] == 16 and meta["schema_version"] == 1
    stamp = (tmp_path / "digits/train.x.npy").stat().st_mtime_ns
    assert runner.invoke(main, ["prepare", "digits", "--prepared-dir", tmp_path]).exit_code == 0
    assert (tmp_path / "digits/train.x.npy").stat().st_mtime_ns == stamp  # nothing rebuilt
    with open(tmp_path / "digits/train.x.npy", "r+b") as f:  # corrupt one byte
        f.seek(-1, os.SEEK_END)
        f.write(b"\x07")
    assert runner.invoke(main, ["prepare", "digits", "--prepared-dir", tmp_path, "--verify"]).exit_code == 0
    assert (tmp_path / "digits/train.x.npy").stat().st_mtime_ns != stamp  # rebuilt after the failed check


def test_bench_schema_and_overhead(tmp_path, prepared_dir):
    out = tmp_path / "bench.parquet"
    result = CliRunner().invoke(main, ["bench", "-b", "seq-digits", "--methods", "sgd,er,derpp", "--buffer-size", "50",
                                       "--steps", "20", "--warmup", "3", "--repeats", "4", "--prepared-dir",
                                       prepared_dir, "--hparams-dir", REPO / "config/hparams", "--out", out])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.schema.equals(BENCH_SCHEMA, check_metadata=False)
    df = table.to_pandas()
    assert (df.step_ms_median > 0).all() and (df.backbone_step_ms > 0).all() and (df.images_per_s > 0).all()
    # the stream batch (16) plus each replay draw of minibatch_size 32: ER one draw, DER++ two
    assert list(df.expected_passes) == [1, 1 + 32 / 16, 1 + 2 * 32 / 16]


def test_sigkill_during_third_task_then_resume(tmp_path, prepared_dir):
    args = ["train", "-b", "seq-digits", "-m", "er", "--buffer", "50", "--seed", "3", "--set", "n_epochs=60",
            "--prepared-dir", prepared_dir, "--hparams-dir", REPO / "config/hparams", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "clcore.cli", *map(str, args), "--results-dir", tmp_path / "killed"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dirs = lambda root: list(root.glob("runs/seq-digits/er-h*/buf50/seed3"))
    deadline = time.time() + 60
    while not ckpt_dirs(tmp_path / "killed") and time.time() < deadline:
        time.sleep(0.01)
    ckpt = ckpt_dirs(tmp_path / "killed")[0] / "checkpoint.pt"
    wait_for_checkpoint_writes(ckpt, 2, proc)  # tasks 1 and 2 done: the run is in task 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (ckpt.parent / "metrics.parquet").exists()
    resumed = clcore(*args, "--results-dir", tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    reference = clcore(*args, "--results-dir", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    ref_dir = ckpt_dirs(tmp_path / "reference")[0]
    assert ref_dir.name == ckpt.parent.name
    accuracy = lambda d: (lambda m: m[m.metric == "accuracy"].reset_index(drop=True))(load_metrics(d / "metrics.parquet"))
    pd.testing.assert_frame_equal(accuracy(ckpt.parent), accuracy(ref_dir))
    run = json.loads((ckpt.parent / "run.json").read_text())
    assert run["phases"]["resumed_at_task"] == [2]
