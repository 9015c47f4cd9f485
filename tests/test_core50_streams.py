"""The NICv2 stream checker (docs/datasets.md#core50) on tiny fabricated streams: valid NICv2-79/196/391 runs
pass, and each fact, broken on its own, is reported. The real prepared streams are checked when present."""

from pathlib import Path

import numpy as np
import pytest

from clcore.data.core50 import check_nicv2_stream, check_prepared_stream
from clcore.data.prepared import write_prepared

# 50 objects x 11 sessions x 2 frames, session-major like paths.pkl
OBJ = np.tile(np.repeat(np.arange(50), 2), 11)
SESSION = np.repeat(np.arange(1, 12), 100)
TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
TEST = np.flatnonzero(np.isin(SESSION, (3, 7, 10)))


def rows(videos) -> np.ndarray:
    return np.concatenate([np.flatnonzero((OBJ == o) & (SESSION == s)) for o, s in videos])


def stream(n: int, run: int) -> list[np.ndarray]:
    """A valid NICv2-n run: batch 0 = instance 0 of every category in session 1, then the other 390 training
    videos in a seeded order (for 79 re-sorted so each object's sessions are chronological), 5/2/1 per batch."""
    first = [(o, 1) for o in range(0, 50, 5)]
    rest = [(o, s) for o in range(50) for s in TRAIN_SESSIONS if (o, s) not in first]
    rest = [rest[i] for i in np.random.default_rng(run).permutation(len(rest))]
    if n == 79:
        for o in range(50):
            positions = [i for i, v in enumerate(rest) if v[0] == o]
            for i, v in zip(positions, sorted(rest[i] for i in positions)):
                rest[i] = v
    per = {79: 5, 196: 2, 391: 1}[n]
    return [rows(first)] + [rows(rest[i:i + per]) for i in range(0, len(rest), per)]


def check(n, batches, test=TEST, test_reduced=None, full_size=False) -> list[str]:
    reduced = test[::20] if test_reduced is None else test_reduced
    return check_nicv2_stream(n, batches, test, reduced, OBJ, SESSION, full_size)


def video_of(row) -> tuple[int, int]:
    return int(OBJ[row]), int(SESSION[row])


@pytest.mark.parametrize("n", [79, 196, 391])
@pytest.mark.parametrize("run", [0, 1])
def test_valid_streams_hold_every_fact(n, run):
    batches = stream(n, run)
    assert len(batches) == n and check(n, batches) == []
    assert not np.array_equal(np.concatenate(batches), np.concatenate(stream(n, 1 - run)))  # runs differ


def test_only_nicv2_79_must_be_chronological():
    batches = stream(391, 0)  # the seeded order breaks chronology, which 391 allows and 79 does not
    regrouped = [batches[0]] + [np.concatenate(batches[i:i + 5]) for i in range(1, 391, 5)]
    assert check(391, batches) == []
    assert len(check(79, regrouped)) == 1 and "return to an earlier session" in check(79, regrouped)[0]


def test_a_repeated_or_split_video_is_reported():
    batches = stream(391, 0)
    batches[7] = batches[6]  # the video of batch 6 twice, that of batch 7 nowhere
    errors = check(391, batches)
    assert any(e.startswith("videos in more than one later batch") for e in errors), errors
    assert any(e.startswith("videos missing from batches 1..n-1") for e in errors), errors
    assert any("399 videos, expected 400" in e for e in errors), errors
    batches = stream(196, 0)
    batches[1], batches[2] = batches[1][:-1], np.append(batches[2], batches[1][-1])  # one frame moves on
    errors = check(196, batches)
    assert any(e.startswith("videos in more than one later batch") for e in errors), errors
    assert any(e.startswith("batches [2] hold [3] videos") for e in errors), errors


def test_a_missing_video_is_reported():
    batches = stream(79, 1)
    dropped = video_of(batches[3][-1])
    batches[3] = batches[3][OBJ[batches[3]] * 100 + SESSION[batches[3]] != dropped[0] * 100 + dropped[1]]
    errors = check(79, batches)
    assert f"videos missing from batches 1..n-1: object {dropped[0]}/session {dropped[1]}" in errors, errors
    assert "batches [3] hold [4] videos, expected 5 each" in errors
    assert check(79, batches[:-1])[0] == "78 batches, expected 79"
    assert check(80, stream(79, 1)) == ["n_batches is 80; NICv2 has 79, 196 or 391 batches"]


def test_a_wrong_object_in_batch_0_is_reported():
    batches = stream(79, 0)
    batches[0] = np.concatenate([rows([(1, 1)]), batches[0][OBJ[batches[0]] != 0]])
    errors = check(79, batches)
    assert errors[0].startswith("batch 0 holds objects [1, 5, 10,"), errors
    batches[0] = rows([(o, 2) for o in range(0, 50, 5)])
    assert any("of sessions [2], expected" in e for e in check(79, batches))


def test_a_non_chronological_79_stream_is_reported():
    batches = stream(79, 0)
    k = [i for i, b in enumerate(batches) if 7 in OBJ[b]]  # the batches holding object 7, sessions ascending
    late, early = (batches[k[-1]], batches[k[0]])
    swap_late, swap_early = late[OBJ[late] == 7], early[OBJ[early] == 7]
    batches[k[0]] = np.concatenate([early[OBJ[early] != 7], swap_late])
    batches[k[-1]] = np.concatenate([late[OBJ[late] != 7], swap_early])
    assert check(79, batches) == ["objects [7] return to an earlier session later in the stream, "
                                  "expected chronological sessions"]


def test_a_test_row_of_a_training_session_is_reported():
    test = np.append(TEST, np.flatnonzero(SESSION == 2)[0])
    assert check(391, stream(391, 0), test) == ["test rows come from sessions [2, 3, 7, 10], expected [3, 7, 10]"]
    assert check(391, stream(391, 0), TEST[1:]) == ["test does not hold every row of sessions 3, 7 and 10 "
                                                    "exactly once"]


def test_a_wrong_reduced_test_set_is_reported():
    assert check(196, stream(196, 1), test_reduced=TEST[1::20]) == ["test_reduced is not test[::20]"]
    assert check(196, stream(196, 1), test_reduced=TEST[::10]) == ["test_reduced is not test[::20]"]


def test_real_image_counts_only_with_full_size():
    errors = check(79, stream(79, 0), full_size=True)
    assert errors[:2] == ["batch 0 has 20 images, expected 2,999", "the training batches together has 800 images, "
                          "expected 119,894"] and errors[-1].endswith("expected 1,492-1,500")


def test_prepared_stream_is_read_from_the_index_files(tmp_path):
    batches = stream(196, 0)
    index = {f"nicv2_196/run0/batch{k:03d}": b for k, b in enumerate(batches)}
    index.update({"nicv2_196/run0/test": TEST, "nicv2_196/run0/test_reduced": TEST[1::20]})
    split = {"x": np.zeros((len(OBJ), 3, 1, 1), np.uint8), "y": OBJ.astype(np.int16),
             "session": SESSION.astype(np.int16)}
    write_prepared(tmp_path / "core50", "core50", {"all": split}, {"pixel_max": 255, "classes": []}, index)
    assert check_prepared_stream(tmp_path, 196, 0, full_size=False) == ["test_reduced is not test[::20]"]


@pytest.mark.slow
@pytest.mark.parametrize("n", [79, 196, 391])
@pytest.mark.parametrize("run", [0, 1])
def test_prepared_core50_streams(n, run):
    if not Path("resources/prepared/core50/meta.json").exists():
        pytest.skip("resources/prepared/core50 is not prepared (clcore prepare core50)")
    assert check_prepared_stream("resources/prepared", n, run, full_size=True) == []
