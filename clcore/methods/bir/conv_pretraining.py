"""The conv layers of the BI-R family (docs/bir.md#conv-pretraining, rule `pretrain_bir_conv`).

[BIR] pretrains `convE` once as part of a plain classifier (convE -> fc(units) -> fc(units) -> linear,
cross-entropy, Adam, random crop with edge-repeating padding + horizontal flip) on a dataset other than
the continual-learning one, and every run that uses it loads the same weights. `conv.pt` is convE's
state dict (BN buffers included); `meta.json` records the recipe, the validation accuracy and the sha256
that the runs record in their run.json.

`upstream_conv` converts [BIR]'s published `store/models/C3-5x16-bn` (placed by hand; the paper
scripts did not use it) into the same `conv.pt` format.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ... import __version__, data
from ...augment import Transform
from ...data.prepared import file_digest
from ...device import pick_device
from ...errors import ChecksumError, DatasetMissingError, NonFiniteLossError
from ...io import atomic_path, git_commit, write_json
from ..base import classifier_accuracy
from .vae import ConvE

log = logging.getLogger("clcore.bir.conv_pretraining")


@dataclass(frozen=True)
class ConvPretraining:
    """Where and how rule pretrain_bir_conv trains the conv layers of the BI-R family
    (docs/bir.md#conv-pretraining): a classifier convE + fc(units, units) + linear, cross-entropy, Adam, crop
    with symmetric padding + flip."""
    prepared: str
    train_split: str
    val_split: str
    c0: int                    # convE channels c0, 2c0, ..., 16c0: must equal the runs' `c0`
    fc_units: int
    epochs: int
    batch_size: int
    lr: float
    mean: tuple | None = None  # None: the train split's own statistics
    std: tuple | None = None

    @property
    def tag(self) -> str:
        return f"e{self.epochs}"


CIFAR10_NORMALIZATION = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}  # [BIR] data/available.py
CONV_PRETRAINING = {
    # [BIR] create_figures.sh / main_pretrain.py: 100 epochs of batch 256 at Adam 1e-4 on CIFAR-10
    "cifar10": ConvPretraining("cifar10", "train", "test", 16, 2000, 100, 256, 1e-4, **CIFAR10_NORMALIZATION),
    # embedded (docs/bir.md#embedded-recipe): the shapes auxiliary categories, disjoint from the CL stream
    "shapes": ConvPretraining("shapes", "aux_train", "aux_test", 8, 256, 20, 64, 1e-3),
}

UPSTREAM_FILE = "C3-5x16-bn"  # [BIR] store/models/, a legacy pickle {'state': state_dict}
UPSTREAM_SHA256 = "02e44cf21681d2d1ece1b683bae9a1525cf794f73865a69e32af330bcb4741e9"


def conv_classifier(in_channels: int, c0: int, fc_units: int, n_classes: int, in_size: int = 32) -> nn.Sequential:
    """[BIR] main_pretrain.py's model: convE, two fc layers with ReLU, a linear output layer."""
    conv = ConvE(in_channels, c0, in_size)
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(conv.out_features, fc_units), nn.ReLU(),
                         nn.Linear(fc_units, fc_units), nn.ReLU(), nn.Linear(fc_units, n_classes))


def _normalization(recipe: ConvPretraining, x: torch.Tensor, pixel_max: float) -> tuple[tuple, tuple]:
    """The recipe's constants, else the train split's own per-channel statistics."""
    if recipe.mean is not None:
        return tuple(recipe.mean), tuple(recipe.std)
    x = x.float() / pixel_max
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())



def pretrain_conv(recipe: ConvPretraining, prepared_dir, out_dir, seed: int = 0, device="cpu") -> dict:
    """Train the classifier of `recipe`, write `<out_dir>/conv.pt`, `classifier.pt` and `meta.json`, and
    return the meta record."""
    started = time.time()
    dev = pick_device(str(device))
    torch.manual_seed(seed)
    generator = torch.Generator(device=dev).manual_seed(seed)
    meta = data.metadata(recipe.prepared, prepared_dir)
    train = data.load(recipe.prepared, recipe.train_split, prepared_dir, dev)
    val = data.load(recipe.prepared, recipe.val_split, prepared_dir, dev)
    classes, y_train = torch.unique(train["y"], return_inverse=True)  # the aux split's labels need not start at 0
    y_val = torch.searchsorted(classes, val["y"])
    mean, std = _normalization(recipe, train["x"], float(meta["pixel_max"]))
    transform = Transform(float(meta["pixel_max"]), torch.tensor(mean), torch.tensor(std), crop_padding=4, hflip=True,
                          padding_mode="symmetric").to(dev)  # numpy "symmetric" = edge-repeating, as [BIR]
    c, h, _ = train["x"].shape[1:]
    model = conv_classifier(c, recipe.c0, recipe.fc_units, len(classes), h).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(0.9, 0.999))
    n, steps = train["x"].shape[0], 0
    for epoch in range(recipe.epochs):
        perm = torch.randperm(n, generator=generator, device=dev)
        for start in range(0, n - recipe.batch_size + 1, recipe.batch_size):  # incomplete last batch dropped
            idx = perm[start:start + recipe.batch_size]
            loss = F.cross_entropy(model(transform.train(train["x"][idx], generator)), y_train[idx])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"pretrain_bir_conv: non-finite loss at epoch {epoch + 1}, step {steps + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        log.info("epoch %d/%d: loss %.4f", epoch + 1, recipe.epochs, float(loss.detach()))
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "conv.pt") as tmp:
        torch.save(model[0].state_dict(), tmp)
    with atomic_path(out_dir / "classifier.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    record = {"source": "pretrained", "dataset": recipe.prepared, "train_split": recipe.train_split,
              "val_split": recipe.val_split, "c0": recipe.c0, "fc_units": recipe.fc_units, "epochs": recipe.epochs,
              "batch_size": recipe.batch_size, "lr": recipe.lr, "steps": steps, "seed": seed,
              "normalization": {"mean": list(mean), "std": list(std)},
              "val_accuracy": classifier_accuracy(model, val["x"], y_val, transform),
              "train_accuracy": classifier_accuracy(model, train["x"], y_train, transform),
              "sha256": file_digest(out_dir / "conv.pt"), "seconds": time.time() - started,
              "versions": {"clcore": __version__, "torch": torch.__version__}, "git_commit": git_commit()}
    write_json(out_dir / "meta.json", record)
    return record


def upstream_conv(weights_dir, out_dir) -> dict:
    """[BIR]'s published conv layers (`<weights_dir>/C3-5x16-bn`, checked against its sha256) as our
    `conv.pt`: the keys from `convLayer1` on, which match ConvE's names."""
    path = Path(weights_dir) / UPSTREAM_FILE
    if not path.exists():
        raise DatasetMissingError(
            f"{path} is missing: download store/models/{UPSTREAM_FILE} from GMvandeVen/brain-inspired-replay "
            f"(commit 1a030f7) into {Path(weights_dir).resolve()}/, or set bir_conv.source: pretrain")
    digest = file_digest(path)
    if digest != UPSTREAM_SHA256:
        raise ChecksumError(f"{path}: sha256 {digest}, expected {UPSTREAM_SHA256}; the file is not [BIR]'s")
    state = torch.load(path, map_location="cpu", weights_only=False)["state"]
    conv = {key[key.index("convLayer"):]: value for key, value in state.items() if "convLayer" in key}
    ConvE(3, 16).load_state_dict(conv)  # fails loudly if the names or shapes differ
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "conv.pt") as tmp:
        torch.save(conv, tmp)
    record = {"source": "upstream_file", "file": str(path), "file_sha256": digest, "c0": 16,
              "sha256": file_digest(out_dir / "conv.pt")}
    write_json(out_dir / "meta.json", record)
    return record
