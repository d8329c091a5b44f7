"""Argument checks shared by phi_hig's modules: one rule per kind of value, and one for allocation sizes.

Every check either returns the value in its canonical Python type or raises `InvalidInputError` whose message
names the argument, what is allowed and what was given. The rules:

* a *number* is a real number (Python `int` / `float` or a NumPy scalar); booleans are not numbers;
* an *integer* is a Python `int` or a NumPy integer scalar; booleans and floats (even ``2.0``) are not;
* a *flag* is `True` or `False` (a NumPy boolean is accepted);
* a *choice* is one of a fixed tuple of values;
* a *size* (`check_size`) is refused before anything of that size is allocated (`JacobianTooLargeError`);
  sizes print in binary units (`human_bytes`).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np

from .errors import InvalidInputError, JacobianTooLargeError

__all__ = ['is_number', 'is_finite', 'is_integer', 'number', 'integer', 'flag', 'choice', 'learning_rates', 'check_size',
           'human_bytes']


def is_number(value) -> bool:
    """Whether `value` is a real number by the rule above (finite or not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_finite(value) -> bool:
    """Whether `value` is a finite real number by the rule above (a bool is not, NaN and ±Inf are not)."""
    return is_number(value) and math.isfinite(value)


def is_integer(value) -> bool:
    """Whether `value` is an integer by the rule above."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _range_text(low, high, low_open, high_open) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return (' ' + ' and '.join(parts)) if parts else ''


def number(name: str, value, *, low: Optional[float] = None, high: Optional[float] = None,
           low_open: bool = False, high_open: bool = False, hint: str = '') -> float:
    """`value` as a finite `float` within the given bounds (`low_open`: `> low` instead of `>= low`).

    ``hint`` is appended to the message in parentheses (e.g. what the values mean).

    Raises:
        InvalidInputError: `value` is not a number, not finite, or out of range.
    """
    if is_number(value) and math.isfinite(value) and \
            (low is None or (value > low if low_open else value >= low)) and \
            (high is None or (value < high if high_open else value <= high)):
        return float(value)
    allowed = f"a finite number{_range_text(low, high, low_open, high_open)}" + (f" ({hint})" if hint else '')
    raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")


def integer(name: str, value, *, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """`value` as an `int` within `[low, high]`.

    Raises:
        InvalidInputError: `value` is not an integer (a bool or a float is not) or out of range.
    """
    allowed = f"an integer{_range_text(low, high, False, False)}"
    if not is_integer(value) or (low is not None and value < low) or (high is not None and value > high):
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def flag(name: str, value) -> bool:
    """`value` as a `bool`.

    Raises:
        InvalidInputError: `value` is not `True` or `False`.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(name: str, value, options: Sequence):
    """`value` if it is one of `options`.

    Raises:
        InvalidInputError: `value` is not one of `options` (the message lists them).
    """
    if not any(type(value) is type(o) and value == o for o in options):
        raise InvalidInputError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")
    return value


def learning_rates(param_groups, owner: str = '') -> list:
    """The learning rate of every parameter group, each a finite number >= 0, whoever set it (a scheduler,
    ``load_state_dict``, user code): checked before every step, so that a NaN rate never reaches a weight and a
    negative one never ascends. ``owner`` prefixes the message (e.g. ``'adam: '``)."""
    return [number(f"{owner}the learning rate param_groups[{i}]['lr']", group.get('lr'), low=0)
            for i, group in enumerate(param_groups)]


def human_bytes(nbytes: float) -> str:
    """``nbytes`` in binary units with three significant digits, e.g. ``'4 GiB'``, ``'1.5 MiB'``, ``'512 bytes'``:
    the one size format of every phi_hig message."""
    for unit, scale in (('PiB', 1024 ** 5), ('TiB', 1024 ** 4), ('GiB', 1024 ** 3), ('MiB', 1024 ** 2), ('KiB', 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} bytes"


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
