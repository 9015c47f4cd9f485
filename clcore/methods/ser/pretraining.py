"""Offline pretraining of SER's saliency predictor (rule `pretrain_saliency`) and its pseudo maps of a
SER dataset (rule `pseudo_saliency`), docs/ser.md#the-saliency-predictor."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ... import __version__, data
from ...augment import Transform
from ...data.prepared import file_digest, stage_array, stamp, write_array
from ...device import pick_device
from ...errors import NonFiniteLossError
from ...io import atomic_path, git_commit, write_json
from ...scenarios import IMAGENET_NORMALIZATION
from .saliency import (SaliencyPredictor, cc, kld_loss, load_predictor, reference_baselines, saliency_metrics,
                       saliency_optimizer, save_predictor, target_distribution)

log_ = logging.getLogger("clcore.ser.pretraining")


@dataclass(frozen=True)
class SaliencyPretraining:
    """Where and how rule pretrain_saliency trains SER's saliency predictor (docs/ser.md#pretraining-recipe) [OURS]."""
    prepared: str
    train_split: str
    val_split: str
    nf: int                    # the classifier's width: SER multiplies taps of equal shape
    widths: tuple[int, ...]    # decoder (d1, d2, d3)
    epochs: int
    batch_size: int
    # the normalisation of the SER benchmarks it serves (they feed S their own normalised images);
    # None = the dataset's computed train statistics, as the embedded seq-shapes-ser uses
    normalization: dict | None = None


SALIENCY_PRETRAINING = {
    "salicon@288x384": SaliencyPretraining("salicon@288x384", "train", "val", 64, (256, 128, 64), 30, 16,
                                           IMAGENET_NORMALIZATION),
    "shapes": SaliencyPretraining("shapes", "aux_train", "aux_test", 8, (32, 16, 8), 10, 32),  # embedded
}


def joint_hflip(x: torch.Tensor, sal: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip images [B,C,H,W] and their maps [B,1,H,W] horizontally where flips [B] (bool) is set."""
    f = flips.view(-1, 1, 1, 1)
    return torch.where(f, x.flip(-1), x), torch.where(f, sal.flip(-1), sal)


def pretrain_saliency(train_x, train_sal, val_x, val_sal, transform: Transform, in_shape,
                      nf: int = 64,                       # paper encoder (docs/ser.md#pretraining-recipe)
                      widths=(256, 128, 64),              # decoder widths (docs/ser.md#architecture)
                      epochs: int = 30,                   # docs/ser.md#pretraining-recipe
                      batch_size: int = 16,               # docs/ser.md#pretraining-recipe
                      lr: float = 0.04,                   # decoder, --sal_lr default (docs/ser.md#pretraining-recipe)
                      cnn_lr_factor: float = 0.1,         # encoder lr 0.004 (docs/ser.md#pretraining-recipe)
                      momentum: float = 0.9,              # docs/ser.md#pretraining-recipe
                      weight_decay: float = 1e-4,         # decoder (docs/ser.md#pretraining-recipe)
                      cnn_weight_decay: float = 1e-5,     # encoder (docs/ser.md#pretraining-recipe)
                      lr_gamma: float = 0.99,             # ExponentialLR per epoch (docs/ser.md#pretraining-recipe)
                      loss: str = "kld",                  # kld | kld_cc (docs/ser.md#pretraining-recipe)
                      dropout: float = 0.6,               # skip Dropout2d (docs/ser.md#architecture)
                      seed: int = 0, device="cpu", log=None, eval_batch_size: int | None = None):
    """Train S from random init; keep the epoch with the lowest val KLD (docs/ser.md#pretraining-recipe, [OURS] recipe).

    x: uint8 [N,3,H,W], sal: uint8 [N,1,H,W]; `transform.test` normalises (no other augmentation than
    a joint horizontal flip, p 0.5, drawn on the device from a generator seeded with `seed`).
    Returns (predictor in eval mode with the best epoch's weights, rows): one row per epoch (epoch 1..E,
    train_loss, val_kld, val_cc, val_sim, lr, cnn_lr, seconds, best, baseline=None) followed by one row
    per reference baseline (epoch -1, baseline 'uniform' | 'center_bias', val metrics, other fields NaN).
    """
    if loss not in ("kld", "kld_cc"):
        raise ValueError(f"loss must be 'kld' or 'kld_cc', not {loss!r}")
    log = log or log_.info
    dev = torch.device(device)
    eval_batch_size = eval_batch_size or 2 * batch_size
    transform = dataclasses.replace(transform).to(dev)  # a copy: leave the caller's tensors where they are
    torch.manual_seed(seed)
    predictor = SaliencyPredictor(in_shape, nf, widths, dropout).to(dev)
    opt = saliency_optimizer(predictor, lr, cnn_lr_factor, momentum, weight_decay, cnn_weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_gamma)
    gen = torch.Generator(device=dev).manual_seed(seed)
    n, rows, best = train_x.shape[0], [], (math.inf, None, 0)
    for epoch in range(1, epochs + 1):
        started = time.time()
        predictor.train()
        lrs = [g["lr"] for g in opt.param_groups]
        total = torch.zeros((), device=dev)
        for idx in torch.randperm(n, generator=gen, device=dev).split(batch_size):
            idx = idx.to(train_x.device)
            xb, sb = train_x[idx].to(dev, non_blocking=True), train_sal[idx].to(dev, non_blocking=True)
            xb, sb = joint_hflip(xb, sb, torch.rand(xb.shape[0], generator=gen, device=dev) < 0.5)
            s, _ = predictor(transform.test(xb))
            target = target_distribution(sb)
            value = kld_loss(s, target)
            if loss == "kld_cc":  # UNISAL's weights: kld 1, cc -0.1 (docs/ser.md#pretraining-recipe)
                value = value - 0.1 * cc(s, target).mean()
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += value.detach() * xb.shape[0]
        train_loss = total.item() / n  # one sync per epoch
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(f"pretrain_saliency: non-finite training loss in epoch {epoch}")
        sched.step()
        val = saliency_metrics(predictor, val_x, val_sal, transform, eval_batch_size)
        rows.append({"epoch": epoch, "train_loss": train_loss, "val_kld": val["kld"], "val_cc": val["cc"],
                     "val_sim": val["sim"], "lr": lrs[0], "cnn_lr": lrs[1], "seconds": time.time() - started,
                     "best": False, "baseline": None})
        if val["kld"] < best[0]:
            best = (val["kld"], copy.deepcopy(predictor.state_dict()), epoch)
        log(f"pretrain_saliency epoch {epoch}/{epochs}: train {train_loss:.4f} val KLD {val['kld']:.4f} "
            f"CC {val['cc']:.4f} SIM {val['sim']:.4f}")
    if best[1] is not None:
        predictor.load_state_dict(best[1])
        rows[best[2] - 1]["best"] = True
    predictor.eval()
    for name, m in reference_baselines(val_sal).items():
        rows.append({"epoch": -1, "train_loss": math.nan, "val_kld": m["kld"], "val_cc": m["cc"], "val_sim": m["sim"],
                     "lr": math.nan, "cnn_lr": math.nan, "seconds": math.nan, "best": False, "baseline": name})
    return predictor, rows


def _transform(pixel_max, normalization: dict) -> Transform:
    return Transform(pixel_max=float(pixel_max), mean=torch.tensor(normalization["mean"], dtype=torch.float32),
                     std=torch.tensor(normalization["std"], dtype=torch.float32))


def run_pretraining(prepared_name: str, train_split: str, val_split: str, prepared_dir, out_dir,
                    nf: int, widths, epochs: int, batch_size: int, seed: int = 0, device="cpu",
                    normalization: dict | None = None, **recipe) -> dict:
    """Rule `pretrain_saliency` (docs/ser.md#pretraining-recipe): train S on `<prepared_name>` fields x and
    sal, validate on `val_split`, write `<out_dir>/saliency_predictor.pt` and `<out_dir>/pretrain_metrics.parquet`
    (the rows of `pretrain_saliency`), return a summary. Images are normalised with the dataset's
    `normalization_computed` unless `normalization` ({"mean": [...], "std": [...]}) is given.
    `recipe`: the optimiser/loss keywords of `pretrain_saliency`."""
    started = time.time()
    dev = pick_device(str(device))
    meta = data.metadata(prepared_name, prepared_dir)
    norm = normalization or meta["normalization_computed"]
    transform = _transform(meta["pixel_max"], norm)
    train = data.load(prepared_name, train_split, prepared_dir, dev)
    val = data.load(prepared_name, val_split, prepared_dir, dev)
    in_shape = tuple(train["x"].shape[1:])
    predictor, rows = pretrain_saliency(train["x"], train["sal"], val["x"], val["sal"], transform, in_shape, nf=nf,
                                        widths=tuple(widths), epochs=epochs, batch_size=batch_size, seed=seed,
                                        device=dev, **recipe)
    best = next(r for r in rows if r["best"])
    baselines = {r["baseline"]: {"kld": r["val_kld"], "cc": r["val_cc"], "sim": r["val_sim"]}
                 for r in rows if r["baseline"]}
    summary = {"best_epoch": best["epoch"], "val_kld": best["val_kld"], "val_cc": best["val_cc"],
               "val_sim": best["val_sim"], "baselines": baselines,
               "kld_reduction_vs_uniform": 1 - best["val_kld"] / baselines["uniform"]["kld"],
               "seconds": time.time() - started}
    out_dir = Path(out_dir)
    extra = {"dataset": prepared_name, "train_split": train_split, "val_split": val_split, "seed": seed,
             "epochs": epochs, "batch_size": batch_size, "nf": nf, "widths": list(widths),
             "recipe": {k: v for k, v in recipe.items() if k != "log"},
             "normalization": {"mean": list(map(float, norm["mean"])), "std": list(map(float, norm["std"]))},
             "summary": summary, "clcore_version": __version__, "git_commit": git_commit()}
    save_predictor(out_dir / "saliency_predictor.pt", predictor, extra)
    with atomic_path(out_dir / "pretrain_metrics.parquet") as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
    return summary


def write_pseudo_maps(predictor_path, prepared_name: str, prepared_dir, out_dir, splits=("train", "test"),
                      device="cpu", batch_size: int = 64) -> dict:
    """Rule `pseudo_saliency` (docs/ser.md#pseudo-maps): round(255·S(x)) as uint8 [N,1,H,W] for every image of the
    splits, written to `<out_dir>/<split>.sal.npy` in the prepared row order, with a meta.json naming
    the predictor and the sha256 of every file. SER runs then train on these maps."""
    dev = pick_device(str(device))
    predictor = load_predictor(predictor_path, dev).eval()
    meta = data.metadata(prepared_name, prepared_dir)
    # the images are normalised as during pretraining (and as the SER benchmarks feed them to S)
    norm = predictor.extra.get("normalization") or meta["normalization_computed"]  # the latter: no record
    transform = _transform(meta["pixel_max"], norm).to(dev)
    out_dir = Path(out_dir)
    files = {}
    for split in splits:
        x = data.read_split(Path(prepared_dir) / prepared_name, split)["x"]  # memory-mapped
        maps = stage_array(out_dir, split, "sal", (x.shape[0], 1, *x.shape[2:]), np.uint8)
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                s, _ = predictor(transform.test(torch.from_numpy(np.array(x[i:i + batch_size])).to(dev)))
                maps[i:i + batch_size] = torch.round(255 * s).to(torch.uint8).cpu().numpy()
        path = out_dir / f"{split}.sal.npy"
        write_array(path, maps)
        files[path.name] = {"sha256": file_digest(path), **stamp(path)}
    record = {"dataset": prepared_name, "predictor": str(predictor_path), "predictor_sha256": file_digest(predictor_path),
              "files": files, "deviation": "pseudo ground truth of our pretrained predictor, not the authors' maps"}
    write_json(out_dir / "meta.json", record)
    return record
