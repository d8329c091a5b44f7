"""Poisson physics: forward CG solve, exact Laplacian inverse and the periodic spectral inverse, in float64."""
import numpy as np
import pytest
from phi import field, math
from phi.field import CenteredGrid, StaggeredGrid
from phi.geom import Box
from phiml.math import batch, spatial, extrapolation

from phi_hig.errors import InvalidInputError
from phi_hig.physics import poisson


pytestmark = pytest.mark.usefixtures('float64')  # conftest.py: PhiML precision 64 for every test


def _relative(a, b):
    a, b = a.values.numpy(a.values.shape.names), b.values.numpy(a.values.shape.names)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _dirichlet(seed, size=4):
    rng = np.random.default_rng(seed)
    values = math.tensor(rng.normal(size=(size, 13, 9)), batch('examples'), spatial('x,y'))
    return CenteredGrid(values, extrapolation.ZERO, bounds=Box(x=3.9, y=4.5))  # Δx = (0.3, 0.5)


def test_forward_inverts_phiflow_laplace_on_dirichlet_non_square_grid():
    x = _dirichlet(0)
    assert not math.close(x.dx.vector['x'], x.dx.vector['y'])
    y = poisson.forward(x)
    assert _relative(field.laplace(y), x) <= 1e-6


def test_forward_matches_dense_numpy_solve():
    """Independent check: assemble the 5-point zero-Dirichlet Laplacian by hand and solve with NumPy."""
    x = _dirichlet(1, size=1)
    nx, ny = 13, 9
    hx, hy = 0.3, 0.5
    def lap1d(n, h):
        return (np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)) / h ** 2
    L = np.kron(lap1d(nx, hx), np.eye(ny)) + np.kron(np.eye(nx), lap1d(ny, hy))
    rhs = x.values.numpy('examples,x,y')[0].reshape(-1)
    expected = np.linalg.solve(L, rhs).reshape(nx, ny)
    y = poisson.forward(x).values.numpy('examples,x,y')[0]
    assert np.linalg.norm(y - expected) / np.linalg.norm(expected) <= 1e-8


def test_one_inverse_step_recovers_the_source():
    x_star, x = _dirichlet(2), _dirichlet(3)
    y_star = poisson.forward(x_star)
    dx = poisson.inverse(x, y_star)
    assert _relative(x + dx, x_star) <= 1e-6
    dx_given_y = poisson.inverse(x, y_star, y=poisson.forward(x))
    assert _relative(x + dx_given_y, x_star) <= 1e-6


def test_spectral_inverse_is_exact_on_zero_mean_periodic_fields():
    rng = np.random.default_rng(4)
    values = math.tensor(rng.normal(size=(3, 12, 10)), batch('examples'), spatial('x,y'))
    x = CenteredGrid(values, extrapolation.PERIODIC, bounds=Box(x=2.4, y=5.))
    x = x - field.mean(x)
    y = poisson.inverse_laplace_periodic(x)
    assert _relative(field.laplace(y), x) <= 1e-10
    assert np.abs(field.mean(y).numpy('examples')).max() <= 1e-12


def test_periodic_forward_solve_converges_and_drops_the_mean():
    rng = np.random.default_rng(5)
    x = CenteredGrid(math.tensor(rng.normal(size=(2, 8, 6)) + 1, batch('examples'), spatial('x,y')), extrapolation.PERIODIC, bounds=Box(x=8, y=3))
    y = poisson.forward(x)
    assert _relative(field.laplace(y), x - field.mean(x)) <= 1e-6
    assert _relative(y, poisson.inverse_laplace_periodic(x)) <= 1e-6


def test_bad_inputs_raise_naming_the_argument():
    x = _dirichlet(6)
    other_res = CenteredGrid(0, extrapolation.ZERO, x=12, y=9, bounds=Box(x=3.9, y=4.5))
    with pytest.raises(InvalidInputError, match='y_target.*resolution'):
        poisson.inverse(x, other_res)
    other_batch = CenteredGrid(math.zeros(batch(examples=3), spatial(x=13, y=9)), extrapolation.ZERO, bounds=Box(x=3.9, y=4.5))
    with pytest.raises(InvalidInputError, match="examples"):
        poisson.inverse(x, other_batch)
    nan = x.with_values(math.where(x.values > 1, float('nan'), x.values))
    with pytest.raises(InvalidInputError, match='x contains non-finite'):
        poisson.forward(nan)
    with pytest.raises(InvalidInputError, match='y_target contains non-finite'):
        poisson.inverse(x, nan)
    with pytest.raises(InvalidInputError, match='x must have periodic'):
        poisson.inverse_laplace_periodic(x)
    with pytest.raises(InvalidInputError, match='x must be a CenteredGrid'):
        poisson.forward(StaggeredGrid(0, extrapolation.ZERO, x=4, y=4))


def test_noise_is_normalized_per_example():
    x = poisson.noise(np.random.default_rng(0), 16, (64, 64))
    np.testing.assert_allclose(x.mean(axis=(1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(x.std(axis=(1, 2)), 1, atol=1e-12)


def test_dst_solve_is_the_exact_solution_of_phiflows_dirichlet_laplacian():
    """Round trip against PhiFlow's own 5-point `field.laplace` (zero boundary, Δx = 1), and agreement with CG."""
    import torch
    from phi_hig.physics.grids import to_grid, from_grid
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(3, 8, 12)))
    y = poisson.DSTPoisson(8, 12)(x)
    assert y.shape == x.shape and y.dtype == torch.float64
    residual = from_grid(field.laplace(to_grid(y))) - x
    assert float(residual.abs().max()) < 1e-12
    grid = to_grid(x.numpy())
    y_cg = poisson.forward(grid, solve=math.Solve('CG', 1e-13, 1e-13, x0=grid * 0))
    assert np.abs(from_grid(y_cg) - y.numpy()).max() < 1e-9 * np.abs(y.numpy()).max()


def test_dst_solve_refuses_another_grid_size():
    import torch
    with pytest.raises(InvalidInputError, match=r'shape \(\.\.\., 8, 12\)'):
        poisson.DSTPoisson(8, 12)(torch.zeros(2, 12, 8))
