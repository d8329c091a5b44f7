"""Poisson physics: forward CG solve, exact Laplacian inverse and the periodic spectral inverse, in float64."""
import numpy as np
import pytest
from phi import field, math
from phi.field import CenteredGrid, StaggeredGrid
from phi.geom import Box
from phiml.math import batch, spatial, extrapolation

from phi_hig.errors import InvalidInputError, PhiHigError
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


def _neumann(seed, size=2, nx=7, ny=5):
    rng = np.random.default_rng(seed)
    values = math.tensor(rng.normal(size=(size, nx, ny)), batch('examples'), spatial('x,y'))
    return CenteredGrid(values, extrapolation.ZERO_GRADIENT, bounds=Box(x=2.8, y=2.5))  # Δx = (0.4, 0.5)


def test_neumann_forward_matches_the_minimum_norm_solution_of_the_hand_assembled_operator():
    """Zero-flux boundaries: ghost cell = boundary cell, so the 1D rows are (−1, 1)/h² at both ends. The operator is
    singular (constants); NumPy's least-squares minimum-norm solution is the zero-mean one."""
    x = _neumann(7)
    x = x - field.mean(x)
    def lap1d(n, h):
        d = np.diag(-2 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
        d[0, 0] = d[-1, -1] = -1
        return d / h ** 2
    L = np.kron(lap1d(7, 0.4), np.eye(5)) + np.kron(np.eye(7), lap1d(5, 0.5))
    y = poisson.forward(x).values.numpy('examples,x,y')
    for b, rhs in enumerate(x.values.numpy('examples,x,y')):
        expected = np.linalg.lstsq(L, rhs.reshape(-1), rcond=None)[0].reshape(7, 5)
        assert np.linalg.norm(y[b] - expected) <= 1e-8 * np.linalg.norm(expected)


@pytest.mark.parametrize('boundary', [extrapolation.ZERO_GRADIENT,
                                      extrapolation.combine_sides(x=extrapolation.PERIODIC, y=extrapolation.ZERO_GRADIENT)])
def test_neumann_source_with_non_zero_mean_has_no_solution(boundary):
    """Σ∇²y = boundary flux = 0, so a source with non-zero mean is outside the range: refused, saying so
    (today's main ran CG into a `Diverged` traceback)."""
    x = _neumann(8).with_extrapolation(boundary)
    x = x - field.mean(x) + 1e-3
    for call in (lambda: poisson.forward(x), lambda: poisson.inverse(x, x)):
        with pytest.raises(PhiHigError, match='x has a non-zero mean.*no solution'):
            call()


def test_solve_and_grid_arguments_are_refused_naming_them():
    x = _dirichlet(9)
    for call, message in [(lambda: poisson.forward(x, solve='CG'), 'solve must be None or a phiml.math.Solve'),
                          (lambda: poisson.inverse(x, x, solve=1), 'solve must be None or a phiml.math.Solve'),
                          (lambda: poisson.laplace_symbol(3), 'grid must be a PhiFlow grid'),
                          (lambda: poisson.default_solve(np.zeros((4, 4))), 'x must be a PhiFlow CenteredGrid')]:
        with pytest.raises(PhiHigError, match=message):
            call()


def test_mismatched_bounds_print_both_grids_corners():
    x = _dirichlet(10)
    shifted = CenteredGrid(x.values, extrapolation.ZERO, bounds=Box['x,y', 1:4.9, 0:4.5])
    with pytest.raises(PhiHigError) as info:
        poisson.inverse(x, shifted)
    assert 'y_target has bounds lower (x=1, y=0), upper (x=4.9, y=4.5)' in str(info.value)
    assert 'x has bounds lower (x=0, y=0), upper (x=3.9, y=4.5)' in str(info.value)


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


@pytest.mark.parametrize('call, message', [
    (lambda: poisson.DSTPoisson(0, 4), 'h must be an integer >= 1'),
    (lambda: poisson.DSTPoisson(8, 2.5), 'w must be an integer >= 1'),
    (lambda: poisson.DSTPoisson(True, 4), 'h must be an integer >= 1'),
    (lambda: poisson.noise(0, 2), 'rng must be a numpy.random.Generator'),
    (lambda: poisson.noise(np.random.default_rng(0), 0), 'n must be an integer >= 1'),
    (lambda: poisson.noise(np.random.default_rng(0), 2, shape=8), 'shape must be a tuple of integers >= 2'),
    (lambda: poisson.noise(np.random.default_rng(0), 2, shape=(0, 8)), 'shape[0] must be an integer >= 2'),
    (lambda: poisson.noise(np.random.default_rng(0), 2, scale=0.), 'scale must be a finite number > 0'),
    (lambda: poisson.noise(np.random.default_rng(0), 2, scale=0.1), 'scale=0.1 leaves no frequency'),  # was NaN
    (lambda: poisson.noise(np.random.default_rng(0), 2, smoothness=float('nan')), 'smoothness must be a finite number >= 0'),
])
def test_dst_solver_and_noise_refuse_bad_arguments(call, message):
    with pytest.raises(PhiHigError) as info:
        call()
    assert message in str(info.value), str(info.value)


def test_dst_poisson_keeps_a_non_finite_example_to_itself():
    """The documented pass-through: a NaN in one example's x makes that example's y non-finite (the caller's
    finite-loss check refuses the step) and leaves the others equal to their own solves."""
    import torch
    from phi_hig.physics.poisson import DSTPoisson
    x = torch.rand(3, 4, 5, dtype=torch.float64)
    clean = DSTPoisson(4, 5)(x)
    x[1, 2, 2] = float('nan')
    y = DSTPoisson(4, 5)(x)
    assert not torch.isfinite(y[1]).any()
    assert torch.allclose(y[0], clean[0], rtol=1e-14, atol=0) and torch.allclose(y[2], clean[2], rtol=1e-14, atol=0)
