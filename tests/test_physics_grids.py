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
