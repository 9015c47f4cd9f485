"""CORe50 at 128x128 (docs/datasets.md#core50): every image in `paths.pkl` order, plus the NI/NC/NIC/NICv2
batch lists of `LUP.pkl` as row-index files, with the reduced test set AR1* reports on.

`LUP[scenario][run][k]` lists the rows of training batch k; the last entry is the test set.
`labels[scenario][run][k]` holds their object labels (floats in the provider's pickles)."""

from __future__ import annotations

import pickle
import re
import zipfile

import numpy as np

from .imagefolders import decode_image, decode_into, pillow_version, zip_reader
from .prepared import PrepareContext

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
