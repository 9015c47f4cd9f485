"""Image datasets decoded file by file into memory-mapped uint8 arrays: SALICON (docs/datasets.md#salicon)
and the ImageNet subsets FG-ImageNet, Mini-ImageNet and AUX-ImageNet100 (docs/datasets.md#imagenet-subsets),
all placed by hand.

Decoding runs in a thread pool (Pillow releases the GIL while it decodes and resizes) and writes into
a staged memory map in row order, so a 45 GB split never exists in RAM."""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import DatasetMissingError
from .prepared import PrepareContext, file_digest

CLASSLISTS = Path("config/classlists")  # WNIDs in label order, one per line (docs/datasets.md#class-lists)
FILELISTS = Path("config/filelists")    # optional explicit `<wnid>/<file>` lists, `<name>_{train,test}.txt`
_FILTERS = {"lanczos": 1, "bilinear": 2}  # PIL.Image.Resampling values
_CHUNK = 256


def decode_image(source, size: tuple[int, int] | None = None, resample: str = "lanczos",
                 mode: str = "RGB") -> np.ndarray:
    """A JPEG/PNG (path or bytes) as uint8 CHW in `mode`, resized to `size` (H, W) if given."""
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image = image.convert(mode)
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), resample=_FILTERS[resample])
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_into(out: np.ndarray, sources: Iterable, decode: Callable, threads: int = 1) -> None:
    """out[k] = decode(k-th source), in order, decoding `threads` images at a time."""
    sources = iter(sources)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        row = 0
        while chunk := list(islice(sources, _CHUNK)):
            for image in pool.map(decode, chunk):
                if image.shape != out.shape[1:]:
                    raise ValueError(f"image {row} decodes to {image.shape}, expected {out.shape[1:]}; "
                                     f"images of this dataset must share one size or be resized")
                out[row] = image
                row += 1
    if row != len(out):
        raise ValueError(f"decoded {row} images into an array of {len(out)} rows")


def zip_reader(path) -> Callable[[str], bytes]:
    """member name -> bytes of one zip archive, safe to call from several threads (one handle each)."""
    import threading

    local = threading.local()

    def read(member: str) -> bytes:
        if not hasattr(local, "archive"):
            local.archive = zipfile.ZipFile(path)
        return local.archive.read(member)

    return read


def pillow_version() -> dict:
    from PIL import __version__

    return {"library": "Pillow", "version": __version__}


# --------------------------------------------------------------------------------------------------
# ImageNet subsets

@dataclass(frozen=True)
class ImageNetSubset:
    classlist: str                   # file in config/classlists/
    sizes: dict                      # allowed (H, W) -> Pillow filter (the upstream resize)
    saliency: bool                   # SER reads per-image saliency maps beside the images
    used_by: str
    source: str                      # where upstream lists the classes


IMAGENET_SUBSETS = {
    "fg-imagenet": ImageNetSubset("fg_imagenet.txt", {(288, 384): "lanczos", (256, 256): "lanczos"}, True,
                                  "SER (seq-fgimagenet, 288x384) and WSCL (256x256)",
                                  "SER data/seq_imagenet_FG.yml = WSCL imagenet100_primary.yml"),
    "mini-imagenet": ImageNetSubset("mini_imagenet_ser.txt", {(288, 384): "lanczos"}, True,
                                    "SER (seq-miniimagenet)", "SER data/seq_miniimg.yml"),
    # WSCL resizes AUX with cv2 bilinear; the 32x32 CIFAR-100 dream set then goes through skimage (not
    # reproduced bit-exactly: Pillow's bilinear with its antialiasing support; recorded as a deviation)
    "aux-imagenet100": ImageNetSubset("aux_imagenet100.txt", {(256, 256): "bilinear", (32, 32): "bilinear"}, False,
                                      "WSCL dreams (FG-ImageNet at 256x256, CIFAR-100 at 32x32)",
                                      "WSCL imagenet100_aux.yml"),
    # AKR's ImageNet-subset [UNVERIFIED for AKR]: the subset of LUCIR and inclearn (`imagenet_split/{train,val}_100.txt`),
    # ILSVRC2012's first 100 WNIDs in sorted order; presented in the lucir_1993 class order
    "imagenet-subset-akr": ImageNetSubset("imagenet_subset_akr.txt", {(224, 224): "bilinear"}, False,
                                          "AKR's ImageNet-subset block (disabled: manual data)",
                                          "inclearn imagenet_split/val_100.txt (labels 0-99)"),
}
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def read_classlist(name: str) -> list[str]:
    return (CLASSLISTS / name).read_text().split()


def _imagenet_layout(base: str, saliency: bool) -> str:
    lines = [(f"{base}/", "(a) this dataset's own folder"),
             ("  images/train/<wnid>/<file>.JPEG", "~1,300 per class"),
             ("  images/val/<wnid>/<file>.JPEG", "50 per class: the test split")]
    if saliency:
        lines += [("  annotations/{train,val}/<wnid>/<stem>.png", "saliency maps (optional; else rule pseudo_saliency)")]
    lines += [("imagenet/", "(b) or a whole ILSVRC2012 tree beside it"), ("  train/<wnid>/<file>.JPEG", ""),
              ("  val/<wnid>/<file>.JPEG", "val sorted into class folders")]
    return "\n".join(f"{path:<46}{note}".rstrip() for path, note in lines) + \
        f"\nWNIDs in label order: {CLASSLISTS}/{IMAGENET_SUBSETS[base].classlist}"


def _find_imagenet_root(ctx: PrepareContext, base: str, wnids: list[str]) -> tuple[Path, Path | None, dict]:
    """(image root holding train/ and val/, saliency root or None) from layout (a) or (b), and what was seen."""
    candidates = [(ctx.raw_dir / "images", ctx.raw_dir / "annotations"), (ctx.raw_dir.parent / "imagenet", None)]
    found = {}
    for images, annotations in candidates:
        missing = [f"{split}/{w}" for split in ("train", "val") for w in wnids if not (images / split / w).is_dir()]
        if not missing:
            return images, annotations if annotations is not None and annotations.is_dir() else None, found
        state = "missing" if not images.exists() else f"{len(missing)} of {2 * len(wnids)} class folders missing " \
                                                       f"(first: {missing[0]})"
        found[str(images)] = state
    return None, None, found


def _class_files(folder: Path, listed: list[str] | None, wnid: str) -> list[Path]:
    if listed is not None:
        return [folder / f for f in listed if f.startswith(wnid + "/")]
    return sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def _filelist(base: str, split: str) -> list[str] | None:
    path = FILELISTS / f"{base}_{split}.txt"
    return path.read_text().split() if path.exists() else None


def prepare_imagenet_subset(ctx: PrepareContext):
    """Rows by label, then sorted file name (upstream globs in filesystem order); test = each class's val
    folder, or the explicit file lists in config/filelists/ where they exist."""
    base = ctx.name.split("@")[0]
    subset = IMAGENET_SUBSETS[base]
    if ctx.size not in subset.sizes:
        raise ValueError(f"{base} is prepared at " + " or ".join(f"@{h}x{w}" for h, w in subset.sizes) +
                         f" (the upstream resolutions), not {ctx.name}")
    wnids = read_classlist(subset.classlist)
    images, annotations, found = _find_imagenet_root(ctx, base, wnids)
    if images is None:
        raise DatasetMissingError.manual(
            ctx.name, ctx.needed_by, ctx.raw_dir.parent, found, _imagenet_layout(base, subset.saliency),
            "ImageNet-1k (ILSVRC2012) from https://image-net.org/ under its licence; the class list is "
            f"{subset.source}", ctx.retry_command)
    resample = subset.sizes[ctx.size]
    splits, deviations = {}, []
    for split, folder in (("train", "train"), ("test", "val")):
        listed = _filelist(base, split)
        rows = [(label, path) for label, w in enumerate(wnids) for path in _class_files(images / folder, listed, w)]
        x = ctx.stage(split, "x", (len(rows), 3, *ctx.size), np.uint8)
        decode_into(x, (p for _, p in rows), lambda p: decode_image(p, ctx.size, resample), ctx.threads)
        fields = {"x": x, "y": np.asarray([label for label, _ in rows], dtype=np.int16)}
        if subset.saliency and annotations is not None:
            maps = [annotations / folder / p.parent.name / (p.stem + ".png") for _, p in rows]
            absent = [m for m in maps if not m.exists()]
            if absent:
                raise DatasetMissingError.manual(
                    ctx.name, ctx.needed_by, annotations, {str(absent[0]): f"missing ({len(absent)} maps in all)"},
                    _imagenet_layout(base, True), "the SER authors' pseudo-ground-truth maps, or remove "
                    f"{annotations} to have rule pseudo_saliency generate them",
                    ctx.retry_command)
            sal = ctx.stage(split, "sal", (len(rows), 1, *ctx.size), np.uint8)
            decode_into(sal, maps, lambda m: decode_image(m, ctx.size, resample, mode="L"), ctx.threads)
            fields["sal"] = sal
        splits[split] = fields
    if subset.saliency and annotations is None:
        deviations.append("no saliency maps were placed: SER runs use maps from rule pseudo_saliency")
    if base == "aux-imagenet100" and ctx.size == (32, 32):
        deviations.append("32x32: one Pillow bilinear resize, not WSCL's cv2 256x256 then skimage 32x32 (±grey levels)")
    classlist = CLASSLISTS / subset.classlist
    meta = {"classes": wnids, "class_ids": wnids, "pixel_max": 255, "generator": None, "deviations": deviations,
            "label_order_source": f"{classlist} (sha256 {file_digest(classlist)}; {subset.source})",
            "source": [{"name": str(images), "url": "manual", "layout": "a" if images.name == "images" else "b"}],
            "resize": {"library": "Pillow", "filter": resample, "size": list(ctx.size)},
            "decoder": pillow_version()}
    return splits, meta


# --------------------------------------------------------------------------------------------------
# SALICON

SALICON_LAYOUT = """salicon/
  images/train/COCO_train2014_<12-digit id>.jpg   10,000 (480x640)
  images/val/COCO_val2014_<12-digit id>.jpg       5,000
  maps/train/<same stem>.png                      grayscale saliency maps
  maps/val/<same stem>.png
  fixations/{train,val}/<same stem>.mat           optional, unused"""


def prepare_salicon(ctx: PrepareContext):
    """Images and maps resized together to the @HxW suffix with LANCZOS (UNISAL's out_size); rows sorted
    by COCO id. No class labels: the field `image_id` keeps the id."""
    if ctx.size is None:
        raise ValueError("salicon is prepared at a resolution: use salicon@288x384 (UNISAL's out_size)")
    found, pairs = {}, {}
    for split in ("train", "val"):
        images = sorted((ctx.raw_dir / "images" / split).glob(f"COCO_{split}2014_*.jpg"))
        maps = [ctx.raw_dir / "maps" / split / (p.stem + ".png") for p in images]
        absent = [m for m in maps if not m.exists()]
        found[f"images/{split}"] = f"{len(images)} images" if images else "missing"
        found[f"maps/{split}"] = f"{len(maps) - len(absent)} of {len(maps)} maps" if images else "missing"
        if not images or absent:
            continue
        pairs[split] = list(zip(images, maps))
    if set(pairs) != {"train", "val"}:
        raise DatasetMissingError.manual(
            ctx.name, ctx.needed_by, ctx.raw_dir, found, SALICON_LAYOUT,
            "the SALICON challenge site (http://salicon.net/challenge-2017/: images are MS-COCO 2014, maps "
            "from the download links there; no scriptable URL or checksum is published)",
            ctx.retry_command)
    splits = {}
    for split, rows in pairs.items():
        x = ctx.stage(split, "x", (len(rows), 3, *ctx.size), np.uint8)
        decode_into(x, (image for image, _ in rows), lambda p: decode_image(p, ctx.size), ctx.threads)
        sal = ctx.stage(split, "sal", (len(rows), 1, *ctx.size), np.uint8)
        decode_into(sal, (m for _, m in rows), lambda p: decode_image(p, ctx.size, mode="L"), ctx.threads)
        ids = np.asarray([int(image.stem.rsplit("_", 1)[1]) for image, _ in rows], dtype=np.int64)
        splits[split] = {"x": x, "sal": sal, "image_id": ids}
    meta = {"classes": [], "class_ids": None, "pixel_max": 255, "generator": None, "deviations": [],
            "label_order_source": "no labels; rows sorted by COCO image id",
            "source": [{"name": f"images/{s}, maps/{s}", "url": "manual", "n": len(r)} for s, r in pairs.items()],
            "resize": {"library": "Pillow", "filter": "lanczos", "size": list(ctx.size)},
            "decoder": pillow_version()}
    return splits, meta
