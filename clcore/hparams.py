"""Hyperparameter resolution, type checking and run identity (docs/protocol.md#hyperparameter-resolution).

A run's values come from layers, later ones winning: the method's dataclass defaults, the benchmark
protocol (epochs, batch size), the registry name's defaults, `config/hparams/*.yaml` (method -> benchmark
-> `any`, the training scenario `class` / `task`, the buffer size), and explicit overrides (an experiment
block's `overrides`, `--set`, a search grid). Every value, whatever its layer, is checked once here against
the type its dataclass declares (`Literal[...]` lists the allowed values) and coerced where YAML reads it
otherwise (`1e-3` is a string in YAML 1.1, a float here). Overrides change the run's name to
`<method>-h<first 8 hex of sha256(canonical JSON)>`, so they never overwrite another run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Literal

import yaml

from .errors import InputError, UnknownNameError
from .methods import get_method
from .scenarios import get_benchmark

DEFAULTS, PROTOCOL, PRESET = "dataclass default", "benchmark protocol", "registry preset"


class HparamError(InputError):
    """A hyperparameter value that does not fit its declared type or allowed values."""


def load_hparam_tables(hparams_dir) -> dict:
    """method -> (its entry, the file it is in), from every YAML file of `hparams_dir`; a method may appear in
    one file only. Top-level keys starting with "_" only hold YAML anchors (shared protocols)."""
    tables: dict = {}
    for path in sorted(Path(hparams_dir).glob("*.yaml")):
        try:
            entries = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{path} is not valid YAML: {err}") from None
        for method, entry in entries.items():
            if method.startswith("_"):
                continue
            if method in tables:
                raise InputError(f"method '{method}' is defined in two hparam files ({tables[method][1]} and {path})")
            tables[method] = (entry, path)
    return tables


def table_layers(tables: dict, method: str, benchmark: str, buffer_size: int, scenario: str = "class"):
    """The YAML entries that apply, in order: `any`, the training scenario's (`class` / `task`: the BI-R
    family's per-scenario values), the buffer size's; each as (layer name, values)."""
    entry, path = tables.get(method, (None, None))
    by_benchmark = (entry or {}).get(benchmark) or {}
    return [(f"{path}: {method} -> {benchmark} -> {key}", by_benchmark[key])
            for key in ("any", scenario, buffer_size) if by_benchmark.get(key)]


def overrides_hash(overrides: dict) -> str:
    canonical = json.dumps(overrides, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def run_name(method: str, overrides: dict | None) -> str:
    """`<method>[-task][-h<hash>]`. Task-IL training (`scenario: task`, the BI-R family: per-task heads and
    per-task replay) is named, not hashed, so that the tables read `bir-task`; other overrides are hashed
    after type coercion, so `lr: 1e-3` and `lr: 0.001` name the same run."""
    overrides = check_values(method, dict(overrides or {}), "override")
    name = method + ("-task" if overrides.pop("scenario", "class") == "task" else "")
    return f"{name}-h{overrides_hash(overrides)}" if overrides else name


def hparam_layers(method: str, benchmark: str, buffer_size: int, overrides: dict | None = None,
                  hparams_dir="config/hparams", override_layer: str = "override") -> list[tuple[str, dict]]:
    """(layer name, values) from the dataclass defaults to the overrides; later layers win."""
    cls, preset = get_method(method)
    scenario = (overrides or {}).get("scenario", "class")
    tables = load_hparam_tables(hparams_dir)
    return [(DEFAULTS, dataclasses.asdict(cls.Hparams())), (PROTOCOL, get_benchmark(benchmark).protocol()),
            (f"{PRESET} '{method}'", preset), *table_layers(tables, method, benchmark, buffer_size, scenario),
            (override_layer, dict(overrides or {}))]


def resolve_with_sources(method: str, benchmark: str, buffer_size: int, overrides: dict | None = None,
                         hparams_dir="config/hparams", override_layer: str = "override") -> tuple[dict, dict]:
    """(values, layer that set each value) of one run, every value checked against its declared type."""
    values, sources = {}, {}
    for layer, entries in hparam_layers(method, benchmark, buffer_size, overrides, hparams_dir, override_layer):
        checked = check_values(method, entries, layer)
        values.update(checked)
        sources.update(dict.fromkeys(checked, layer))
    return values, sources


def resolve(method: str, benchmark: str, buffer_size: int, overrides: dict | None = None,
            hparams_dir="config/hparams", override_layer: str = "override") -> dict:
    """The complete hyperparameter dict of one run (validated against the method's dataclass)."""
    return resolve_with_sources(method, benchmark, buffer_size, overrides, hparams_dir, override_layer)[0]


def make_hparams(method: str, values: dict, source: str = "the resolved hyperparameters"):
    """The method's Hparams dataclass from a resolved dict, each value checked against its declared type."""
    cls, _ = get_method(method)
    return cls.Hparams(**check_values(method, values, source))


def check_values(method: str, values: dict, source: str) -> dict:
    """`values` coerced to the types the method's Hparams declares; an unknown key names the closest valid
    one, a value that does not fit names the key, the value, the expected type and `source`."""
    cls, _ = get_method(method)
    types_ = typing.get_type_hints(cls.Hparams)
    fields = {f.name for f in dataclasses.fields(cls.Hparams)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise UnknownNameError(f"hyperparameter of '{method}' (from {source})", key, fields)
        try:
            out[key] = coerce(value, types_[key])
        except (TypeError, ValueError) as err:
            raise HparamError(f"hyperparameter '{key}' of '{method}' = {value!r} (from {source}): {err}") from None
    return out


def describe(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is tuple:
        return f"a list of {describe(args[0])}"
    return {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def coerce(value, annotation):
    """`value` as the declared type: numbers from YAML 1.1 strings ('1e-3'), ints where floats are declared,
    tuples from lists; anything else that does not fit raises ValueError saying what was expected."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in sorted(args, key=lambda a: a is not type(None)):  # None first: `null` stays None
            try:
                return coerce(value, arg)
            except ValueError:
                pass
    elif annotation is type(None):
        if value is None:
            return value
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation in (int, float):  # ints where floats are declared, never floats where ints are
        accepted = (int,) if annotation is int else (int, float)
        if isinstance(value, accepted) and not isinstance(value, bool):
            return annotation(value)
        if isinstance(value, str):
            try:
                return annotation(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple and isinstance(value, (list, tuple)):
        item = args[0] if args else typing.Any
        return tuple(v if item is typing.Any else coerce(v, item) for v in value)
    elif annotation is typing.Any or annotation is dict or origin is dict:
        return value
    raise ValueError(f"expected {describe(annotation)}")
