"""Every experiment of the source papers as data for the runner (`phi_hig.train`).

Each experiment lives in the module of its name and is built by the function of the same name,
``factory(preset='paper', **settings) -> Experiment``; ``preset='test'`` gives the tiny version the test
suite runs. Every factory validates its preset and settings by one rule, read from its signature
(`phi_hig.experiments.settings`): an unknown preset, an unknown setting or a value of the wrong type or range
raises `InvalidInputError` naming the setting and what is allowed. Modules load on first use, so listing
experiments imports nothing heavy. No experiment module imports another.
"""
from __future__ import annotations

import importlib

from .base import Experiment, DataStream, inputs_as_conditions
from ..sip.inverses import Inverse
from .settings import PRESETS
from . import settings as _settings

HIG_EXPERIMENTS = ('toy', 'oscillators', 'poisson8', 'quantum_dipole', 'linear_chain')
SIP_EXPERIMENTS = ('poisson', 'heat', 'fluid', 'sine', 'exp', 'synthetic2d')
NAMES = HIG_EXPERIMENTS + SIP_EXPERIMENTS
"""All experiment names, each a module of this package: `HIG_EXPERIMENTS` (Schnell, Holl & Thuerey 2022, §2.1 and
§3.1–3.3; the linear chain of Thuerey et al., Physics-based Deep Learning) and `SIP_EXPERIMENTS` (Holl, Koltun &
Thuerey 2021, §3 and appendix B; Holl, Koltun & Thuerey 2022, §3)."""


def factory(name: str):
    """The factory function of experiment ``name`` (its module is imported on first use).

    Raises:
        InvalidInputError: ``name`` is not one of `NAMES`.

    >>> factory('toy').__name__
    'toy'
    >>> factory('toys')
    Traceback (most recent call last):
    phi_hig.errors.InvalidInputError: unknown experiment 'toys'; known: toy, oscillators, poisson8, quantum_dipole, linear_chain, poisson, heat, fluid, sine, exp, synthetic2d
    """
    from ..errors import InvalidInputError
    if name not in NAMES:
        raise InvalidInputError(f"unknown experiment {name!r}; known: {', '.join(NAMES)}")
    fn = getattr(importlib.import_module(f'.{name}', __name__), name)
    globals()[name] = fn  # the package attribute is the factory, not the submodule of the same name
    return fn


def available() -> list:
    """The experiment names as a list: `NAMES` (every experiment has its module)."""
    return list(NAMES)


def get(name: str, preset: str = 'paper', **settings) -> Experiment:
    """Build the experiment ``name`` at ``preset`` with the given settings (e.g. ``gamma=1``).

    Raises:
        InvalidInputError: unknown experiment, preset or setting, or a setting value of the wrong type or range
            (see `validate_settings`).
    """
    return factory(name)(preset=preset, **settings)


def validate_settings(name: str, preset: str, settings: dict) -> dict:
    """The parsed settings of experiment ``name`` at ``preset``, validated as `get` would, without building it.

    Returns:
        The settings with canonical values (ints converted to float where a number is declared, lists to tuples,
        NumPy scalars to Python numbers); defaults are not included.

    Raises:
        InvalidInputError: unknown experiment or preset (one of `PRESETS`), a setting that is not a parameter of
            the factory (the message lists the known ones), or a value of the wrong type or range.
    """
    return _settings.validate(factory(name), preset, settings)


def setting_defaults(name: str) -> dict:
    """The settings of experiment ``name`` and their defaults (at preset 'paper'), in signature order."""
    return {key: default for key, (_, default) in _settings.parameters(factory(name)).items()}


def __getattr__(name):
    if name in NAMES:
        return factory(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ['Experiment', 'Inverse', 'DataStream', 'inputs_as_conditions', 'NAMES', 'HIG_EXPERIMENTS',
           'SIP_EXPERIMENTS', 'PRESETS', 'factory', 'available', 'get', 'validate_settings', 'setting_defaults']
