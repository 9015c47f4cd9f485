import pytest
import torch

from clcore import data


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory):
    """digits prepared once per session (seconds)."""
    root = tmp_path_factory.mktemp("prepared")
    data.prepare("digits", root)
    return root
