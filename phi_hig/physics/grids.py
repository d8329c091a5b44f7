"""Torch tensors ↔ PhiFlow grids: the adapters between batched network tensors and the physics' Fields.

Networks (`phi_hig.nets`) work on torch tensors `(b, H, W)` or `(b, C, H, W)`; the physics modules act on
`CenteredGrid`s. Both adapters keep the backend of their input (torch stays torch, NumPy stays NumPy), so a torch
tensor that requires gradients stays in the autograd graph through `to_grid → physics → from_grid`. Floating-point
values follow PhiML's precision rules (run under `math.precision(64)` to keep float64 NumPy values in float64).

Layout: the batch dim is named `b`, the spatial dims `x` (rows, the first array axis) and `y`; vectors carry the
channel dim `vector` with components `x, y`; cells have size 1, so the domain is `Box(x=H, y=W)`.
"""
from __future__ import annotations

from phi.field import CenteredGrid, Field
from phi.geom import Box
from phiml import math
from phiml.math import batch, channel, extrapolation, spatial

from ..errors import InvalidInputError

__all__ = ['to_grid', 'from_grid']


def to_grid(values, boundary=extrapolation.ZERO) -> CenteredGrid:
    """A `(b, H, W)` scalar or `(b, 2, H, W)` vector array (torch or NumPy) as a `CenteredGrid` of cells of size 1.

    Args:
        values: The batched values; axis 0 becomes the batch dim `b`, the last two the spatial dims `x, y`.
        boundary: The grid's extrapolation (default zero Dirichlet).

    Returns:
        `CenteredGrid` on `Box(x=H, y=W)` with resolution `(H, W)` whose values are `values` (same backend);
        `from_grid(to_grid(v)) == v` exactly when `v`'s dtype is that of PhiML's current precision.

    Raises:
        InvalidInputError: ``values`` is not a torch / NumPy array (a list, a PhiML tensor) or not of one of the two
            shapes (a 1-D or 2-D array, a vector axis of other than 2 components, an empty axis).
    """
    shape = getattr(values, 'shape', None)
    if shape is None or not hasattr(values, 'ndim') or isinstance(values, (math.Tensor, Field)):
        raise InvalidInputError(f"to_grid: values must be a torch or NumPy array of shape (b, H, W) or (b, 2, H, W), "
                                f"got {type(values).__name__}")
    if values.ndim not in (3, 4) or (values.ndim == 4 and shape[1] != 2) or 0 in tuple(shape):
        raise InvalidInputError(f"to_grid: values must have shape (b, H, W) (scalar) or (b, 2, H, W) (vector with "
                                f"components x, y), got {tuple(shape)}")
    h, w = shape[-2:]
    if values.ndim == 3:
        tensor = math.wrap(values, batch('b'), spatial('x,y'))
    else:
        tensor = math.wrap(values, batch('b'), channel(vector='x,y'), spatial('x,y'))
    return CenteredGrid(tensor, boundary, Box(x=h, y=w), x=h, y=w)


def from_grid(grid: Field, vector: bool = False):
    """The values of a `CenteredGrid` with dims `b, x, y` (and `vector` if `vector`) as a native array.

    Returns:
        The native array (torch or NumPy, as the grid holds it) of shape `(b, H, W)`, or `(b, 2, H, W)` for vectors.

    Raises:
        InvalidInputError: ``grid`` is not a Field, or its dims are not exactly those (a missing `b`, an extra
            dim or a 3-component vector is refused rather than reordered or broadcast).
    """
    if not isinstance(grid, Field):
        raise InvalidInputError(f"from_grid: grid must be a PhiFlow Field, got {type(grid).__name__}")
    order = ['b', 'vector', 'x', 'y'] if vector else ['b', 'x', 'y']
    if set(grid.values.shape.names) != set(order):
        raise InvalidInputError(f"from_grid: the grid must have exactly the dims {', '.join(order)}"
                                f"{'' if vector else ' (vector=True for a vector field)'}, got {grid.values.shape}")
    if vector and grid.values.shape.get_item_names('vector') not in (('x', 'y'), None):
        raise InvalidInputError(f"from_grid: the vector components must be x, y; got "
                                f"{grid.values.shape.get_item_names('vector')}")
    if vector and grid.values.shape.get_size('vector') != 2:
        raise InvalidInputError(f"from_grid: a vector field must have 2 components (x, y), got {grid.values.shape}")
    return grid.values.native(order)
