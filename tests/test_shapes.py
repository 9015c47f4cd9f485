"""The embedded `shapes` generator (docs/datasets.md#shapes): determinism, subset regeneration, split layout,
saliency, colour balance, NIC batches and the spurious signature."""

import hashlib
import json

import numpy as np
import pytest

from clcore.data.shapes import (
    AUX_CATEGORIES,
    FRAME_PRESETS,
    GENERATOR_VERSION,
    MAIN_CATEGORIES,
    PALETTE,
    SESSIONS,
    TEST_SESSIONS,
    TRAIN_SESSIONS,
    _render,
    generate_shapes,
    instance_appearance,
    nic_batches,
    paste_signature,
    render_video,
    signature_patch,
)

TINY = FRAME_PRESETS["tiny"]
SPLITS = ("train", "test", "test_reduced", "aux_train", "aux_test")
FIELDS = {"x": np.uint8, "y": np.int16, "sal": np.uint8, "object": np.int16, "instance": np.int16,
          "session": np.int16, "frame": np.int16}


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny():
    return generate_shapes(seed=0, frames=TINY)


def test_interface_constants():
    assert GENERATOR_VERSION == 1
    assert FRAME_PRESETS == {"tiny": 2, "default": 6, "large": 24}
    assert MAIN_CATEGORIES == ["disc", "square", "triangle", "plus", "ring", "star5", "hexagon", "crescent",
                               "arrow", "tee"]
    assert AUX_CATEGORIES == ["ellipse", "semicircle", "pentagon", "x-cross", "star4", "l-shape", "bow-tie",
                              "trapezoid", "double-bar", "chevron"]
    assert TRAIN_SESSIONS == (1, 2, 4, 5, 6, 8, 9, 11) and TEST_SESSIONS == (3, 7, 10)
    assert sorted(SESSIONS) == list(range(1, 12))
    for s in TEST_SESSIONS:
        assert SESSIONS[s]["clutter"] == 2
        train = [SESSIONS[t] for t in TRAIN_SESSIONS]
        assert SESSIONS[s]["background"] in {t["background"] for t in train}
        assert SESSIONS[s]["gain"] not in {t["gain"] for t in train}
        assert tuple(SESSIONS[s]["cast"]) not in {tuple(t["cast"]) for t in train}
    for cfg in SESSIONS.values():
        assert 0.6 <= cfg["gain"] <= 1.3 and all(0.85 <= c <= 1.15 for c in cfg["cast"])
        assert 0 <= cfg["clutter"] <= 3 and 2 <= cfg["noise"] <= 8


def test_split_layout_tiny(tiny):
    splits, meta = tiny
    assert set(splits) == set(SPLITS)
    n = {"train": 400 * TINY, "test": 150 * TINY, "test_reduced": 50 * TINY, "aux_train": 400 * TINY,
         "aux_test": 150 * TINY}
    for name, fields in splits.items():
        assert set(fields) == set(FIELDS)
        for field, dtype in FIELDS.items():
            a = fields[field]
            assert a.dtype == dtype and a.shape[0] == n[name], (name, field)
            assert a.flags["C_CONTIGUOUS"]
        assert fields["x"].shape[1:] == (3, 32, 32) and fields["sal"].shape[1:] == (1, 32, 32)
    json.dumps(meta)  # JSON-serialisable
    assert meta["version"] == GENERATOR_VERSION and meta["seed"] == 0 and meta["frames"] == TINY
    for key in ("params", "sessions", "main_categories", "aux_categories", "palette", "instances"):
        assert key in meta


def test_split_sizes_default():
    splits, meta = generate_shapes(seed=0, frames=FRAME_PRESETS["default"])
    sizes = {k: len(v["x"]) for k, v in splits.items()}
    assert sizes == {"train": 2400, "test": 900, "test_reduced": 300, "aux_train": 2400, "aux_test": 900}
    assert meta["frames"] == 6
    # the default dataset: balanced classes, 6 frames per video
    assert np.bincount(splits["train"]["y"], minlength=10).tolist() == [240] * 10
    assert np.bincount(splits["test"]["frame"]).tolist() == [150] * 6


def test_row_order_and_fields(tiny):
    splits, _ = tiny
    for name, sessions in (("train", TRAIN_SESSIONS), ("test", TEST_SESSIONS), ("aux_train", TRAIN_SESSIONS),
                           ("aux_test", TEST_SESSIONS)):
        f = splits[name]
        key = (f["session"].astype(np.int64) * 100 + f["object"]) * 100 + f["frame"]
        assert np.all(np.diff(key) > 0), "rows must be sorted by session, object, frame"
        assert set(np.unique(f["session"]).tolist()) == set(sessions)
        assert np.array_equal(f["y"], f["object"] // 5) and np.array_equal(f["instance"], f["object"] % 5)
        assert f["object"].min() == 0 and f["object"].max() == 49
        assert np.array_equal(np.unique(f["frame"]), np.arange(TINY))
    for field in FIELDS:
        assert np.array_equal(splits["test_reduced"][field], splits["test"][field][::3])


def test_class_counts_balanced(tiny):
    splits, _ = tiny
    for name, per_class in (("train", 8 * 5 * TINY), ("test", 3 * 5 * TINY), ("aux_train", 8 * 5 * TINY),
                            ("aux_test", 3 * 5 * TINY)):
        assert np.bincount(splits[name]["y"], minlength=10).tolist() == [per_class] * 10


def test_determinism_same_seed(tiny):
    splits, meta = tiny
    again, meta2 = generate_shapes(seed=0, frames=TINY)
    for name in SPLITS:
        for field in FIELDS:
            assert sha(again[name][field]) == sha(splits[name][field]), (name, field)
    assert json.dumps(meta, sort_keys=True) == json.dumps(meta2, sort_keys=True)


def test_other_seed_differs(tiny):
    splits, _ = tiny
    x1, _ = render_video(0, 0, 1, seed=1, frames=TINY)
    assert not np.array_equal(x1, splits["train"]["x"][:TINY])


def test_subset_regeneration_equals_full_set(tiny):
    splits, _ = tiny
    cases = [(0, 37, 9, "train"), (0, 3, 10, "test"), (1, 12, 5, "aux_train"), (1, 49, 7, "aux_test"),
             (0, 0, 1, "train"), (0, 49, 11, "train")]
    for set_id, obj, ses, split in reversed(cases):  # any order
        f = splits[split]
        rows = np.flatnonzero((f["object"] == obj) & (f["session"] == ses))
        assert len(rows) == TINY and np.array_equal(f["frame"][rows], np.arange(TINY))
        x, sal = render_video(set_id, obj, ses, seed=0, frames=TINY)
        assert x.dtype == np.uint8 and x.shape == (TINY, 3, 32, 32)
        assert sal.dtype == np.uint8 and sal.shape == (TINY, 1, 32, 32)
        assert np.array_equal(x, f["x"][rows]) and np.array_equal(sal, f["sal"][rows])


def test_frames_form_a_smooth_video():
    x, _ = render_video(0, 12, 4, seed=0, frames=FRAME_PRESETS["large"])
    assert x.shape[0] == 24
    step = np.abs(np.diff(x.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    far = np.abs(x[-1].astype(np.int16) - x[0]).mean()
    assert step.max() < far  # consecutive frames are closer than the ends of the video


def test_images_vary_and_use_the_range(tiny):
    x = tiny[0]["train"]["x"]
    assert x.min() < 40 and x.max() > 215
    assert len({sha(img) for img in x[::TINY]}) == 400  # every video distinct


def dilate(m: np.ndarray, r: int) -> np.ndarray:
    p = np.pad(m, r)
    out = np.zeros_like(m)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy:dy + m.shape[0], dx:dx + m.shape[1]]
    return out


@pytest.mark.parametrize("set_id,obj,ses", [(0, 7, 1), (0, 23, 5), (0, 41, 3), (1, 18, 9), (1, 30, 10), (0, 9, 8)])
def test_saliency_peak_on_object(set_id, obj, ses):
    x, sal, mask = _render(set_id, obj, ses, 0, 6)
    s = sal[:, 0].astype(np.int32)
    assert (s.max(axis=(1, 2)) == 255).all()
    for f in range(6):
        r, c = np.unravel_index(np.argmax(s[f]), s[f].shape)
        assert mask[f, r, c] > 0.5, "the saliency peak must lie on the object"
        # away from the object (beyond its 3-sigma blur), only distractors (<= 0.35 of the peak) are salient
        far = ~dilate(mask[f] > 0, 3)
        assert s[f][far].max() <= round(0.35 * 255) + 1
    # background far from every shape is 0 in an uncluttered session
    if SESSIONS[ses]["clutter"] == 0:
        assert (s[:, ~dilate(mask.max(axis=0) > 0, 3)] == 0).all()


def test_saliency_over_whole_split(tiny):
    sal = tiny[0]["train"]["sal"]
    assert (sal.reshape(len(sal), -1).max(axis=1) == 255).all()


def test_colour_is_not_diagnostic_of_category():
    for name_list in (MAIN_CATEGORIES, AUX_CATEGORIES):
        categories_with = {c: set() for c in range(len(PALETTE))}
        for cat in range(len(name_list)):
            primaries = [instance_appearance(cat, k)["primary"] for k in range(5)]
            assert len(set(primaries)) == 5  # a category's instances differ in colour
            for p in primaries:
                categories_with[p].add(cat)
        assert all(len(cats) >= 4 for cats in categories_with.values()), categories_with
    # within every task {2t, 2t+1} both categories use the same colours
    for t in range(5):
        a = {instance_appearance(2 * t, k)["primary"] for k in range(5)}
        b = {instance_appearance(2 * t + 1, k)["primary"] for k in range(5)}
        assert a == b


def test_instance_appearance_table(tiny):
    _, meta = tiny
    rows = meta["instances"]
    assert len(rows) == 100
    for r in rows:
        assert r["texture"] == ["solid", "stripes", "checker", "dots", "radial"][r["instance"]]
        assert 0.8 <= r["aspect"] <= 1.25 and 0.9 <= r["size"] <= 1.1
        assert r["object"] == 5 * ({"main": MAIN_CATEGORIES, "aux": AUX_CATEGORIES}[r["set"]].index(r["category"])) + r["instance"]


def test_render_video_rejects_bad_ids():
    with pytest.raises(ValueError):
        render_video(2, 0, 1)
    with pytest.raises(ValueError):
        render_video(0, 50, 1)
    with pytest.raises(ValueError):
        render_video(0, 0, 12)


# --- NIC batches ------------------------------------------------------------------------------------

def train_index(frames=TINY):
    """The train split's object and session columns (row order: session, object, frame)."""
    session = np.repeat(np.array(TRAIN_SESSIONS, np.int16), 50 * frames)
    obj = np.tile(np.repeat(np.arange(50, dtype=np.int16), frames), len(TRAIN_SESSIONS))
    return obj, session


def test_train_index_helper_matches_split(tiny):
    obj, ses = train_index()
    assert np.array_equal(obj, tiny[0]["train"]["object"]) and np.array_equal(ses, tiny[0]["train"]["session"])


@pytest.mark.parametrize("n_batches,per_batch", [(40, 10), (79, 5), (196, 2), (391, 1)])
def test_nic_batches(n_batches, per_batch):
    obj, ses = train_index()
    batches = nic_batches(obj, ses, n_batches, run=0)
    assert len(batches) == n_batches
    assert all(b.dtype == np.int32 for b in batches)
    every = np.concatenate(batches)
    assert np.array_equal(np.sort(every), np.arange(len(obj)))  # every training row exactly once
    videos = [set(zip(ses[b].tolist(), obj[b].tolist())) for b in batches]
    for b, v in zip(batches, videos):
        assert len(b) == len(v) * TINY  # whole videos only
    assert videos[0] == {(1, 5 * c) for c in range(10)}
    assert all(len(v) == per_batch for v in videos[1:])


def test_nic_runs_differ_and_are_reproducible():
    obj, ses = train_index()
    a0 = nic_batches(obj, ses, 79, run=0)
    a1 = nic_batches(obj, ses, 79, run=1)
    b0 = nic_batches(obj, ses, 79, run=0)
    assert all(np.array_equal(p, q) for p, q in zip(a0, b0))
    assert np.array_equal(a0[0], a1[0])
    assert any(not np.array_equal(p, q) for p, q in zip(a0[1:], a1[1:]))


def first_appearances(batches, obj):
    """The position (in the stream of videos after batch 0) where each object first appears."""
    seen, position = {}, 0
    for batch in batches[1:]:
        for o in dict.fromkeys(obj[batch].tolist()):  # a batch's videos in stream order
            seen.setdefault(o, position)
            position += 1
    return seen


def test_nic_intro_spread_and_chronological_sessions():
    obj, ses = train_index()
    batches = nic_batches(obj, ses, 391, run=0, intro_spread=0.8, session_order="chronological")
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(obj)))  # every video exactly once
    first = first_appearances(batches, obj)
    new_objects = set(range(50)) - {5 * c for c in range(10)}
    last_new = max(first[o] for o in new_objects)
    assert set(first) >= new_objects and 195 < last_new < 312  # before ⌊0.8 · 390⌋, and late as in CORe50's streams
    stream = [(int(ses[b[0]]), int(obj[b[0]])) for b in batches[1:]]  # one video per batch
    for o in range(50):  # each object's sessions increase along the stream
        sessions = [s for s, oo in stream if oo == o]
        assert sessions == sorted(sessions)
    again = nic_batches(obj, ses, 391, run=0, intro_spread=0.8, session_order="chronological")
    assert all(np.array_equal(p, q) for p, q in zip(batches, again))
    free = nic_batches(obj, ses, 391, run=0)  # a uniform order introduces every object in the first half
    assert max(first_appearances(free, obj)[o] for o in new_objects) < 195


def test_nic_shuffled_frames_keep_each_batch():
    obj, ses = train_index()
    plain = nic_batches(obj, ses, 40, run=3)
    shuffled = nic_batches(obj, ses, 40, run=3, shuffle_frames=True)
    assert all(np.array_equal(np.sort(p), np.sort(q)) for p, q in zip(plain, shuffled))
    assert any(not np.array_equal(p, q) for p, q in zip(plain, shuffled))


def test_nic_rejects_other_counts():
    obj, ses = train_index()
    for n in (0, 1, 78, 80, 200, 390):
        with pytest.raises(ValueError):
            nic_batches(obj, ses, n, run=0)


# --- spurious signature -----------------------------------------------------------------------------

def test_signature_patch_colours():
    ids = np.arange(10)
    patch = signature_patch(ids)
    assert patch.dtype == np.uint8 and patch.shape == (10, 3, 4, 4)
    rgb = np.rint(PALETTE * 255).astype(np.uint8)
    for c in ids:
        a, b = rgb[c], rgb[(c + 3) % 10]
        p = patch[c]
        for r in range(4):
            for col in range(4):
                want = a if (r // 2 + col // 2) % 2 == 0 else b
                assert np.array_equal(p[:, r, col], want)


def test_paste_signature_only_in_corner(tiny):
    x = tiny[0]["train"]["x"][:40]
    y = tiny[0]["train"]["y"][:40]
    before = x.copy()
    out = paste_signature(x, y)
    assert np.array_equal(x, before), "the input must not be modified"
    assert out.shape == x.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, :, :4, :4], signature_patch(y))
    rest = np.ones(x.shape, bool)
    rest[:, :, :4, :4] = False
    assert np.array_equal(out[rest], x[rest])
    conflict = paste_signature(x, (y + 1) % 10)
    assert np.array_equal(conflict[:, :, :4, :4], signature_patch((y + 1) % 10))


def test_scenario_signatures_match_paste_signature():
    torch = pytest.importorskip("torch")
    from clcore import scenarios

    if not hasattr(scenarios, "with_signatures"):
        pytest.skip("clcore.scenarios.with_signatures not available")
    x = np.zeros((3, 3, 32, 32), dtype=np.uint8)
    out = paste_signature(x, np.array([0, 1, 2]))
    assert not out[:, :, 4:, :].any() and not out[:, :, :, 4:].any() and not x.any()
    spurious = scenarios.with_signatures(torch.from_numpy(x), torch.tensor([0, 1, 2]), fraction=1.0)
    assert torch.equal(spurious, torch.from_numpy(out))


def test_saliency_mass_concentrates_on_the_object(tiny):
    sal = tiny[0]["train"]["sal"][:, 0].astype(float)
    share_high = (sal > 128).mean(axis=(1, 2))
    assert np.all(share_high < 0.5) and np.all(share_high > 0.02)
