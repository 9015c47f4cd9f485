"""The GPU slot allocator (README.md#gpus-on-one-workstation) with fake device lists and real processes
sharing a lock dir."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from clcore.device import NoFreeSlotError, Slot, acquire, claim_device

HOLDER = textwrap.dedent("""
    import os, sys, time
    from clcore.device import acquire
    slot = acquire(devices=[0, 1], slots_per_gpu=int(sys.argv[2]), wait_s=float(sys.argv[3]), lock_dir=sys.argv[1],
                   poll_s=0.05)
    print(os.environ["CUDA_VISIBLE_DEVICES"], slot.slot, flush=True)
    time.sleep(float(sys.argv[4]))
""")


def holder(lock_dir, slots=1, wait_s=0.0, hold_s=2.0):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(slots), str(wait_s), str(hold_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def first_line(proc) -> str:
    return proc.stdout.readline().strip()


@pytest.fixture
def no_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # acquire() sets it for the whole process


def test_concurrent_jobs_get_distinct_devices_then_wait_for_a_freed_slot(tmp_path):
    first, second = holder(tmp_path, hold_s=1.5), holder(tmp_path, hold_s=1.5)
    seen = sorted([first_line(first), first_line(second)])
    assert seen == ["0 0", "1 0"]  # one job per GPU, each sees only its own device
    third = holder(tmp_path, wait_s=30, hold_s=0)  # all slots taken: waits until a job ends
    started = time.monotonic()
    assert first_line(third) in ("0 0", "1 0") and time.monotonic() - started > 0.5
    for proc in (first, second, third):
        proc.wait(timeout=30)


def test_two_slots_per_gpu_pack_four_jobs_on_two_devices(tmp_path):
    jobs = [holder(tmp_path, slots=2, hold_s=1.0) for _ in range(4)]
    seen = sorted(first_line(j) for j in jobs)
    assert seen == ["0 0", "0 1", "1 0", "1 1"]
    for job in jobs:
        job.wait(timeout=30)


def test_no_free_slot_fails_with_a_clear_error(tmp_path):
    busy = [holder(tmp_path, hold_s=3.0) for _ in range(2)]
    [first_line(b) for b in busy]
    late = holder(tmp_path, wait_s=0.2, hold_s=0)
    _, err = late.communicate(timeout=30)
    assert late.returncode != 0 and "NoFreeSlotError" in err and "--resources gpu=" in err
    for b in busy:
        b.wait(timeout=30)


def test_a_crashed_job_frees_its_slot(tmp_path):
    crashed = holder(tmp_path, hold_s=30)
    first_line(crashed)
    crashed.kill()
    crashed.wait(timeout=30)
    assert first_line(holder(tmp_path, hold_s=0)) == "0 0"  # the kernel released the lock


def test_an_existing_assignment_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # SLURM or the user chose
    assert acquire(devices=[0, 1], lock_dir=tmp_path) == Slot(None, None, "environment")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and not list(tmp_path.iterdir())


def test_cpu_jobs_and_gpu_less_machines_claim_nothing(tmp_path, no_visible_devices):
    assert claim_device("cpu") == ("cpu", Slot(None, None, "cpu"))
    assert acquire(devices=[], lock_dir=tmp_path) == Slot(None, None, "no gpu")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_claim_device_switches_to_the_claimed_gpu(tmp_path, monkeypatch, no_visible_devices):
    monkeypatch.setenv("CLCORE_LOCK_DIR", str(tmp_path))
    device, slot = claim_device("cuda:1", {"devices": [1], "slots_per_gpu": 1, "wait_s": 0})
    assert device == "cuda" and slot == Slot(1, 0, "slot") and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert (tmp_path / "gpu1-slot0.lock").exists()
    del os.environ["CUDA_VISIBLE_DEVICES"]  # as if a second job asked: this process holds the only slot
    with pytest.raises(NoFreeSlotError, match="no free GPU slot among 1 device"):
        acquire(devices=[1], wait_s=0, lock_dir=tmp_path, poll_s=0.01)
