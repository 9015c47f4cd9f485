"""The prepared-dataset format (datasets.md §2): one directory per dataset with `<split>.<field>.npy`
arrays (x: uint8 NCHW, y: int16, optional per-sample fields) and `meta.json`, written last."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DatasetMissingError
from ..io import atomic_path, git_commit, read_json, write_json

SCHEMA_VERSION = 1


def file_digest(path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _normalization(x: np.ndarray, pixel_max: float) -> dict:
    scaled = x.astype(np.float64) / pixel_max
    return {"mean": scaled.mean(axis=(0, 2, 3)).round(6).tolist(), "std": scaled.std(axis=(0, 2, 3)).round(6).tolist()}


def write_prepared(out_dir, name: str, splits: dict[str, dict[str, np.ndarray]], meta: dict) -> dict:
    """Write every array atomically, then meta.json (with per-file sha256) last."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split_meta = {}
    for split, fields in splits.items():
        n = fields["x"].shape[0]
        files = {}
        for field, array in fields.items():
            if array.shape[0] != n:
                raise ValueError(f"{name}/{split}.{field}: {array.shape[0]} rows, x has {n}")
            path = out_dir / f"{split}.{field}.npy"
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            files[field] = {"file": path.name, "dtype": str(array.dtype), "shape": list(array.shape),
                            "sha256": file_digest(path)}
        split_meta[split] = {"n": int(n), "fields": files}
    full = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "clcore_version": __version__,
        "git_commit": git_commit(),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "splits": split_meta,
        "normalization_computed": _normalization(splits["train"]["x"], meta["pixel_max"]),
        **meta,
    }
    write_json(out_dir / "meta.json", full)
    return full


def verify_prepared(out_dir) -> list[str]:
    """Files whose sha256 differs from meta.json (empty list = intact)."""
    out_dir = Path(out_dir)
    meta = read_json(out_dir / "meta.json")
    bad = []
    for split in meta["splits"].values():
        for info in split["fields"].values():
            path = out_dir / info["file"]
            if not path.exists() or file_digest(path) != info["sha256"]:
                bad.append(info["file"])
    return bad


def read_split(out_dir, split: str, mmap: bool = True) -> dict[str, np.ndarray]:
    """All fields of one split as numpy arrays (memory-mapped by default)."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.exists():
        raise DatasetMissingError(
            f"prepared dataset not found: {meta_path} does not exist.\n"
            f"Run `clcore prepare {out_dir.name} --prepared-dir {out_dir.parent}` (or the Snakemake target "
            f"{meta_path}) first."
        )
    meta = read_json(meta_path)
    if split not in meta["splits"]:
        raise KeyError(f"{out_dir.name} has no split '{split}' (it has {', '.join(meta['splits'])})")
    return {field: np.load(out_dir / info["file"], mmap_mode="r" if mmap else None, allow_pickle=False)
            for field, info in meta["splits"][split]["fields"].items()}
