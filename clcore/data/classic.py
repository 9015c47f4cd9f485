"""MNIST, CIFAR-10, CIFAR-100 and Tiny-ImageNet from their providers' archives
(docs/datasets.md#downloaded-datasets), in provider order. Each preparer reads its archives through
`ctx.get(file_name)` (a PrepareContext), which returns the verified raw file."""

from __future__ import annotations

import gzip
import pickle
import tarfile
import numpy as np

from .imagefolders import decode_image, decode_into, pillow_version, zip_reader
from .prepared import PrepareContext

MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_IDX_MAGIC = {2051: 3, 2049: 1}  # images: N x rows x cols; labels: N


def read_idx(path) -> np.ndarray:
    """A gzipped IDX file (big-endian header: magic, then one uint32 per dimension) as uint8."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _IDX_MAGIC:
        raise ValueError(f"{path}: not an IDX image/label file (magic {magic})")
    n_dims = _IDX_MAGIC[magic]
    shape = [int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(n_dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def prepare_mnist(ctx: PrepareContext) -> tuple[dict, dict]:
    splits = {}
    for split, (images, labels) in MNIST_FILES.items():
        x, y = read_idx(ctx.get(images)), read_idx(ctx.get(labels))
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"MNIST {split}: {x.shape[0]} images but {y.shape[0]} labels")
        splits[split] = {"x": x[:, None], "y": y.astype(np.int16)}
    return splits, _meta([str(c) for c in range(10)], "digit value (IDX labels)")


def _unpickle(archive: tarfile.TarFile, member: str) -> dict:
    with archive.extractfile(member) as f:
        return pickle.load(f, encoding="latin1")  # the Python 2 pickles of the CIFAR releases


def _images(batch: dict) -> np.ndarray:
    """Rows of 3,072 bytes (1,024 R, G, B planes, row-major) are already NCHW after a reshape."""
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)


def prepare_cifar10(ctx: PrepareContext) -> tuple[dict, dict]:
    root = "cifar-10-batches-py"
    with tarfile.open(ctx.get("cifar-10-python.tar.gz"), "r:gz") as archive:
        train = [_unpickle(archive, f"{root}/data_batch_{k}") for k in range(1, 6)]
        test = _unpickle(archive, f"{root}/test_batch")
        names = _unpickle(archive, f"{root}/batches.meta")["label_names"]
    splits = {
        "train": {"x": np.concatenate([_images(b) for b in train]),
                  "y": np.concatenate([b["labels"] for b in train]).astype(np.int16)},
        "test": {"x": _images(test), "y": np.asarray(test["labels"], dtype=np.int16)},
    }
    return splits, _meta(list(names), "batches.meta label_names")


# fine label -> superclass, as hard-coded in WSCL `datasets/cifar100_coarse.py` (the table everyone copies);
# prepare checks the pickle's own `coarse_labels` against it, since WSCL relabels with the table.
CIFAR100_FINE_TO_COARSE = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13], dtype=np.int16)
# WSCL's CIFAR-10 dream source keeps the 12 superclasses not too close to CIFAR-10 (docs/datasets.md#cifar100)
WSCL_DREAM_SUPERCLASSES = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 14, 17)


def wscl_dream_labels(coarse: np.ndarray) -> np.ndarray:
    """Superclass -> dream label 0..11 in ascending superclass order; -1 for the 8 dropped superclasses."""
    table = np.full(20, -1, dtype=np.int16)
    table[list(WSCL_DREAM_SUPERCLASSES)] = np.arange(len(WSCL_DREAM_SUPERCLASSES))
    return table[np.asarray(coarse)]


def prepare_cifar100(ctx: PrepareContext) -> tuple[dict, dict]:
    root = "cifar-100-python"
    with tarfile.open(ctx.get("cifar-100-python.tar.gz"), "r:gz") as archive:
        parts = {split: _unpickle(archive, f"{root}/{split}") for split in ("train", "test")}
        meta = _unpickle(archive, f"{root}/meta")
    splits = {split: {"x": _images(b), "y": np.asarray(b["fine_labels"], dtype=np.int16),
                      "coarse": np.asarray(b["coarse_labels"], dtype=np.int16)} for split, b in parts.items()}
    for split, fields in splits.items():
        disagree = np.flatnonzero(CIFAR100_FINE_TO_COARSE[fields["y"]] != fields["coarse"])
        if disagree.size:
            k = disagree[0]
            raise ValueError(f"cifar100 {split}: {disagree.size} rows' coarse labels disagree with WSCL's fine->coarse "
                             f"table (row {k}: fine {fields['y'][k]}, coarse {fields['coarse'][k]}, table "
                             f"{CIFAR100_FINE_TO_COARSE[fields['y'][k]]}); the archive is not the CIFAR-100 release")
    out = _meta(list(meta["fine_label_names"]), "meta fine_label_names")
    out["coarse_classes"] = list(meta["coarse_label_names"])
    return splits, out


def _meta(classes: list[str], label_order_source: str) -> dict:
    return {"classes": classes, "class_ids": None, "label_order_source": label_order_source, "pixel_max": 255,
            "resize": None, "decoder": None, "generator": None, "deviations": []}


def prepare_tinyimagenet(ctx: PrepareContext) -> tuple[dict, dict]:
    """Labels in `wnids.txt` line order (Mammoth's CLASS_NAMES order); train files by class, then by the
    numeric k of `<wnid>_<k>.JPEG`; test = the official val set by the numeric k of `val_<k>.JPEG`."""
    import zipfile

    root = "tiny-imagenet-200"
    path = ctx.get("tiny-imagenet-200.zip")
    read = zip_reader(path)
    with zipfile.ZipFile(path) as archive:
        wnids = archive.read(f"{root}/wnids.txt").decode().split()
        label = {wnid: k for k, wnid in enumerate(wnids)}
        number = lambda name: int(name.rsplit("_", 1)[1].split(".")[0])
        names = archive.namelist()
        train = [(label[w], f) for w in wnids for f in sorted(
            (n for n in names if n.startswith(f"{root}/train/{w}/images/") and n.endswith(".JPEG")), key=number)]
        val_wnid = dict(line.split("\t")[:2] for line in archive.read(f"{root}/val/val_annotations.txt").decode().splitlines()
                        if line.strip())
        test = [(label[val_wnid[f.rsplit("/", 1)[1]]], f) for f in sorted(
            (n for n in names if n.startswith(f"{root}/val/images/") and n.endswith(".JPEG")), key=number)]
        splits = {}
        for split, rows in (("train", train), ("test", test)):
            x = ctx.stage(split, "x", (len(rows), 3, 64, 64), np.uint8)  # some JPEGs are grayscale: RGB
            decode_into(x, (f for _, f in rows), lambda member: decode_image(read(member)), ctx.threads)
            splits[split] = {"x": x, "y": np.asarray([y for y, _ in rows], dtype=np.int16)}
        words = dict(line.split("\t", 1) for line in archive.read(f"{root}/words.txt").decode().splitlines() if "\t" in line)
    meta = _meta([words.get(w, w).strip() for w in wnids], "tiny-imagenet-200/wnids.txt line order")
    meta.update(class_ids=wnids, decoder=pillow_version())
    return splits, meta
