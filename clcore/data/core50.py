"""CORe50 at 128x128 (docs/datasets.md#core50): every image in `paths.pkl` order, plus the NI/NC/NIC/NICv2
batch lists of `LUP.pkl` as row-index files, with the reduced test set AR1* reports on.

`LUP[scenario][run][k]` lists the rows of training batch k; the last entry is the test set.
`labels[scenario][run][k]` holds their object labels (floats in the provider's pickles).
`check_nicv2_stream` checks a NICv2 stream against the facts of the official file lists."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

from ..io import read_json
from .imagefolders import decode_image, decode_into, pillow_version, zip_reader
from .prepared import PrepareContext, check_files, read_index, remake_prepared

SCENARIOS = ("ni", "nc", "nic", "nicv2_79", "nicv2_196", "nicv2_391")
N_RUNS = 10
TEST_REDUCTION = 20  # ar1-pytorch / the Caffe code test on every 20th test image (test_filelist_20.txt)
CATEGORIES = ("plug_adapter", "mobile_phone", "scissors", "light_bulb", "can", "glasses", "ball", "marker", "cup",
              "remote_control")
_PATH = re.compile(r"s(\d+)/o(\d+)/C_(\d+)_(\d+)_(\d+)\.png$")
_FILELIST = re.compile(r"NIC_v2_(\d+)/run(\d+)/(?:train_batch_(\d+)|test)_filelist\.txt$")


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def parse_path(path: str) -> tuple[int, int, int]:
    """`s<S>/o<O>/C_<SS>_<OO>_<FFF>.png` -> (session S, object O - 1, frame FFF)."""
    match = _PATH.search(path)
    if not match:
        raise ValueError(f"not a CORe50 image path: {path!r}")
    session, obj, _, _, frame = map(int, match.groups())
    return session, obj - 1, frame


def _copy_npz_images(npz_path, out: np.ndarray, rows: int = 1024) -> None:
    """Stream `core50_imgs.npz`'s x [N, 128, 128, 3] into `out` [N, 3, 128, 128] without loading 8 GB."""
    with zipfile.ZipFile(npz_path) as archive, archive.open("x.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran, dtype = read_header[version](f)
        if shape != (len(out), *out.shape[2:], out.shape[1]) or fortran or dtype != np.uint8:
            raise ValueError(f"{npz_path}: x has shape {shape} {dtype}, expected {(len(out), 128, 128, 3)} uint8")
        row_bytes = int(np.prod(shape[1:]))
        for start in range(0, len(out), rows):
            n = min(rows, len(out) - start)
            block = np.frombuffer(f.read(n * row_bytes), dtype=np.uint8).reshape(n, *shape[1:])
            out[start:start + n] = block.transpose(0, 3, 1, 2)


def _check_filelists(zip_path, paths: list[str], index: dict) -> int:
    """The NICv2 file lists must name the same images as LUP.pkl; returns how many lists were compared."""
    row = {p: k for k, p in enumerate(paths)}
    compared = 0
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.namelist():
            match = _FILELIST.search(member)
            if not match:
                continue
            n, run, batch = match.groups()
            key = f"nicv2_{n}/run{run}/" + (f"batch{int(batch):03d}" if batch is not None else "test")
            listed = [row[line.split()[0]] for line in archive.read(member).decode().splitlines() if line.strip()]
            if key in index and sorted(listed) != sorted(index[key].tolist()):
                raise ValueError(f"{zip_path.name}: {member} and LUP.pkl ({key}) describe different images")
            compared += key in index
    return compared


def prepare_core50(ctx: PrepareContext):
    paths = [str(p) for p in _unpickle(ctx.get("paths.pkl"))]
    lup, labels = _unpickle(ctx.get("LUP.pkl")), _unpickle(ctx.get("labels.pkl"))
    session, obj, frame = (np.asarray(v, dtype=np.int16) for v in zip(*map(parse_path, paths)))

    x = ctx.stage("all", "x", (len(paths), 3, 128, 128), np.uint8)
    npz = ctx.local("core50_imgs.npz")
    if npz is not None:
        _copy_npz_images(npz, x)
        image_source = "core50_imgs.npz (x, NHWC -> NCHW)"
    else:
        read = zip_reader(ctx.get("core50_128x128.zip"))
        decode_into(x, (f"core50_128x128/{p}" for p in paths), lambda m: decode_image(read(m)), ctx.threads)
        image_source = "core50_128x128.zip, decoded in paths.pkl order"

    index = {}
    for scenario in SCENARIOS:
        for run in range(min(N_RUNS, len(lup.get(scenario, [])))):
            *batches, test = lup[scenario][run]
            for k, (rows, y) in enumerate(zip(batches, labels[scenario][run])):
                rows = np.asarray(rows, dtype=np.int32)
                if not np.array_equal(np.asarray(y, dtype=np.float64).astype(np.int16), obj[rows]):
                    raise ValueError(f"labels.pkl {scenario} run {run} batch {k} disagrees with the object ids "
                                     f"in the paths of its rows")
                index[f"{scenario}/run{run}/batch{k:03d}"] = rows
            index[f"{scenario}/run{run}/test"] = np.asarray(test, dtype=np.int32)
            index[f"{scenario}/run{run}/test_reduced"] = np.asarray(test, dtype=np.int32)[::TEST_REDUCTION]
    filelists = ctx.local("batches_filelists_NICv2.zip")
    checks = [] if filelists is None else [f"batches_filelists_NICv2.zip names the same images as LUP.pkl "
                                           f"({_check_filelists(filelists, paths, index)} lists compared)"]

    splits = {"all": {"x": x, "y": obj, "category": obj // 5, "session": session, "frame": frame}}
    meta = {"classes": [f"o{k + 1}" for k in range(50)], "class_ids": [f"o{k + 1}" for k in range(50)],
            "categories": list(CATEGORIES), "pixel_max": 255, "resize": None, "generator": None,
            "label_order_source": "object number O - 1 of s<S>/o<O>/... (category = (O - 1) // 5)",
            "row_order": "paths.pkl", "images": image_source,
            "decoder": None if npz is not None else pillow_version(), "checks": checks, "deviations": []}
    return splits, meta, index


# The NICv2 stream facts of the official NIC_v2_<n>/run<r> file lists (docs/datasets.md#core50).
NICV2_VIDEOS_PER_BATCH = {79: 5, 196: 2, 391: 1}  # videos per training batch after batch 0
NICV2_TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
NICV2_TEST_SESSIONS = (3, 7, 10)
NICV2_FIRST_OBJECTS = tuple(range(0, 50, 5))  # batch 0: instance 0 of every category, session 1
NICV2_BATCH_SIZES = {79: (1_492, 1_500), 196: (593, 600), 391: (293, 300)}  # images per later batch, real data


def _videos(ids) -> str:
    """Video ids (100 * object + session) as people read them, at most five."""
    ids = [int(v) for v in ids]
    text = ", ".join(f"object {v // 100}/session {v % 100}" for v in ids[:5])
    return text + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def check_nicv2_stream(n_batches: int, batches: list[np.ndarray], test: np.ndarray, test_reduced: np.ndarray,
                       obj: np.ndarray, session: np.ndarray, full_size: bool = False) -> list[str]:
    """Every NICv2 fact (docs/datasets.md#core50) that a stream breaks, [] when all hold: a prepared stream that
    drifted from the published file lists would silently change what AR1* is measured on.

    `batches`, `test` and `test_reduced` are rows of the split `all`, whose object ids are `obj` and sessions
    `session`; `full_size` adds the image counts of the real dataset."""
    if n_batches not in NICV2_VIDEOS_PER_BATCH:
        return [f"n_batches is {n_batches}; NICv2 has 79, 196 or 391 batches"]
    obj, session = np.asarray(obj, np.int64), np.asarray(session, np.int64)
    batches = [np.asarray(b, np.int64) for b in batches]
    test, test_reduced = np.asarray(test, np.int64), np.asarray(test_reduced, np.int64)
    rows = np.concatenate([np.zeros(0, np.int64), *batches, test, test_reduced])
    if not batches or (rows.size and (rows.min() < 0 or rows.max() >= len(obj))):
        return [f"{len(batches)} batches with rows in [{rows.min(initial=0)}, {rows.max(initial=0)}]; expected "
                f"{n_batches} batches of rows in [0, {len(obj) - 1}]"]
    errors = [] if len(batches) == n_batches else [f"{len(batches)} batches, expected {n_batches}"]
    video = obj * 100 + session  # one id per (object, session) video
    first, later, train = batches[0], batches[1:], np.concatenate(batches)

    # 1. batch 0: objects 0, 5, ..., 45, all of session 1
    first_objects, first_sessions = sorted(set(obj[first].tolist())), sorted(set(session[first].tolist()))
    if first_objects != list(NICV2_FIRST_OBJECTS) or first_sessions != [1]:
        errors.append(f"batch 0 holds objects {first_objects} of sessions {first_sessions}, expected objects "
                      f"0, 5, ..., 45 of session 1")
    # 2. every later batch: 5, 2 or 1 videos
    per_batch = [np.unique(video[b]) for b in later]
    counts, want = np.array([len(v) for v in per_batch], np.int64), NICV2_VIDEOS_PER_BATCH[n_batches]
    wrong = np.flatnonzero(counts != want)
    if wrong.size:
        errors.append(f"batches {(wrong + 1)[:10].tolist()} hold {counts[wrong][:10].tolist()} videos, "
                      f"expected {want} each")
    # 3. the 390 videos not in batch 0, each in exactly one later batch; 400 training videos in all
    seen, times = np.unique(np.concatenate([np.zeros(0, np.int64), *per_batch]), return_counts=True)
    expected = np.setdiff1d(np.add.outer(np.arange(50) * 100, NICV2_TRAIN_SESSIONS).ravel(),
                            np.array(NICV2_FIRST_OBJECTS) * 100 + 1)
    for what, ids in (("in more than one later batch (split or repeated)", seen[times > 1]),
                      ("missing from batches 1..n-1", np.setdiff1d(expected, seen)),
                      ("in batches 1..n-1 but not among the 390 expected", np.setdiff1d(seen, expected))):
        if ids.size:
            errors.append(f"videos {what}: {_videos(ids)}")
    if len(np.unique(video[train])) != 400:
        errors.append(f"the batches hold {len(np.unique(video[train]))} videos, expected 400 (50 objects x 8 sessions)")
    # 4. training sessions 1, 2, 4, 5, 6, 8, 9, 11; the test set is every row of sessions 3, 7, 10
    train_sessions, test_sessions = sorted(set(session[train].tolist())), sorted(set(session[test].tolist()))
    if train_sessions != list(NICV2_TRAIN_SESSIONS):
        errors.append(f"training rows come from sessions {train_sessions}, expected {list(NICV2_TRAIN_SESSIONS)}")
    if test_sessions != list(NICV2_TEST_SESSIONS):
        errors.append(f"test rows come from sessions {test_sessions}, expected {list(NICV2_TEST_SESSIONS)}")
    elif not np.array_equal(np.sort(test), np.flatnonzero(np.isin(session, NICV2_TEST_SESSIONS))):
        errors.append("test does not hold every row of sessions 3, 7 and 10 exactly once")
    # 5. NICv2-79: each object meets its sessions in chronological order (within a batch, order is free)
    if n_batches == 79:
        k = np.repeat(np.arange(len(batches)), [len(b) for b in batches])
        order = np.lexsort((session[train], k, obj[train]))
        o, s = obj[train][order], session[train][order]
        back = np.unique(o[1:][(np.diff(o) == 0) & (np.diff(s) < 0)])
        if back.size:
            errors.append(f"objects {back.tolist()} return to an earlier session later in the stream, "
                          f"expected chronological sessions")
    # 6. the reduced test set AR1* reports on
    if not np.array_equal(test_reduced, test[::TEST_REDUCTION]):
        errors.append(f"test_reduced is not test[::{TEST_REDUCTION}]")
    # 7. image counts of the real dataset
    if full_size:
        for what, n, want in (("batch 0", len(first), 2_999), ("the training batches together", len(train), 119_894),
                              ("test", len(test), 44_972), ("test_reduced", len(test_reduced), 2_249)):
            if n != want:
                errors.append(f"{what} has {n:,} images, expected {want:,}")
        (lo, hi), sizes = NICV2_BATCH_SIZES[n_batches], np.array([len(b) for b in later], np.int64)
        off = np.flatnonzero((sizes < lo) | (sizes > hi))
        if off.size:
            errors.append(f"batches {(off + 1)[:10].tolist()} have {sizes[off][:10].tolist()} images, "
                          f"expected {lo:,}-{hi:,}")
    return errors


def check_prepared_stream(prepared_dir, n_batches: int, run: int, full_size: bool) -> list[str]:
    """`check_nicv2_stream` on the NICv2 run as prepared under `<prepared_dir>/core50` (docs/datasets.md#core50).
    Reads the index files and the `y` and `session` fields only: the 8 GB `x` is neither loaded nor hashed."""
    out, prefix = Path(prepared_dir) / "core50", f"nicv2_{n_batches}/run{run}"
    meta = read_json(out / "meta.json")
    keys = sorted(k for k in meta.get("index", {}) if re.fullmatch(rf"{prefix}/batch\d{{3}}", k))
    fields = {f: meta["splits"]["all"]["fields"][f] for f in ("y", "session")}
    check_files(out, {info["file"]: info for info in fields.values()}, remake_prepared(out))
    obj, session = (np.load(out / info["file"], allow_pickle=False) for info in fields.values())
    return check_nicv2_stream(n_batches, [read_index(out, k) for k in keys], read_index(out, f"{prefix}/test"),
                              read_index(out, f"{prefix}/test_reduced"), obj, session, full_size)
