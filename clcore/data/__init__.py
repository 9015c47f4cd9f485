"""Prepared datasets: a registry name -> preparer, `prepare` (idempotent) and `load`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError, lookup
from ..io import read_json
from .classic import prepare_cifar10, prepare_cifar100, prepare_mnist, prepare_tinyimagenet
from .download import DEFAULT_SOURCES, fetch, load_sources
from .prepared import file_digest, read_split, verify_prepared, write_prepared


def _prepare_shapes(get=None):
    from .shapes import MAIN_CATEGORIES, generate_shapes

    splits, generator_meta = generate_shapes(seed=0, frames=6)
    meta = {
        "source": [{"name": "clcore.data.shapes", "url": "generated"}],
        "classes": list(MAIN_CATEGORIES),
        "class_ids": None,
        "label_order_source": "clcore.data.shapes.MAIN_CATEGORIES",
        "pixel_max": 255,
        "resize": None,
        "decoder": None,
        "generator": generator_meta,
        "deviations": [],
    }
    return splits, meta


def _prepare_digits(get=None):
    from .digits import prepare_digits

    return prepare_digits()


# name -> function(get) returning (splits, meta) for write_prepared; `get(file)` fetches a raw file
PREPARERS = {"digits": _prepare_digits, "shapes": _prepare_shapes, "mnist": prepare_mnist,
             "cifar10": prepare_cifar10, "cifar100": prepare_cifar100, "tinyimagenet": prepare_tinyimagenet}


def prepare(name: str, prepared_dir="resources/prepared", force: bool = False, verify: bool = False,
            expected_hashes=None, strict: bool = False, raw_dir="resources/raw", sources=DEFAULT_SOURCES,
            download: bool = True) -> dict:
    """Build `<prepared_dir>/<name>/`. A complete, intact dataset is left alone unless `force`.

    Raw files come from `<raw_dir>/<name>/`, downloaded from the mirrors listed in `sources` unless
    `download` is off. `expected_hashes` (a JSON file: dataset -> file -> sha256, e.g.
    config/reference/embedded_hashes.json) checks that a generated dataset is byte-identical to the one
    recorded on the reference platform.
    """
    preparer = lookup("dataset", PREPARERS, name)
    out = Path(prepared_dir) / name
    if (out / "meta.json").exists() and not force:
        bad = verify_prepared(out) if verify else [f for f in _listed_files(out) if not (out / f).exists()]
        if not bad:
            return read_json(out / "meta.json")
        force = True
    raw_files, fetched = {}, []

    def get(file_name: str) -> Path:
        if not raw_files:
            raw_files.update({f.name: f for f in load_sources(name, sources)})
        raw = raw_files[file_name]
        path = fetch(raw, Path(raw_dir) / name, name, download)
        fetched.append({"name": raw.name, "url": raw.mirrors[0] + raw.name, "md5": raw.md5,
                        "sha256": file_digest(path)})
        return path

    splits, meta = preparer(get)
    if fetched:
        meta["source"] = fetched
    meta = write_prepared(out, name, splits, meta)
    if expected_hashes is not None:
        check_reference_hashes(meta, read_json(expected_hashes).get(name, {}), strict)
    return meta


def file_hashes(meta: dict) -> dict[str, str]:
    """file name -> sha256 of every array of a prepared dataset."""
    return {info["file"]: info["sha256"] for s in meta["splits"].values() for info in s["fields"].values()}


def check_reference_hashes(meta: dict, expected: dict[str, str], strict: bool = False) -> None:
    """Warn (or, if `strict`, raise ChecksumError) where a file differs from the reference platform's."""
    differ = sorted(f for f, sha in file_hashes(meta).items() if f in expected and expected[f] != sha)
    if not differ:
        return
    message = (f"{meta['name']}: {len(differ)} file(s) differ from the reference platform's bytes "
               f"({', '.join(differ)}); results may differ slightly from published embedded numbers. "
               f"Floating-point rendering can differ across CPUs and library versions.")
    if strict:
        raise ChecksumError(message)
    warnings.warn(message, stacklevel=2)


def _listed_files(out: Path) -> list[str]:
    return list(file_hashes(read_json(out / "meta.json")))


def load(name: str, split: str, prepared_dir="resources/prepared", device="cpu") -> dict[str, torch.Tensor]:
    """Every field of a prepared split as tensors on `device` (x stays uint8; labels become int64)."""
    arrays = read_split(Path(prepared_dir) / name, split)
    out = {}
    for field, array in arrays.items():
        t = torch.from_numpy(np.array(array))  # a writable copy of the memory map
        out[field] = (t if field in ("x", "sal") else t.long()).to(device)
    return out


def metadata(name: str, prepared_dir="resources/prepared") -> dict:
    return read_json(Path(prepared_dir) / name / "meta.json")
