"""Hyperparameter resolution and run identity.

Resolved values, later ones winning: the method's dataclass defaults, the benchmark protocol
(epochs, batch size), the registry name's defaults, `config/hparams/*.yaml`
(method -> benchmark -> `any`, `class` / `task`, buffer size), and explicit overrides. Overrides change the run's
name to `<method>-h<first 8 hex of sha256(canonical JSON)>`, so they never overwrite another run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import yaml

from .methods import get_method, make_hparams
from .scenarios import get_benchmark


def load_hparam_tables(hparams_dir) -> dict:
    """Merge every YAML file of `hparams_dir`; a method may appear in one file only. Top-level keys
    starting with "_" only hold YAML anchors (shared protocols) and are not methods."""
    tables: dict = {}
    for path in sorted(Path(hparams_dir).glob("*.yaml")):
        for method, entry in (yaml.safe_load(path.read_text()) or {}).items():
            if method.startswith("_"):
                continue
            if method in tables:
                raise ValueError(f"method '{method}' is defined in two hparam files (second: {path})")
            tables[method] = entry
    return tables


def table_entry(tables: dict, method: str, benchmark: str, buffer_size: int, scenario: str = "class") -> dict:
    """`any`, then the training scenario's entry (`class` / `task`: the BI-R family's per-scenario values),
    then the buffer size's."""
    by_benchmark = (tables.get(method) or {}).get(benchmark) or {}
    return {**(by_benchmark.get("any") or {}), **(by_benchmark.get(scenario) or {}),
            **(by_benchmark.get(buffer_size) or {})}


def overrides_hash(overrides: dict) -> str:
    canonical = json.dumps(overrides, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def run_name(method: str, overrides: dict | None) -> str:
    """`<method>[-task][-h<hash>]`. Task-IL training (`scenario: task`, the BI-R family: per-task heads and
    per-task replay) is named, not hashed, so that the tables read `bir-task`; other overrides are hashed."""
    overrides = dict(overrides or {})
    name = method + ("-task" if overrides.pop("scenario", "class") == "task" else "")
    return f"{name}-h{overrides_hash(overrides)}" if overrides else name


def resolve(method: str, benchmark: str, buffer_size: int, overrides: dict | None = None,
            hparams_dir="config/hparams") -> dict:
    """The complete hyperparameter dict of one run (validated against the method's dataclass)."""
    cls, variant_defaults = get_method(method)
    values = dataclasses.asdict(cls.Hparams())
    values.update(get_benchmark(benchmark).protocol())
    values.update(variant_defaults)
    scenario = (overrides or {}).get("scenario", "class")
    values.update(table_entry(load_hparam_tables(hparams_dir), method, benchmark, buffer_size, scenario))
    values.update(overrides or {})
    return dataclasses.asdict(make_hparams(method, values))
