"""AKR's class-incremental splits of CIFAR-100 (docs/protocol.md#akr-class-incremental-splits): TFS and TFH phase
structure, the two fixed class orders, and a scenario whose first phase is larger than the others."""

import numpy as np
import pytest
import torch

from clcore.data.prepared import write_prepared
from clcore.metrics import average_incremental_accuracy
from clcore.scenarios import BENCHMARKS, BenchmarkSpec, Scenario, class_permutation, get_benchmark, presentation_order


@pytest.mark.parametrize("name, phases, sizes", [
    ("seq-cifar100-tfs5", 5, (20,) * 5), ("seq-cifar100-tfs10", 10, (10,) * 10), ("seq-cifar100-tfs20", 20, (5,) * 20),
    ("seq-cifar100-tfh5", 6, (50,) + (10,) * 5), ("seq-cifar100-tfh10", 11, (50,) + (5,) * 10),
    ("seq-cifar100-tfh25", 26, (50,) + (2,) * 25)])
def test_tfs_and_tfh_phase_counts(name, phases, sizes):
    spec = get_benchmark(name)
    assert spec.n_tasks == phases and spec.task_sizes == sizes and spec.n_classes == 100
    assert spec.class_order == "inclearn_order0" and spec.reset_optimizer_each_task


def test_fixed_class_orders_list_original_labels_in_presentation_order():
    inclearn = presentation_order("inclearn_order0", 100)
    assert inclearn[:5].tolist() == [87, 0, 52, 58, 44] and len(set(inclearn.tolist())) == 100
    assert presentation_order("lucir_1993", 100)[:5].tolist() == [68, 56, 78, 8, 23]
    perm = class_permutation("inclearn_order0", get_benchmark("seq-cifar100-tfs10"), seed=7)  # seed-independent
    assert perm[87] == 0 and perm[0] == 1 and perm[39] == 99
    assert np.array_equal(perm, class_permutation("inclearn_order0", get_benchmark("seq-cifar100-tfs10"), 0))


def test_a_tfh_scenario_has_a_larger_first_phase_and_masks_by_phase(tmp_path, monkeypatch):
    y = np.repeat(np.arange(10), 3).astype(np.int16)
    x = np.zeros((30, 3, 4, 4), np.uint8)
    write_prepared(tmp_path / "ten", "ten", {"train": {"x": x, "y": y}, "test": {"x": x, "y": y}}, {"pixel_max": 255})
    spec = BenchmarkSpec("tfh-test", "ten", 3, 2, "mlp", first_task_classes=6)
    monkeypatch.setitem(BENCHMARKS, "tfh-test", spec)
    scenario = Scenario(spec, tmp_path)
    assert scenario.task_classes == [(0, 1, 2, 3, 4, 5), (6, 7), (8, 9)]
    assert scenario.class_task.tolist() == [0] * 6 + [1, 1, 2, 2]
    assert scenario.task(0).y.unique().tolist() == [0, 1, 2, 3, 4, 5] and scenario.task(2).x.shape[0] == 6
    seen_after_phase_1 = scenario.class_il_mask(torch.tensor([0]), after_task=1)[0]
    assert seen_after_phase_1.tolist() == [True] * 8 + [False] * 2


def test_aia_averages_every_phase_including_the_first():
    acc = np.array([[90.0, 0, 0], [85, 75, 0], [70, 70, 70]])  # per-phase accuracy on the seen classes: 90, 80, 70
    assert average_incremental_accuracy(acc) == pytest.approx(80.0)


def test_icarl_trains_a_tfh_split_with_the_inclearn_options(tmp_path, monkeypatch):
    """A larger first phase through a whole run: exemplars per class shrink from 12 // 6 = 2 to 12 // 10 = 1, the
    nearest-mean classifier scores every phase, and a fixed class order relabels the classes."""
    from clcore.hparams import resolve
    from clcore.results import accuracy_matrix, load_metrics
    from clcore.train import run_training

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 6).astype(np.int16)
    x = rng.integers(0, 256, (60, 3, 8, 8), dtype=np.uint8)
    x[:, 0] = (y * 25)[:, None, None]  # the class in the first channel: learnable in one epoch
    write_prepared(tmp_path / "ten", "ten", {"train": {"x": x, "y": y}, "test": {"x": x, "y": y}}, {"pixel_max": 255})
    monkeypatch.setitem(BENCHMARKS, "tfh-run", BenchmarkSpec("tfh-run", "ten", 3, 2, "resnet32", {"nf": 4, "n": 1},
                                                             n_epochs=2, batch_size=16, first_task_classes=6,
                                                             class_order="lucir_1993"))
    hp = resolve("icarl", "tfh-run", 12, {"herding_variant": "icarl_w", "nmc": "current", "lr": 0.1})
    info = run_training("tfh-run", "icarl", 12, 0, hp, tmp_path, tmp_path / "run", device="cpu")
    acc, _ = accuracy_matrix(load_metrics(tmp_path / "run" / "metrics.parquet"), "class_il")
    assert acc.shape == (3, 3) and np.isfinite(info["summary"]["class_il"]["aia"])
