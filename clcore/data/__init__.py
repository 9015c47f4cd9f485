"""Prepared datasets: a registry name -> preparer, `prepare` (idempotent) and `load`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError, lookup
from ..io import read_json
from .classic import prepare_cifar10, prepare_cifar100, prepare_mnist, prepare_tinyimagenet
from .core50 import prepare_core50
from .download import DEFAULT_SOURCES, fetch, load_sources
from .imagefolders import IMAGENET_SUBSETS, prepare_imagenet_subset, prepare_salicon
from .prepared import PrepareContext, listed_files, parse_name, read_index, read_split, verify_prepared, write_prepared


def _prepare_shapes(ctx):
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


def _prepare_digits(ctx):
    from .digits import prepare_digits

    return prepare_digits()


GENERATED = ("digits", "shapes")  # made by clcore itself: nothing to download

# base name (no @HxW) -> function(PrepareContext) returning (splits, meta[, index]) for write_prepared
PREPARERS = {"digits": _prepare_digits, "shapes": _prepare_shapes, "mnist": prepare_mnist,
             "cifar10": prepare_cifar10, "cifar100": prepare_cifar100, "tinyimagenet": prepare_tinyimagenet,
             "core50": prepare_core50, "salicon": prepare_salicon,
             **{subset: prepare_imagenet_subset for subset in IMAGENET_SUBSETS}}


def prepare(name: str, prepared_dir="resources/prepared", force: bool = False, verify: bool = False,
            expected_hashes=None, strict: bool = False, raw_dir="resources/raw", sources=DEFAULT_SOURCES,
            download: bool = True, needed_by: str = "clcore prepare", threads: int = 1) -> dict:
    """Build `<prepared_dir>/<name>/`. A complete, intact dataset is left alone unless `force`.

    Raw files come from `<raw_dir>/<name without @HxW>/`, downloaded from the mirrors listed in `sources`
    unless `download` is off; manual datasets are read from there as the user placed them.
    `expected_hashes` (a JSON file: dataset -> file -> sha256, e.g. config/reference/embedded_hashes.json)
    checks that a generated dataset is byte-identical to the one recorded on the reference platform.
    """
    base, size = parse_name(name)
    preparer = lookup("dataset", PREPARERS, base)
    out = Path(prepared_dir) / name
    if (out / "meta.json").exists() and not force:
        bad = verify_prepared(out) if verify else [f for f in listed_files(read_json(out / "meta.json"))
                                                   if not (out / f).exists()]
        if not bad:
            return read_json(out / "meta.json")
        force = True
    raw_files, fetched = {}, {}

    def get(file_name: str) -> Path:
        if not raw_files:
            raw_files.update({f.name: f for f in load_sources(base, sources)})
        raw = raw_files[file_name]
        path, sha256 = fetch(raw, Path(raw_dir) / base, base, download, needed_by=needed_by,
                             listed=tuple(raw_files.values()))
        fetched[raw.name] = {"name": raw.name, "url": raw.mirrors[0] + raw.name, "md5": raw.md5, "sha256": sha256}
        return path

    ctx = PrepareContext(name, size, Path(raw_dir) / base, out, get, needed_by, threads)
    splits, meta, *index = preparer(ctx)
    if fetched:
        meta["source"] = list(fetched.values())
    meta = write_prepared(out, name, splits, meta, *index)
    if expected_hashes is not None:
        check_reference_hashes(meta, read_json(expected_hashes).get(name, {}), strict)
    return meta


def check_reference_hashes(meta: dict, expected: dict[str, str], strict: bool = False) -> None:
    """Warn (or, if `strict`, raise ChecksumError) where a file differs from the reference platform's."""
    differ = sorted(f for f, sha in listed_files(meta).items() if f in expected and expected[f] != sha)
    if not differ:
        return
    message = (f"{meta['name']}: {len(differ)} file(s) differ from the reference platform's bytes "
               f"({', '.join(differ)}); results may differ slightly from published embedded numbers. "
               f"Floating-point rendering can differ across CPUs and library versions.")
    if strict:
        raise ChecksumError(message)
    warnings.warn(message, stacklevel=2)


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


def load_index(name: str, key: str, prepared_dir="resources/prepared") -> torch.Tensor:
    """Row indices `index/<key>.npy` of a prepared dataset (e.g. core50 `nicv2_79/run0/batch000`) as int64."""
    return torch.from_numpy(read_index(Path(prepared_dir) / name, key).astype(np.int64))
