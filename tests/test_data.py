import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clcore import data
from clcore.cli import main
from clcore.errors import DatasetMissingError
from clcore.scenarios import Scenario, get_benchmark


def test_digits_split(prepared_dir):
    train, test = data.load("digits", "train", prepared_dir), data.load("digits", "test", prepared_dir)
    assert train["x"].shape == (1438, 1, 8, 8) and test["x"].shape == (359, 1, 8, 8)
    assert train["x"].dtype == torch.uint8 and int(train["x"].max()) == 16
    counts = np.bincount(torch.cat([train["y"], test["y"]]).numpy())
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert np.bincount(test["y"].numpy()).tolist() == [round(0.2 * c) for c in counts]
    meta = json.loads((prepared_dir / "digits/meta.json").read_text())
    for key in ("schema_version", "name", "clcore_version", "git_commit", "created_utc", "source", "splits", "classes",
                "label_order_source", "pixel_max", "normalization_computed", "deviations"):
        assert key in meta


def test_scenario_tasks_and_masks(prepared_dir):
    scenario = Scenario(get_benchmark("seq-digits"), prepared_dir)
    assert scenario.task_classes == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    task = scenario.task(3)
    assert set(task.y.unique().tolist()) == {6, 7} and task.x.dtype == torch.uint8
    mask = scenario.task_il_mask(torch.tensor([0, 4]))
    assert mask[0].nonzero().flatten().tolist() == [0, 1] and mask[1].nonzero().flatten().tolist() == [8, 9]


def test_missing_prepared_dataset_says_what_to_run(tmp_path):
    with pytest.raises(DatasetMissingError, match="clcore prepare digits"):
        data.load("digits", "train", tmp_path)


REFERENCE_HASHES = Path(__file__).resolve().parents[1] / "config/reference/embedded_hashes.json"


def test_digits_bytes_equal_the_reference_platform(tmp_path):
    data.prepare("digits", tmp_path, expected_hashes=REFERENCE_HASHES, strict=True)
    recorded = json.loads(REFERENCE_HASHES.read_text())["digits"]
    assert data.listed_files(data.metadata("digits", tmp_path)) == recorded


def test_reference_hash_mismatch_warns_or_fails_when_strict(tmp_path, prepared_dir):
    wrong = tmp_path / "hashes.json"
    wrong.write_text(json.dumps({"digits": {"train.y.npy": "0" * 64}}))
    with pytest.warns(UserWarning, match=r"digits: 1 file\(s\) differ .*train\.y\.npy"):
        data.prepare("digits", tmp_path / "a", expected_hashes=wrong)
    result = CliRunner().invoke(main, ["prepare", "digits", "--prepared-dir", tmp_path / "b",
                                       "--expected-hashes", wrong, "--strict"])
    assert result.exit_code == 3 and "differ from the reference platform" in result.output
