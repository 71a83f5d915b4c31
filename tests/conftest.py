"""Shared test fixtures."""

import pytest

from cli_helpers import CLI


@pytest.fixture(scope="session")
def cli() -> CLI:
    return CLI()
