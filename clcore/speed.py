"""Speed options (docs/speed.md): how a run computes, never what it computes. Each is a hyperparameter of every
method (`Hparams`), so it is recorded in run.json, and an override of one names a distinct run.

- `channels_last`: conv weights and activations in NHWC (oneDNN's and cuDNN's fast layout); rounding-level effect.
- `precision: bf16`: the training steps and the evaluations under `torch.autocast(bfloat16)`: convolutions and
  matrix products in bf16, losses and the optimiser in fp32; buffers, stored logits and metrics stay fp32.
  `auto`: bf16 where the device computes it natively, else fp32 (`seq-shapes`: the fastest on any CPU).
- `compile`: `torch.compile` of the backbone's forward (the first steps pay the compilation).

`fp32` is the reference: it also turns TF32 off on CUDA, where PyTorch's defaults mix it in for convolutions.
"""

from __future__ import annotations

import contextlib
import functools
import typing
from pathlib import Path
from typing import Literal

Precision = Literal["fp32", "bf16", "auto"]  # auto: bf16 where the device computes it natively, else fp32
PRECISIONS = typing.get_args(Precision)
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # without them oneDNN emulates bf16, slower than fp32


def native_bf16(device) -> bool:
    """Whether `device` computes bf16 natively: a GPU that supports it, or a CPU with AVX512-BF16 or AMX."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return _cpu_has_native_bf16()


@functools.cache  # read once per process, not at every task and evaluation
def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: no way to tell here, so the reference
        return False
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def resolved_precision(precision: str, device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def numerics(precision: str, device):
    """A context for a run's training steps and evaluations at `precision` (resolved) on the torch.device
    `device`."""
    import torch  # not at import time: the command line reads PRECISIONS without loading torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if resolved_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    # no cache of the bf16 weight copies: the context spans whole tasks, whose optimiser steps change the weights
    # in place, and a cached copy would keep serving the weights of the first forward
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
