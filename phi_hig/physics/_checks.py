"""Input validation shared by the physics modules: one check per concept.

Every check raises `phi_hig.errors.InvalidInputError` (a `PhiHigError` and a `ValueError`) whose message names the
argument, the allowed values and what was given, so that a user calling `inverse(x, y_target, ...)` learns which
of their inputs is wrong instead of getting NaN, a silently different problem, or a traceback from deep inside
PhiML, NumPy or SciPy. Conventions:

* Numbers and integers follow the package's one rule, `phi_hig.checks` (booleans are not numbers, floats are not
  integers, NumPy scalars are numbers); here 0-d NumPy arrays count as their scalar, and PhiML `Tensor`s are
  accepted where an argument may vary per example (batch dims only).
* Checks of plain numbers return them as Python `float` / `int`, so the caller computes with what it checked.
"""
from typing import Optional, Tuple

import numpy as np
from phi import field
from phi.field import CenteredGrid, Field
from phi.geom import Box
from phiml import math
from phiml.math import Shape, Solve, Tensor, batch

from .. import checks
from ..errors import InvalidInputError


# ------------------------------------------------------------------------------------------------- numbers

def _unwrapped(value):
    """A 0-d NumPy array as its scalar (`np.array(0.5)` counts as the number 0.5); anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def require_number(name: str, value, *, positive: bool = False, non_negative: bool = False,
                   low: float = None, high: float = None, low_open: bool = False, high_open: bool = False,
                   tensor: bool = True, batch_like: Tuple[str, object] = None):
    """Returns `value` if it is a finite number within the bounds, by the package's rule (`phi_hig.checks.number`:
    booleans are not numbers, NumPy scalars are), or, if allowed, a PhiML `Tensor` of such numbers.

    Args:
        name: Argument name used in the error message.
        value: Object to check. A 0-d NumPy array counts as its scalar.
        positive: Shorthand for `low=0, low_open=True`; `non_negative` for `low=0`.
        low, high, low_open, high_open: Bounds as in `phi_hig.checks.number`.
        tensor: Accept a PhiML `Tensor` (e.g. one value per example): its dims must all be batch dims, and every
            element must satisfy the rule.
        batch_like: `(other_name, other)`: a `Tensor` value's batch dims must have the sizes they have in `other`.

    Returns:
        The number as a Python `float`, or the `Tensor` unchanged.
    """
    if positive:
        low, low_open = 0, True
    elif non_negative:
        low, low_open = 0, False
    bounds = dict(low=low, high=high, low_open=low_open, high_open=high_open)
    hint = 'or a PhiML Tensor of such numbers with batch dims only' if tensor else ''
    if tensor and isinstance(value, Tensor):
        if value.shape.non_batch or value.dtype.kind not in (int, float):
            raise InvalidInputError(f"{name} must be a finite number ({hint}), got a Tensor of shape {value.shape} "
                                    f"and dtype {value.dtype}")
        if batch_like is not None:
            require_batch_compatible(batch_like[0], batch_like[1], name, value)
        if value.available:
            require_finite(name, value)
            for extreme in (value.min, value.max):  # the rule for every element: for the smallest and the largest
                checks.number(name, float(extreme), hint=hint, **bounds)
        return value
    return checks.number(name, _unwrapped(value), hint=hint, **bounds)


def require_integer(name: str, value, *, minimum: Optional[int] = None) -> int:
    """Returns `value` as an `int` ≥ `minimum` by the package's rule (`phi_hig.checks.integer`: booleans and floats,
    even 2.0, are not integers; NumPy integers and 0-d integer arrays are)."""
    return checks.integer(name, _unwrapped(value), low=minimum)


def require_steps(name: str, value) -> int:
    """Returns the number of time steps `value` as an `int` ≥ 1 (a simulation of zero or negative steps is refused)."""
    return require_integer(name, value, minimum=1)


def require_range(name: str, value, *, integer: bool = False, non_negative: bool = False) -> tuple:
    """Returns `(low, high)` if `value` is a pair of finite numbers (integers if `integer`) with `low ≤ high`."""
    kind = 'integers' if integer else 'finite numbers'
    allowed = f"a pair (low, high) of {kind}{' >= 0' if non_negative else ''} with low <= high"
    if isinstance(value, (str, bytes)) or not hasattr(value, '__len__') or len(value) != 2:
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")
    try:
        if integer:
            low, high = (require_integer(name, v, minimum=0 if non_negative else None) for v in value)
        else:
            low, high = (require_number(name, v, non_negative=non_negative, tensor=False) for v in value)
    except InvalidInputError:
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}") from None
    if low > high:
        raise InvalidInputError(f"{name} must be {allowed}, got low {low} > high {high}")
    return low, high


def require_seed(name: str, value):
    """Returns `value` if it is None, an integer ≥ 0 or a `numpy.random.Generator` (what `np.random.default_rng` takes)."""
    if value is None or isinstance(value, np.random.Generator):
        return value
    try:
        return require_integer(name, value, minimum=0)
    except InvalidInputError:
        raise InvalidInputError(f"{name} must be None, an integer >= 0 or a numpy.random.Generator, got {value!r}") from None


# ------------------------------------------------------------------------------------------------- shapes

def require_shape(name: str, value, kind: str, *, rank: int = None, min_size: int = 1) -> Shape:
    """Returns `value` if it is a PhiML `Shape` made only of `kind` dims ('spatial' or 'batch'), each of size ≥ `min_size`.

    Args:
        rank: Required number of dims, if any.
    """
    example = "spatial(x=64, y=64)" if kind == 'spatial' else "batch(examples=4)"
    allowed = f"a PhiML Shape of {rank if rank else 'one or more'} {kind} dim{'s' if rank != 1 else ''} of size >= {min_size}, e.g. {example}"
    if not isinstance(value, Shape):
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    own = value.spatial if kind == 'spatial' else value.batch
    if own.rank != value.rank or value.rank == 0 or (rank is not None and value.rank != rank):
        raise InvalidInputError(f"{name} must be {allowed}, got {value}")
    if any(not isinstance(s, int) or s < min_size for s in value.sizes):
        raise InvalidInputError(f"{name} must be {allowed}, got sizes {value}")
    return value


def require_bounds(name: str, value, resolution: Shape) -> Optional[Box]:
    """Returns `value` if it is None or a `phi.geom.Box` over exactly the dims of `resolution`, with upper > lower."""
    if value is None:
        return None
    allowed = f"None or a phi.geom.Box over the dims {','.join(resolution.names)}, e.g. Box({', '.join(f'{n}=1' for n in resolution.names)})"
    if not isinstance(value, Box):
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    names = value.vector.item_names
    if names is None or set(names) != set(resolution.names):
        raise InvalidInputError(f"{name} must be {allowed} but has dims {names}")
    if not bool((value.size > 0).all):
        raise InvalidInputError(f"{name} must be {allowed} with upper > lower, got {_box_text(value)}")
    return value


# -------------------------------------------------------------------------------------------------- fields

def require_grid(name: str, value, *, staggered: bool = None) -> Field:
    """Returns `value` if it is a PhiFlow grid `Field` with finite values, else raises.

    Args:
        name: Argument name used in the error message.
        value: Object to check.
        staggered: `True` to require a `StaggeredGrid`, `False` a `CenteredGrid`, `None` for either.
    """
    if not isinstance(value, Field) or not value.is_grid:
        kind = {True: 'StaggeredGrid', False: 'CenteredGrid', None: 'grid Field (CenteredGrid or StaggeredGrid)'}[staggered]
        raise InvalidInputError(f"{name} must be a PhiFlow {kind}, got {type(value).__name__}")
    if staggered is True and not value.is_staggered:
        raise InvalidInputError(f"{name} must be a StaggeredGrid, got a centred grid")
    if staggered is False and value.is_staggered:
        raise InvalidInputError(f"{name} must be a CenteredGrid, got a StaggeredGrid")
    require_finite(name, value)
    return value


def require_vector_grid(name: str, value, *, rank: int = 2) -> Field:
    """Returns `value` if it is a finite centred or staggered grid of `rank` spatial dims with one vector component per dim."""
    require_grid(name, value)
    if value.spatial_rank != rank:
        raise InvalidInputError(f"{name} must be a {rank}D vector grid but has resolution {value.resolution}")
    if 'vector' not in value.shape or value.shape.get_size('vector') != value.spatial_rank:
        raise InvalidInputError(f"{name} must be a vector field with one component per spatial axis "
                                f"({','.join(value.resolution.names)}) but has shape {value.shape}")
    return value


def require_finite(name: str, value) -> None:
    """Raises if a Field or Tensor holds NaN or infinite values."""
    values = value.values if isinstance(value, Field) else value
    if isinstance(values, Tensor) and values.available:
        if not math.is_finite(values).all:
            raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")


def require_vector(name: str, value, template: Field) -> Tensor:
    """A finite PhiML Tensor with a channel dim 'vector' naming the axes of `template`, other dims batch only."""
    axes = ','.join(template.resolution.names)
    allowed = f"a PhiML Tensor with channel dim vector={axes} (e.g. math.wrap([1., 0.], channel(vector='{axes}'))), other dims batch only"
    if not isinstance(value, Tensor) or 'vector' not in value.shape or value.shape.get_item_names('vector') != template.resolution.names:
        raise InvalidInputError(f"{name} must be {allowed}, got {value!r}")
    if value.shape.without('vector').non_batch:
        raise InvalidInputError(f"{name} must be {allowed} but has the dims {value.shape.without('vector').non_batch}")
    require_finite(name, value)
    require_batch_compatible('template', template, name, value)
    return value


def _box_text(box: Box) -> str:
    names = box.vector.item_names or ()
    lower, upper = box.lower.numpy('vector'), box.upper.numpy('vector')
    return (f"lower ({', '.join(f'{n}={float(v):g}' for n, v in zip(names, lower))}), "
            f"upper ({', '.join(f'{n}={float(v):g}' for n, v in zip(names, upper))})")


def require_same_grid(name_a: str, a: Field, name_b: str, b: Field) -> None:
    """Raises unless `a` and `b` live on the same grid (resolution and bounds) and have compatible batch dims.

    Batch dimensions present in only one of them broadcast; a batch dimension present in both must have the
    same size in both. A bounds mismatch prints the lower and upper corners of both grids.
    """
    if a.resolution != b.resolution:
        raise InvalidInputError(f"{name_b} has resolution {b.resolution} but {name_a} has resolution {a.resolution}; they must match")
    if a.bounds.vector.item_names != b.bounds.vector.item_names or not math.close(a.bounds.lower, b.bounds.lower) \
            or not math.close(a.bounds.upper, b.bounds.upper):
        raise InvalidInputError(f"{name_b} has bounds {_box_text(b.bounds)} but {name_a} has bounds {_box_text(a.bounds)}; "
                                f"they must match")
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
        raise InvalidInputError(f"{name} must have periodic boundaries (extrapolation.PERIODIC) but has "
                                f"{boundary_text(value.extrapolation)}")


def boundary_text(extrapolation) -> str:
    """A readable name of a PhiML extrapolation for error messages (`str(extrapolation.ZERO)` is just '0')."""
    e = math.extrapolation
    names = {e.ZERO: 'extrapolation.ZERO (zero Dirichlet)', e.ONE: 'extrapolation.ONE (Dirichlet value 1)',
             e.ZERO_GRADIENT: 'extrapolation.ZERO_GRADIENT (zero flux, Neumann)', e.PERIODIC: 'extrapolation.PERIODIC'}
    for known, text in names.items():
        if extrapolation == known:
            return text
    return repr(extrapolation)


def require_solve(name: str, value) -> Optional[Solve]:
    """Returns `value` if it is None or a PhiML `Solve` configuration."""
    if value is not None and not isinstance(value, Solve):
        raise InvalidInputError(f"{name} must be None or a phiml.math.Solve, e.g. Solve('CG', 1e-5, 1e-5), "
                                f"got {value!r} ({type(value).__name__})")
    return value


def laplace_is_singular(grid: Field) -> bool:
    """Whether the boundary condition of `grid` leaves constants in the null space of `field.laplace`.

    True for periodic and zero-flux (Neumann, `ZERO_GRADIENT`) boundaries and their combinations, where the
    Laplacian of a constant vanishes; false as soon as one side holds a Dirichlet value. Decided by applying the
    (possibly affine) operator to the constants 0 and 1 on the grid, so it holds for any PhiML extrapolation.
    """
    ones = CenteredGrid(1., grid.extrapolation, grid.bounds, grid.resolution)
    zeros = CenteredGrid(0., grid.extrapolation, grid.bounds, grid.resolution)
    difference = (field.laplace(ones) - field.laplace(zeros)).values
    return bool((abs(difference) <= 1e-6 * math.max(1 / grid.dx ** 2)).all)
