"""MNIST, CIFAR-10 and CIFAR-100 from their providers' archives (datasets.md §5.1-5.3), in provider
order. Each preparer receives `get(file_name) -> Path`, which returns the verified raw file."""

from __future__ import annotations

import gzip
import pickle
import tarfile
from typing import Callable

import numpy as np

GetRaw = Callable[[str], "Path"]  # noqa: F821

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


def prepare_mnist(get: GetRaw) -> tuple[dict, dict]:
    splits = {}
    for split, (images, labels) in MNIST_FILES.items():
        x, y = read_idx(get(images)), read_idx(get(labels))
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


def prepare_cifar10(get: GetRaw) -> tuple[dict, dict]:
    root = "cifar-10-batches-py"
    with tarfile.open(get("cifar-10-python.tar.gz"), "r:gz") as archive:
        train = [_unpickle(archive, f"{root}/data_batch_{k}") for k in range(1, 6)]
        test = _unpickle(archive, f"{root}/test_batch")
        names = _unpickle(archive, f"{root}/batches.meta")["label_names"]
    splits = {
        "train": {"x": np.concatenate([_images(b) for b in train]),
                  "y": np.concatenate([b["labels"] for b in train]).astype(np.int16)},
        "test": {"x": _images(test), "y": np.asarray(test["labels"], dtype=np.int16)},
    }
    return splits, _meta(list(names), "batches.meta label_names")


def prepare_cifar100(get: GetRaw) -> tuple[dict, dict]:
    root = "cifar-100-python"
    with tarfile.open(get("cifar-100-python.tar.gz"), "r:gz") as archive:
        parts = {split: _unpickle(archive, f"{root}/{split}") for split in ("train", "test")}
        meta = _unpickle(archive, f"{root}/meta")
    splits = {split: {"x": _images(b), "y": np.asarray(b["fine_labels"], dtype=np.int16),
                      "coarse": np.asarray(b["coarse_labels"], dtype=np.int16)} for split, b in parts.items()}
    out = _meta(list(meta["fine_label_names"]), "meta fine_label_names")
    out["coarse_classes"] = list(meta["coarse_label_names"])
    return splits, out


def _meta(classes: list[str], label_order_source: str) -> dict:
    return {"classes": classes, "class_ids": None, "label_order_source": label_order_source, "pixel_max": 255,
            "resize": None, "decoder": None, "generator": None, "deviations": []}
