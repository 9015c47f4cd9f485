"""MNIST, CIFAR-10, CIFAR-100 and Tiny-ImageNet from their providers' archives (datasets.md §5.1-5.4),
in provider order. Each preparer receives `get(file_name) -> Path`, which returns the verified raw file."""

from __future__ import annotations

import gzip
import io
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


def _decode_rgb(blob: bytes) -> np.ndarray:
    """A JPEG as uint8 CHW RGB (some Tiny-ImageNet images are grayscale)."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(archive, files: list[str]) -> np.ndarray:
    """Decode into one preallocated array (1.2 GB for the train split), not a list then a stack."""
    first = _decode_rgb(archive.read(files[0]))
    out = np.empty((len(files), *first.shape), dtype=np.uint8)
    out[0] = first
    for k, name in enumerate(files[1:], start=1):
        out[k] = _decode_rgb(archive.read(name))
    return out


def prepare_tinyimagenet(get: GetRaw) -> tuple[dict, dict]:
    """Labels in `wnids.txt` line order (Mammoth's CLASS_NAMES order); train files by class, then by the
    numeric k of `<wnid>_<k>.JPEG`; test = the official val set by the numeric k of `val_<k>.JPEG`."""
    import zipfile

    from PIL import __version__ as pillow_version

    root = "tiny-imagenet-200"
    with zipfile.ZipFile(get("tiny-imagenet-200.zip")) as archive:
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
        splits = {split: {"x": _decode_all(archive, [f for _, f in rows]),
                          "y": np.asarray([y for y, _ in rows], dtype=np.int16)}
                  for split, rows in (("train", train), ("test", test))}
        words = dict(line.split("\t", 1) for line in archive.read(f"{root}/words.txt").decode().splitlines() if "\t" in line)
    meta = _meta([words.get(w, w).strip() for w in wnids], "tiny-imagenet-200/wnids.txt line order")
    meta.update(class_ids=wnids, decoder={"library": "Pillow", "version": pillow_version})
    return splits, meta
