"""Methods by registry name. A name maps to a class plus default hyperparameters, so variants are
names (`derpp`, `derpp_ser`, ...) rather than flags deep in code."""

from __future__ import annotations

import dataclasses
import importlib

from ..errors import UnknownNameError, lookup

METHODS: dict[str, tuple[type, dict]] = {}

_MODULES = ("sgd", "joint", "er", "der", "er_ace", "icarl", "lwf", "ewc_on", "si", "ser", "gr_baselines", "bir", "bir_exag")


def register(name: str, **defaults):
    """Class decorator: make the class available as `name`, with `defaults` over its Hparams."""

    def wrap(cls):
        METHODS[name] = (cls, defaults)
        return cls

    return wrap


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def method_names() -> list[str]:
    _load_all()
    return sorted(METHODS)


def get_method(name: str) -> tuple[type, dict]:
    _load_all()
    return lookup("method", METHODS, name)


def make_hparams(name: str, values: dict):
    """The method's Hparams dataclass from a resolved dict; unknown keys name the closest valid one."""
    cls, _ = get_method(name)
    fields = {f.name for f in dataclasses.fields(cls.Hparams)}
    for key in values:
        if key not in fields:
            raise UnknownNameError(f"hyperparameter of '{name}'", key, fields)
    return cls.Hparams(**values)
