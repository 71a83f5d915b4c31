"""Fixtures of the yardstick's tests: the exact task's base samples and the frontier fitted on them."""

import pytest
import torch

from exact_samples import base_samples


@pytest.fixture(scope="module")
def one_thread():
    """The tiny model's ops are microseconds long: thread hand-offs dominate on the 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def base_table():
    return base_samples()
