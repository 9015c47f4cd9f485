"""The prepared-dataset format (docs/datasets.md#the-prepared-format): one directory per dataset with
`<split>.<field>.npy` arrays (x: uint8 NCHW, y: int16, optional per-sample fields), optional
`index/<scenario>/run<r>/*.npy` row lists, and `meta.json`, written last.

Arrays too large for RAM (CORe50, the ImageNet subsets, SALICON) are decoded straight into a staged
memory map (`stage_array`); `write_prepared` renames it into place instead of saving a copy."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import ChecksumError, DatasetMissingError
from ..io import atomic_path, git_commit, read_json, write_json

SCHEMA_VERSION = 1


_STAGED = ".staged"
_NAME = re.compile(r"^([a-z0-9-]+)(?:@([0-9]+)x([0-9]+))?$")


def parse_name(name: str) -> tuple[str, tuple[int, int] | None]:
    """`fg-imagenet@288x384` -> ('fg-imagenet', (288, 384)); the suffix is the prepared H x W."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"'{name}' is not a prepared-dataset name ([a-z0-9-]+ with an optional @HxW suffix)")
    base, h, w = match.groups()
    return base, (int(h), int(w)) if h else None


@dataclass
class PrepareContext:
    """What a preparer reads from and writes to."""
    name: str                          # the prepared name, with its @HxW suffix if any
    size: tuple[int, int] | None       # that suffix: the target H x W of resized images
    raw_dir: Path                      # <paths.raw>/<name without suffix>/: downloads land here, users place files here
    out_dir: Path                      # <paths.prepared>/<name>/
    get: Callable[[str], Path]         # a raw file listed in config/datasets.yaml, verified, downloaded if missing
    needed_by: str = "clcore prepare"  # the benchmarks or rule that asked, for error messages
    threads: int = 1                   # image decoding workers

    def local(self, file_name: str) -> Path | None:
        """An optional raw file: verified if the user placed it (or an earlier run fetched it), never downloaded."""
        return self.get(file_name) if (self.raw_dir / file_name).exists() else None

    @property
    def retry_command(self) -> str:
        return f"`clcore prepare {self.name} --raw-dir {self.raw_dir.parent}`"

    def stage(self, split: str, field: str, shape, dtype) -> np.memmap:
        return stage_array(self.out_dir, split, field, shape, dtype)


def file_digests(path, algorithms=("sha256",), chunk: int = 1 << 20) -> dict[str, str]:
    """Several digests of one file in a single read (an 8 GB archive is read once, not per algorithm)."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while block := f.read(chunk):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def file_digest(path, algorithm: str = "sha256") -> str:
    return file_digests(path, (algorithm,))[algorithm]


def stage_array(out_dir, split: str, field: str, shape, dtype) -> np.memmap:
    """A writable .npy memory map for `<split>.<field>`, filled in place by a preparer and moved into
    place by `write_prepared`; a killed prepare leaves only a `.staged` file, never a finished-looking one."""
    path = Path(out_dir) / f"{split}.{field}.npy{_STAGED}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))


def _normalization(x: np.ndarray, pixel_max: float, rows: int = 4096) -> dict:
    """Per-channel mean/std on the [0, 1] scale, accumulated over row blocks (x may be a 45 GB memmap)."""
    total = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, len(x), rows):
        block = x[start:start + rows].astype(np.float64) / pixel_max
        total[0][:] += block.sum(axis=(0, 2, 3))
        total[1][:] += np.square(block).sum(axis=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total[0] / count
    std = np.sqrt(np.maximum(total[1] / count - mean ** 2, 0.0))
    return {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}


def write_array(path: Path, array: np.ndarray) -> None:
    """`array` saved as `path` atomically; a memory map staged for `path` (`stage_array`) is moved into place."""
    staged = path.with_name(path.name + _STAGED)
    if isinstance(array, np.memmap) and Path(array.filename) == staged.resolve():
        array.flush()
        staged.replace(path)
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def write_prepared(out_dir, name: str, splits: dict[str, dict[str, np.ndarray]], meta: dict,
                   index: dict[str, np.ndarray] | None = None) -> dict:
    """Write every array atomically, then meta.json (with per-file sha256) last.

    `index` maps `<scenario>/run<r>/<batch>` to int32 row lists (CORe50's NIC batches), written under
    `index/` and hashed like the arrays."""
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
            write_array(path, array)
            files[field] = {"file": path.name, "dtype": str(array.dtype), "shape": list(array.shape),
                            "sha256": file_digest(path), **stamp(path)}
        split_meta[split] = {"n": int(n), "fields": files}
    index_meta = {}
    for key, rows in (index or {}).items():
        path = out_dir / "index" / f"{key}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_array(path, np.asarray(rows, dtype=np.int32))
        index_meta[key] = {"file": str(path.relative_to(out_dir)), "n": int(len(rows)), "sha256": file_digest(path),
                           **stamp(path)}
    if index_meta:
        meta = {**meta, "index": index_meta}
    stats_split = "train" if "train" in splits else next(iter(splits))
    full = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "clcore_version": __version__,
        "git_commit": git_commit(),
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "splits": split_meta,
        "normalization_computed": _normalization(splits[stats_split]["x"], meta["pixel_max"]),
        **meta,
    }
    write_json(out_dir / "meta.json", full)
    return full


def listed_files(meta: dict) -> dict[str, str]:
    """file (relative to the dataset folder) -> sha256, for every array and index file of meta.json."""
    files = {info["file"]: info["sha256"] for s in meta["splits"].values() for info in s["fields"].values()}
    files.update({info["file"]: info["sha256"] for info in meta.get("index", {}).values()})
    return files


def verify_prepared(out_dir) -> list[str]:
    """Files whose sha256 differs from meta.json (empty list = intact)."""
    out_dir = Path(out_dir)
    return [f for f, sha in listed_files(read_json(out_dir / "meta.json")).items()
            if not (out_dir / f).exists() or file_digest(out_dir / f) != sha]


def stamp(path) -> dict:
    """The cheap identity of a file's bytes: its size and modification time."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


VERIFIED = ".verified.json"  # file -> stamp of the bytes whose sha256 was last found equal to the recorded one


def check_files(folder, files: dict[str, dict], remedy: str) -> None:
    """Fail unless every file of `files` ({relative path: {"sha256", "size", "mtime_ns"}}) holds the bytes
    recorded for it. Cheap on every load: a file whose size and modification time equal the stamp written with
    it (or the stamp of its last full check, cached in `<folder>/.verified.json`) is trusted; any other is
    hashed once. A ChecksumError names the file and says how to rebuild it (`remedy`)."""
    folder = Path(folder)
    try:
        verified = json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        verified = {}
    newly_verified = {}
    for name, info in files.items():
        path = folder / name
        if not path.exists():
            raise ChecksumError(f"{path} is missing although {folder / 'meta.json'} lists it. {remedy}")
        now = stamp(path)
        if "size" in info and now["size"] != info["size"]:
            raise ChecksumError(f"{path} has {now['size']} bytes, {info['size']} were written: the file is "
                                f"damaged. {remedy}")
        if now in ({"size": info.get("size"), "mtime_ns": info.get("mtime_ns")}, verified.get(name)):
            continue
        digest = file_digest(path)
        if digest != info["sha256"]:
            raise ChecksumError(f"{path} changed after it was written (sha256 {digest[:16]}..., recorded "
                                f"{info['sha256'][:16]}...): the file is damaged. {remedy}")
        newly_verified[name] = now
    if newly_verified:
        try:  # a cache only: read-only shared storage just means hashing again next time
            with atomic_path(folder / VERIFIED) as tmp:
                tmp.write_text(json.dumps({**verified, **newly_verified}))
        except OSError:
            pass


def remake_prepared(out_dir) -> str:
    """How to rebuild a prepared dataset, by hand and in the pipeline (which also reruns what used it)."""
    out_dir = Path(out_dir)
    return (f"Rebuild it: `clcore prepare {out_dir.name} --force --prepared-dir {out_dir.parent}`, or in the "
            f"pipeline `snakemake --cores all --forcerun {out_dir / 'meta.json'}` (reruns what used it).")


def read_index(out_dir, key: str) -> np.ndarray:
    """The int32 row list `index/<key>.npy` (e.g. `nicv2_79/run0/batch000`) of a prepared dataset, checked."""
    meta = read_json(Path(out_dir) / "meta.json")
    if key not in meta.get("index", {}):
        raise KeyError(f"{Path(out_dir).name} has no index '{key}'")
    info = meta["index"][key]
    check_files(out_dir, {info["file"]: info}, remake_prepared(out_dir))
    return np.load(Path(out_dir) / info["file"], allow_pickle=False)


def read_split(out_dir, split: str, mmap: bool = True) -> dict[str, np.ndarray]:
    """All fields of one split as numpy arrays (memory-mapped by default), each file checked against meta.json
    (`check_files`: its stamp on every load, its sha256 where the stamp differs)."""
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
    fields = meta["splits"][split]["fields"]
    check_files(out_dir, {info["file"]: info for info in fields.values()}, remake_prepared(out_dir))
    return {field: np.load(out_dir / info["file"], mmap_mode="r" if mmap else None, allow_pickle=False)
            for field, info in fields.items()}
