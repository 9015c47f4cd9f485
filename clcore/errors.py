"""Errors with actionable messages. Each carries the exit code the CLI returns for it (README "Troubleshooting"):

1 any other clcore error, 2 bad input (unknown name, invalid value or config, missing manual dataset),
3 damaged data (a download or a prepared file whose checksum differs), 4 a non-finite loss, 5 no free GPU
slot, 6 GPU out of memory, 7 the run is already training in another process, 8 a damaged result file.
"""

from __future__ import annotations

import contextlib
import difflib


class CLError(Exception):
    exit_code = 1


class InputError(CLError, ValueError):
    """Bad input: an invalid value, config or combination of settings; the message says what to change."""

    exit_code = 2


class UnknownNameError(CLError, KeyError):
    """An unknown registry name (method, benchmark, backbone, dataset, hyperparameter)."""

    exit_code = 2

    def __init__(self, kind: str, name: str, choices):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        close = difflib.get_close_matches(name, self.choices, n=1, cutoff=0.0)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Valid names: {', '.join(self.choices)}")

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


class DatasetMissingError(CLError):
    exit_code = 2

    @classmethod
    def manual(cls, dataset: str, needed_by: str, searched, found: dict[str, str], layout: str, obtain: str,
               retry: str) -> "DatasetMissingError":
        """The six-part message of docs/datasets.md#the-missing-data-message, in its order: who needed
        what, what the searched folder holds, the expected tree, where to get the files, the retry command,
        and the reminder that the default config needs no download."""
        from pathlib import Path

        state = [f"    {item}: {what}" for item, what in found.items()] or ["    (the folder does not exist)"]
        tree = "\n".join("    " + line for line in layout.strip("\n").splitlines())
        return cls("\n".join([
            f"dataset '{dataset}' is not available; it is needed by {needed_by}.",
            f"  searched {Path(searched).resolve()}/:", *state,
            "  expected layout:", tree,
            f"  where to get it: {obtain}",
            f"  then retry: {retry}",
            "  (the default config/config.yaml runs on embedded datasets and needs no download)",
        ]))


class ChecksumError(CLError):
    """A file whose bytes differ from their recorded checksum (a download, a prepared array)."""

    exit_code = 3


class RunInProgressError(CLError):
    """The run directory is locked by another process that is training the same run."""

    exit_code = 7


class DamagedOutputError(CLError):
    """A result file that cannot be read: `what` (a file, or the run it belongs to), why, and how to redo it."""

    exit_code = 8

    def __init__(self, what, reason: str, redo: str):
        self.what, self.reason = what, reason
        super().__init__(f"{what}: {reason}.\n  {redo}")


class NonFiniteLossError(CLError):
    """A loss became NaN or infinite; the message names the task and the step."""

    exit_code = 4


def lookup(kind: str, registry: dict, name: str):
    """`registry[name]`, or an UnknownNameError that names the closest valid name."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownNameError(kind, name, registry) from None


class GpuOutOfMemoryError(CLError):
    """The GPU ran out of memory (torch.cuda.OutOfMemoryError, or a RuntimeError saying "out of memory");
    the message names the job, what its checkpoint keeps and what to change."""

    exit_code = 6


def is_gpu_oom(err: BaseException) -> bool:
    """torch's CUDA OOM (a RuntimeError subclass) or a RuntimeError whose message says "out of memory"
    (cuDNN/cuBLAS allocation failures, older torch)."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(err, oom_type)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _checkpoint_state(out_dir, n_tasks) -> str:
    """What a run directory's checkpoint keeps, in words."""
    from pathlib import Path

    if out_dir is None:
        return "nothing is checkpointed by this job; running it again starts it from the beginning"
    ckpt = Path(out_dir) / "checkpoint.pt"  # clcore.train.CHECKPOINT, written after every finished task
    if not ckpt.exists():
        task = f" (task 1 of {n_tasks})" if n_tasks else ""
        return f"it failed before its first task finished{task}, so no checkpoint exists; running it again starts over"
    try:
        import torch

        done = int(torch.load(ckpt, map_location="cpu", weights_only=False)["next_task"])
    except Exception:  # noqa: BLE001 - the message must not fail on a damaged checkpoint
        return f"the checkpoint of the last finished task is kept ({ckpt}); running the job again resumes from it"
    of = f" of {n_tasks}" if n_tasks else ""
    return (f"it failed in task {done + 1}{of}; the checkpoint of the last finished task (task {done}) is kept "
            f"({ckpt}) and running the job again resumes from it")


@contextlib.contextmanager
def gpu_oom_as_error(what: str, out_dir=None, n_tasks: int | None = None):
    """Turn a GPU out-of-memory error raised in the block into a GpuOutOfMemoryError that says which job
    (`what`, e.g. "run seq-cifar10/derpp/buf200/seed0"), what its checkpoint in `out_dir` keeps and what to
    do about it."""
    try:
        yield
    except Exception as err:
        if isinstance(err, CLError) or not is_gpu_oom(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GpuOutOfMemoryError(
            f"GPU out of memory in {what}: {first}\n"
            f"  {_checkpoint_state(out_dir, n_tasks)}.\n"
            "  To fit: use a smaller batch size through an override (`clcore train ... --set batch_size=16`, or "
            "`overrides: {<method>: {batch_size: 16}}` in the experiment block; an override makes a new run "
            "directory), run fewer jobs per GPU (config `gpu.slots_per_gpu`, and `--resources gpu=<devices x "
            "slots>`), or use a GPU with more memory (profiles/slurm: CLCORE_SLURM_GPU_MODEL or "
            "CLCORE_SLURM_GPU_PARTITION)."
        ) from err


@contextlib.contextmanager
def exit_on_error():
    """For entry points outside the `clcore` CLI (Snakemake scripts): a CLError prints `error: <message>`
    to stderr and exits with its exit code instead of a traceback (clcore.io.redirect_output has already
    written the traceback to the job's log)."""
    import sys

    try:
        yield
    except CLError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
