"""The settings of an experiment factory: one rule for every experiment, read from the factory's signature.

An experiment factory `name(preset='paper', **settings) -> Experiment` declares each setting as a keyword
parameter whose annotation says what it accepts and whose default is the paper's value. The `factory` decorator
validates every call against that signature before the factory runs:

* `preset` must be one of `PRESETS` ('paper': the papers' sizes; 'test': the tiny version the test suite runs,
  whose values the decorator holds as data and which fill only the settings not given explicitly);
* a setting must be a parameter of the factory (the error lists the known ones);
* its value must fit the annotation: `int` (an integer; a bool is not), `float` (a finite number; ints and NumPy
  scalars are accepted and converted), `str`, `bool`, `Optional[...]` (None allowed), `Literal[...]` (one of
  the values), `Tuple[X, Y]` (a list or tuple of exactly these), `Sequence[X]` (a list or tuple of X),
  `Dict[str, X]`, and `Annotated[X, Range(...)]` / `Annotated[..., MultipleOf(k)]` for bounds.

Refusals raise `InvalidInputError` naming the experiment, the setting, what is allowed and what was given. The
values the factory receives are the parsed ones (ints converted to float where a float is declared, lists to
tuples, NumPy scalars to Python numbers).
"""
from __future__ import annotations

import collections.abc
import functools
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Callable, Literal, Optional, Tuple, Union

import numpy as np

from .. import checks
from ..errors import InvalidInputError

__all__ = ['PRESETS', 'Range', 'MultipleOf', 'Count', 'Seed', 'Positive', 'NonNegative', 'Grid', 'factory',
           'validate', 'parameters']

PRESETS = ('paper', 'test')
"""The presets every experiment has: 'paper' (the papers' sizes) and 'test' (the tiny version the tests run)."""


@dataclass(frozen=True)
class Range:
    """Bounds of a number: `low <= v` (`low < v` if `low_open`) and `v <= high`."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False

    def holds(self, value) -> bool:
        """Whether the number ``value`` lies within the bounds.

        >>> Range(low=0, low_open=True).holds(0), Range(0, 1).holds(1)
        (False, True)
        """
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        """The bounds as the messages state them, e.g. ``'> 0 and <= 1'`` (empty without bounds)."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return ' and '.join(parts)


@dataclass(frozen=True)
class MultipleOf:
    """Every entry of a sequence (or the number itself) is a multiple of `k`; `why` is said in the message."""
    k: int
    why: str = ''

    def holds(self, value) -> bool:
        """Whether ``value`` (a number or a tuple of numbers) is, entry by entry, a multiple of ``k``."""
        values = value if isinstance(value, tuple) else (value,)
        return all(v % self.k == 0 for v in values)

    def describe(self) -> str:
        """The rule as the messages state it, with its reason when one is given."""
        return f"each a multiple of {self.k}" + (f" ({self.why})" if self.why else '')


Count = Annotated[int, Range(1)]
"""A size or count: an integer >= 1."""
Seed = Annotated[int, Range(0)]
"""A random seed: an integer >= 0."""
Positive = Annotated[float, Range(0, low_open=True)]
"""A finite number > 0."""
NonNegative = Annotated[float, Range(0)]
"""A finite number >= 0."""


def Grid(multiple: int, why: str = ''):
    """A grid resolution `(H, W)`: two integers >= 1, each a multiple of `multiple`."""
    return Annotated[Tuple[Count, Count], MultipleOf(multiple, why)]


class _Mismatch(Exception):
    """A value does not fit an annotation (turned into one InvalidInputError naming the whole setting)."""


def describe(hint) -> str:
    """What an annotation accepts, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        extra = ', '.join(m.describe() for m in args[1:] if hasattr(m, 'describe'))
        base = args[0]
        if typing.get_origin(base) in (tuple, collections.abc.Sequence):
            return f"{describe(base)}, {extra}" if extra else describe(base)
        return f"{describe(base)} {extra}".strip()
    if origin is Union:
        others = [a for a in args if a is not type(None)]
        text = ' or '.join(describe(a) for a in others)
        return f"None or {text}" if len(others) < len(args) else text
    if origin is Literal:
        return 'one of ' + ', '.join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list or tuple of {_plural(args[0])}"
        if len(set(args)) == 1:
            return f"a list or tuple of {len(args)} {_plural(args[0])}"
        return f"a list or tuple ({', '.join(describe(a) for a in args)})"
    if origin in (collections.abc.Sequence, list):
        return f"a list or tuple of {_plural(args[0]) if args else 'values'}"
    if origin in (dict, collections.abc.Mapping):
        return f"a dict of {_plural(args[0])} to {_plural(args[1])}" if args else 'a dict'
    return {int: 'an integer', float: 'a finite number', str: 'a string', bool: 'True or False',
            type(None): 'None'}.get(hint, getattr(hint, '__name__', str(hint)))


def _plural(hint) -> str:
    text = describe(hint)
    for article in ('an ', 'a '):
        if text.startswith(article):
            text = text[len(article):]
            break
    for noun in ('integer', 'number', 'string'):
        if noun in text:
            return text.replace(noun, noun + 's', 1)
    return text


def parse(hint, value):
    """`value` in the canonical type of `hint` (see the module docstring), or `_Mismatch`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        value = parse(args[0], value)
        if not all(m.holds(value) for m in args[1:] if hasattr(m, 'holds')):
            raise _Mismatch
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return parse(option, value)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Mismatch
    if origin is tuple or origin in (collections.abc.Sequence, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Mismatch
            return tuple(parse(a, v) for a, v in zip(args, value))
        return tuple(parse(args[0], v) for v in value) if args else tuple(value)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, collections.abc.Mapping):
            raise _Mismatch
        return {parse(args[0], k): parse(args[1], v) for k, v in value.items()} if args else dict(value)
    if hint is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _Mismatch
    if hint is int:
        if checks.is_integer(value):
            return int(value)
        raise _Mismatch
    if hint is float:
        if checks.is_number(value) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported setting annotation {hint!r}")


def parameters(fn: Callable) -> dict:
    """The settings of factory `fn`: name -> (annotation, default), in signature order, without `preset`."""
    fn = inspect.unwrap(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name == 'preset':
            continue
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise TypeError(f"experiment factory {fn.__name__} must take named settings only, not *{name}")
        if name not in hints:
            raise TypeError(f"setting {name!r} of experiment factory {fn.__name__} needs an annotation")
        out[name] = (hints[name], p.default)
    return out


def validate(fn: Callable, preset, settings: dict) -> dict:
    """The parsed `settings` of factory `fn` for `preset`, or `InvalidInputError` (see the module docstring)."""
    name = inspect.unwrap(fn).__name__
    if not (isinstance(preset, str) and preset in PRESETS):
        raise InvalidInputError(f"preset of experiment {name!r} must be one of {', '.join(map(repr, PRESETS))}; "
                                f"got {preset!r}")
    if not isinstance(settings, collections.abc.Mapping):
        raise InvalidInputError(f"settings of experiment {name!r} must be a dict, got {type(settings).__name__}")
    known = parameters(fn)
    parsed = {}
    for key, value in settings.items():
        if key not in known:
            raise InvalidInputError(f"experiment {name!r} has no setting {key!r}; its settings are: "
                                    f"{', '.join(known)}")
        hint = known[key][0]
        try:
            parsed[key] = parse(hint, value)
        except _Mismatch:
            raise InvalidInputError(f"setting {key!r} of experiment {name!r} must be {describe(hint)}; "
                                    f"got {value!r}") from None
    return parsed


def factory(fn: Optional[Callable] = None, *, test: Optional[dict] = None) -> Callable:
    """Decorator of an experiment factory: every call is validated by `validate` before `fn` runs.

    Used as ``@factory`` or ``@factory(test=dict(batch_size=8, n_test=32))``: ``test`` holds the settings preset
    'test' changes (the tiny version), validated like any setting when the module is imported. The decorated
    factory takes the preset and the settings by name (`preset` may also come first, by position) and passes `fn`
    the parsed values; `inspect.signature` still shows `fn`'s signature.

    Guarantees: a setting given explicitly always reaches `fn` as given (parsed): with preset 'test' it wins over
    the preset's value, which only fills settings not given. The preset's values are available as the decorated
    factory's ``test_settings`` (read-only).
    """
    if fn is None:
        return lambda f: factory(f, test=test)
    parameters(fn)  # the annotations resolve: fail at import, not at the first call
    test_settings = types.MappingProxyType(validate(fn, 'test', dict(test or {})))

    @functools.wraps(fn)
    def build(preset: str = 'paper', **settings):
        given = validate(fn, preset, settings)
        if preset == 'test':
            given = {**test_settings, **given}
        return fn(preset=preset, **given)
    build.test_settings = test_settings
    return build
