"""Every experiment of the source papers as data for the runner (`phi_hig.train`).

Each experiment lives in the module of its name and is built by the function of the same name,
``factory(preset='paper', **settings) -> Experiment``; ``preset='test'`` gives the tiny version the test
suite runs. Modules load on first use, so listing experiments imports nothing heavy.
"""
from __future__ import annotations

import importlib

from .base import Experiment, DataStream

HIG_EXPERIMENTS = ('toy', 'oscillators', 'poisson8', 'quantum_dipole', 'linear_chain')
SIP_EXPERIMENTS = ('poisson', 'heat', 'fluid', 'sine', 'exp', 'synthetic2d')
NAMES = HIG_EXPERIMENTS + SIP_EXPERIMENTS
"""All registered experiment names."""


def factory(name: str):
    """The factory function of experiment ``name``."""
    from ..errors import InvalidInputError
    if name not in NAMES:
        raise InvalidInputError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")
    try:
        module = importlib.import_module(f'.{name}', __name__)
    except ModuleNotFoundError as err:
        if err.name == f'{__name__}.{name}':
            raise InvalidInputError(f"experiment {name!r} is registered but not implemented yet") from err
        raise
    fn = getattr(module, name)
    globals()[name] = fn  # the package attribute is the factory, not the submodule of the same name
    return fn


def available() -> list:
    """The registered experiments whose module exists."""
    import importlib.util
    return [n for n in NAMES if importlib.util.find_spec(f'.{n}', __name__) is not None]


def get(name: str, **settings) -> Experiment:
    """Build the experiment ``name`` with the given settings (e.g. ``preset='test'``, ``gamma=1``)."""
    return factory(name)(**settings)


def __getattr__(name):
    if name in NAMES:
        return factory(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ['Experiment', 'DataStream', 'NAMES', 'HIG_EXPERIMENTS', 'SIP_EXPERIMENTS', 'factory', 'available',
           'get']
