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

    @classmethod
    def manual(cls, dataset: str, needed_by: str, searched, found: dict[str, str], layout: str, obtain: str,
               retry: str) -> "DatasetMissingError":
        """The six-part message of datasets.md §3, in its order: who needed what, what the searched
        folder holds, the expected tree, where to get the files, the retry command, and the reminder
        that the default config needs no download."""
        from pathlib import Path

        state = [f"    {item}: {what}" for item, what in found.items()] or ["    (the folder does not exist)"]
        tree = "\n".join("    " + line for line in layout.strip("\n").splitlines())
        return cls("\n".join([
            f"dataset '{dataset}' is not available; it is needed by {needed_by}.",
            f"  searched {Path(searched).resolve()}/:", *state,
            "  expected layout:", tree,
            f"  where to get it: {obtain}",
            f"  then retry: {retry}",
            "  (the default config/config.yaml runs on embedded datasets and needs no download)",
        ]))


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
