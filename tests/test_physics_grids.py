"""Torch ↔ PhiFlow grid adapters (phi_hig.physics.grids): layout, geometry and autograd, checked cell by cell."""
import numpy as np
import torch
from phiml import math
from phiml.math import extrapolation

from phi_hig.physics.grids import to_grid, from_grid


def test_scalar_values_land_on_the_named_cells_of_a_unit_grid():
    values = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(2, 3, 4)
    grid = to_grid(values, extrapolation.PERIODIC)
    assert grid.resolution.names == ('x', 'y') and grid.resolution.sizes == (3, 4)
    assert math.close(grid.dx, 1) and math.close(grid.bounds.upper, math.vec(x=3, y=4))
    assert grid.extrapolation == extrapolation.PERIODIC
    assert float(grid.values.b[1].x[2].y[3]) == float(values[1, 2, 3])
    assert torch.equal(from_grid(grid), values)


def test_vector_values_keep_their_components():
    values = np.random.default_rng(0).normal(size=(2, 2, 4, 4)).astype(np.float32)
    grid = to_grid(values)
    assert grid.values.shape.get_item_names('vector') == ('x', 'y')
    assert float(grid.values.b[0].vector['y'].x[1].y[2]) == values[0, 1, 1, 2]
    assert np.array_equal(from_grid(grid, vector=True), values)


def test_gradients_flow_through_the_adapters():
    values = torch.randn(2, 4, 4, requires_grad=True)
    (from_grid(to_grid(values)) ** 2).sum().backward()
    assert torch.allclose(values.grad, 2 * values.detach())


def test_arrays_of_another_layout_are_refused_not_reinterpreted():
    """Before: a 1-D array failed deep in PhiML, a list raised AttributeError, and a 3-component vector axis was
    wrapped as if its components were x, y."""
    import pytest
    from phi_hig.errors import InvalidInputError
    for values, message in [(np.ones(4), r'got \(4,\)'), (np.ones((4, 4)), r'got \(4, 4\)'),
                            ([[[1.0]]], 'got list'), (math.ones(), 'must be a torch or NumPy array'),
                            (np.ones((2, 3, 4, 4)), r'got \(2, 3, 4, 4\)'), (np.ones((0, 4, 4)), r'got \(0, 4, 4\)'),
                            (np.ones((2, 2, 2, 4, 4)), 'got')]:
        with pytest.raises(InvalidInputError, match='to_grid: values must'):
            to_grid(values)
        with pytest.raises(InvalidInputError, match=message):
            to_grid(values)


def test_grids_without_the_adapter_dims_are_refused():
    import pytest
    from phi.field import CenteredGrid
    from phi_hig.errors import InvalidInputError
    scalar, vector = to_grid(np.ones((2, 3, 4))), to_grid(np.ones((2, 2, 3, 4)))
    with pytest.raises(InvalidInputError, match='exactly the dims b, vector, x, y'):
        from_grid(scalar, vector=True)
    with pytest.raises(InvalidInputError, match=r'vector=True for a vector field'):
        from_grid(vector)
    with pytest.raises(InvalidInputError, match='exactly the dims b, x, y'):
        from_grid(CenteredGrid(0, x=3, y=4))  # no batch dim b
    with pytest.raises(InvalidInputError, match='must be a PhiFlow Field'):
        from_grid(np.ones((2, 3, 4)))
