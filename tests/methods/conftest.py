"""Fixtures of the trainers' tests on the exactly solvable task."""

import pytest
import torch

from alignlimits.lm.exact import build_exact_model, exact_distribution


@pytest.fixture(scope="module")
def one_thread():
    """The tiny model's ops are microseconds long: thread hand-offs dominate (and the CI box has 2
    shared cores), so these tests run on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def base():
    model, tok = build_exact_model(0)
    return model, tok, exact_distribution(model, tok)
