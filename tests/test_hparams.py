"""Hyperparameter resolution: every value checked once against its declared type, from any layer, and the
layer that set each value (`clcore hparams`)."""

from typing import Literal

import pytest
from click.testing import CliRunner

from clcore.cli import main
from clcore.errors import UnknownNameError
from clcore.hparams import HparamError, coerce, make_hparams, resolve, resolve_with_sources, run_name


@pytest.mark.parametrize("value, annotation, expected", [
    ("1e-3", float, 0.001),          # YAML 1.1 reads 1e-3 as a string
    (3, float, 3.0),
    ("5", int, 5),
    ([4, "6"], tuple[int, ...], (4, 6)),
    (None, float | None, None),
    ("0.5", float | None, 0.5),
    ("eval", Literal["train", "eval"], "eval"),
    (True, bool, True),
])
def test_values_are_coerced_to_their_declared_type(value, annotation, expected):
    out = coerce(value, annotation)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, annotation, message", [
    ("abc", float, "expected a number"),
    (True, float, "expected a number"),     # a bool is no number here
    (2.5, int, "expected an integer"),
    ("yes", bool, "expected true or false"),
    (1, bool, "expected true or false"),
    ("Eval", Literal["train", "eval"], "expected one of 'train', 'eval'"),
    ([1, "x"], tuple[int, ...], "expected an integer"),
])
def test_values_that_do_not_fit_say_what_was_expected(value, annotation, message):
    with pytest.raises(ValueError, match=message):
        coerce(value, annotation)


def test_errors_name_the_key_the_value_the_type_and_the_layer(tmp_path):
    with pytest.raises(HparamError, match=r"'nmc' of 'icarl' = 'mean' \(from override\): expected one of 'legacy', "
                                          r"'exact', 'current'"):
        resolve("icarl", "seq-digits", 50, {"nmc": "mean"})
    (tmp_path / "mine.yaml").write_text("er:\n  seq-digits: {any: {lr: fast}}\n")
    with pytest.raises(HparamError, match=r"'lr' of 'er' = 'fast' \(from .*mine.yaml: er -> seq-digits -> any\)"):
        resolve("er", "seq-digits", 50, hparams_dir=tmp_path)
    with pytest.raises(UnknownNameError, match="Did you mean 'minibatch_size'"):
        make_hparams("er", {"minibatch": 8})


def test_each_value_knows_the_layer_that_set_it():
    values, sources = resolve_with_sources("derpp", "seq-shapes", 100, {"alpha": "0.2"}, override_layer="--set")
    assert values["alpha"] == 0.2 and sources["alpha"] == "--set"
    assert sources["beta"] == "config/hparams/baselines.yaml: derpp -> seq-shapes -> any" and values["beta"] == 1.0
    assert sources["n_epochs"] == "benchmark protocol" and values["n_epochs"] == 5
    assert sources["minibatch_size"] == "dataclass default"
    _, bir = resolve_with_sources("bir", "seq-digits", 0)
    assert bir["prior"] == "registry preset 'bir'"
    assert run_name("er", {"lr": "1e-3"}) == run_name("er", {"lr": 0.001})  # the hash sees the coerced value


def test_cli_prints_the_resolved_values_with_their_layers():
    result = CliRunner().invoke(main, ["hparams", "-b", "seq-shapes", "-m", "derpp", "--buffer", "100",
                                       "--set", "lr=1e-3"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert result.output.startswith("seq-shapes / derpp-h") and "0.001" in lines["lr"] and lines["lr"].endswith("--set")
    assert lines["beta"].endswith("derpp -> seq-shapes -> any") and lines["n_epochs"].endswith("benchmark protocol")
    bad = CliRunner().invoke(main, ["train", "-b", "seq-digits", "-m", "er", "--buffer", "100", "--set", "lr=abc"])
    assert bad.exit_code == 2 and "error: hyperparameter 'lr' of 'er' = 'abc' (from --set): expected a number" in bad.output
