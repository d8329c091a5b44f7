"""Every experiment of the source papers as data for the runner (`phi_hig.train`).

``EXPERIMENTS`` maps a name to a factory ``factory(preset='paper', **settings) -> Experiment``.
"""
from __future__ import annotations

from .base import Experiment, DataStream
from .toy import toy

EXPERIMENTS = {
    'toy': toy,
}


def get(name: str, **settings) -> Experiment:
    """Build the experiment ``name`` with the given settings (e.g. ``preset='test'``, ``gamma=1``)."""
    from ..errors import InvalidInputError
    if name not in EXPERIMENTS:
        raise InvalidInputError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name](**settings)


__all__ = ['Experiment', 'DataStream', 'EXPERIMENTS', 'get', 'toy']
