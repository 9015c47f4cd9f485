"""SER's saliency predictor S, its metrics and checkpoints (docs/ser.md#the-saliency-predictor); its offline
pretraining and pseudo maps are in pretraining.py.

S = encoder E (a ResNet18 like the classifier's, head removed) + a UNISAL-style decoder, mirroring
`perceivelab/SER` `models/aux/unisal.py` with one source domain. Submodule names follow upstream so
that the authors' checkpoint maps onto ours mechanically (`external_key_map`).

Left out: UNISAL's learnable Gaussian prior maps (`sal_n_gaussians > 0`). Every SER configuration uses 0,
so the decoder has no option for them (docs/ser.md#not-implemented-yet).

Metric conventions (docs/ser.md#metrics, upstream `utils/saliency_metrics.py`):
- KLD literally as upstream's KLDLoss (float64 epsilon added in float32; no clamping).
- CC is Pearson per map; a map with zero variance gets CC 0 (upstream returns NaN) so that a
  constant baseline can be reported and pooled means stay finite.
- SIM min-max normalises each map (left as is where max == min), divides by its sum (left as is where
  the sum is 0) and sums the pixel-wise minimum.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ...augment import Transform
from ...backbones.resnet import ResNet18
from ...errors import CLError
from ...io import atomic_path

log_ = logging.getLogger("clcore.saliency")

EPS = 2.220446049250313e-16  # float64 machine epsilon, as upstream's sys.float_info.epsilon (docs/ser.md#kld-epsilon)
BN_MOMENTUM = 0.01           # every decoder BN (docs/ser.md#architecture; UNISAL bn_momentum)
CHECKPOINT_FORMAT = "clcore.saliency_predictor/1"


# ---------------------------------------------------------------------------------------------- metrics

def kld_per_sample(s: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per sample [B] with p, q the maps normalised to sum 1 (docs/ser.md#metrics, literal formula)."""
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
    [0,1], shift non-negative if needed, divide by the sum (docs/ser.md#target-maps)."""
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
    """The decoder D of docs/ser.md#architecture on ReLU(Q2), ReLU(Q3), ReLU(Q4) with channels c2, c3, c4."""

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
                       lr: float = 0.005,              # sal_lr (README; docs/ser.md#saliency-branch)
                       cnn_lr_factor: float = 0.1,     # sal_cnn_lr_factor (utils/args.py; docs/ser.md#saliency-branch)
                       momentum: float = 0.9,          # sal_momentum (docs/ser.md#momentum-on-both-parameter-groups)
                       weight_decay: float = 1e-4,     # sal_weight_decay, decoder (docs/ser.md#saliency-branch)
                       cnn_weight_decay: float = 1e-5  # sal_cnn_weight_decay, encoder (docs/ser.md#saliency-branch)
                       ) -> torch.optim.SGD:
    """SGD with group 0 = decoder, group 1 = encoder (upstream `cl2branches.py`; docs/ser.md#saliency-branch)."""
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
    """our state-dict key -> key in the authors' UNISAL-trainer checkpoint
    (docs/ser.md#upstream-checkpoint-compatibility).

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


