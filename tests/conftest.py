"""Shared test fixtures. tests/ is put on sys.path so tests can import each other's reference helpers."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def float64():
    """Run a test with PhiML's global precision at 64 bit, restored afterwards."""
    from phiml import math
    previous = math.get_precision()
    math.set_global_precision(64)
    yield
    math.set_global_precision(previous)
