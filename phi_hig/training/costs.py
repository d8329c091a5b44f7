"""What a training step costs, known before a run: the reference costs measured on the project's CPU, and the
check of a time budget against them.

``step_costs.json`` next to this module holds, per experiment at its paper preset, the seconds per step of every
method it offers, measured by ``python -m benchmarks.step_costs`` with the runner itself (the header names the
machine, its load and the date). `reference_cost` finds the measurement that applies to a run: the same
experiment, preset, settings and batch size; a run of other sizes has none (its first step is then the estimate,
`phi_hig.training.loop.MethodRun`). ``python -m phi_hig list`` shows them, ``python -m phi_hig run`` warns before
training when a method's reference cost leaves fewer than `phi_hig.training.loop.MIN_STEPS` steps in its time
budget.
"""
from __future__ import annotations

import functools
import json
import math
import os
from typing import Optional

__all__ = ['REFERENCE_FILE', 'reference_costs', 'reference_cost', 'human_seconds']

REFERENCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'step_costs.json')
"""The measured reference costs (written by ``python -m benchmarks.step_costs``)."""


@functools.lru_cache(maxsize=1)
def reference_costs() -> dict:
    """The contents of `REFERENCE_FILE` (``date``, ``machine``, ``experiments``: name -> ``settings``,
    ``parameters``, ``outputs``, ``methods``: name -> ``batch_size``, ``seconds_per_step``, ``first_step``); an
    empty dict when the file is missing or unreadable (then no cost is known in advance)."""
    try:
        with open(REFERENCE_FILE) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get('experiments'), dict) else {}


def _same(a, b) -> bool:
    """Settings compared as JSON stores them (tuples as lists)."""
    return json.loads(json.dumps(a, default=float)) == json.loads(json.dumps(b, default=float))


def reference_cost(experiment, method: str, batch_size: Optional[int] = None) -> Optional[dict]:
    """The reference measurement of ``method`` on ``experiment`` (an `Experiment`) when it applies: measured at the
    same settings (preset included) and batch size (default: the measured one). None otherwise.

    Returns:
        ``dict(seconds_per_step, first_step, batch_size)``.

    >>> from phi_hig.experiments import toy
    >>> cost = reference_cost(toy(), 'hig')
    >>> cost is None or cost['seconds_per_step'] > 0
    True
    >>> reference_cost(toy(n_points=64), 'hig') is None  # other settings: not measured
    True
    """
    entry = reference_costs().get('experiments', {}).get(experiment.name)
    if not entry or not _same(entry.get('settings'), experiment.settings):
        return None
    cost = entry.get('methods', {}).get(method)
    if not cost or (batch_size is not None and batch_size != cost.get('batch_size')):
        return None
    if not (isinstance(cost.get('seconds_per_step'), (int, float)) and cost['seconds_per_step'] > 0):
        return None
    return dict(seconds_per_step=float(cost['seconds_per_step']), first_step=float(cost.get('first_step', math.nan)),
                batch_size=cost.get('batch_size'))


def human_seconds(seconds: float) -> str:
    """A duration for a table: ``0.8 ms``, ``42 ms``, ``1.3 s``, ``43 s``, ``12 min``.

    >>> [human_seconds(s) for s in (8e-4, 0.042, 1.3, 42.9, 720)]
    ['0.8 ms', '42 ms', '1.3 s', '43 s', '12 min']
    """
    if not isinstance(seconds, (int, float)) or math.isnan(seconds):
        return '–'
    if seconds < 1:
        ms = seconds * 1e3
        return f'{ms:.1f} ms' if ms < 9.95 else f'{ms:.0f} ms'
    if seconds < 10:
        return f'{seconds:.1f} s'
    if seconds < 600:
        return f'{seconds:.0f} s'
    return f'{seconds / 60:.0f} min'
