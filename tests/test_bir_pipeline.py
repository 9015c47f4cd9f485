"""The BI-R family's place in the pipeline: class order (docs/bir.md#class-order), task-IL run names and
hyperparameters (docs/bir.md#task-il-training), and the conv pretraining of rule pretrain_bir_conv
(docs/bir.md#conv-pretraining)."""

import numpy as np
import pytest
import torch

from clcore import data
from clcore.methods.bir import CONV_PRETRAINING
from clcore.methods.bir.vae import ConvE
from clcore.errors import ChecksumError, DatasetMissingError
from clcore.hparams import run_name, table_layers
from clcore.scenarios import Scenario, class_permutation, get_benchmark


def test_bir_seeded_order_relabels_classes_and_keeps_tasks_consecutive(prepared_dir):
    plain = Scenario(get_benchmark("seq-digits"), prepared_dir)
    seeded = Scenario(get_benchmark("seq-digits"), prepared_dir, class_order="bir_seeded", seed=3)
    p = np.random.RandomState(3).permutation(10)  # [BIR] data/load.py
    assert torch.equal(seeded.train_y, torch.from_numpy(p)[plain.train_y])
    assert torch.equal(seeded.test_y, torch.from_numpy(p)[plain.test_y])
    for t in range(5):  # task t holds the original classes that p maps into {2t, 2t+1}
        rows = seeded.class_task[seeded.train_y] == t
        assert set(plain.train_y[rows].tolist()) == set(np.flatnonzero(p // 2 == t).tolist())
        assert torch.equal(seeded.task(t).y, seeded.train_y[rows])


def test_bir_seeded_order_follows_upstream_per_dataset():
    cifar, mnist = get_benchmark("seq-cifar100-bir"), get_benchmark("seq-mnist")
    assert np.array_equal(class_permutation("bir_seeded", cifar, 12), np.random.RandomState(12).permutation(100))
    assert class_permutation("bir_seeded", mnist, 5) is None  # split MNIST < 10: docs/bir.md#mnist-identity-order
    assert np.array_equal(class_permutation("bir_seeded", mnist, 12), np.random.RandomState(12).permutation(10))
    assert class_permutation("identity", cifar, 12) is None
    with pytest.raises(ValueError, match="class_order"):
        class_permutation("random", cifar, 0)


def test_task_il_training_is_named_and_takes_the_scenario_values():
    assert run_name("bir", {"scenario": "task"}) == "bir-task"
    assert run_name("bir", {"scenario": "class"}) == "bir"
    assert run_name("bir", {"scenario": "task", "lr": 0.1}).startswith("bir-task-h")
    assert run_name("bir", {"lr": 0.1}) != run_name("bir", {"scenario": "task", "lr": 0.1})
    tables = {"gr_si": ({"seq-x": {"any": {"lr": 0.1, "si_c": 0.0}, "class": {"si_c": 1.0}, "task": {"si_c": 100.0},
                                   200: {"lr": 0.2}}}, "bir.yaml")}
    merged = lambda layers: {k: v for _, values in layers for k, v in values.items()}  # noqa: E731
    assert merged(table_layers(tables, "gr_si", "seq-x", 0)) == {"lr": 0.1, "si_c": 1.0}
    assert merged(table_layers(tables, "gr_si", "seq-x", 200, "task")) == {"lr": 0.2, "si_c": 100.0}
    assert [name for name, _ in table_layers(tables, "gr_si", "seq-x", 200, "task")] == [
        "bir.yaml: gr_si -> seq-x -> any", "bir.yaml: gr_si -> seq-x -> task", "bir.yaml: gr_si -> seq-x -> 200"]


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    data.prepare("shapes", root)
    return root


def test_pretrain_bir_conv_writes_a_loadable_deterministic_conv_stack(shapes_dir, tmp_path):
    from dataclasses import replace

    from clcore.methods.bir import pretrain_conv
    from clcore.data.prepared import file_digest

    recipe = replace(CONV_PRETRAINING["shapes"], c0=4, fc_units=32, epochs=1, batch_size=256)
    first = pretrain_conv(recipe, shapes_dir, tmp_path / "a", seed=0)
    second = pretrain_conv(recipe, shapes_dir, tmp_path / "b", seed=0)
    assert first["sha256"] == file_digest(tmp_path / "a" / "conv.pt")
    assert first["steps"] == 2400 // 256  # the incomplete last batch is dropped
    conv = ConvE(3, 4)
    conv.load_state_dict(torch.load(tmp_path / "a" / "conv.pt"))  # ConvE's own names, BN buffers included
    assert any(k.endswith("running_mean") for k in torch.load(tmp_path / "a" / "conv.pt"))
    a, b = torch.load(tmp_path / "a" / "conv.pt"), torch.load(tmp_path / "b" / "conv.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert 10.0 <= first["val_accuracy"] <= 100.0 and len(first["normalization"]["mean"]) == 3


def test_upstream_conv_checks_the_file_and_keeps_the_conv_layers(tmp_path, monkeypatch):
    from clcore.methods.bir import conv_pretraining as bir_conv
    from clcore.data.prepared import file_digest

    weights = tmp_path / "weights"
    with pytest.raises(DatasetMissingError, match="C3-5x16-bn"):
        bir_conv.upstream_conv(weights, tmp_path / "out")
    reference = ConvE(3, 16).state_dict()
    state = {f"convE.{k}": v for k, v in reference.items()} | {"fcE.fcLayer1.linear.weight": torch.zeros(2, 2)}
    weights.mkdir()
    # [BIR] wrote {'state': state_dict} with torch.save in the pre-1.6 (non-zip) format
    torch.save({"state": state}, weights / bir_conv.UPSTREAM_FILE, _use_new_zipfile_serialization=False)
    with pytest.raises(ChecksumError, match="sha256"):
        bir_conv.upstream_conv(weights, tmp_path / "out")
    monkeypatch.setattr(bir_conv, "UPSTREAM_SHA256", file_digest(weights / bir_conv.UPSTREAM_FILE))
    record = bir_conv.upstream_conv(weights, tmp_path / "out")
    conv = torch.load(tmp_path / "out" / "conv.pt")
    assert set(conv) == set(reference) and all(torch.equal(conv[k], reference[k]) for k in reference)
    assert record["source"] == "upstream_file"


def test_validation_split_holds_out_a_tenth_of_the_training_rows(prepared_dir):
    plain = Scenario(get_benchmark("seq-digits"), prepared_dir)
    val = Scenario(get_benchmark("seq-digits"), prepared_dir, validation=True)
    n = plain.train_y.shape[0]
    assert val.test_y.shape[0] == round(0.1 * n) and val.train_y.shape[0] == n - round(0.1 * n)
    rows = lambda x: {bytes(r.cpu().numpy()) for r in x.flatten(1)}  # noqa: E731
    assert rows(val.test_x) <= rows(plain.train_x) and not rows(val.test_x) & rows(val.train_x)
    again = Scenario(get_benchmark("seq-digits"), prepared_dir, validation=True)
    assert torch.equal(again.test_x, val.test_x)  # fixed by its own seed (100), whatever the run's seed


def test_search_scores_every_grid_point_on_the_validation_split(prepared_dir, tmp_path):
    import json

    from click.testing import CliRunner

    from clcore.cli import main

    result = CliRunner().invoke(main, [
        "search", "-b", "seq-digits", "-m", "gr_si", "--grid", "si_c=0,10", "--grid", "iters=5", "--seeds", "0,1",
        "--scenario", "task", "--prepared-dir", str(prepared_dir), "--out-dir", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "best: {'si_c':" in result.output
    table = (tmp_path / "seq-digits" / "gr_si" / "search.csv").read_text().splitlines()
    assert table[0] == "si_c,iters,seed,scenario,val_task_il_faa" and len(table) == 1 + 4
    runs = sorted(tmp_path.glob("seq-digits/gr_si/gr_si-task-h*/seed*/run.json"))
    assert len(runs) == 4 and {json.loads(p.read_text())["evaluated_on"] for p in runs} == {"validation"}


def test_every_bir_hparam_entry_resolves_to_the_methods_fields():
    """config/hparams/bir.yaml: registered names, known hyperparameters, per-scenario values that differ."""
    from pathlib import Path

    import yaml

    from clcore.hparams import resolve
    from clcore.methods import bir, get_method

    hparams = Path(__file__).resolve().parents[1] / "config/hparams"
    table = yaml.safe_load((hparams / "bir.yaml").read_text())
    for method, benchmarks in table.items():
        if method.startswith("_"):
            continue
        cls, _ = get_method(method)
        for benchmark in benchmarks:
            for scenario in ("class", "task"):
                values = resolve(method, benchmark, 200 if cls.uses_buffer else 0, {"scenario": scenario}, hparams)
                assert values["class_order"] == "bir_seeded" and values["scenario"] == scenario
                needs_conv = values["conv"] == "pretrained"
                assert set(bir.artefacts(method, values, benchmark, {})) == ({"bir_conv"} if needs_conv else set())
    # [BIR] options.py: SI c = 1 (class) / 100 (task) on split CIFAR-100
    assert resolve("gr_si", "seq-cifar100-bir", 0, {"scenario": "task"}, hparams)["si_c"] == 100.0
    assert resolve("gr_si", "seq-cifar100-bir", 0, None, hparams)["si_c"] == 1.0
