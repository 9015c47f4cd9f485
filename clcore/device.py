"""Which device a run trains on, and the GPU slot allocator for several runs per GPU on one machine.

Snakemake sets no CUDA_VISIBLE_DEVICES locally; `--resources gpu=N` only caps how many GPU jobs run at
once. `acquire` gives each job its own GPU slot through lock files (README.md#gpus-on-one-workstation):
slot s of D devices x k slots per device is `<lock_dir>/gpu<d>-slot<j>.lock`, d = devices[s // k], held
with an exclusive `flock` for the life of the process, so the kernel frees it when the job ends or crashes.
It must run before CUDA is initialised in the process."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CLError

_HELD: list[int] = []  # open descriptors of the slots this process holds (released at exit)


class NoFreeSlotError(CLError):
    exit_code = 5


@dataclass(frozen=True)
class Slot:
    device: int | None  # physical GPU id now visible as cuda:0 (None: not chosen by the allocator)
    slot: int | None
    source: str         # "slot" | "environment" (CUDA_VISIBLE_DEVICES set by SLURM or the user) | "no gpu"

    def as_dict(self) -> dict:
        return {"device": self.device, "slot": self.slot, "source": self.source,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def visible_gpus() -> list[int]:
    """Physical GPU ids, from `nvidia-smi -L` (no CUDA initialised here); none where it is absent."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return [k for k, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def default_lock_dir() -> Path:
    return Path(os.environ.get("CLCORE_LOCK_DIR", f"/tmp/clcore-gpu-{os.getuid()}"))


def acquire(devices: list[int] | None = None, slots_per_gpu: int = 1, wait_s: float = 600.0, lock_dir=None,
            poll_s: float = 0.5) -> Slot:
    """Claim a free GPU slot and make its device the only visible one (CUDA_VISIBLE_DEVICES)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return Slot(None, None, "environment")
    devices = visible_gpus() if devices is None else list(devices)
    if not devices:
        return Slot(None, None, "no gpu")
    if slots_per_gpu < 1:
        raise ValueError(f"slots_per_gpu must be >= 1, got {slots_per_gpu}")
    lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + wait_s, poll_s
    while True:
        for s in range(len(devices) * slots_per_gpu):
            device, j = devices[s // slots_per_gpu], s % slots_per_gpu
            fd = os.open(lock_dir / f"gpu{device}-slot{j}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _HELD.append(fd)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
            return Slot(device, j, "slot")
        if time.monotonic() >= deadline:
            raise NoFreeSlotError(
                f"no free GPU slot among {len(devices)} device(s) x {slots_per_gpu} slot(s) after {wait_s:.0f} s "
                f"(locks in {lock_dir}). Run with `--resources gpu=<devices x slots_per_gpu>` so Snakemake never "
                f"starts more GPU jobs than slots, or raise gpu.slots_per_gpu in the config.")
        time.sleep(delay)
        delay = min(2 * delay, 10.0)


def claim_device(device: str, gpu: dict | None = None) -> tuple[str, Slot]:
    """The device string a GPU job should use after claiming a slot (config key `gpu`: devices,
    slots_per_gpu, wait_s); CPU jobs claim nothing."""
    if device == "cpu":
        return device, Slot(None, None, "cpu")
    gpu = gpu or {}
    slot = acquire(gpu.get("devices"), int(gpu.get("slots_per_gpu", 1)), float(gpu.get("wait_s", 600)))
    return ("cuda" if slot.source == "slot" else device), slot


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; use --device cpu or auto")
    return dev


def describe(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
