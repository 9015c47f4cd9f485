"""Helpers shared by test modules (tests/ is on sys.path under pytest's default import mode)."""

import contextlib
import time
from pathlib import Path

import pytest

SUMMARY = pytest.StashKey[list]()  # lines a test wants in the run's log (the SLURM test: its sbatch calls)


def wait_for_checkpoint_writes(path: Path, writes: int, proc, timeout=120):
    """Block until `path` has been (re)written `writes` times (one write per finished task)."""
    seen, deadline = set(), time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            seen.add(path.stat().st_mtime_ns)
        except FileNotFoundError:
            pass
        if len(seen) >= writes:
            return
        time.sleep(0.002)
    raise AssertionError(f"the run never wrote its checkpoint {writes} times")


@contextlib.contextmanager
def killed_at_task(monkeypatch, cls, index: int = 2):
    """Within the block, `cls.begin_task` raises KeyboardInterrupt at task `index` (a simulated kill)."""
    original = cls.begin_task

    def begin_task(self, task):
        if task.index == index:
            raise KeyboardInterrupt("simulated kill")
        original(self, task)

    monkeypatch.setattr(cls, "begin_task", begin_task)
    try:
        yield
    finally:
        monkeypatch.setattr(cls, "begin_task", original)


def in_second_task(method, scenario):
    """`method` trained on task 1 and begun on task 2, not trained on it; returns task 2 as begun (begin_task may
    have added fields to it)."""
    first = scenario.task(0)
    method.begin_task(first)
    method.train_task(first)
    method.end_task(first)
    second = scenario.task(1)
    method.begin_task(second)
    return second
