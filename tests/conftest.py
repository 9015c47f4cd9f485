import pytest
import torch

from clcore import data
from helpers import SUMMARY


def pytest_configure(config):
    config.stash[SUMMARY] = []


def pytest_terminal_summary(terminalreporter, config):
    if config.stash[SUMMARY]:
        terminalreporter.section("summary lines from the tests")
        for line in config.stash[SUMMARY]:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory):
    """digits prepared once per session (seconds)."""
    root = tmp_path_factory.mktemp("prepared")
    data.prepare("digits", root)
    return root
