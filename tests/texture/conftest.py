import pytest


@pytest.fixture(autouse=True)
def one_thread(single_thread_torch):
    """Every test of this folder on one torch thread (tests/conftest.py says why)."""
