"""Input validation shared by the physics modules and `phi_hig.sip`.

Every check raises `phi_hig.errors.InvalidInputError` (a `ValueError`) whose message names the argument and
the problem, so that a user calling `inverse(x, y_target, ...)` learns which of their inputs is wrong.
"""
import math as pymath
from numbers import Number

from phi.field import Field
from phiml import math
from phiml.math import Tensor, batch

from ..errors import InvalidInputError


def require_grid(name: str, value, *, staggered: bool = None) -> Field:
    """Returns `value` if it is a PhiFlow grid `Field` with finite values, else raises.

    Args:
        name: Argument name used in the error message.
        value: Object to check.
        staggered: `True` to require a `StaggeredGrid`, `False` a `CenteredGrid`, `None` for either.
    """
    if not isinstance(value, Field) or not value.is_grid:
        raise InvalidInputError(f"{name} must be a PhiFlow grid Field (CenteredGrid or StaggeredGrid) but got {type(value).__name__}")
    if staggered is True and not value.is_staggered:
        raise InvalidInputError(f"{name} must be a StaggeredGrid but got a centred grid")
    if staggered is False and value.is_staggered:
        raise InvalidInputError(f"{name} must be a CenteredGrid but got a StaggeredGrid")
    require_finite(name, value)
    return value


def require_finite(name: str, value) -> None:
    """Raises if a Field or Tensor holds NaN or infinite values."""
    values = value.values if isinstance(value, Field) else value
    if isinstance(values, Tensor) and values.available:
        if not math.is_finite(values).all:
            raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")


def require_same_grid(name_a: str, a: Field, name_b: str, b: Field) -> None:
    """Raises unless `a` and `b` live on the same grid (resolution and bounds) and have compatible batch dims.

    Batch dimensions present in only one of them broadcast; a batch dimension present in both must have the
    same size in both.
    """
    if a.resolution != b.resolution:
        raise InvalidInputError(f"{name_b} has resolution {b.resolution} but {name_a} has resolution {a.resolution}; they must match")
    if not math.close(a.bounds.lower, b.bounds.lower) or not math.close(a.bounds.upper, b.bounds.upper):
        raise InvalidInputError(f"{name_b} has bounds {b.bounds} but {name_a} has bounds {a.bounds}; they must match")
    require_batch_compatible(name_a, a, name_b, b)


def require_batch_compatible(name_a: str, a, name_b: str, b) -> None:
    """Raises if a batch dimension appears in both `a` and `b` with different sizes."""
    shape_a, shape_b = batch(a), batch(b)
    for dim in shape_a.only(shape_b).names:
        if shape_a.get_size(dim) != shape_b.get_size(dim):
            raise InvalidInputError(f"batch dimension '{dim}' has size {shape_a.get_size(dim)} in {name_a} but {shape_b.get_size(dim)} in {name_b}; they must match")


def require_periodic(name: str, value: Field) -> None:
    """Raises unless the grid's boundary is periodic along all spatial axes."""
    if value.extrapolation != math.extrapolation.PERIODIC:
        raise InvalidInputError(f"{name} must have periodic boundaries (extrapolation PERIODIC) but has {value.extrapolation}")


def require_number(name: str, value, *, positive=False, non_negative=False):
    """Raises unless `value` is a finite real number or a finite `Tensor` (optionally > 0 or >= 0)."""
    if isinstance(value, Tensor):
        require_finite(name, value)
        ok_pos = bool((value > 0).all) if positive else True
        ok_nn = bool((value >= 0).all) if non_negative else True
    elif isinstance(value, Number) and not isinstance(value, bool):
        if not pymath.isfinite(value):
            raise InvalidInputError(f"{name} must be finite but got {value}")
        ok_pos = value > 0 if positive else True
        ok_nn = value >= 0 if non_negative else True
    else:
        raise InvalidInputError(f"{name} must be a number or a PhiML Tensor but got {type(value).__name__}")
    if not ok_pos:
        raise InvalidInputError(f"{name} must be positive but got {value}")
    if not ok_nn:
        raise InvalidInputError(f"{name} must be non-negative but got {value}")
    return value
