"""The conda env files (workflow/envs/*.yaml, README.md#conda): conda-forge only, exact pins, and pins
inside pyproject.toml's ranges. CI has no conda, so this parses the files; it does not build them."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "workflow/envs").glob("*.yaml"))
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
DRIVER_ONLY = {"snakemake", "pygments", "snakemake-executor-plugin-slurm"}  # Snakemake's side (the SLURM
# jobstep re-runs Snakemake from the driver's environment), not inside a job's env


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name: Requirement(r) for r in project["dependencies"]}


def conda_pins(env: dict) -> dict[str, str]:
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            continue
        match = re.fullmatch(r"([a-z0-9_.-]+)=([0-9][0-9a-z.]*)", dep)
        assert match, f"not an exact conda pin: {dep!r}"
        pins[match.group(1)] = match.group(2)
    return pins


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_is_conda_forge_only_with_exact_pins_inside_pyproject_ranges(path):
    env = yaml.safe_load(path.read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    pins = conda_pins(env)
    assert pins["python"] == "3.11"
    reqs = requirements()
    for name, version in pins.items():
        req = reqs.get(CONDA_TO_PYPI.get(name, name))
        if req is not None:
            assert Version(version) in req.specifier, f"{path.name}: {name}={version} outside pyproject's {req}"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["--no-deps -e ../.."]  # this checkout's clcore, its dependencies from conda
    assert (path.parent / "../..").resolve() == REPO


def test_train_env_has_every_runtime_dependency():
    pins = conda_pins(yaml.safe_load((REPO / "workflow/envs/train.yaml").read_text()))
    provided = {CONDA_TO_PYPI.get(name, name) for name in pins}
    assert set(requirements()) - DRIVER_ONLY <= provided


def test_every_rule_names_an_existing_env():
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, re.M)
        envs = re.findall(r'^    conda:\n        "([^"]+)"', text, re.M)
        assert len(envs) == len(rules), f"{smk.name}: {len(rules)} rules, {len(envs)} conda directives"
        assert all((smk.parent / env).resolve().exists() for env in envs)
