"""Argument validation shared by the whole package: numbers, flags, choices and allocation sizes.

Every check raises `phi_hig.errors.InvalidInputError` (or `JacobianTooLargeError` for sizes) with a message that
names the argument, the allowed values and what was given, so that a refusal never surfaces as a deep torch,
PhiML or SciPy traceback. Booleans are not numbers here (``kappa=True`` is refused); NumPy scalars and 0-d arrays
are numbers.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np

from .errors import InvalidInputError, JacobianTooLargeError

__all__ = ['number', 'integer', 'flag', 'choice', 'check_size', 'human_bytes']


def _is_real(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and np.issubdtype(value.dtype, np.number) and not np.iscomplexobj(value) \
            and value.dtype != np.bool_
    return isinstance(value, numbers.Real)


def _interval(minimum, maximum, min_open, max_open) -> str:
    if minimum is None and maximum is None:
        return 'a finite number'
    if maximum is None:
        return f"a finite number {'>' if min_open else '>='} {minimum:g}"
    if minimum is None:
        return f"a finite number {'<' if max_open else '<='} {maximum:g}"
    return f"a number in {'(' if min_open else '['}{minimum:g}, {maximum:g}{')' if max_open else ']'}"


def number(name: str, value, *, minimum: Optional[float] = None, maximum: Optional[float] = None,
           min_open: bool = False, max_open: bool = False, hint: str = '') -> float:
    """``value`` as a Python float if it is a finite real number inside the given bounds, else raise.

    Args:
        name: the argument's name, used in the message.
        value: a Python or NumPy real number (not a bool).
        minimum, maximum: optional bounds; ``min_open`` / ``max_open`` exclude them.
        hint: appended to the message (e.g. what the values mean).

    Raises:
        InvalidInputError: naming ``name``, the allowed interval and ``value``.
    """
    allowed = _interval(minimum, maximum, min_open, max_open)
    suffix = f" ({hint})" if hint else ''
    if not _is_real(value):
        raise InvalidInputError(f"{name} must be {allowed}{suffix}, got {value!r} of type {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or (minimum is not None and (v < minimum or (min_open and v == minimum))) or \
            (maximum is not None and (v > maximum or (max_open and v == maximum))):
        raise InvalidInputError(f"{name} must be {allowed}{suffix}, got {value!r}")
    return v


def integer(name: str, value, *, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """``value`` as a Python int if it is an integer (Python or NumPy, not a bool, no fraction) within bounds."""
    ok = _is_real(value) and math.isfinite(float(value)) and float(value) == int(value)
    allowed = 'an integer' + (f" >= {minimum}" if minimum is not None and maximum is None else '') + \
        (f" in [{minimum}, {maximum}]" if minimum is not None and maximum is not None else '') + \
        (f" <= {maximum}" if maximum is not None and minimum is None else '')
    if not ok or isinstance(value, float) and not float(value).is_integer():
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")
    return v


def flag(name: str, value) -> bool:
    """``value`` if it is a bool (Python or NumPy), else raise."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(name: str, value, allowed: Sequence):
    """``value`` if it is one of ``allowed``, else raise listing them."""
    if not isinstance(value, (str, int, float, type(None))) or value not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def human_bytes(nbytes: float) -> str:
    """``nbytes`` in decimal units with three significant digits, e.g. ``'2.2 TB'``."""
    for unit in ['B', 'kB', 'MB', 'GB', 'TB', 'PB']:
        if nbytes < 1000 or unit == 'PB':
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return ''  # pragma: no cover


def check_size(what: str, shape: Sequence[int], itemsize: int, max_bytes: Optional[float]) -> None:
    """Raise `JacobianTooLargeError` if an array of ``shape`` and ``itemsize`` would exceed ``max_bytes``.

    Called before the allocation, so a refused size never allocates anything.
    """
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * itemsize
    if max_bytes is not None and nbytes > max_bytes:
        dims = ' x '.join(str(int(s)) for s in shape)
        raise JacobianTooLargeError(
            f"{what} of shape {dims} would need {human_bytes(nbytes)}, above the limit of {human_bytes(max_bytes)} "
            f"(max_bytes). Use a smaller batch or output, or raise max_bytes if the memory is there.")
