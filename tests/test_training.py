"""The task loop on seq-digits: outputs and their schemas, resume after a kill, NaN stop, ordering."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from clcore import data
from clcore.errors import NonFiniteLossError, UnknownNameError
from clcore.hparams import make_hparams, resolve, run_name
from clcore.methods import get_method
from clcore.results import METRICS_SCHEMA, accuracy_matrix, load_metrics
from clcore.scenarios import BenchmarkSpec, Scenario, Task
from clcore.train import evaluate, run_training
from helpers import killed_at_task


def train(prepared_dir, out, method, buffer_size=0, seed=0, benchmark="seq-digits", **overrides):
    hp = resolve(method, benchmark, buffer_size, overrides)
    return run_training(benchmark, method, buffer_size, seed, hp, prepared_dir, out)


def test_outputs_and_schema(prepared_dir, tmp_path):
    info = train(prepared_dir, tmp_path, "er", 50)
    table = pq.read_table(tmp_path / "metrics.parquet")
    assert table.schema.equals(METRICS_SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"schema_version"] == b"1"
    metrics = load_metrics(tmp_path / "metrics.parquet")
    acc, probe = accuracy_matrix(metrics, "class_il")
    assert acc.shape == (5, 5) and probe.shape == (5,)
    assert info["summary"]["class_il"]["faa"] == pytest.approx(acc[-1].mean())
    task_acc, _ = accuracy_matrix(metrics, "task_il")
    assert np.all(task_acc >= acc - 1e-9)  # masking can only help
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["hparams"]["minibatch_size"] == 32 and run["buffer_size"] == 50
    assert not (tmp_path / "checkpoint.pt").exists()
    assert {"loss/loss"} <= set(metrics.metric)


@pytest.mark.parametrize("method,buffer_size", [("er", 50), ("derpp", 50), ("icarl", 50), ("si", 0), ("lwf", 0),
                                                ("ewc_on", 0), ("joint", 0), ("er_ace", 50), ("lwf_mc", 0)])
def test_resume_after_kill_equals_uninterrupted(prepared_dir, tmp_path, monkeypatch, method, buffer_size):
    reference = load_metrics(train(prepared_dir, tmp_path / "ref", method, buffer_size) and tmp_path / "ref/metrics.parquet")
    with killed_at_task(monkeypatch, get_method(method)[0]), pytest.raises(KeyboardInterrupt):
        train(prepared_dir, tmp_path / "run", method, buffer_size)
    assert (tmp_path / "run/checkpoint.pt").exists()
    train(prepared_dir, tmp_path / "run", method, buffer_size)
    resumed = load_metrics(tmp_path / "run/metrics.parquet")
    accuracy = lambda m: m[m.metric == "accuracy"].reset_index(drop=True)
    pd.testing.assert_frame_equal(accuracy(resumed), accuracy(reference))


def test_nan_loss_stops_naming_task_and_step(prepared_dir, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"task 1 .*step \d+"):
        train(prepared_dir, tmp_path, "sgd", lr=1e30)


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'derpp'"):
        resolve("derp", "seq-digits", 10)
    with pytest.raises(UnknownNameError, match="Did you mean 'seq-shapes'"):
        resolve("er", "seq-shape", 10)
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'"):
        resolve("derpp", "seq-digits", 10, {"alpah": 0.2})


def test_overrides_change_the_run_name_and_buffer_rules(prepared_dir, tmp_path):
    assert run_name("er", {}) == "er"
    assert run_name("er", {"lr": 0.05}) != run_name("er", {"lr": 0.01})
    assert run_name("er", {"lr": 0.05}).startswith("er-h")
    with pytest.raises(ValueError, match="buffer size 0"):
        train(prepared_dir, tmp_path, "sgd", 10)
    with pytest.raises(ValueError, match="buffer size > 0"):
        train(prepared_dir, tmp_path, "er", 0)


def test_class_il_ordering_on_digits(prepared_dir, tmp_path):
    """docs/baselines.md#sanity-checks: on seq-digits joint > derpp >= er - 1 > sgd + 10 (class-IL, mean of 3 seeds)."""
    faa = {}
    for method, buffer_size in (("joint", 0), ("derpp", 100), ("er", 100), ("sgd", 0)):
        faa[method] = np.mean([train(prepared_dir, tmp_path / f"{method}{s}", method, buffer_size, seed=s)
                               ["summary"]["class_il"]["faa"] for s in range(3)])
    assert faa["joint"] > faa["derpp"] >= faa["er"] - 1 > faa["sgd"] + 10, faa


@pytest.mark.slow
def test_class_il_ordering_on_shapes(tmp_path):
    """The embedded default's acceptance (config/config.yaml, seq-shapes, buffer 100, seeds 0-2): class-IL
    joint > derpp > er > sgd + 10, and task-IL above class-IL for the rehearsal methods. About 6 minutes
    on one core: run it with `python -m pytest -m slow`."""
    data.prepare("shapes", tmp_path)
    summary = {}
    for method, buffer_size in (("joint", 0), ("derpp", 100), ("er", 100), ("sgd", 0)):
        runs = [train(tmp_path, tmp_path / f"{method}{s}", method, buffer_size, seed=s, benchmark="seq-shapes")
                ["summary"] for s in range(3)]
        summary[method] = {setting: np.mean([r[setting]["faa"] for r in runs]) for setting in ("class_il", "task_il")}
    faa = {method: values["class_il"] for method, values in summary.items()}
    assert faa["joint"] > faa["derpp"] > faa["er"] > faa["sgd"] + 10, summary
    assert all(summary[m]["task_il"] > summary[m]["class_il"] for m in ("derpp", "er")), summary


def test_step_schedule_restarts_every_task():
    """lr_milestones: lr x lr_gamma from each milestone epoch on, back to lr at every task's first epoch."""
    from test_losses import make  # a 2-class identity network

    m = make("sgd", lr=0.1, n_epochs=3, batch_size=2, lr_milestones=(1, 2))
    assert [m.epoch_lr(e) for e in range(3)] == pytest.approx([0.1, 0.01, 0.001])
    seen = []
    m.observe = lambda x, y, x_raw: seen.append(m.opt.param_groups[0]["lr"]) or {}
    x = torch.zeros(2, 2, 1, 1, dtype=torch.uint8)
    for index in range(2):
        m.train_task(Task(index, (index,), x, torch.full((2,), index)))
    assert seen == pytest.approx([0.1, 0.01, 0.001] * 2)


def test_channels_last_is_a_protocol_setting_recorded_in_the_hparams(prepared_dir):
    hp = resolve("er", "seq-shapes", 100)
    assert hp["channels_last"] is True and hp["lr_milestones"] == (4,)
    assert resolve("er", "seq-digits", 100)["channels_last"] is False
    scenario = Scenario(BenchmarkSpec("conv-digits", "digits", 5, 2, "resnet18", {"nf": 8}), prepared_dir)
    assert scenario.build_net(channels_last=True).conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert scenario.build_net(channels_last=False).conv1.weight.is_contiguous()


def test_class_il_chooses_among_the_classes_known_at_evaluation(prepared_dir):
    """After task t a sample of task i is classified among the classes of tasks 0..max(t, i) (Mammoth's
    `outputs[:, :n_seen_classes]`); the random-init probe chooses among all classes."""

    class Constant(torch.nn.Module):  # scores: class 9 first, class 0 second, for every image
        hp = make_hparams("sgd", {})  # class_il_rows: seen, the protocol's default

        def predict(self, x):
            return torch.tensor([1.0] + [0.0] * 8 + [10.0]).expand(x.shape[0], 10)

    scenario = Scenario(BenchmarkSpec("seq-digits", "digits", 5, 2, "mlp"), prepared_dir)
    share = lambda label, task: 100 * ((scenario.test_y == label) & (scenario.class_task[scenario.test_y] == task)).sum() \
        / (scenario.class_task[scenario.test_y] == task).sum()
    after_first = evaluate(Constant(), scenario, after_task=0)["class_il"]
    assert after_first[0] == pytest.approx(float(share(0, 0)))  # 9 unknown yet: class 0 wins
    assert after_first[1] == 0 and after_first[4] == pytest.approx(float(share(9, 4)))
    probe = evaluate(Constant(), scenario, after_task=-1)["class_il"]
    assert probe[0] == 0 and probe[4] == pytest.approx(float(share(9, 4)))
