"""Cluster execution: the SLURM profile's resource requests (a dry run, no daemons), a real run on a
single-node SLURM cluster with two fake GPUs (installed and started by tests/slurm_cluster.py, skipped
where that is impossible), and the clear exit of a GPU out-of-memory error."""

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from clcore.errors import GpuOutOfMemoryError
from clcore.results import load_metrics
from helpers import SUMMARY
from slurm_cluster import SlurmCluster, Unavailable, kill_processes_using

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"train", "pretrain_saliency", "pretrain_bir_conv", "pretrain_ar1_backbone", "pseudo_saliency", "robust_eval"}
SITE_ENV = [k for k in os.environ if k.startswith("CLCORE_SLURM_")]  # a user's own overrides must not leak in


def workdir(path: Path, config: dict) -> tuple[Path, Path]:
    """A copy of the workflow in `path` and a config file with `config` (merged over config/config.yaml)."""
    path.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "rules", "workflow", "config"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, path / item)
    configfile = path / "test_config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return path, configfile


def clean_env(**site) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SITE_ENV and k != "SNAKEMAKE_PROFILE"}
    return {**env, **{f"CLCORE_SLURM_{k}": str(v) for k, v in site.items()}}


def job_resources(output: str) -> list[tuple[str, dict]]:
    """(rule, resources) of every job block a dry run prints ("rule x:" / "localrule x:", then "resources: ...")."""
    jobs, rule = [], None
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule = m.group(1)
        elif line.strip().startswith("resources:") and rule:
            items = line.strip()[len("resources:"):].split(", ")
            jobs.append((rule, dict(item.strip().split("=", 1) for item in items if "=" in item)))
            rule = None
    return jobs


def declared_gpu_rules() -> set[str]:
    """Rules in rules/*.smk that declare a `gpu` resource (the GPU rules)."""
    rules = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+gpu\s*=", block, flags=re.M):
                rules.add(m.group(1))
    return rules


# A small config with SER's GPU jobs (pretraining, pseudo maps, a run, robustness) and a CPU-only run.
ALL_RULES_CONFIG = {"experiments": [
    {"id": "gpu_rules", "benchmarks": ["seq-shapes-ser"], "methods": ["er_ace_ser"], "buffers": [100],
     "seeds": [0], "robust_eval": {"n_per_class": 20}},
    {"id": "cpu_only", "benchmarks": ["seq-digits"], "methods": ["sgd"], "seeds": [0]},
]}


def slurm_dry_run(tmp_path, config=None, **site):
    """A dry run with profiles/slurm of the default config (config=None) or of `config`."""
    wd, configfile = workdir(tmp_path, config or {})
    cmd = [sys.executable, "-m", "snakemake", "-n", "-F", "--profile", str(PROFILE), "--workflow-profile", "none",
           *(["--configfile", str(configfile)] if config else [])]
    out = subprocess.run(cmd, cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                         env=clean_env(**site))
    assert out.returncode == 0, out.stdout
    return job_resources(out.stdout)


def test_every_gpu_rule_has_a_gpu_request_in_the_slurm_profile():
    profile = (PROFILE / "profile.yaml").read_text()
    requested = set(re.findall(r"^  (\w+): \?gpu_job\(", profile, flags=re.M))
    assert requested == GPU_RULES
    assert declared_gpu_rules() <= requested, "a rule with a gpu resource has no GPU request in profiles/slurm"


def test_slurm_dry_run_requests_gpus_only_for_gpu_rules(tmp_path):
    """The job resources Snakemake hands to the executor, as the dry run prints them per job: the plugin turns
    `gpu` into `--gpus` and `cpus_per_gpu` into `--cpus-per-gpu` (checked on real sbatch lines in
    test_training_runs_through_sbatch_with_gpus_only_on_train_jobs), `mem_mb` into `--mem`, `runtime` into `-t`."""
    # every embedded study, so that every GPU rule appears (gpus_per_run: 0 as in the default: the profile decides)
    studies = [f"config/embedded/{family}.yaml" for family in ("baselines", "ser", "bir")]
    jobs = slurm_dry_run(tmp_path, {"experiments": [], "experiment_files": studies})
    rules = {rule for rule, _ in jobs}
    assert {"train", "pretrain_saliency", "pseudo_saliency", "robust_eval", "pretrain_bir_conv", "prepare_dataset",
            "collect"} <= rules
    assert declared_gpu_rules() & rules <= GPU_RULES
    for rule, res in jobs:
        if rule in GPU_RULES:
            assert (res.get("gpu"), res.get("cpus_per_gpu")) == ("1", "4"), (rule, res)
            assert int(res["mem_mb"]) >= 16000 and int(res["runtime"]) >= 120, (rule, res)
        else:
            assert res.get("gpu", "0") == "0" and "cpus_per_gpu" not in res and "gpu_model" not in res, (rule, res)
            assert (res["mem_mb"], res["runtime"]) == ("4000", "60"), (rule, res)
        assert res["slurm_partition"] == "CHANGEME" and res["slurm_account"] == "CHANGEME", (rule, res)


def test_slurm_profile_site_values_come_from_the_environment(tmp_path):
    """CLCORE_SLURM_* override the profile's site values without replacing its per-rule GPU requests (a CLI
    --set-resources would replace them all); an empty ACCOUNT drops the account (clusters without accounting)."""
    jobs = slurm_dry_run(tmp_path, ALL_RULES_CONFIG, PARTITION="short", GPU_PARTITION="gpu", ACCOUNT="", MEM_MB=1000, RUNTIME="2h",
                         GPU_MEM_MB=64000, GPU_RUNTIME=720, GPU_MODEL="a100", CPUS_PER_GPU=8)
    for rule, res in jobs:
        assert "slurm_account" not in res, (rule, res)
        if rule in GPU_RULES:
            assert res["slurm_partition"] == "gpu" and res["gpu"] == "1" and res["gpu_model"] == "a100", res
            assert (res["mem_mb"], res["runtime"], res["cpus_per_gpu"]) == ("64000", "720", "8"), res
        else:
            assert (res["slurm_partition"], res["mem_mb"], res["runtime"]) == ("short", "1000", "120"), res
            assert "gpu_model" not in res and res.get("gpu", "0") == "0", res


# -- a real SLURM cluster ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm():
    cluster = SlurmCluster()
    try:
        cluster.start()
    except Unavailable as err:
        cluster.stop()
        pytest.skip(f"no single-node SLURM test cluster: {err}")
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


RESUME_SEED = 3
SLURM_CONFIG = {
    # SLURM sets CUDA_VISIBLE_DEVICES to a fake device: `auto` must then fall back to the CPU (no driver);
    # on a machine with a real GPU the comparison with the local run needs the same device, so cpu there
    "device": "auto" if not torch.cuda.is_available() else "cpu",
    "threads_per_run": 1,
    "experiments": [
        {"id": "slurm_sgd", "benchmarks": ["seq-digits"], "methods": ["sgd"], "seeds": [0, 1]},
        {"id": "slurm_er", "benchmarks": ["seq-digits"], "methods": ["er"], "buffers": [50], "seeds": [0]},
        # slow enough (4x the epochs, >= 1 s per task) to be cancelled mid-run once its first checkpoint exists
        {"id": "slurm_resume", "benchmarks": ["seq-digits"], "methods": ["er"], "buffers": [50],
         "seeds": [RESUME_SEED], "overrides": {"er": {"n_epochs": 80}}},
    ],
}
N_RUNS = 4  # on 2 fake GPUs: two at a time, then the resubmitted one
TARGET = "results/tables/runs.parquet"  # collect: every run, and nothing else (no figures)
# the test cluster: one 2-CPU node with 2 fake GPUs, no accounting (squeue as status command)
TEST_SITE = dict(PARTITION="debug", ACCOUNT="", MEM_MB=500, RUNTIME=10, GPU_MEM_MB=1000, GPU_RUNTIME=10,
                 CPUS_PER_GPU=1)


def run_dirs(wd: Path) -> dict[str, Path]:
    return {str(p.relative_to(wd / "results/runs")): p for p in (wd / "results/runs").glob("*/*/buf*/seed*")}


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    """The slice through `snakemake --profile profiles/slurm`; one run is scancel-ed after its first task and
    resubmitted by the profile's `retries: 1`. The same slice runs locally meanwhile, for the comparison."""
    wd, configfile = workdir(tmp_path_factory.mktemp("slurm"), SLURM_CONFIG)
    local, local_config = workdir(tmp_path_factory.mktemp("local"), SLURM_CONFIG)
    commands = {
        "slurm": ([sys.executable, "-m", "snakemake", TARGET, "--profile", str(PROFILE), "--workflow-profile", "none",
                   "--configfile", str(configfile), "--slurm-no-account", "--slurm-status-command", "squeue",
                   "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--verbose"],
                  wd, clean_env(**TEST_SITE)),
        "local": ([sys.executable, "-m", "snakemake", TARGET, "--cores", "2", "--workflow-profile", "none",
                   "--configfile", str(local_config)], local, clean_env()),
    }
    started, procs = time.monotonic(), {}
    try:
        for name, (cmd, cwd, env) in commands.items():
            with open(cwd / "snakemake.out", "w") as log:
                procs[name] = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        cancelled = cancel_after_first_checkpoint(wd, slurm, procs["slurm"])
        for proc in procs.values():
            proc.wait(timeout=600)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
        kill_processes_using(wd)  # nothing of this test may outlive it
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}:\n" + (commands[name][1] / "snakemake.out").read_text()[-6000:]
    return SimpleNamespace(wd=wd, local=local, output=(wd / "snakemake.out").read_text(), cancelled=cancelled,
                           jobs=slurm.jobs(), seconds=time.monotonic() - started)


def cancel_after_first_checkpoint(wd: Path, slurm: SlurmCluster, proc) -> dict:
    """scancel the slow run's SLURM job once its checkpoint.pt exists (task 1 done, task 2 running)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        ckpts = list(wd.glob(f"results/runs/seq-digits/er-h*/buf50/seed{RESUME_SEED}/checkpoint.pt"))
        comment = ckpts and f"rule_train_wildcards_seq-digits_{ckpts[0].parents[2].name}_50_{RESUME_SEED}"
        job = ckpts and next((j for j in slurm.jobs() if j["comment"] == comment and j["state"] == "RUNNING"), None)
        if job:
            subprocess.run(["scancel", job["id"]], check=True, timeout=30)
            assert not (ckpts[0].parent / "metrics.parquet").exists(), "the run finished before it was cancelled"
            return {**job, "run": str(ckpts[0].parent.relative_to(wd / "results/runs"))}
        time.sleep(0.05)
    raise AssertionError("the slow run never wrote its first checkpoint under SLURM")


def sbatch_calls(output: str) -> list[str]:
    return re.findall(r"sbatch call: (sbatch .*)", output)


@pytest.mark.slurm
def test_training_runs_through_sbatch_with_gpus_only_on_train_jobs(slurm_run, request):
    calls = sbatch_calls(slurm_run.output)
    request.config.stash[SUMMARY] += [  # into the CI log, without the long paths and the wrapped command
        "SLURM test: " + re.sub(r" (--output|-D) \S+| --job-name \S+| --wrap=.*", "", call) for call in calls]
    # every run + the resubmission of the cancelled one; data preparation and collect stay on the submit host
    assert len(calls) == N_RUNS + 1, calls
    for call in calls:
        assert "--comment rule_train_wildcards_seq-digits_" in call, call
        assert "--gpus=1" in call and "--cpus-per-gpu=1" in call, call
        assert re.search(r" -p debug\b", call) and " -A " not in call, call
        assert "--mem 1000" in call and "-t 10" in call, call
    assert re.search(r"localrule prepare_dataset:", slurm_run.output)
    assert re.search(r"localrule collect:", slurm_run.output)
    assert len(re.findall(r"has been submitted with SLURM jobid", slurm_run.output)) == N_RUNS + 1


@pytest.mark.slurm
def test_each_training_job_sees_its_own_gpu(slurm_run):
    """SLURM sets CUDA_VISIBLE_DEVICES per job; clcore respects it and records it (run.json gpu_slot).
    Two jobs that ran at the same time never saw the same (fake) device."""
    device = {}
    for name, run in run_dirs(slurm_run.wd).items():
        slot = json.loads((run / "run.json").read_text())["gpu_slot"]
        assert slot["cuda_visible_devices"] in ("0", "1"), (name, slot)
        assert slot["source"] == ("environment" if SLURM_CONFIG["device"] == "auto" else "cpu"), slot
        device[name] = slot["cuda_visible_devices"]
    assert len(device) == N_RUNS
    # completed train jobs as squeue still lists them (MinJobAge=3600): comment -> run, start and end times
    done = []
    for job in slurm_run.jobs:
        m = re.fullmatch(r"rule_train_wildcards_(seq-digits)_(.+)_(\d+)_(\d+)", job["comment"])
        if m and job["state"] == "COMPLETED":
            name = f"{m.group(1)}/{m.group(2)}/buf{m.group(3)}/seed{m.group(4)}"
            done.append((name, datetime.fromisoformat(job["start"]), datetime.fromisoformat(job["end"])))
    assert sorted(n for n, *_ in done) == sorted(device)
    overlapping = [(a, b) for i, a in enumerate(done) for b in done[i + 1:] if a[1] < b[2] and b[1] < a[2]]
    assert overlapping, f"no two training jobs ran at the same time: {done}"
    for a, b in overlapping:
        assert device[a[0]] != device[b[0]], (a, b, device)
    assert set(device.values()) == {"0", "1"}


@pytest.mark.slurm
def test_slurm_results_equal_a_local_run(slurm_run):
    cluster, local = run_dirs(slurm_run.wd), run_dirs(slurm_run.local)
    assert sorted(cluster) == sorted(local) and len(cluster) == N_RUNS
    for name in cluster:
        pd.testing.assert_frame_equal(load_metrics(cluster[name] / "metrics.parquet"),
                                      load_metrics(local[name] / "metrics.parquet"), check_exact=False, rtol=1e-5)


@pytest.mark.slurm
def test_a_cancelled_job_is_resubmitted_and_resumes_from_its_checkpoint(slurm_run):
    cancelled = slurm_run.cancelled
    states = {j["id"]: j["state"] for j in slurm_run.jobs}
    assert states[cancelled["id"]] == "CANCELLED"
    retried = [j for j in slurm_run.jobs if j["comment"] == cancelled["comment"] and j["id"] != cancelled["id"]]
    assert [j["state"] for j in retried] == ["COMPLETED"], retried
    assert re.search(r"Trying to restart job|Restarting job|attempt 2", slurm_run.output, flags=re.I)
    run = slurm_run.wd / "results/runs" / cancelled["run"]
    info = json.loads((run / "run.json").read_text())
    assert info["phases"]["resumed_at_task"], info["phases"]  # the retry resumed, it did not start over
    assert not (run / "checkpoint.pt").exists()
    accuracy = lambda d: (lambda m: m[m.metric == "accuracy"].reset_index(drop=True))(load_metrics(d / "metrics.parquet"))
    pd.testing.assert_frame_equal(accuracy(run), accuracy(slurm_run.local / "results/runs" / cancelled["run"]),
                                  check_exact=False, rtol=1e-5)


# -- GPU out of memory ---------------------------------------------------------------------------------

def fake_oom(error, next_task=None):
    """A run_training that checkpoints `next_task` finished tasks (if given), then fails with `error`."""
    def run_training(*args, out_dir=None, **kwargs):
        if next_task is not None:
            out = Path(out_dir if out_dir is not None else args[6])
            out.mkdir(parents=True, exist_ok=True)
            torch.save({"next_task": next_task}, out / "checkpoint.pt")
        raise error
    return run_training


OOM = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total)")


def cli_train(tmp_path, prepared_dir):
    from clcore.cli import main

    return CliRunner().invoke(main, ["train", "-b", "seq-digits", "-m", "sgd", "--seed", "0",
                                     "--prepared-dir", str(prepared_dir), "--results-dir", str(tmp_path),
                                     "--hparams-dir", str(REPO / "config/hparams"), "--device", "cpu"])


def test_gpu_oom_in_clcore_train_exits_6_and_says_what_to_do(tmp_path, prepared_dir, monkeypatch):
    monkeypatch.setattr("clcore.train.run_training", fake_oom(OOM, next_task=2))
    result = cli_train(tmp_path, prepared_dir)
    assert result.exit_code == GpuOutOfMemoryError.exit_code == 6, result.output
    msg = result.stderr
    assert msg.startswith("error: GPU out of memory in run seq-digits/sgd/buf0/seed0: CUDA out of memory.")
    assert "failed in task 3 of 5" in msg and "checkpoint of the last finished task (task 2) is kept" in msg
    assert str(tmp_path / "runs/seq-digits/sgd/buf0/seed0/checkpoint.pt") in msg
    assert "--set batch_size=16" in msg and "gpu.slots_per_gpu" in msg and "more memory" in msg
    assert "Traceback" not in result.output


def test_out_of_memory_runtime_errors_count_other_errors_do_not(tmp_path, prepared_dir, monkeypatch):
    monkeypatch.setattr("clcore.train.run_training", fake_oom(RuntimeError("CUDA error: out of memory")))
    result = cli_train(tmp_path, prepared_dir)
    assert result.exit_code == 6 and "before its first task finished (task 1 of 5)" in result.stderr
    monkeypatch.setattr("clcore.train.run_training", fake_oom(RuntimeError("shape mismatch")))
    result = cli_train(tmp_path, prepared_dir)
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


class FakeSnakemake(SimpleNamespace):
    """The `snakemake` object a script rule receives, as far as the GPU rules' scripts read it."""


class Output(list):
    @property
    def model(self):
        return self[0]


def test_gpu_oom_in_the_train_rule_exits_6_with_the_message_in_the_log(tmp_path, prepared_dir, monkeypatch, capsys):
    monkeypatch.setattr("clcore.train.run_training", fake_oom(OOM, next_task=1))
    run = tmp_path / "results/runs/seq-digits/er/buf50/seed0"
    inputs = SimpleNamespace(keys=lambda: ["data"])
    smk = FakeSnakemake(wildcards=SimpleNamespace(benchmark="seq-digits", run="er", buffer="50", seed="0"),
                        params=SimpleNamespace(method="er", hparams={}, prepared_dir=str(prepared_dir), device="cpu",
                                               gpu={}, keep_final=False),
                        output=SimpleNamespace(metrics=str(run / "metrics.parquet"), run=str(run / "run.json")),
                        input=inputs, log=[str(tmp_path / "train.log")], threads=1)
    main = runpy.run_path(str(REPO / "workflow/scripts/train.py"))["main"]
    with pytest.raises(SystemExit) as exit_:
        main(smk)
    assert exit_.value.code == 6
    err = capsys.readouterr().err
    assert err.startswith("error: GPU out of memory in run seq-digits/er/buf50/seed0") and "task 2 of 5" in err
    log = (tmp_path / "train.log").read_text()
    assert "GpuOutOfMemoryError: GPU out of memory in run seq-digits/er/buf50/seed0" in log
    assert "torch.OutOfMemoryError" in log or "OutOfMemoryError: CUDA out of memory" in log  # the cause is kept


@pytest.mark.parametrize("script, target, wildcards, expected", [
    ("pretrain_saliency", "clcore.methods.ser.run_pretraining", {"source": "shapes"},
     "GPU out of memory in saliency pretraining on 'shapes'"),
    ("pseudo_saliency", "clcore.methods.ser.write_pseudo_maps", {"source": "shapes", "prepared": "shapes"},
     "GPU out of memory in pseudo saliency maps of 'shapes'"),
    ("robust_eval", "clcore.methods.ser.write_robust_eval", {}, "GPU out of memory in robustness evaluation of "),
])
def test_gpu_oom_in_the_other_gpu_rules_exits_6(tmp_path, monkeypatch, capsys, script, target, wildcards, expected):
    monkeypatch.setattr(target, fake_oom(OOM))
    smk = FakeSnakemake(wildcards=SimpleNamespace(**wildcards),
                        params=SimpleNamespace(prepared_dir=str(tmp_path), device="cpu", gpu={}, settings={
                            "n_per_class": 1, "eps": [0.01], "sal_grad": ["through"], "batch_size": 8,
                            "conflict": None}),
                        input=SimpleNamespace(predictor=str(tmp_path / "p.pt"), run=str(tmp_path / "run/run.json")),
                        output=Output([str(tmp_path / "out/model.pt")]), log=[str(tmp_path / f"{script}.log")],
                        threads=1)
    main = runpy.run_path(str(REPO / f"workflow/scripts/{script}.py"))["main"]
    with pytest.raises(SystemExit) as exit_:
        main(smk)
    assert exit_.value.code == 6
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and "more memory" in err, err
    assert "GpuOutOfMemoryError" in (tmp_path / f"{script}.log").read_text()
