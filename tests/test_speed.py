"""Speed options and `clcore bench` (docs/speed.md): noise of a benchmark's real shape stands in for absent data,
the bench's breakdown, no host read of a tensor value in the replay methods' steps, every option recorded in
run.json, and each option computing the reference function (one step) with results statistically equal to the
reference path over seeds."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import SUMMARY

from clcore.bench import BENCH_SCHEMA, fabricate
from clcore.cli import main
from clcore.errors import InputError
from clcore.hparams import make_hparams, resolve
from clcore.methods import get_method
from clcore.report.stats import paired
from clcore.scenarios import get_benchmark, load_scenario
from clcore.speed import numerics
from clcore.train import build_method, run_training

REPO = Path(__file__).resolve().parents[1]


def test_fabricated_data_has_the_benchmarks_shape_and_classes(tmp_path):
    meta = fabricate(get_benchmark("seq-cifar10"), tmp_path, train_per_class=3, test_per_class=2)
    assert meta["fabricated"] and meta["splits"]["train"]["fields"]["x"]["shape"] == [30, 3, 32, 32]
    scenario = load_scenario(get_benchmark("seq-cifar10"), tmp_path, "cpu")
    assert scenario.test_x.shape == (20, 3, 32, 32) and scenario.test_x.dtype == torch.uint8
    assert [scenario.task(t).y.unique().tolist() for t in range(5)] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    with pytest.raises(InputError, match="stream"):
        fabricate(get_benchmark("core50-nicv2-79"), tmp_path, 1, 1)


def test_bench_of_a_paper_benchmark_without_its_data_runs_on_noise_and_breaks_the_step_down(tmp_path):
    out = tmp_path / "bench.parquet"
    result = CliRunner().invoke(main, ["bench", "-b", "seq-mnist", "--methods", "sgd,er,derpp,er_ace",
                                       "--buffer-size", "50", "--steps", "8", "--warmup", "2", "--repeats", "2",
                                       "--prepared-dir", tmp_path / "absent", "--hparams-dir",
                                       REPO / "config/hparams", "--out", out])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "absent").exists()  # the noise lived in a temporary folder
    table = pq.read_table(out)
    assert table.schema.equals(BENCH_SCHEMA, check_metadata=False)
    df = table.to_pandas().set_index("method")
    assert (df.data == "fabricated").all() and (df.precision == "fp32").all()
    # the replay steps read no tensor value on the host (each read is a synchronisation on a GPU)
    assert (df.host_reads_per_step == 0).all()
    shares = df[["share_augmentation", "share_sampling", "share_insertion"]]
    assert ((shares >= 0) & (shares < 1)).all().all()
    assert df.loc["sgd", "share_sampling"] == 0 and df.loc["derpp", "share_sampling"] > 0
    assert df.loc["derpp", "share_insertion"] > 0 and 0 < df.loc["derpp", "share_evaluation"] < 1
    # seq-mnist's protocol: 12,000 images per task, evaluation of the 10,000 test images after each
    assert df.loc["sgd", "eval_images_per_s"] > 0


def _steps(method, benchmark, prepared, n=20, **speed):
    """The method's losses over n steps on one task, all inside one precision context as in a run."""
    cls, _ = get_method(method)
    hp = make_hparams(method, resolve(method, benchmark, 50, speed, REPO / "config/hparams"))
    scenario = load_scenario(get_benchmark(benchmark), prepared, "cpu")
    torch.manual_seed(0)
    model = build_method(cls, hp, scenario, 0, 50)
    task = scenario.task(0)
    model.begin_task(task)
    x_raw, y = task.x[:16], task.y[:16]
    with numerics(hp.precision, scenario.device):
        losses = [model.observe(scenario.transform.test(x_raw), y, x_raw)["loss"] for _ in range(n)]
    return model, torch.stack(losses)


@pytest.mark.parametrize("option", [{"channels_last": True}, {"precision": "bf16"}])
def test_a_speed_option_computes_the_reference_steps(prepared_dir, option):
    """Twenty DER steps on one batch: the losses and the weights of the reference path, to rounding. In bf16 the
    weights change in place under one autocast context: a cached bf16 copy of them would freeze the forward."""
    reference, ref_losses = _steps("der", "seq-digits-akr", prepared_dir, channels_last=False)
    model, losses = _steps("der", "seq-digits-akr", prepared_dir, **{"channels_last": False, **option})
    tolerance = 2e-2 if option.get("precision") == "bf16" else 1e-5  # bf16 keeps 8 bits of mantissa
    assert losses.dtype == torch.float32 and ref_losses[-1] < 0.8 * ref_losses[0]
    assert torch.allclose(losses, ref_losses, rtol=tolerance, atol=tolerance)
    assert model.buffer.data["logits"].dtype == torch.float32  # buffers and stored logits stay fp32
    for (name, p), q in zip(model.net.named_parameters(), reference.net.parameters()):
        assert torch.allclose(p, q, atol=tolerance, rtol=tolerance), name


def _final_accuracies(prepared, tmp_path, overrides: dict) -> dict[int, float]:
    out = {}
    for seed in range(3):
        info = run_training("seq-digits-akr", "er", 100, seed,
                            resolve("er", "seq-digits-akr", 100, {"n_epochs": 15, **overrides},
                                    REPO / "config/hparams"),
                            prepared, tmp_path / f"{json.dumps(overrides, sort_keys=True)}-{seed}", device="cpu")
        out[seed] = info["summary"]["class_il"]["faa"]
        assert all(info["hparams"][k] == v for k, v in overrides.items())  # recorded in run.json
    return out


def test_speed_options_keep_the_results_statistically_equal_over_seeds(prepared_dir, tmp_path, request):
    """ER on the ResNet-32 digits benchmark, seeds 0-2: each option's final class-IL accuracy against the
    reference path's, paired by seed: the 95 % interval of the difference contains 0, or the difference is under
    2 points; and the runs learned (well above the 20 % of chance)."""
    reference = _final_accuracies(prepared_dir, tmp_path, {"channels_last": False})
    assert np.mean(list(reference.values())) > 40
    for option in ({"channels_last": True}, {"channels_last": False, "precision": "bf16"}):
        comparison = paired(_final_accuracies(prepared_dir, tmp_path, option), reference)
        request.config.stash[SUMMARY].append(
            f"speed option {option}: ER seq-digits-akr final class-IL, option - reference over seeds 0-2: "
            f"{comparison.diff.mean:+.2f} [{comparison.diff.ci_low:+.2f}, {comparison.diff.ci_high:+.2f}] "
            f"(reference {np.mean(list(reference.values())):.2f})")
        assert not comparison.excludes_zero or abs(comparison.diff.mean) < 2, (option, comparison)


def test_a_compiled_networks_copies_compute_with_their_own_weights():
    """`compile: true` compiles the backbone in place; the deep copies methods make of it (teachers, WSCL's
    candidates) must run their own weights, not the original's compiled forward."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("torch.compile on a CPU needs a C++ compiler")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    net.compile()
    x = torch.randn(2, 4)
    assert torch.allclose(net(x), F.linear(x, net[0].weight, net[0].bias), atol=1e-6)
    clone = copy.deepcopy(net)
    with torch.no_grad():
        clone[0].weight.add_(1.0)
    assert torch.allclose(clone(x), F.linear(x, clone[0].weight, clone[0].bias), atol=1e-6)
    assert not torch.allclose(clone(x), net(x))
