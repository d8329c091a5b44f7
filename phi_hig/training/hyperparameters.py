"""One hyperparameter of a training method: its key, default and type, and the one rule that parses a value of it.

A method kind (`phi_hig.training.kinds`) lists what it accepts as `Hyperparameter` objects, usually read from a
signature (`signature_spec`: the keyword arguments of a ``torch.optim`` class or of `phi_hig.HIG`), so that the
rule never has to be kept in sync with the optimizer by hand. Types follow `phi_hig.checks`: a bool is not a
number, an int is accepted for a float, numbers are finite.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Mapping, Optional

from .. import checks
from ..errors import InvalidInputError

__all__ = ['Hyperparameter', 'signature_spec', 'value_spec', 'BATCH_SIZE', 'CLIP']


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter a method accepts.

    Attributes:
        name: the key (``inverse_options.NAME`` for an option of a SIP inverse).
        default: the value used when neither the experiment nor the user sets one.
        kind: 'float' (an int is accepted), 'int', 'bool', 'str', 'tuple' (of floats, ``length`` long) or
            'choice' (one of ``choices``).
        nullable: None is accepted too.
        choices: the values of a 'choice'.
        length: the length of a 'tuple'.

    Example:
        >>> Hyperparameter('lr', 0.001, 'float').parse('adam', 1)
        1.0
    """
    name: str
    default: object
    kind: str
    nullable: bool = False
    choices: tuple = ()
    length: int = 0

    def parse(self, method: str, value):
        """``value`` converted to this kind (float for 'float', tuple for 'tuple').

        Raises:
            InvalidInputError: naming ``method`` and the key, when the value has the wrong type or is not finite.
        """
        where = f"{method}: {self.name}"
        if value is None:
            if self.nullable:
                return None
            raise InvalidInputError(f"{where} must not be None")
        if self.kind == 'bool':
            return checks.flag(where, value)
        if self.kind == 'float':
            return checks.number(where, value)
        if self.kind == 'int':
            return checks.integer(where, value)
        if self.kind == 'tuple':
            if not isinstance(value, (list, tuple)) or len(value) != self.length:
                raise InvalidInputError(f"{where} must be {self.length} finite numbers, e.g. {self.default!r}, "
                                        f"got {value!r}")
            return tuple(checks.number(f"{where}[{i}]", v) for i, v in enumerate(value))
        if self.kind == 'choice':
            return checks.choice(where, value, self.choices)
        if not isinstance(value, str):
            raise InvalidInputError(f"{where} must be a string, got {value!r} ({type(value).__name__})")
        return value


BATCH_SIZE = Hyperparameter('batch_size', 32, 'int')
"""The runner's key every method accepts: the global batch of one step."""
CLIP = Hyperparameter('clip', None, 'float', nullable=True)
"""The maximum global norm of the network gradient (first-order methods and SIP clip before each step)."""


def _kind_of(annotation, default) -> tuple:
    """(kind, nullable, length) from a signature's annotation (a type or its string) and default."""
    text = str(annotation) if annotation is not inspect.Parameter.empty else ''
    nullable = default is None or 'None' in text or 'Optional' in text
    if text.startswith('tuple') or isinstance(default, tuple):
        return 'tuple', nullable, len(default) if isinstance(default, tuple) else 2
    for kind in ('bool', 'float', 'int', 'str'):
        if kind in text:
            return kind, nullable, 0
    if isinstance(default, bool):
        return 'bool', nullable, 0
    if isinstance(default, (int, float)):
        return 'float', nullable, 0
    return 'str', nullable, 0


def signature_spec(fn: Callable, skip: Iterable[str] = ('self', 'params', 'net'),
                   rename: Optional[Mapping[str, str]] = None) -> Dict[str, Hyperparameter]:
    """The keyword parameters of ``fn`` as hyperparameters (defaults and types read from its signature), without
    ``skip`` and ``*args`` / ``**kwargs``; ``rename`` maps a parameter to its key (HIG's ``learning_rate`` is
    ``lr``).

    Example:
        >>> import torch
        >>> spec = signature_spec(torch.optim.SGD.__init__)
        >>> spec['momentum'].default, spec['nesterov'].kind
        (0, 'bool')
    """
    skip = set(skip)
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        key = (rename or {}).get(name, name)
        kind, nullable, length = _kind_of(p.annotation, p.default)
        out[key] = Hyperparameter(key, p.default, kind, nullable, length=length)
    return out


def value_spec(key: str, value) -> Hyperparameter:
    """A hyperparameter whose type is that of its default ``value`` (e.g. an option of a SIP inverse): an int is
    'int', a float 'float', a bool 'bool', a tuple 'tuple'; a default of None makes a nullable string."""
    kind, nullable, length = _kind_of(inspect.Parameter.empty, value)
    if isinstance(value, int) and not isinstance(value, bool):
        kind = 'int'
    return Hyperparameter(key, value, kind, nullable, length=length)
