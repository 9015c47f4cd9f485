"""A throw-away single-node SLURM cluster with two fake GPUs, for the `slurm` tests (README.md#slurm).

`SlurmCluster().start()` installs `slurm-wlm munge` with apt-get when `sinfo` is missing (root only),
writes slurm.conf and gres.conf into a temporary directory, links them to /etc/slurm/ (the jobstep of
the Snakemake plugin strips SLURM_CONF, so the compiled-in path is the only one that works), makes two
character devices as fake GPUs, and starts munged (unless one already answers), slurmctld and slurmd in
the foreground as child processes. `stop()` cancels the cluster's jobs, stops the daemons by their PIDs
in reverse order and removes everything `start()` created; it never signals a process it did not start.
Anything that prevents a working cluster raises `Unavailable`, which the tests turn into a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MARKER = "clcore-slurm-test-"   # prefix of the temporary directory; our /etc/slurm links point into it
ETC = Path("/etc/slurm")
LINKED = ("slurm.conf", "gres.conf")
PACKAGES = ["slurm-wlm", "munge"]
DAEMONS = ("munged", "slurmctld", "slurmd")
N_GPUS = 2


class Unavailable(Exception):
    """No cluster could be installed or started here; the message says why."""


def _bin(name: str) -> str | None:
    """A SLURM/munge program by full path (daemons live in /usr/sbin, which PATH may lack)."""
    return shutil.which(name) or next((str(Path(d, name)) for d in ("/usr/sbin", "/usr/bin")
                                       if Path(d, name).exists()), None)


def _run(cmd, timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _wait(predicate, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _alive(pid: int, name: str) -> bool:
    """`pid` runs and is the daemon `name` (so a recycled PID is never signalled)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = next((line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith("State:")), "")
    except OSError:
        return False
    return name in cmdline and state != "Z"


def _terminate(pid: int, name: str, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`, to one process we started."""
    if not _alive(pid, name):
        if proc is not None:
            proc.poll()
        return
    os.kill(pid, signal.SIGTERM)
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    elif _wait(lambda: not _alive(pid, name), timeout, 0.2):
        return
    if _alive(pid, name):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=10)


def munge_works() -> bool:
    if not (_bin("munge") and _bin("unmunge")):
        return False
    try:
        cred = _run(["munge", "-n"], timeout=10)
        if cred.returncode:
            return False
        out = _run(["unmunge"], input=cred.stdout, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Success" in out.stdout


class SlurmCluster:
    def __init__(self):
        self.root: Path | None = None
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.procs: list[tuple[str, subprocess.Popen]] = []   # in start order
        self.created: list[Path] = []                          # files and directories to remove, in order
        self.hosts_line: str | None = None
        self.installed = False

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        """Install (if needed) and start the cluster; Unavailable says why it cannot be done here."""
        if os.name != "posix" or os.geteuid() != 0:
            raise Unavailable("not root: cannot install SLURM or start its daemons")
        try:
            return self._start_all()
        except (OSError, subprocess.SubprocessError) as err:  # e.g. mknod refused in a container
            raise Unavailable(f"{type(err).__name__}: {err}") from None

    def _start_all(self) -> "SlurmCluster":
        self._install()
        self._check_hostname()
        self._claim_etc()
        self.root = Path(tempfile.mkdtemp(prefix=MARKER))
        for path in self.created:
            self._record("created", path)
        self._write_config()
        self._start_munge()
        self._start("slurmctld", [_bin("slurmctld"), "-D", "-i", "-f", str(ETC / "slurm.conf")])
        if not _wait(lambda: _run(["scontrol", "ping"], timeout=10).stdout.count("UP") > 0, 30):
            raise Unavailable(f"slurmctld did not answer `scontrol ping`:\n{_tail(self.root / 'slurmctld.log')}")
        self._start("slurmd", [_bin("slurmd"), "-D", "-f", str(ETC / "slurm.conf")])
        if not _wait(lambda: "idle" in self.sinfo(), 40):
            raise Unavailable(f"the node never became idle (sinfo: {self.sinfo()!r}):\n"
                              f"{_tail(self.root / 'slurmd.log')}\n{_tail(self.root / 'slurmctld.log')}")
        self._smoke_test()
        return self

    def _install(self) -> None:
        needed = ("sinfo", "srun", "sbatch", "squeue", "scancel", "scontrol", "slurmctld", "slurmd", "munged", "munge",
                  "unmunge")
        if all(_bin(b) for b in needed):
            return
        if not shutil.which("apt-get"):
            raise Unavailable("SLURM is not installed and apt-get is missing")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for cmd in (["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
                out = _run(cmd, timeout=600, env=env)
                if out.returncode:
                    raise Unavailable(f"`{' '.join(cmd)}` failed ({out.returncode}):\n{out.stdout[-1500:]}"
                                      f"{out.stderr[-1500:]}")
        except (OSError, subprocess.TimeoutExpired) as err:
            raise Unavailable(f"installing {' '.join(PACKAGES)} failed: {err}") from None
        self.installed = True
        missing = [b for b in needed if not _bin(b)]
        if missing:
            raise Unavailable(f"after installing {' '.join(PACKAGES)}, still missing: {', '.join(missing)}")

    def _check_hostname(self) -> None:
        try:
            socket.gethostbyname(self.host)
        except OSError:  # slurmctld and slurmd must resolve the node name
            self.hosts_line = f"127.0.0.1 {self.host}  # {MARKER}{os.getpid()}"
            with open("/etc/hosts", "a") as hosts:
                hosts.write(self.hosts_line + "\n")

    def _claim_etc(self) -> None:
        """/etc/slurm/{slurm,gres}.conf must be free or our own stale links (a crashed earlier run)."""
        for name in LINKED:
            link = ETC / name
            if link.is_symlink() and MARKER in os.readlink(link):
                self._clean_stale(Path(os.readlink(link)).parent)
                link.unlink()
            elif link.exists() or link.is_symlink():
                raise Unavailable(f"{link} exists and is not this test's: not touching an existing SLURM set-up")
        if not ETC.exists():
            ETC.mkdir(parents=True)
            self.created.append(ETC)

    def _record(self, kind: str, value) -> None:
        """Note a started daemon or a created path in the temporary directory, for a later run to clean up
        after a crash of this one."""
        with open(self.root / kind, "a") as f:
            f.write(f"{value}\n")

    @staticmethod
    def _clean_stale(old_root: Path) -> None:
        """Stop the daemons a crashed earlier run of this fixture left behind (PIDs it recorded) and remove
        the directories it created."""
        pids = old_root / "pids"
        if pids.exists():
            for line in reversed(pids.read_text().splitlines()):
                name, pid = line.split()
                if _alive(int(pid), name):
                    _terminate(int(pid), name)
        created = old_root / "created"
        if created.exists():
            for line in created.read_text().splitlines():
                if line == "/run/munge" and not munge_works():
                    shutil.rmtree(line, ignore_errors=True)
        if old_root.name.startswith(MARKER):
            shutil.rmtree(old_root, ignore_errors=True)

    def _write_config(self) -> None:
        d = self.root
        for sub in ("state", "spool", "dev"):
            (d / sub).mkdir()
        for k in range(N_GPUS):  # character devices (plain files are rejected); minor 3 = /dev/null's
            os.mknod(d / "dev" / f"nvidia{k}", 0o666 | 0o020000, os.makedev(1, 3 if k == 0 else 5))
        mem_total_mb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                            if line.startswith("MemTotal:")) // 1024
        (d / "slurm.conf").write_text("\n".join([
            "ClusterName=clcoretest",
            f"SlurmctldHost={self.host}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "ReturnToService=2",
            "MinJobAge=3600",  # squeue (the status command without accounting) sees finished jobs this long
            "KillWait=5", "MailProg=/bin/true",
            "GresTypes=gpu,shard",
            f"NodeName={self.host} CPUs={self.cpus} RealMemory={int(mem_total_mb * 0.8)} "
            f"Gres=gpu:{N_GPUS},shard:8 State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")
        (d / "gres.conf").write_text(f"Name=gpu File={d}/dev/nvidia[0-{N_GPUS - 1}]\n"
                                     f"Name=shard Count=8 File={d}/dev/nvidia[0-{N_GPUS - 1}]\n")
        for name in LINKED:
            (ETC / name).symlink_to(d / name)
            self.created.insert(0, ETC / name)

    def _start(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        log = open(self.root / f"{name}.out", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kw)
        log.close()
        self.procs.append((name, proc))
        self._record("pids", f"{name} {proc.pid}")
        time.sleep(1)
        if proc.poll() is not None:
            raise Unavailable(f"{name} exited at once ({proc.returncode}):\n{_tail(self.root / f'{name}.out')}\n"
                              f"{_tail(self.root / f'{name}.log')}")
        return proc

    def _start_munge(self) -> None:
        if munge_works():  # a munged already runs (a system one): use it, leave it alone
            return
        if not Path("/etc/munge/munge.key").exists():
            raise Unavailable("/etc/munge/munge.key is missing (the munge package creates it)")
        run_dir = Path("/run/munge")
        if not run_dir.exists():
            run_dir.mkdir(parents=True)
            self.created.append(run_dir)
            self._record("created", run_dir)
        shutil.chown(run_dir, "munge", "munge")
        self._start("munged", [_bin("munged") or "/usr/sbin/munged", "--foreground"], user="munge", group="munge", extra_groups=[])
        if not _wait(munge_works, 15):
            raise Unavailable(f"munged started but `munge -n | unmunge` fails:\n{_tail(self.root / 'munged.out')}")

    def _smoke_test(self) -> None:
        checks = [(["srun", "-N1", "-n1", "hostname"], self.host),
                  (["srun", "-n1", "--gpus=1", "printenv", "CUDA_VISIBLE_DEVICES"], "0")]
        for cmd, expected in checks:
            try:
                out = _run(cmd, timeout=60)
            except subprocess.TimeoutExpired:
                raise Unavailable(f"`{' '.join(cmd)}` hung (60 s):\n{_tail(self.root / 'slurmd.log')}") from None
            if out.returncode or out.stdout.strip() != expected:
                raise Unavailable(f"`{' '.join(cmd)}` gave {out.returncode} {out.stdout!r} {out.stderr!r} "
                                  f"(expected {expected!r})")

    # -- queries --------------------------------------------------------------------------------------
    @staticmethod
    def sinfo() -> str:
        try:
            return _run(["sinfo", "-h", "-o", "%P %a %t"], timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    @staticmethod
    def jobs() -> list[dict]:
        """Every job squeue still knows (MinJobAge keeps finished ones): id, comment, state, start, end."""
        fields = ["id", "comment", "state", "start", "end", "name"]
        out = _run(["squeue", "--states=all", "-h", "-o", "%i|%k|%T|%S|%e|%j"], timeout=30).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]

    # -- stop -----------------------------------------------------------------------------------------
    def stop(self) -> None:
        if any(name == "slurmctld" for name, _ in self.procs):
            try:  # jobs this cluster ran are ours; cancel what is left so slurmd can stop
                active = [j["id"] for j in self.jobs() if j["state"] in ("PENDING", "RUNNING", "CONFIGURING")]
                if active:
                    _run(["scancel", *active], timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name, proc in reversed(self.procs):
            _terminate(proc.pid, name, proc)
        self.procs.clear()
        for path in self.created:
            if path.is_symlink():
                if self.root is not None and str(self.root) in os.readlink(path):
                    path.unlink()
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True) if path == Path("/run/munge") else _rmdir(path)
        self.created.clear()
        if self.hosts_line:
            lines = Path("/etc/hosts").read_text().splitlines()
            Path("/etc/hosts").write_text("".join(f"{line}\n" for line in lines if line != self.hosts_line))
            self.hosts_line = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def kill_processes_using(path: Path) -> list[int]:
    """SIGKILL, by PID, every process whose command line names `path` (a cancelled job's inner snakemake can
    outlive its step under proctrack/linuxproc); returns their PIDs."""
    killed = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) != os.getpid() and str(path) in proc.joinpath("cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
        except (OSError, ValueError):
            pass
    return killed


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()  # only if empty: someone else may have put files there meanwhile
    except OSError:
        pass
