"""SER's saliency predictor S (ser.md §3), its metrics and offline pretraining (ser.md §4).

S = encoder E (a ResNet18 like the classifier's, head removed) + a UNISAL-style decoder, mirroring
`perceivelab/SER` `models/aux/unisal.py` with one source domain. Submodule names follow upstream so
that the authors' checkpoint maps onto ours mechanically (`external_key_map`).

Left out: UNISAL's learnable Gaussian prior maps (`sal_n_gaussians > 0`). The spec's default is 0 and
every SER configuration uses 0, so the decoder has no option for them.

Metric conventions (ser.md §4, `utils/saliency_metrics.py`):
- KLD literally as upstream's KLDLoss (float64 epsilon added in float32; no clamping).
- CC is Pearson per map; a map with zero variance gets CC 0 (upstream returns NaN) so that a
  constant baseline can be reported and pooled means stay finite.
- SIM min-max normalises each map (left as is where max == min), divides by its sum (left as is where
  the sum is 0) and sums the pixel-wise minimum.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__, data
from .augment import Transform
from .backbones.resnet import ResNet18
from .device import pick_device
from .errors import CLError, NonFiniteLossError
from .io import atomic_path, git_commit

log_ = logging.getLogger("clcore.saliency")

EPS = 2.220446049250313e-16  # float64 machine epsilon, as upstream's sys.float_info.epsilon (ser.md §4, §8.9)
BN_MOMENTUM = 0.01           # every decoder BN (ser.md §3; UNISAL bn_momentum)
CHECKPOINT_FORMAT = "clcore.saliency_predictor/1"


# ---------------------------------------------------------------------------------------------- metrics

def kld_per_sample(s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per sample [B] with p, q the maps normalised to sum 1 (ser.md §4, literal formula)."""
    with torch.autocast(device_type=s.device.type, enabled=False):  # fp32 even under bf16 autocast
        s, t = s.float().flatten(1), target.float().flatten(1)
        p = s / s.sum(1, keepdim=True)
        q = t / t.sum(1, keepdim=True)
        return (q * torch.log(EPS + q / (p + EPS))).sum(1)


def kld_loss(s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of `kld_per_sample` (the online saliency loss before sal_coeff)."""
    return kld_per_sample(s, target).mean()


def cc(s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over pixels per map [B]; 0 where either map is constant."""
    a, b = s.float().flatten(1), target.float().flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    den = (a.square().sum(1) * b.square().sum(1)).sqrt()
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-30), torch.zeros_like(den))


def _minmax_sum_normalise(m: torch.Tensor) -> torch.Tensor:
    lo, hi = m.amin(1, keepdim=True), m.amax(1, keepdim=True)
    m = torch.where(hi > lo, (m - lo) / (hi - lo).clamp_min(1e-30), m)
    total = m.sum(1, keepdim=True)
    return torch.where(total != 0, m / torch.where(total != 0, total, torch.ones_like(total)), m)


def sim(s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Histogram intersection of the min-max- then sum-normalised maps, per map [B]."""
    p = _minmax_sum_normalise(s.float().flatten(1))
    q = _minmax_sum_normalise(target.float().flatten(1))
    return torch.minimum(p, q).sum(1)


def target_distribution(sal: torch.Tensor) -> torch.Tensor:
    """Target maps [B,1,H,W] (uint8 or float) -> float32 distributions summing to 1 per map: scale to
    [0,1], shift non-negative if needed, divide by the sum (ser.md §4 target-map preprocessing)."""
    t = sal.float() / 255.0 if sal.dtype == torch.uint8 else sal.float()
    lo = t.flatten(1).amin(1).view(-1, *[1] * (t.dim() - 1))
    t = torch.where(lo < 0, t - lo, t)
    total = t.flatten(1).sum(1).view(-1, *[1] * (t.dim() - 1))
    return torch.where(total > 0, t / torch.where(total > 0, total, torch.ones_like(total)), t)


def center_bias_map(h: int, w: int, sigma_frac: float = 0.25) -> torch.Tensor:
    """[1,1,h,w] isotropic Gaussian centred on the image, sigma = sigma_frac * min(h, w), peak 1.
    A common centre-bias baseline; sigma 0.25 * min side is our choice (no upstream baseline exists)."""
    sigma = sigma_frac * min(h, w)
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    d2 = ys[:, None].square() + xs[None, :].square()
    return torch.exp(-d2 / (2 * sigma**2))[None, None]


def map_scores(pred: torch.Tensor, sal: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-map KLD, CC, SIM [B] of predictions against (raw) target maps."""
    target = target_distribution(sal)
    pred = pred.expand_as(target)
    return {"kld": kld_per_sample(pred, target), "cc": cc(pred, target), "sim": sim(pred, target)}


# ---------------------------------------------------------------------------------------------- model

def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=BN_MOMENTUM)


class InvertedResidual(nn.Module):
    """MobileNetV2's block at stride 1 (SER `backbone/MobileNetV2.py`): expand 1: dw3x3, BN, ReLU6,
    pw -> cout, BN; expand > 1: pw -> round(cin*e), BN, ReLU6, dw3x3, BN, ReLU6, pw -> cout, BN.
    The residual add exists only when cin == cout (MobileNetV2's rule); SER's widths never meet it."""

    def __init__(self, cin: int, cout: int, expand: float):
        super().__init__()
        hidden = round(cin * expand)
        layers = [] if expand == 1 else [nn.Conv2d(cin, hidden, 1, bias=False), _bn(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), _bn(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), _bn(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = cin == cout
        if expand != 1:  # upstream calls its He-normal fan-out init only for expand != 1
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


def _skip(cin: int, cout: int, dropout: float) -> nn.Sequential:
    """UNISAL's skip connection: 1x1 cin -> 2cin (no bias), BN, ReLU6, Dropout2d, 1x1 -> cout (bias), BN."""
    hidden = 2 * cin
    return nn.Sequential(OrderedDict([
        ("expansion", nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), _bn(hidden), nn.ReLU6(inplace=True))),
        ("dropout", nn.Dropout2d(dropout)),
        ("reduction", nn.Sequential(nn.Conv2d(hidden, cout, 1), _bn(cout))),
    ]))


class SaliencyDecoder(nn.Module):
    """ser.md §3 decoder steps 2-6 on ReLU(Q2), ReLU(Q3), ReLU(Q4) with channels c2, c3, c4."""

    def __init__(self, c2: int, c3: int, c4: int, widths=(256, 128, 64), dropout: float = 0.6):
        super().__init__()
        d1, d2, d3 = widths
        self.post_cnn = nn.Sequential(OrderedDict(inv_res=InvertedResidual(c4, d1, 1)))
        self.skip_2x = _skip(c3, d2, dropout)
        self.upsampling_2 = nn.Sequential(OrderedDict(inv_res=InvertedResidual(d1 + d2, d2, 2)))
        self.skip_4x = _skip(c2, d3, dropout)
        self.post_upsampling_2 = nn.Sequential(OrderedDict(inv_res=InvertedResidual(d2 + d3, d3, 2)))
        self.adaptation = nn.Sequential(nn.Conv2d(d3, 1, 1))

    @staticmethod
    def _up(h, like):
        # bilinear x2 (align_corners False); sizing by the skip map also covers odd input sizes
        return F.interpolate(h, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, f2, f3, f4, out_size) -> torch.Tensor:
        f3, f2 = self.skip_2x(f3), self.skip_4x(f2)
        h = self.post_cnn(f4)
        h = self.upsampling_2(torch.cat([self._up(h, f3), f3], 1))
        h = self.post_upsampling_2(torch.cat([self._up(h, f2), f2], 1))
        h = F.interpolate(self.adaptation(h), size=out_size, mode="nearest")
        return torch.sigmoid(h)


class SaliencyPredictor(nn.Module):
    """S(x) -> (s [B,1,H,W] in (0,1), [Q0..Q4] pre-ReLU encoder taps)."""

    def __init__(self, in_shape, nf: int = 64, widths=(256, 128, 64), dropout: float = 0.6):
        super().__init__()
        self.config = {"in_shape": list(in_shape), "nf": int(nf), "widths": [int(w) for w in widths],
                       "dropout": float(dropout)}
        self.encoder = ResNet18(in_shape, n_classes=1, nf=nf)
        self.encoder.classifier = nn.Identity()  # S has no head (upstream replaces it with Identity too)
        self.decoder = SaliencyDecoder(2 * nf, 4 * nf, 8 * nf, widths, dropout)

    def forward(self, x):
        taps, _ = self.encoder.forward_taps(x)
        s = self.decoder(F.relu(taps[2]), F.relu(taps[3]), F.relu(taps[4]), x.shape[-2:])
        return s, taps


def saliency_optimizer(predictor: SaliencyPredictor,
                       lr: float = 0.005,              # sal_lr (ser.md §5, README)
                       cnn_lr_factor: float = 0.1,     # sal_cnn_lr_factor (ser.md §5, utils/args.py)
                       momentum: float = 0.9,          # sal_momentum, both groups (ser.md §5, §8.13)
                       weight_decay: float = 1e-4,     # sal_weight_decay, decoder (ser.md §5)
                       cnn_weight_decay: float = 1e-5  # sal_cnn_weight_decay, encoder (ser.md §5)
                       ) -> torch.optim.SGD:
    """SGD with group 0 = decoder, group 1 = encoder (ser.md §4 `cl2branches.py`)."""
    return torch.optim.SGD([
        {"params": list(predictor.decoder.parameters())},
        {"params": list(predictor.encoder.parameters()), "lr": lr * cnn_lr_factor, "weight_decay": cnn_weight_decay},
    ], lr=lr, momentum=momentum, weight_decay=weight_decay)


# ---------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def saliency_scores(predictor: SaliencyPredictor, x: torch.Tensor, sal: torch.Tensor, transform: Transform,
                    batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per-image KLD, CC, SIM [N] (on CPU) of S in eval mode on uint8 images x and maps sal; the
    predictor's train/eval mode is restored afterwards."""
    was_training, dev = predictor.training, next(predictor.parameters()).device
    transform = dataclasses.replace(transform).to(dev)  # normalise where the predictor runs
    predictor.eval()
    out = {"kld": [], "cc": [], "sim": []}
    try:
        for i in range(0, x.shape[0], batch_size):
            s, _ = predictor(transform.test(x[i:i + batch_size].to(dev)))
            for k, v in map_scores(s, sal[i:i + batch_size].to(dev)).items():
                out[k].append(v.cpu())
    finally:
        predictor.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}


def saliency_metrics(predictor, x, sal, transform, batch_size: int = 64) -> dict[str, float]:
    """Mean KLD, CC, SIM of S over the images (see `saliency_scores`)."""
    return {k: v.mean().item() for k, v in saliency_scores(predictor, x, sal, transform, batch_size).items()}


def baseline_metrics(pred_map: torch.Tensor, sal: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Mean KLD, CC, SIM of one fixed map [1,1,H,W] (uniform, centre bias) against every target."""
    scores = [map_scores(pred_map.to(sal.device), sal[i:i + batch_size]) for i in range(0, sal.shape[0], batch_size)]
    return {k: torch.cat([s[k] for s in scores]).mean().item() for k in ("kld", "cc", "sim")}


def reference_baselines(sal: torch.Tensor) -> dict[str, dict[str, float]]:
    """Metrics of the uniform map and of `center_bias_map` against the targets sal [N,1,H,W]."""
    h, w = sal.shape[-2:]
    return {"uniform": baseline_metrics(torch.full((1, 1, h, w), 0.5), sal),
            "center_bias": baseline_metrics(center_bias_map(h, w), sal)}


# ---------------------------------------------------------------------------------------------- pretraining

def joint_hflip(x: torch.Tensor, sal: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip images [B,C,H,W] and their maps [B,1,H,W] horizontally where flips [B] (bool) is set."""
    f = flips.view(-1, 1, 1, 1)
    return torch.where(f, x.flip(-1), x), torch.where(f, sal.flip(-1), sal)


def pretrain_saliency(train_x, train_sal, val_x, val_sal, transform: Transform, in_shape,
                      nf: int = 64,                       # paper encoder (ser.md §4 rule pretrain_saliency)
                      widths=(256, 128, 64),              # decoder widths (ser.md §3)
                      epochs: int = 30,                   # ser.md §4 rule pretrain_saliency
                      batch_size: int = 16,               # ser.md §4 rule pretrain_saliency
                      lr: float = 0.04,                   # decoder lr, upstream --sal_lr default (ser.md §4)
                      cnn_lr_factor: float = 0.1,         # encoder lr 0.004 (ser.md §4)
                      momentum: float = 0.9,              # ser.md §4
                      weight_decay: float = 1e-4,         # decoder (ser.md §4)
                      cnn_weight_decay: float = 1e-5,     # encoder (ser.md §4)
                      lr_gamma: float = 0.99,             # ExponentialLR per epoch (ser.md §4)
                      loss: str = "kld",                  # pretrain_loss: kld | kld_cc (ser.md §4)
                      dropout: float = 0.6,               # skip Dropout2d (ser.md §3)
                      seed: int = 0, device="cpu", log=None, eval_batch_size: int | None = None):
    """Train S from random init; keep the epoch with the lowest val KLD (ser.md §4, [OURS] recipe).

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
            if loss == "kld_cc":  # UNISAL's weights: kld 1, cc -0.1 (ser.md §4)
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


# ---------------------------------------------------------------------------------------------- checkpoints

class CheckpointKeyError(CLError, ValueError):
    """An external saliency checkpoint lacks keys our predictor needs."""

    exit_code = 2


def save_predictor(path, predictor: SaliencyPredictor, extra: dict | None = None) -> None:
    """Write {format, config, state_dict, extra} atomically. `extra` must hold plain Python values
    (it is read back with weights_only=True)."""
    payload = {"format": CHECKPOINT_FORMAT, "config": predictor.config,
               "state_dict": {k: v.detach().cpu() for k, v in predictor.state_dict().items()}, "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_predictor(path, device="cpu") -> SaliencyPredictor:
    """A predictor saved by `save_predictor`, in eval mode; its `extra` dict is attached as `.extra`."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CLError(f"{path}: not a saliency predictor checkpoint (format {payload.get('format')!r})")
    cfg = payload["config"]
    predictor = SaliencyPredictor(cfg["in_shape"], cfg["nf"], cfg["widths"], cfg["dropout"]).to(device)
    predictor.load_state_dict(payload["state_dict"])
    predictor.extra = payload["extra"]
    return predictor.eval()


UPSTREAM_SOURCE = "Imagenet100"  # UNISAL(sources=('Imagenet100',)) in SER's models/aux/unisal.py
# decoder children whose BNs upstream builds with get_bn_module, i.e. DomainBatchNorm2d (bn_<source>);
# post_cnn's InvertedResidual gets a plain BatchNorm2d there
_DOMAIN_BN_CHILDREN = ("skip_2x", "skip_4x", "upsampling_2", "post_upsampling_2")


def external_key_map(predictor: SaliencyPredictor) -> dict[str, str]:
    """our state-dict key -> key in the authors' UNISAL-trainer checkpoint (ser.md §4 `sal_ckpt_external`).

    Derived from SER's `models/aux/unisal.py` (we do not have the file itself, so this is a
    reconstruction from the code): `encoder.X` -> `cnn.X` (same ResNet18 names, no head); decoder
    keys lose `decoder.`; BN entries inside skip_2x, skip_4x, upsampling_2 and post_upsampling_2 are
    DomainBatchNorm2d children, `<bn>.weight` -> `<bn>.bn_Imagenet100.weight`; `adaptation.0.*` ->
    `adaptation_imagenet100.0.*`. The loader matches keys case-insensitively, since upstream spells the
    source `bn_Imagenet100` but `adaptation_imagenet100`.
    """
    bn_names = {name for name, m in predictor.named_modules() if isinstance(m, nn.BatchNorm2d)}
    mapping = {}
    for key in predictor.state_dict():
        if key.startswith("encoder."):
            mapping[key] = "cnn." + key[len("encoder."):]
            continue
        module, leaf = key.rsplit(".", 1)
        up = module[len("decoder."):]
        if module in bn_names and up.split(".", 1)[0] in _DOMAIN_BN_CHILDREN:
            up = f"{up}.bn_{UPSTREAM_SOURCE}"
        elif up.startswith("adaptation."):
            up = f"adaptation_{UPSTREAM_SOURCE.lower()}" + up[len("adaptation"):]
        mapping[key] = f"{up}.{leaf}"
    return mapping


def load_external_checkpoint(predictor: SaliencyPredictor, path_or_state) -> dict:
    """Load the authors' `chkpt_saliency_predictor.pth` (a dict with `model_state_dict`, or that state
    dict itself) into `predictor`. Extra keys (e.g. Gaussian priors) are dropped, as upstream does;
    every key of ours must be present, else CheckpointKeyError names the missing ones. Returns
    {"loaded": n, "dropped": [upstream keys not used]}."""
    obj = path_or_state
    if not isinstance(obj, dict):
        obj = torch.load(obj, map_location="cpu", weights_only=True)
    state = obj.get("model_state_dict", obj)
    by_lower = {k.lower(): k for k in state}
    mapping = external_key_map(predictor)
    missing = [up for up in mapping.values() if up.lower() not in by_lower]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise CheckpointKeyError(f"external saliency checkpoint lacks {len(missing)} of {len(mapping)} keys "
                                 f"the predictor needs: {shown}")
    ours = {k: state[by_lower[up.lower()]] for k, up in mapping.items()}
    used = {by_lower[up.lower()] for up in mapping.values()}
    assert len(ours) == len(predictor.state_dict())  # upstream's key-count check, after dropping extras
    predictor.load_state_dict(ours)  # strict: shape mismatches raise here
    return {"loaded": len(ours), "dropped": sorted(set(state) - used)}


# ---------------------------------------------------------------------------------------------- pipeline entry

def _transform(pixel_max, normalization: dict) -> Transform:
    return Transform(pixel_max=float(pixel_max), mean=torch.tensor(normalization["mean"], dtype=torch.float32),
                     std=torch.tensor(normalization["std"], dtype=torch.float32))


def run_pretraining(prepared_name: str, train_split: str, val_split: str, prepared_dir, out_dir,
                    nf: int, widths, epochs: int, batch_size: int, seed: int = 0, device="cpu",
                    normalization: dict | None = None, **recipe) -> dict:
    """Rule `pretrain_saliency` (ser.md §4): train S on `<prepared_name>` fields x and sal, validate on
    `val_split`, write `<out_dir>/saliency_predictor.pt` and `<out_dir>/pretrain_metrics.parquet`
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
    """Rule `pseudo_saliency` (ser.md §4): round(255·S(x)) as uint8 [N,1,H,W] for every image of the
    splits, written to `<out_dir>/<split>.sal.npy` in the prepared row order, with a meta.json naming
    the predictor and the sha256 of every file. SER runs then train on these maps."""
    from .data.prepared import file_digest, stage_array, write_array
    from .io import write_json

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
        files[path.name] = file_digest(path)
    record = {"dataset": prepared_name, "predictor": str(predictor_path), "predictor_sha256": file_digest(predictor_path),
              "files": files, "deviation": "pseudo ground truth of our pretrained predictor, not the authors' maps"}
    write_json(out_dir / "meta.json", record)
    return record
