"""Errors with actionable messages. Each carries the exit code the CLI returns for it."""

from __future__ import annotations

import difflib


class CLError(Exception):
    exit_code = 1


class UnknownNameError(CLError, KeyError):
    """An unknown registry name (method, benchmark, backbone, dataset, hyperparameter)."""

    exit_code = 2

    def __init__(self, kind: str, name: str, choices):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        close = difflib.get_close_matches(name, self.choices, n=1, cutoff=0.0)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Valid names: {', '.join(self.choices)}")

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


class DatasetMissingError(CLError):
    exit_code = 2


class ChecksumError(CLError):
    exit_code = 3


class NonFiniteLossError(CLError):
    """A loss became NaN or infinite; the message names the task and the step."""

    exit_code = 4


def lookup(kind: str, registry: dict, name: str):
    """`registry[name]`, or an UnknownNameError that names the closest valid name."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownNameError(kind, name, registry) from None
