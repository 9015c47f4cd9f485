"""The Snakemake DAG: dry runs of the default config, errors before any job starts, and one small
end-to-end run in a temporary directory whose Parquet outputs are checked against their schemas."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq
import yaml

from clcore.methods import get_method
from clcore.results import ACCURACY_SCHEMA, RUNS_SCHEMA, load_metrics
from helpers import wait_for_checkpoint_writes

REPO = Path(__file__).resolve().parents[1]


def workdir(tmp_path, config=None) -> Path:
    """A copy of the workflow (not the results) in tmp_path, optionally with another config.yaml."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for item in ("Snakefile", "rules", "workflow", "config"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    if config is not None:
        (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "--cores", "2"]


def snakemake(cwd, *args, check=True):
    cmd = [*SNAKEMAKE, *args]
    out = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    if check and out.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout}")
    return out


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    counts, table = {}, output.split("Job stats:")[-1]
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_default_dag_dry_run(tmp_path):
    out = snakemake(workdir(tmp_path), "-n", "-F", "--quiet", "rules")
    counts = job_counts(out.stdout)
    # each family's headline comparison, 3 seeds: baselines 4 methods x 2 benchmarks (24), SER 4 methods on
    # seq-shapes-ser (12), WSCL 2 methods on seq-shapes-wscl (6), BI-R 3 methods on seq-digits and 2 on seq-shapes
    # (15), AKR 3 methods on seq-digits-akr (9), AR1 4 methods on shapes-nic-40 (12); figures: 3 per benchmark, 2 per
    # block and SER's saliency figure (the stream's are the AR1 report's); the WSCL, AKR and AR1 reports of their blocks
    assert counts == {"all": 1, "prepare_dataset": 2, "train": 24 + 12 + 6 + 15 + 9 + 12, "collect": 1, "tables": 1,
                      "figures": 15, "experiment_table": 7, "experiment_figure": 2 * 7 + 1, "pretrain_saliency": 1,
                      "pseudo_saliency": 1, "pretrain_bir_conv": 1, "wscl_report": 1, "akr_report": 1,
                      "pretrain_ar1_backbone": 1, "ar1_report": 1}


def test_every_embedded_study_builds_its_dag(tmp_path):
    """Each family's whole embedded study, and all of them at once (runs shared by blocks train once)."""
    wd = workdir(tmp_path)
    trains = {name: job_counts(snakemake(wd, "-n", "-F", "--quiet", "rules", "--configfile",
                                         f"config/embedded/{name}.yaml").stdout)["train"]
              for name in ("baselines", "ser", "wscl", "akr", "ar1", "bir", "all")}
    assert trains == {"baselines": 66, "ser": 39, "wscl": 60, "akr": 24, "ar1": 36, "bir": 134, "all": 359}


def small_config(**experiment):
    exp = {"id": "small", "benchmarks": ["seq-digits"], "methods": ["sgd", "er"], "buffers": [50], "seeds": [0, 1]}
    return {"experiments": [{**exp, **experiment}]}


def test_unknown_method_fails_before_any_job_and_suggests(tmp_path):
    out = snakemake(workdir(tmp_path, small_config(methods=["sgd", "derp"])), "-n", check=False)
    assert out.returncode != 0
    assert "unknown method 'derp'" in out.stdout and "Did you mean 'derpp'" in out.stdout


def test_unknown_benchmark_fails_before_any_job(tmp_path):
    out = snakemake(workdir(tmp_path, small_config(benchmarks=["seq-digit"])), "-n", check=False)
    assert out.returncode != 0 and "Did you mean 'seq-digits'" in out.stdout


def test_schema_error_names_the_key(tmp_path):
    config = small_config()
    config["experiments"][0]["seed"] = config["experiments"][0].pop("seeds")
    out = snakemake(workdir(tmp_path, config), "-n", check=False)
    assert out.returncode != 0
    assert "seed" in out.stdout and "seeds" in out.stdout


def test_overrides_change_run_paths(tmp_path):
    config = small_config(methods=["er"], overrides={"er": {"lr": 0.05}})
    out = snakemake(workdir(tmp_path, config), "-n", "-F")
    paths = set(re.findall(r"results/runs/seq-digits/([a-z_0-9-]+)/buf50/seed[01]/metrics.parquet", out.stdout))
    assert len(paths) == 1 and re.fullmatch(r"er-h[0-9a-f]{8}", paths.pop())


def test_end_to_end_small_slice(tmp_path):
    wd = workdir(tmp_path, small_config())
    snakemake(wd)
    runs = pq.read_table(wd / "results/tables/runs.parquet")
    accuracy = pq.read_table(wd / "results/tables/accuracy.parquet")
    assert runs.schema.equals(RUNS_SCHEMA, check_metadata=False) and runs.schema.metadata[b"schema_version"] == b"2"
    assert accuracy.schema.equals(ACCURACY_SCHEMA, check_metadata=False)
    df = runs.to_pandas()
    assert sorted(zip(df.method, df.buffer_size, df.seed)) == [("er", 50, 0), ("er", 50, 1), ("sgd", 0, 0), ("sgd", 0, 1)]
    assert df.class_il_faa.between(0, 100).all() and (df.task_il_faa >= df.class_il_faa).all()
    # 2 settings x (5 trained rows + 1 random-init probe) x 5 evaluated tasks per run
    assert len(accuracy) == 4 * 2 * 6 * 5
    summary = (wd / "results/tables/summary.md").read_text()
    assert "seq-digits" in summary and "±" in summary
    table = (wd / "results/tables/experiments/small.md").read_text()
    assert "| er | 50 | 2 |" in table and "(paper)" not in table  # no published numbers for embedded data
    assert (wd / "results/tables/experiments/small.tex").read_text().startswith("% ")
    for kind in ("accuracy_matrix", "final_accuracy", "accuracy_curve"):
        for ext in ("png", "pdf"):
            assert (wd / f"results/figures/seq-digits_{kind}.{ext}").stat().st_size > 1000
    for kind in ("accuracy_curve", "forgetting"):
        for ext in ("png", "pdf"):
            assert (wd / f"results/figures/experiments/small_{kind}.{ext}").stat().st_size > 1000
    assert not list((wd / "results/runs").rglob("checkpoint.pt"))
    # nothing left to do; the report builds
    assert "Nothing to be done" in snakemake(wd, "-n").stdout
    snakemake(wd, "--report", "report.zip")
    assert (wd / "report.zip").stat().st_size > 0

    # a damaged run: collect names it and the command that trains it again, which then needs nothing deleted
    metrics = wd / "results/runs/seq-digits/er/buf50/seed1/metrics.parquet"
    before = load_metrics(metrics)
    metrics.write_bytes(metrics.read_bytes()[:200])
    out = snakemake(wd, check=False)
    assert out.returncode != 0 and "Error in rule collect" in out.stdout
    assert ("error: run results/runs/seq-digits/er/buf50/seed1: metrics.parquet cannot be read" in out.stdout
            and f"snakemake --cores all --forcerun {metrics.relative_to(wd)}" in out.stdout), out.stdout
    snakemake(wd, "--forcerun", str(metrics.relative_to(wd)))
    pd.testing.assert_frame_equal(load_metrics(metrics), before)


def test_killed_training_job_resumes_when_the_same_command_runs_again(tmp_path):
    """SIGKILL a training job in its third task; running the same Snakemake command again resumes it from
    its task-2 checkpoint, and its accuracies equal those of an uninterrupted run with the same seed."""
    config = small_config(methods=["er"], seeds=[3], overrides={"er": {"n_epochs": 60}})  # ~1 s per task
    killed, reference = (workdir(tmp_path / name, config) for name in ("killed", "reference"))
    proc = subprocess.Popen(SNAKEMAKE, cwd=killed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dirs = lambda root: list(root.glob("results/runs/seq-digits/er-h*/buf50/seed3"))
    while not run_dirs(killed) and proc.poll() is None:
        time.sleep(0.01)
    ckpt = run_dirs(killed)[0] / "checkpoint.pt"
    wait_for_checkpoint_writes(ckpt, 2, proc)  # tasks 1 and 2 are done: the job is in task 3
    job = [p for p in psutil.Process(proc.pid).children(recursive=True) if "train.py" in " ".join(p.cmdline())]
    assert len(job) == 1, job
    job[0].send_signal(signal.SIGKILL)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Error in rule train" in log
    assert ckpt.exists() and not (ckpt.parent / "metrics.parquet").exists()

    snakemake(killed)  # the same command
    assert json.loads((ckpt.parent / "run.json").read_text())["phases"]["resumed_at_task"] == [2]
    snakemake(reference)
    accuracy = lambda d: (lambda m: m[m.metric == "accuracy"].reset_index(drop=True))(load_metrics(d / "metrics.parquet"))
    pd.testing.assert_frame_equal(accuracy(ckpt.parent), accuracy(run_dirs(reference)[0]))


def test_paper_dag_builds_offline_with_the_jobs_of_every_experiment(tmp_path):
    wd = workdir(tmp_path)
    out = snakemake(wd, "-n", "--configfile", "config/paper.yaml")
    found = set(re.findall(r"results/runs/((?:seq|core50)-[a-z0-9-]+)/([a-z0-9_]+(?:-task)?)(-h[0-9a-f]{8})?/buf(\d+)/seed(\d+)/"
                           r"metrics\.parquet", out.stdout))
    runs = {(b, m, buf, s) for b, m, _, buf, s in found}  # a block's overrides add -h<hash> to the method's runs
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())["experiments"]
    enabled = {b for exp in paper if exp.get("enabled", True) for b in exp["benchmarks"]}
    for exp in paper:  # every experiment's (benchmark, method, buffer, seed) is a training job
        if not exp.get("enabled", True):  # AKR's ImageNet-subset blocks wait for data prepared by hand
            assert not any(b in {r[0] for r in runs} for b in set(exp["benchmarks"]) - enabled), exp["id"]
            continue
        suffix = "-task" if exp.get("scenario") == "task" else ""
        expected = {(b, m + suffix, str(buf), str(s)) for b in exp["benchmarks"] for m in exp["methods"]
                    for buf in (exp["buffers"] if get_method(m)[0].uses_buffer else [0]) for s in exp["seeds"]}
        assert expected <= runs, (exp["id"], sorted(expected - runs)[:3])
    # DER Table 2: 2 datasets x 10 seeds x (5 buffer-free + 5 x 3 buffers); seq-cifar100: 5 x (2 + 5 x 2);
    # online ER-ACE: 5 seeds x 2 methods; SER (3 seeds): main tables 2 x 6 methods x 3 buffers, ablation 4 new
    # methods, frozen-saliency 1, spurious benchmark 4 (the clean and adversarial runs are the main tables')
    der, online, ser = 2 * 10 * (5 + 15) + 5 * (2 + 10), 5 * 2, 3 * (2 * 6 * 3 + 4 + 1 + 4)
    # BI-R, 10 seeds on CIFAR-100: Fig. 6c 9, Fig. 6b 8, Fig. 8c and 8b 11 new each; 20 on MNIST: Fig. 3c and 3b
    # 8 each; exaggeration: 6 new methods x 5 seeds (bir_si's seeds are Fig. 6c's)
    bir = 10 * (9 + 8 + 11 + 11) + 20 * (8 + 8) + 6 * 5
    # WSCL, 5 seeds: Table 2 on 3 benchmarks x (6 methods x 2 buffers + 2 buffer-free), of which seq-cifar10's
    # baselines train at 10 epochs (their own runs), Table 3 4 new ablations each; the README block 3 x 2 x 2
    wscl = 5 * 3 * (6 * 2 + 2) + 5 * 3 * 4 + 3 * 2 * 2
    # AKR, 3 seeds on the six CIFAR-100 splits: Base, Mixup, AKR, and the iCaRL row under its own schedule
    akr = 3 * 6 * (3 + 1)
    # AR1, CORe50 NICv2-79/196/391: the main comparison 3 x 7 methods x 5 seeds; the memory sweep on 391, 2 methods x
    # 3 new memories x 5 seeds; the replay-layer sweep, 5 new layers x 5 seeds; the rehearsal-free block's 3 methods x
    # 3 streams at seeds 5-9 (0-4 are the main's)
    ar1 = 3 * 7 * 5 + 2 * 3 * 5 + 5 * 5 + 3 * 3 * 5
    assert job_counts(out.stdout)["train"] == len(found) == der + online + ser + bir + wscl + akr + ar1
    assert job_counts(out.stdout)["pretrain_bir_conv"] == 1  # the conv layers on CIFAR-10, shared by every seed
    assert job_counts(out.stdout)["wscl_report"] == 5
    assert job_counts(out.stdout)["akr_report"] == 2  # the iCaRL-row block has its own report
    assert job_counts(out.stdout)["ar1_report"] == 3 + 5  # one per replay layer; the disabled λ sweep has none
    # ImageNet's MobileNetV1, downloaded and converted once for every CORe50 run
    assert job_counts(out.stdout)["fetch_mobilenet_w1"] == job_counts(out.stdout)["convert_mobilenet_w1"] == 1
    assert job_counts(out.stdout)["fetch_dataset"] == 5  # mnist, cifar10, cifar100, tinyimagenet, core50: once each
    assert not (wd / "resources").exists()  # nothing was downloaded or prepared while building the DAG


def test_downloads_run_in_the_fetch_rule_then_prepare(tmp_path):
    """`fetch_dataset` downloads and verifies the raw files (from a file:// mirror here), `prepare_dataset`
    reads them; a mirror serving other bytes fails the fetch with the md5 message, and the rule is retried."""
    from test_real_data import fake_mnist, write_sources

    wd = workdir(tmp_path / "wd")
    files, arrays = fake_mnist(tmp_path / "mirror")
    shutil.copy(write_sources(tmp_path, "mnist", files), wd / "config/datasets.yaml")
    snakemake(wd, "resources/prepared/mnist/meta.json")
    fetched = json.loads((wd / "resources/raw/mnist/fetched.json").read_text())
    assert sorted(fetched) == sorted(f.name for f in files)
    meta = json.loads((wd / "resources/prepared/mnist/meta.json").read_text())
    assert meta["splits"]["train"]["n"] == len(arrays["train"][1])
    assert {s["name"]: s["sha256"] for s in meta["source"]} == fetched

    files[0].write_bytes(files[1].read_bytes())  # the mirror now serves other bytes for one file
    (wd / "resources/raw/mnist" / files[0].name).unlink()
    out = snakemake(wd, "resources/prepared/mnist/meta.json", "-F", check=False)
    assert out.returncode != 0 and "Error in rule fetch_dataset" in out.stdout
    assert out.stdout.count("localrule fetch_dataset:") == 4  # the first try and `retries: 3`
    assert "md5 mismatch (expected " in (wd / "logs/fetch_dataset/mnist.log").read_text()
    assert not (wd / "resources/raw/mnist" / files[0].name).exists()


def test_task_il_block_end_to_end_names_its_runs_and_reports_its_setting_with_sem(tmp_path):
    """A BI-R task-IL block (docs/bir.md#task-il-training): runs named <method>-task with the task values of
    the hparams table, the block's table with only its task-IL column (± SEM), its Fig. 8 bars."""
    tiny = {"iters": 20, "batch_size": 32}
    config = small_config(methods=["gr_none", "bir"], seeds=[0, 1], scenario="task", settings=["task_il"],
                          spread="sem", figures=["ablation_bars"], overrides={m: tiny for m in ("gr_none", "bir")})
    config["experiments"][0].pop("buffers")
    wd = workdir(tmp_path, config)
    snakemake(wd, "results/tables/experiments/small.md", "results/figures/experiments/small_ablation_bars.png")
    runs = sorted(p.relative_to(wd / "results/runs") for p in (wd / "results/runs").glob("*/*/buf0/seed*"))
    assert {p.parts[1].partition("-h")[0] for p in runs} == {"gr_none-task", "bir-task"} and len(runs) == 4
    info = json.loads((wd / "results/runs" / runs[0] / "run.json").read_text())
    assert info["hparams"]["scenario"] == "task" and info["hparams"]["class_order"] == "bir_seeded"
    table = (wd / "results/tables/experiments/small.md").read_text()
    assert "Task-IL" in table and "Class-IL" not in table and "mean ± SEM [95% confidence interval" in table
    assert (wd / "results/figures/experiments/small_ablation_bars.png").stat().st_size > 1000
