"""The procedural `shapes` dataset (datasets.md §6.2)."""

import hashlib

import numpy as np
import pytest
import torch

from clcore.data.shapes import (MAIN_CATEGORIES, TEST_SESSIONS, TRAIN_SESSIONS, generate_shapes, nic_batches,
                                paste_signature, render_video, signature_patch)
from clcore.scenarios import with_signatures


@pytest.fixture(scope="module")
def tiny():
    return generate_shapes(seed=0, frames=2)


def test_deterministic_and_subset_regeneration(tiny):
    splits, _ = tiny
    again, _ = generate_shapes(seed=0, frames=2)
    digest = lambda a: hashlib.sha256(a.tobytes()).hexdigest()
    assert digest(splits["train"]["x"]) == digest(again["train"]["x"])
    assert digest(splits["train"]["x"]) != digest(generate_shapes(seed=1, frames=2)[0]["train"]["x"])
    train = splits["train"]
    rows = np.flatnonzero((train["object"] == 17) & (train["session"] == 4))
    x, sal = render_video(0, 17, 4, seed=0, frames=2)
    assert np.array_equal(train["x"][rows], x) and np.array_equal(train["sal"][rows], sal)


def test_split_sizes_sessions_and_labels(tiny):
    splits, _ = tiny
    n = {name: s["x"].shape[0] for name, s in splits.items()}
    # 50 objects x 8 training (3 test) sessions x 2 frames
    assert n == {"train": 800, "test": 300, "test_reduced": 100, "aux_train": 800, "aux_test": 300}
    assert set(np.unique(splits["train"]["session"])) == set(TRAIN_SESSIONS)
    assert set(np.unique(splits["test"]["session"])) == set(TEST_SESSIONS)
    assert np.array_equal(splits["test_reduced"]["x"], splits["test"]["x"][::3])
    assert np.bincount(splits["train"]["y"]).tolist() == [80] * len(MAIN_CATEGORIES)
    assert np.array_equal(splits["train"]["y"], splits["train"]["object"] // 5)
    assert splits["train"]["x"].dtype == np.uint8 and splits["train"]["x"].shape[1:] == (3, 32, 32)


def test_saliency_peaks_on_the_object(tiny):
    splits, _ = tiny
    sal = splits["train"]["sal"][:, 0].astype(float)
    assert sal.max(axis=(1, 2)).min() == 255  # scaled to peak 255 per image
    # the object covers well under half the image, and the saliency mass concentrates on it
    share_high = (sal > 128).mean(axis=(1, 2))
    assert np.all(share_high < 0.5) and np.all(share_high > 0.02)


def test_nic_batches_cover_every_training_video_once():
    splits, _ = generate_shapes(seed=0, frames=2)
    train = splits["train"]
    for n_batches in (79, 196, 391):
        batches = nic_batches(train["object"], train["session"], n_batches, run=0)
        assert len(batches) == n_batches
        rows = np.concatenate(batches)
        assert len(rows) == len(np.unique(rows)) == train["x"].shape[0]
        first = batches[0]
        assert set(train["session"][first]) == {1} and set(train["object"][first] % 5) == {0}
        assert len(np.unique(train["object"][first])) == 10
    with pytest.raises(ValueError):
        nic_batches(train["object"], train["session"], 80, run=0)


def test_signature_pasted_in_the_corner_only():
    x = np.zeros((3, 3, 32, 32), dtype=np.uint8)
    out = paste_signature(x, np.array([0, 1, 2]))
    assert np.array_equal(out[:, :, :4, :4], signature_patch(np.array([0, 1, 2])))
    assert not out[:, :, 4:, :].any() and not out[:, :, :, 4:].any() and not x.any()
    y = torch.tensor([0, 1, 2])
    spurious = with_signatures(torch.from_numpy(x), y, fraction=1.0)
    assert torch.equal(spurious, torch.from_numpy(out))
