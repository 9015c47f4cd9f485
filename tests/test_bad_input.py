"""Bad input never crashes with a traceback or yields a silent wrong result: each case, run as a user would, ends
with one clear message and its documented exit code (README "Troubleshooting"), and changes no existing result."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from clcore import data
from clcore.cli import main
from clcore.io import run_lock

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: prepared digits, the hparams, and one finished run (the result nothing may change)."""
    root = tmp_path_factory.mktemp("ws")
    data.prepare("digits", root / "prepared")
    shutil.copytree(REPO / "config/hparams", root / "hparams")
    result = clcore(root, "train", "-b", "seq-digits", "-m", "sgd", "--seed", "0", "--set", "n_epochs=1")
    assert result.exit_code == 0, result.output
    return root


def clcore(root, command, *args, debug=False):
    places = {"train": ["--prepared-dir", root / "prepared", "--results-dir", root / "results",
                        "--hparams-dir", root / "hparams", "--device", "cpu"],
              "hparams": ["--hparams-dir", root / "hparams"]}.get(command, [])
    argv = [*(["--debug"] if debug else []), command, *map(str, places), *map(str, args)]  # args win
    return CliRunner().invoke(main, argv)


def digests(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".verified.json"}


RUN = ("-b", "seq-digits", "-m", "sgd", "--seed", "0", "--set", "n_epochs=1")  # the finished run of `ws`


def damaged_copy_of_digits(root, tmp_path):
    """A copy of the prepared digits with 64 bytes of train.x.npy overwritten (its size unchanged)."""
    shutil.copytree(root / "prepared", tmp_path / "prepared")
    path = tmp_path / "prepared/digits/train.x.npy"
    with open(path, "r+b") as f:
        f.seek(1024)
        f.write(bytes(64))
    return ["--prepared-dir", tmp_path / "prepared"]


def finished_run_copy(root, tmp_path, damage):
    run = tmp_path / "results/runs/seq-digits/sgd-h1/buf0/seed0"
    shutil.copytree(next((root / "results/runs/seq-digits").glob("sgd-h*/buf0/seed0")), run)
    damage(run)
    return [run, "--out-dir", tmp_path / "tables"]


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[:100])


def bad_hparams_file(root, tmp_path):
    shutil.copytree(root / "hparams", tmp_path / "hparams")
    table = yaml.safe_load((tmp_path / "hparams/baselines.yaml").read_text())
    table["er"]["seq-digits"] = {"any": {"lr": "fast"}}
    (tmp_path / "hparams/baselines.yaml").write_text(yaml.safe_dump(table))
    return ["--hparams-dir", tmp_path / "hparams"]


def corrupt_download(root, tmp_path):
    from test_real_data import fake_mnist, write_sources

    files, _ = fake_mnist(tmp_path / "mirror")
    sources = write_sources(tmp_path, "mnist", files)
    files[0].write_bytes(files[1].read_bytes())  # the mirror now serves other bytes than its md5 says
    return ["--sources", sources, "--raw-dir", tmp_path / "raw"]


# (id, command, args, setup(root, tmp_path) -> extra args, exit code, message fragments)
CASES = [
    ("unknown_method", "train", ["-b", "seq-digits", "-m", "derp", "--buffer", "10"], None, 2,
     ["unknown method 'derp'", "Did you mean 'derpp'"]),
    ("unknown_benchmark", "train", ["-b", "seq-digit", "-m", "sgd"], None, 2,
     ["unknown benchmark 'seq-digit'", "Did you mean 'seq-digits'"]),
    ("unknown_hyperparameter", "train", ["-b", "seq-digits", "-m", "derpp", "--buffer", "10", "--set", "alpah=0.2"],
     None, 2, ["unknown hyperparameter of 'derpp' (from --set) 'alpah'", "Did you mean 'alpha'"]),
    ("value_not_a_number", "train", ["-b", "seq-digits", "-m", "er", "--buffer", "100", "--set", "lr=abc"], None, 2,
     ["hyperparameter 'lr' of 'er' = 'abc' (from --set): expected a number"]),
    ("value_not_allowed", "hparams", ["-b", "seq-digits", "-m", "icarl", "--buffer", "10", "--set", "nmc=mean"], None,
     2, ["'nmc' of 'icarl' = 'mean' (from --set): expected one of 'legacy', 'exact', 'current'"]),
    ("yaml_value_not_a_number", "train", ["-b", "seq-digits", "-m", "er", "--buffer", "100"], bad_hparams_file, 2,
     ["'lr' of 'er' = 'fast'", "baselines.yaml: er -> seq-digits -> any): expected a number"]),
    ("buffer_missing", "train", ["-b", "seq-digits", "-m", "er"], None, 2,
     ["method 'er' replays from a buffer: give a buffer size > 0"]),
    ("non_finite_loss", "train", ["-b", "seq-digits", "-m", "sgd", "--set", "lr=1e30"], None, 4,
     ["non-finite loss in task 1", "Lower the learning rate"]),
    ("damaged_prepared_data", "train", list(RUN), damaged_copy_of_digits, 3,
     ["train.x.npy changed after it was written", "clcore prepare digits --force",
      "snakemake --cores all --forcerun"]),
    ("truncated_metrics", "collect", [], lambda r, t: finished_run_copy(r, t, lambda d: truncate(d / "metrics.parquet")),
     8, ["sgd-h1/buf0/seed0: metrics.parquet cannot be read", "the file is damaged",
         "--forcerun", "sgd-h1/buf0/seed0/metrics.parquet"]),
    ("truncated_run_json", "collect", [], lambda r, t: finished_run_copy(r, t, lambda d: truncate(d / "run.json")),
     8, ["run.json cannot be read", "--forcerun"]),
    ("missing_manual_dataset", "prepare", ["salicon@288x384"],
     lambda r, t: ["--raw-dir", t / "raw", "--prepared-dir", t / "prepared"], 2,
     ["dataset 'salicon@288x384' is not available", "expected layout", "then retry"]),
    ("corrupt_download", "fetch", ["mnist"], corrupt_download, 3, ["md5 mismatch"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_message_and_loses_nothing(ws, tmp_path, case):
    _, command, args, setup, code, fragments = case
    before = digests(ws)
    extra = setup(ws, tmp_path) if setup else []
    result = clcore(ws, command, *args, *extra)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "error: " in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
    assert digests(ws) == before  # no existing result (or dataset) was changed


def test_debug_shows_the_traceback(ws):
    result = clcore(ws, "train", "-b", "seq-digits", "-m", "derp", debug=True)
    assert result.exit_code != 0 and type(result.exception).__name__ == "UnknownNameError"


def test_a_run_in_progress_is_not_trained_twice_and_a_stale_lock_is_taken_over(ws):
    run = next((ws / "results/runs/seq-digits").glob("sgd-h*/buf0/seed0"))
    before = digests(ws)
    with run_lock(run, "the same run"):  # another process trains it
        result = clcore(ws, "train", *RUN)
    assert result.exit_code == 7 and "is already training in process" in result.output, result.output
    assert "Traceback" not in result.output and digests(ws) == before
    (run / ".lock").write_text("process 1 on a node that died")  # left by a killed run: no process holds it
    result = clcore(ws, "train", *RUN)
    assert result.exit_code == 0, result.output
    assert not (run / ".lock").exists()


def test_prepared_data_is_hashed_only_when_its_stamp_changed(ws, tmp_path):
    """A load checks size and modification time; a changed time costs one sha256, after which the file is trusted
    again; bytes that differ fail even where the size is the same."""
    shutil.copytree(ws / "prepared", tmp_path / "prepared")
    folder = tmp_path / "prepared/digits"
    data.load("digits", "train", tmp_path / "prepared")
    assert not (folder / ".verified.json").exists()  # stamps as written: nothing hashed
    x = folder / "train.x.npy"
    x.touch()
    data.load("digits", "train", tmp_path / "prepared")
    assert x.name in yaml.safe_load((folder / ".verified.json").read_text())  # hashed once, now trusted
    np.save(x, np.zeros_like(np.load(x)))  # other bytes, same size
    with pytest.raises(Exception, match="changed after it was written"):
        data.load("digits", "train", tmp_path / "prepared")


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "--cores", "1", "-n"]


@pytest.mark.parametrize("change, fragments", [
    (lambda exp: exp.update(seed=exp.pop("seeds")), ["seed", "seeds"]),  # a schema error names the key
    (lambda exp: exp.update(methods=["derp"]), ["unknown method 'derp'", "Did you mean 'derpp'"]),
    (lambda exp: exp.update(overrides={"er": {"lr": "abc"}}),
     ["'lr' of 'er' = 'abc' (from experiment 'small' overrides): expected a number"]),
], ids=["schema", "unknown_method", "override_value"])
def test_bad_configs_fail_before_any_job(tmp_path, change, fragments):
    from test_pipeline import small_config, workdir

    config = small_config()
    change(config["experiments"][0])
    out = subprocess.run(SNAKEMAKE, cwd=workdir(tmp_path, config), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and not (tmp_path / "results").exists()
    for fragment in fragments:
        assert fragment in out.stdout + out.stderr, (fragment, out.stdout + out.stderr)
