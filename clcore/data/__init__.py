"""Prepared datasets: a registry name -> preparer, `prepare` (idempotent) and `load`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import lookup
from ..io import read_json
from .prepared import read_split, verify_prepared, write_prepared


def _prepare_shapes():
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


def _prepare_digits():
    from .digits import prepare_digits

    return prepare_digits()


# name -> function returning (splits, meta) for write_prepared
PREPARERS = {"digits": _prepare_digits, "shapes": _prepare_shapes}


def prepare(name: str, prepared_dir="resources/prepared", force: bool = False, verify: bool = False) -> dict:
    """Build `<prepared_dir>/<name>/`. A complete, intact dataset is left alone unless `force`."""
    preparer = lookup("dataset", PREPARERS, name)
    out = Path(prepared_dir) / name
    if (out / "meta.json").exists() and not force:
        bad = verify_prepared(out) if verify else [f for f in _listed_files(out) if not (out / f).exists()]
        if not bad:
            return read_json(out / "meta.json")
        force = True
    splits, meta = preparer()
    return write_prepared(out, name, splits, meta)


def _listed_files(out: Path) -> list[str]:
    meta = read_json(out / "meta.json")
    return [info["file"] for s in meta["splits"].values() for info in s["fields"].values()]


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
