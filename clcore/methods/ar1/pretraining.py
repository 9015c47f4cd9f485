"""The AR1 family's pretrained backbones (docs/ar1.md#pretrained-backbones): every run starts from one file holding
each block's conv weight and BRN γ, β, μ_run, σ_run (`backbone.pt`, plus `meta.json` with its sha256).

- `core50-nicv2-*` (paper): pytorchcv's ImageNet `mobilenet_w1`, downloaded once (rule `fetch_mobilenet_w1`, its
  sha1) and converted to our block names (rule `convert_mobilenet_w1`, `mobilenet.from_pytorchcv`).
- `shapes-nic-*` (embedded): the width-0.25, 32x32 network pretrained on the 50 objects of the shapes auxiliary
  categories (disjoint from the stream's) by rule `pretrain_ar1_backbone`: CE, SGD lr 0.05 momentum 0.9 weight
  decay 5e-4, batch 64, crop 32 pad 4 + flip, 20 epochs, the epoch with the best aux_test accuracy kept. Objects,
  not categories: category features ignore what tells a category's instances apart (colour, texture), and CWR*
  freezes them after batch 0 (docs/ar1.md#pretrained-backbones). Its batch norms are BRNs at r_max 1, d_max 0 and
  momentum 0.1, i.e. plain batch norm, so the conversion to BRN is the identity.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

from ... import __version__, data
from ...augment import Transform
from ...backbones.mobilenet import MobileNetV1, from_pytorchcv
from ...data.download import download_to
from ...data.prepared import file_digest
from ...device import pick_device
from ...errors import ChecksumError, DatasetMissingError, NonFiniteLossError
from ...io import atomic_path, git_commit, write_json
from ...scenarios import get_benchmark
from ..base import classifier_accuracy
from .methods import PRETRAINED_KEYS

log = logging.getLogger("clcore.ar1.pretraining")

# where the rules write, under the results directory; the source of each stream's backbone
BACKBONE = "pretrained/ar1_backbone/{source}/backbone.pt"
BACKBONE_META = "pretrained/ar1_backbone/{source}/meta.json"
SOURCES = {"core50": "imagenet_w1", "shapes": "shapes_aux_w025"}

# pytorchcv's release of MobileNetV1 width 1.0 (top-1 error 0.0895 in its name), sha1 of the extracted .pth
MOBILENET_W1_URL = "https://github.com/osmr/imgclsmob/releases/download/v0.0.155/mobilenet_w1-0895-7e1d739f.pth.zip"
MOBILENET_W1_FILE = "mobilenet_w1-0895-7e1d739f.pth"
MOBILENET_W1_SHA1 = "7e1d739f0fd4b95c16eef077c5dc0a5bb1da8ad5"

# the embedded recipe (docs/ar1.md#pretrained-backbones)
SHAPES_RECIPE = {"benchmark": "shapes-nic-40", "train_split": "aux_train", "val_split": "aux_test", "labels": "object",
                 "epochs": 20,
                 "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "crop_padding": 4,
                 "bn_momentum": 0.1}


def backbone_file(benchmark: str) -> str:
    """backbone.pt of a stream benchmark, under the results directory."""
    return BACKBONE.format(source=SOURCES[get_benchmark(benchmark).prepared])


def backbone_state(net: MobileNetV1) -> dict:
    """What a run loads: every conv weight and BRN γ, β, μ_run, σ_run (no head, no BRN settings)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items() if k.endswith(PRETRAINED_KEYS)}


def _write(state: dict, out_dir: Path, record: dict) -> dict:
    with atomic_path(out_dir / "backbone.pt") as tmp:
        torch.save(state, tmp)
    record = {**record, "sha256": file_digest(out_dir / "backbone.pt"),
              "versions": {"clcore": __version__, "torch": torch.__version__}, "git_commit": git_commit()}
    write_json(out_dir / "meta.json", record)
    return record



def pretrain_shapes_backbone(prepared_dir, out_dir, seed: int = 0, device="cpu", recipe: dict = SHAPES_RECIPE) -> dict:
    """Train the embedded streams' network on the shapes auxiliary categories; write the best epoch's backbone."""
    started, dev = time.time(), pick_device(str(device))
    spec = get_benchmark(recipe["benchmark"])
    torch.manual_seed(seed)
    generator = torch.Generator(device=dev).manual_seed(seed)
    train, val = (data.load(spec.prepared, recipe[split], prepared_dir, dev) for split in ("train_split", "val_split"))
    classes, y_train = torch.unique(train[recipe["labels"]], return_inverse=True)
    y_val = torch.searchsorted(classes, val[recipe["labels"]])
    pixel_max = float(data.metadata(spec.prepared, prepared_dir)["pixel_max"])
    transform = Transform(pixel_max, torch.tensor(spec.mean), torch.tensor(spec.std),
                          crop_padding=recipe["crop_padding"], hflip=True).to(dev)
    net = MobileNetV1(tuple(train["x"].shape[1:]), len(classes), **spec.backbone_options,
                      momentum=recipe["bn_momentum"], inc_step=0.0).to(dev)  # r_max 1, d_max 0: plain batch norm
    opt = torch.optim.SGD(net.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                          weight_decay=recipe["weight_decay"])
    best, history, n = None, [], len(y_train)
    for epoch in range(recipe["epochs"]):
        perm = torch.randperm(n, generator=generator, device=dev)
        for start in range(0, n, recipe["batch_size"]):
            idx = perm[start:start + recipe["batch_size"]]
            loss = F.cross_entropy(net(transform.train(train["x"][idx], generator)), y_train[idx])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"pretrain_ar1_backbone: non-finite loss in epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(classifier_accuracy(net, val["x"], y_val, transform))
        log.info("epoch %d/%d: aux_test accuracy %.2f", epoch + 1, recipe["epochs"], history[-1])
        if best is None or history[-1] > max(history[:-1]):
            best = copy.deepcopy(backbone_state(net))
    return _write(best, Path(out_dir), {
        "source": SOURCES["shapes"], "recipe": recipe, "seed": seed, "aux_test_accuracy_per_epoch": history,
        "best_epoch": int(max(range(len(history)), key=history.__getitem__)) + 1, "aux_test_accuracy": max(history),
        "classes": len(classes), "seconds": time.time() - started})


def fetch_mobilenet_w1(weights_dir, url: str = MOBILENET_W1_URL, download: bool = True, log=print) -> Path:
    """pytorchcv's `mobilenet_w1` checkpoint in `weights_dir`, downloaded and extracted once, checked by its sha1."""
    weights_dir = Path(weights_dir)
    target = weights_dir / MOBILENET_W1_FILE
    if not target.exists():
        archive = weights_dir / Path(url).name
        if not archive.exists():
            if not download:
                raise DatasetMissingError(
                    f"{target} is missing: download {url} into {weights_dir.resolve()}/ (the pipeline's rule "
                    f"fetch_mobilenet_w1 does it), or place {MOBILENET_W1_FILE} there by hand")
            weights_dir.mkdir(parents=True, exist_ok=True)
            part = archive.with_name(archive.name + ".part")
            download_to(url, part, log)
            part.replace(archive)
        with zipfile.ZipFile(archive) as z, atomic_path(target) as tmp:
            Path(tmp).write_bytes(z.read(MOBILENET_W1_FILE))
    digest = hashlib.sha1(target.read_bytes()).hexdigest()
    if digest != MOBILENET_W1_SHA1:
        target.unlink()
        raise ChecksumError(f"{target}: sha1 {digest}, expected {MOBILENET_W1_SHA1}; the file was deleted: fetch it "
                            f"again from {url}")
    return target


def convert_mobilenet_w1(checkpoint, out_dir) -> dict:
    """Our backbone.pt from pytorchcv's plain state dict (no pytorchcv import): block names mapped, BN running
    variance -> σ_run = sqrt(var); every tensor must be used and every block filled (strict load)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = MobileNetV1((3, 128, 128), 50)
    net.load_state_dict(from_pytorchcv(state, net), strict=True)
    return _write(backbone_state(net), Path(out_dir), {
        "source": SOURCES["core50"], "checkpoint": str(checkpoint), "checkpoint_sha1": MOBILENET_W1_SHA1,
        "url": MOBILENET_W1_URL})
