"""Shared test fixtures. tests/ is put on sys.path so tests can import each other's reference helpers."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _compile_faster_on_cpu(tested=('0.10.',)) -> None:
    """Make XLA compile the tests' small programs faster (set in the environment, so the subprocesses the tests
    start inherit it). XLA compiles every eager JAX operation once per shape, and the tests run tiny shapes a few
    times each; they check results, never speed (the benchmarks run with JAX's defaults).

    * ``JAX_DISABLE_MOST_OPTIMIZATIONS=1``: skips XLA's optimization passes (the JAX tests 20–30 % faster).
    * ``--xla_cpu_use_fusion_emitters=false`` added to ``XLA_FLAGS``: XLA's older CPU emitters (the JAX tests took
      109 s with the new emitters, 77 s without, on 2 cores). Only for the jaxlib versions it was tried on, as XLA
      aborts the process on a flag it does not know; left alone when the user's ``XLA_FLAGS`` names it.
    """
    from importlib import metadata
    os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
    try:
        version = metadata.version('jaxlib')
    except metadata.PackageNotFoundError:
        return
    flags = os.environ.get('XLA_FLAGS', '')
    if version.startswith(tested) and 'xla_cpu_use_fusion_emitters' not in flags:
        os.environ['XLA_FLAGS'] = f"{flags} --xla_cpu_use_fusion_emitters=false".strip()


_compile_faster_on_cpu()

REQUIRE_JAX = 'PHI_HIG_REQUIRE_JAX'
"""Set (to 1) by scripts/test.sh, the project's test command that CI runs: the JAX tests skip where jax is not
installed (a checkout without the extra), but under the test command a missing jax fails the run."""


def pytest_sessionstart(session):
    """Under `REQUIRE_JAX` the run stops at once, failed, when jax does not import (the JAX tests never skip in CI)."""
    if os.environ.get(REQUIRE_JAX, '') not in ('', '0'):
        try:
            import jax  # noqa: F401
        except ImportError as err:
            pytest.exit(f"{REQUIRE_JAX} is set but jax does not import ({err}): scripts/setup.sh installs the jax "
                        f"extra (pip install -e '.[jax]'), so that the JAX tests run instead of skipping", returncode=1)


@pytest.fixture(autouse=True)
def seeded_global_generators():
    """Every test starts from the same global random state (Python, NumPy, torch), whatever ran before it, so a test
    run alone draws what it draws in the whole suite."""
    import random
    import numpy as np
    import torch
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def _set_during_test(get, set_, value):
    """Set a global with ``set_(value)`` for one test and restore what ``get()`` returned before."""
    previous = get()
    set_(value)
    yield
    set_(previous)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (tiny problems on a shared CPU), restored afterwards."""
    import torch
    yield from _set_during_test(torch.get_num_threads, torch.set_num_threads, 1)


@pytest.fixture
def float64():
    """Run a test with PhiML's global precision at 64 bit, restored afterwards."""
    from phiml import math
    yield from _set_during_test(math.get_precision, math.set_global_precision, 64)


@pytest.fixture(autouse=True)
def phiml_default_backend():
    """Restore PhiML's global default backend after every test: a script under test that runs
    ``from phi.torch.flow import *`` (the library demos) switches it to torch for the rest of the process."""
    from phiml import backend
    yield from _set_during_test(backend.default_backend, backend.set_global_default_backend, backend.default_backend())
