"""Saliency-driven Experience Replay (Bellitto et al., NeurIPS 2024; `perceivelab/SER` @3ea3941,
`models/derpp_ser.py`, `models/er_ace_ser.py`, `utils/mnp.py`).

A saliency predictor S = (encoder E, decoder D), pretrained offline, keeps learning online from the
stream's saliency maps; the classifier C of any rehearsal method has its activation at each of five
depths replaced by A(P_i, sg(Q_i)), P_i its own pre-ReLU tap and Q_i E's tap at the same depth:

    L_sal = sal_coeff · KLD(S(x), s*)                 (S's step, first, on the stream only)
    multiply:  A = ReLU(P_i ⊙ Q_i)                    (the paper's modulation, no parameters)
    C's loss   = the base method's loss with every C(x) read as C(x | sg(E(x)))

Stream taps come from S before its update, in train mode; replayed images get taps from the updated S
in eval mode, under no_grad (docs/ser.md#order-of-the-two-updates). S is never rehearsed: the buffer stores
images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...results import RANDOM_INIT_ROW, metric_rows
from .. import register
from ..baselines import DER, DERHparams, ERACE, ERACEHparams
from .saliency import kld_loss, load_predictor, map_scores, saliency_optimizer



@dataclass
class SERHparams:
    modulation: Literal["multiply", "aggregate", "dwseparable"] = "multiply"  # the paper's; aggregate / dwseparable are its ablations
    mnp_blocks: tuple[int, ...] = (1, 1, 1, 1, 1)  # taps P0..P4 modulated (README)
    aggregate_padding: int = 1                # ours; upstream: 0 (docs/ser.md#aggregate-without-padding)
    sal_lr: float = 0.005                     # README
    sal_cnn_lr_factor: float = 0.1            # utils/args.py default: the encoder learns 10x slower
    sal_momentum: float = 0.9                 # utils/args.py default, both parameter groups
    sal_weight_decay: float = 1e-4            # utils/args.py default (decoder)
    sal_cnn_weight_decay: float = 1e-5        # utils/args.py default (encoder)
    sal_coeff: float = 1.0                    # README
    saliency_frozen: bool = False             # ablation er_ace_ser_salfrozen: S never updated, eval mode
    replay_sal_mode: Literal["eval", "train"] = "eval"  # mode of S for replayed images (upstream: eval)
    classifier_init: Literal["random", "saliency_encoder"] = "random"  # SER README | --backbone_pretrained


class Modulation(nn.Module):
    """A(P, Q) at one tap: multiply, or a learned 3x3 / depthwise-separable fusion of [P; Q]."""

    def __init__(self, kind: str, channels: int, padding: int = 1):
        super().__init__()
        self.kind = kind
        if kind == "aggregate":
            self.fuse = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=padding), nn.BatchNorm2d(channels))
        elif kind == "dwseparable":
            self.fuse = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels),
                                      nn.Conv2d(2 * channels, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, p, q):
        if self.kind == "multiply":
            return F.relu(p * q)
        return F.relu(self.fuse(torch.cat([p, q], dim=1)))


def check_modulation(hp) -> None:
    if len(hp.mnp_blocks) != 5:
        raise ValueError(f"mnp_blocks needs one flag per tap P0..P4, got {hp.mnp_blocks}")
    if hp.modulation == "aggregate" and hp.aggregate_padding == 0:
        enabled = [i for i, b in enumerate(hp.mnp_blocks) if b]
        if any(b - a == 1 for a, b in zip(enabled, enabled[1:])):
            raise ValueError("aggregate with aggregate_padding 0 shrinks each modulated map by 2 px, so the next "
                             "enabled tap cannot match: enable no two consecutive taps, or use padding 1")


class SERMixin:
    """SER around a rehearsal method whose loss reads the classifier through `self.classify`."""

    stream_fields = ("sal",)

    def __init__(self, net, hp, ctx):
        check_modulation(hp)
        saliency = pretrained_predictor(ctx)
        if hp.channels_last:  # the protocol's layout, as for the classifier (docs/protocol.md#channels-last)
            saliency = saliency.to(memory_format=torch.channels_last)
        widths = [net.conv1.out_channels * m for m in (1, 1, 2, 4, 8)]
        # adapters live on the classifier, so C's optimiser and the checkpoint include them
        net.modulations = nn.ModuleList(Modulation(hp.modulation, c, hp.aggregate_padding) for c in widths)
        if hp.classifier_init == "saliency_encoder":
            copy_encoder(saliency.encoder, net)
        super().__init__(net, hp, ctx)
        self.saliency = saliency
        self.sal_opt = saliency_optimizer(saliency, hp.sal_lr, hp.sal_cnn_lr_factor, hp.sal_momentum,
                                          hp.sal_weight_decay, hp.sal_cnn_weight_decay)
        self.frozen = ("saliency",) if hp.saliency_frozen else ()
        self._stream_taps = None

    # -- the two branches ----------------------------------------------------------------------------
    def saliency_taps(self, x) -> list[torch.Tensor]:
        """E's taps for images that are not the current stream batch: no_grad, S in `replay_sal_mode`."""
        was_training = self.saliency.training
        self.saliency.train(self.hp.replay_sal_mode == "train" and self.training and not self.hp.saliency_frozen)
        with torch.no_grad():
            taps = self.saliency(x)[1]
        self.saliency.train(was_training)
        return taps

    def classify(self, x, stream: bool = False):
        return self.classify_with(x, self._stream_taps if stream else self.saliency_taps(x))

    def classify_with(self, x, taps: list[torch.Tensor]):
        """C(x | taps): each enabled stage's ReLU replaced by the modulation with the encoder's tap."""
        enabled = self.hp.mnp_blocks

        def modulate(i, p):
            return self.net.modulations[i](p, taps[i]) if enabled[i] else F.relu(p)

        return self.net.classifier(self.net.forward_taps(x, modulate)[1])

    def observe(self, x, y, x_raw, sal):
        if self.hp.saliency_frozen:
            self._stream_taps, sal_losses = self.saliency_taps(x), {}
        else:
            self.saliency.train()  # upstream's order: stream taps from S in train mode, before its update
            s, taps = self.saliency(x)
            sal_loss = self.hp.sal_coeff * kld_loss(s, sal)
            self.sal_opt.zero_grad(set_to_none=True)
            sal_loss.backward()
            self.sal_opt.step()
            self._stream_taps, sal_losses = [t.detach() for t in taps], {"sal_kld": sal_loss.detach()}
        losses = super().observe(x, y, x_raw)
        self._stream_taps = None
        return {**losses, **sal_losses}

    # -- evaluation: saliency metrics per task and pooled (docs/ser.md#metrics) -------------------------
    @torch.no_grad()
    def evaluation_rows(self, scenario, after_task: int) -> list[dict]:
        if after_task == RANDOM_INIT_ROW or "sal" not in scenario.test_fields:
            return []
        seen = scenario.class_task[scenario.test_y] <= after_task
        x, tasks = scenario.test_x[seen], scenario.class_task[scenario.test_y[seen]]
        maps = [self.saliency(scenario.transform.test(x[i:i + 256]))[0] for i in range(0, len(x), 256)]
        rows = []
        # the training targets, and the dataset's own maps where the targets are pseudo maps (sal_true_*)
        for field, prefix in (("sal", "sal_"), ("sal_true", "sal_true_")):
            if field not in scenario.test_fields:
                continue
            target = scenario.test_fields[field][seen]
            parts = [map_scores(s, target[i * 256:(i + 1) * 256]) for i, s in enumerate(maps)]
            for name in ("kld", "cc", "sim"):
                per_image = torch.cat([p[name] for p in parts])
                rows += [metric_rows(prefix + name, float(per_image[tasks == t].mean()), after_task=after_task,
                                     eval_task=t) for t in range(after_task + 1)]
                rows.append(metric_rows(prefix + name, float(per_image.mean()), after_task=after_task, eval_task=-1))
        return rows

    # -- checkpointing ---------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        return {**super().extra_state(), "sal_opt": self.sal_opt.state_dict()}

    def load_extra(self, state: dict) -> None:
        super().load_extra(state)
        self.sal_opt.load_state_dict(state["sal_opt"])


def pretrained_predictor(ctx):
    """The saliency predictor the pipeline passed in (rule pretrain_saliency), on the run's device."""
    if "saliency_predictor" not in ctx.artefacts:
        raise InputError("this method needs the pretrained saliency predictor (artefact 'saliency_predictor', "
                         "made by the pipeline's rule pretrain_saliency)")
    return load_predictor(ctx.artefacts["saliency_predictor"], ctx.device)


def copy_encoder(encoder: nn.Module, net: nn.Module) -> None:
    """Start the classifier from the saliency encoder (every parameter but the head)."""
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("classifier.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("classifier.", "modulations.")) for k in missing):
        raise ValueError(f"saliency encoder does not match the classifier: missing {missing}, unexpected {unexpected}")


@dataclass
class DERSERHparams(SERHparams, DERHparams):
    lr: float = 0.01        # README (derpp_ser, FG-ImageNet, buffer 2000)
    batch_size: int = 8     # README
    minibatch_size: int = 8  # README


@dataclass
class ERACESERHparams(SERHparams, ERACEHparams):
    lr: float = 0.01        # README, reused for ER-ACE (docs/ser.md#hyperparameters-reused-across-methods-and-buffers)
    batch_size: int = 8
    minibatch_size: int = 8


class DERSER(SERMixin, DER):
    Hparams = DERSERHparams


class ERACESER(SERMixin, ERACE):
    Hparams = ERACESERHparams


class SalInitMixin:
    """A baseline whose classifier starts from the pretrained saliency encoder (what upstream baselines
    do when given --sal_ckpt); it never uses the saliency branch afterwards."""

    def __init__(self, net, hp, ctx):
        copy_encoder(pretrained_predictor(ctx).encoder, net)
        super().__init__(net, hp, ctx)


class DERSalInit(SalInitMixin, DER):
    pass


class ERACESalInit(SalInitMixin, ERACE):
    pass


# README: α 0.1, β 0.5 for DER++-SER, reused for every buffer
# (docs/ser.md#hyperparameters-reused-across-methods-and-buffers)
register("derpp_ser", alpha=0.1, beta=0.5)(DERSER)
register("derpp_ser_aggregate", alpha=0.1, beta=0.5, modulation="aggregate")(DERSER)
register("derpp_ser_dwsep", alpha=0.1, beta=0.5, modulation="dwseparable")(DERSER)
register("er_ace_ser")(ERACESER)
register("er_ace_ser_aggregate", modulation="aggregate")(ERACESER)
register("er_ace_ser_dwsep", modulation="dwseparable")(ERACESER)
register("er_ace_ser_salfrozen", saliency_frozen=True)(ERACESER)
register("derpp_salinit", alpha=0.1, beta=0.5)(DERSalInit)
register("er_ace_salinit")(ERACESalInit)
