"""Methods by registry name, grouped in families.

A name maps to a class plus default hyperparameters, so variants are names (`derpp`, `derpp_ser`, ...)
rather than flags deep in code. Each family is a sub-package listed in FAMILIES: its `__init__` imports
the modules that register its methods and defines FAMILY (`clcore.methods.family.Family`), what the
pipeline needs from it. A method belongs to the family whose package defines its class.
"""

from __future__ import annotations

import importlib

from ..errors import lookup

METHODS: dict[str, tuple[type, dict]] = {}

FAMILIES = ("baselines", "ser", "wscl", "akr", "ar1", "bir")


def register(name: str, **defaults):
    """Class decorator: make the class available as `name`, with `defaults` over its Hparams."""

    def wrap(cls):
        METHODS[name] = (cls, defaults)
        return cls

    return wrap


def _load_all() -> None:
    for family in FAMILIES:
        importlib.import_module(f"{__name__}.{family}")


def method_names() -> list[str]:
    _load_all()
    return sorted(METHODS)


def get_method(name: str) -> tuple[type, dict]:
    _load_all()
    return lookup("method", METHODS, name)


def family_of(method: str):
    """The Family of a registered method (the package that defines its class)."""
    cls, _ = get_method(method)
    package = cls.__module__.removeprefix(f"{__name__}.").split(".")[0]
    return importlib.import_module(f"{__name__}.{package}").FAMILY
