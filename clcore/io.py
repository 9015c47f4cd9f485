"""Atomic file output (write to a temporary sibling, then rename, so a killed job never leaves a truncated
file that looks finished), JSON files, and the lock that keeps two processes out of one run directory."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


LOCK = ".lock"


@contextlib.contextmanager
def run_lock(out_dir, what: str):
    """Hold `<out_dir>/.lock` while the block runs; a second process asking for it gets a RunInProgressError that
    says who holds it. The lock is an exclusive `flock`, which the kernel releases when its process ends, so the
    file a killed run leaves behind is recognised as stale and taken over."""
    from .errors import RunInProgressError

    path = Path(out_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunInProgressError(
                f"{what} is already training in {holder} (lock {path}). Wait for it to finish: its results will "
                f"be in {Path(out_dir)}; or stop that process, and this command then resumes from its last "
                f"finished task.") from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the holder removed it between our open and our lock
            same_file = False
        if same_file:
            break
        os.close(fd)
    stale = os.read(fd, 4096).decode(errors="replace").strip()
    if stale:
        logging.getLogger("clcore.io").warning("%s: stale lock of a run that ended without releasing it (%s); "
                                               "taken over", path, stale)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {platform.node()} since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}".encode(), 0)
    try:
        yield
    finally:
        os.unlink(path)
        os.close(fd)


def git_commit(cwd=None) -> str:
    """HEAD of the repository at `cwd` (default: this package's checkout), with `+dirty` if modified."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd, timeout=5)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=cwd, timeout=5).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def redirect_output(log_path):
    """Send Python logging, stdout and stderr of the block to `log_path` (Snakemake's log: file)."""
    import logging
    import sys

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log_file, contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc(file=log_file)
            raise
        finally:
            root.removeHandler(handler)
            sys.stdout.flush()
