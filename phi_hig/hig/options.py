"""What a HIG optimizer holds and reports on either backend (`phi_hig.HIG` on torch, `phi_hig.hig.jax_optimizer.JaxHIG`
on JAX): the learning-rate rule, the options held outside the parameter groups, and the diagnostics of a step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import checks
from ..errors import InvalidInputError
from .spectral import HalfInverse, choose_path

__all__ = ['validated_arguments', 'learning_rate_of', 'hig_options', 'HIGStepInfo', 'reported_path', 'OPTION_KEYS']

OPTION_KEYS = ('max_bytes', 'chunk_rows', 'structured')
"""The settings a HIG optimizer holds as attributes, not in its parameter groups (`hig_options`)."""


def validated_arguments(learning_rate, truncation, kappa, beta, relative, path, max_bytes, chunk_rows, structured,
                        lr=None, method=None) -> tuple:
    """The arguments of a HIG optimizer's constructor (torch `phi_hig.HIG` and JAX
    `phi_hig.hig.jax_optimizer.JaxHIG` alike), validated: ``(η, HalfInverse settings, options)``.

    >>> eta, settings, options = validated_arguments(1.0, 1e-6, -0.5, 0.0, True, 'auto', None, 64, None, lr=0.1)
    >>> eta, settings.kappa, options['chunk_rows']
    (0.1, -0.5, 64)

    Raises:
        InvalidInputError: any argument out of its range (`learning_rate_of`, `phi_hig.hig.spectral.HalfInverse`,
            `hig_options`).
    """
    eta = learning_rate_of(learning_rate, lr)
    settings = HalfInverse(kappa, beta, truncation, relative, choose_path(path, method, 'HIG'))
    options = hig_options(dict(max_bytes=max_bytes, chunk_rows=chunk_rows, structured=structured))
    return eta, settings, options


def learning_rate_of(learning_rate: float = 1.0, lr: Optional[float] = None) -> float:
    """The learning rate η of a `HIG` (torch or JAX) given as ``learning_rate`` or as ``lr`` (torch.optim's name),
    validated: a finite number ≥ 0, given once.

    >>> learning_rate_of(0.5), learning_rate_of(lr=0.25)
    (0.5, 0.25)

    Raises:
        InvalidInputError: both spellings are given, or η is not a finite number ≥ 0.
    """
    if lr is not None:
        if learning_rate != 1.0:
            raise InvalidInputError(f"give the learning rate once, as learning_rate or as lr (its torch.optim "
                                    f"name), got learning_rate={learning_rate!r} and lr={lr!r}")
        learning_rate = lr
    return checks.number('learning_rate', learning_rate, low=0)


def hig_options(options: dict) -> dict:
    """The settings a `HIG` (torch or JAX) holds outside its parameter groups (``max_bytes``, ``chunk_rows``,
    ``structured``), validated.

    >>> hig_options(dict(max_bytes=None, chunk_rows=16, structured=None))
    {'max_bytes': None, 'chunk_rows': 16, 'structured': None}

    Raises:
        InvalidInputError: ``max_bytes`` is not None or a number > 0, ``chunk_rows`` not an integer ≥ 1, or
            ``structured`` not None, True or False.
    """
    max_bytes, chunk_rows, structured = (options[k] for k in OPTION_KEYS)
    if max_bytes is not None:
        max_bytes = checks.number('max_bytes', max_bytes, low=0, low_open=True)
    chunk_rows = checks.integer('chunk_rows', chunk_rows, low=1)
    if not (structured is None or isinstance(structured, bool)):
        raise InvalidInputError(f"structured must be None, True or False, got {structured!r}")
    return dict(max_bytes=max_bytes, chunk_rows=chunk_rows, structured=structured)


@dataclass
class HIGStepInfo:
    """Diagnostics of one `hig_step`.

    Attributes:
        loss: batch-mean loss before the update.
        singular_values: kept singular values of J, descending (NumPy float64).
        rank: number of kept singular values.
        sigma_max: largest singular value of J.
        path: linear-algebra path taken ('gram', 'gram-dual' or 'svd'), '+structured' if J was not formed.
        time_jacobian: seconds for the Jacobian factors (network and physics passes).
        time_linalg: seconds for the Gram matrix, its eigendecomposition and the update (0 on a fused JAX step,
            `phi_hig.hig.jax_fused`, whose one compiled call is counted in time_jacobian).
        time_total: seconds for the whole step.
    """
    loss: float
    singular_values: np.ndarray
    rank: int
    sigma_max: float
    path: str
    time_jacobian: float
    time_linalg: float
    time_total: float


def reported_path(path: str, structured: bool, mixed: bool) -> str:
    """The path as `HIGStepInfo` names it: a Gram path over J Jᵀ ('gram') gets '+structured' when every parameter
    was a layer factor (J never formed) or '+mixed' when some were factors and others dense columns.

    Example:
        >>> reported_path('gram', True, False), reported_path('gram-dual', True, False), reported_path('svd', 0, 0)
        ('gram+structured', 'gram-dual', 'svd')
    """
    if path.startswith('gram') and path != 'gram-dual':
        path += '+structured' if structured else ('+mixed' if mixed else '')
    return path
