"""Heat physics: exact periodic diffusion in physical units and the Bayesian-damped inverse, in float64."""
import numpy as np
import pytest
from phi import field, math
from phi.field import CenteredGrid
from phi.geom import Box
from phi.physics import diffuse
from phiml.math import batch, spatial, extrapolation

from phi_hig.errors import InvalidInputError
from phi_hig.physics import heat


pytestmark = pytest.mark.usefixtures('float64')  # conftest.py: PhiML precision 64 for every test


def _np(grid):
    return grid.values.numpy(grid.values.shape.names)


def _l1(a, b):
    return math.sum(abs(a.values - b.values), spatial).numpy(batch(a.values).names)


def test_forward_matches_diffuse_fourier_for_unit_cells():
    x = heat.hot_rectangles(spatial(x=32, y=24), batch(examples=3), seed=0)
    assert np.allclose(x.dx.numpy(), 1)
    expected = diffuse.fourier(x, 0.7, 3.)
    assert np.max(np.abs(_np(heat.forward(x, 0.7, 3.)) - _np(expected))) <= 1e-12


@pytest.mark.parametrize('bounds', [Box(x=16, y=40), Box(x=3.2, y=12.)])  # Δx = (0.5, 1.25) and (0.1, 0.375)
def test_forward_matches_numpy_fft_for_physical_cells(bounds):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(2, 32, 32))
    x = CenteredGrid(math.tensor(data, batch('examples'), spatial('x,y')), extrapolation.PERIODIC, bounds=bounds)
    nu, dt = 0.3, 0.4
    dx, dy = float(x.dx.vector['x']), float(x.dx.vector['y'])
    kx = np.fft.fftfreq(32, d=dx)[:, None]  # cycles per unit length
    ky = np.fft.fftfreq(32, d=dy)[None, :]
    kernel = np.exp(-nu * dt * 4 * np.pi ** 2 * (kx ** 2 + ky ** 2))
    expected = np.real(np.fft.ifft2(np.fft.fft2(data) * kernel))
    assert np.max(np.abs(_np(heat.forward(x, nu, dt)) - expected)) <= 1e-12


def _smooth(amplitude):
    def f(p):
        return amplitude * (math.sin(2 * math.PI * p.vector['x'] / 16) * math.cos(4 * math.PI * p.vector['y'] / 24)
                            + 0.5 * math.cos(6 * math.PI * p.vector['x'] / 16)) + 0.2
    return CenteredGrid(f, extrapolation.PERIODIC, x=16, y=24, bounds=Box(x=16, y=24))


@pytest.mark.parametrize('amplitude', [1., 3., 10.])
def test_noise_free_inverse_recovers_smooth_fields_exactly(amplitude):
    x_star = _smooth(amplitude)
    y_star = heat.forward(x_star, 0.25, 2.)
    x = x_star * 0 + field.mean(y_star)
    dx = heat.inverse(x, y_star, 0.25, 2., noise=0.)
    assert np.max(np.abs(_np(x + dx) - _np(x_star))) <= 1e-10


@pytest.mark.parametrize('amplitude', [1., 3., 10.])
def test_log_odds_do_not_underflow_for_large_smooth_fields(amplitude):
    """With the two likelihood exponentials evaluated directly, both underflow for |A_k|/e_k > ~38 and the
    amplitude-10 field comes back with an error of 6.5 (checked with a NumPy variant); the log-odds form inverts it."""
    x_star = _smooth(amplitude)
    y_star = heat.forward(x_star, 0.25, 2.)
    x = x_star * 0 + field.mean(y_star)
    dx = heat.inverse(x, y_star, 0.25, 2.)
    assert np.max(np.abs(_np(x + dx) - _np(x_star))) <= 1e-10


def test_paper_case_one_correction_reduces_the_error_of_hot_rectangles():
    x_star = heat.hot_rectangles(spatial(x=64, y=64), batch(examples=20), seed=2)
    y_star = heat.forward(x_star, 1., 8.)
    x = x_star * 0 + field.mean(y_star)
    reduction = _l1(x, x_star) / _l1(x + heat.inverse(x, y_star, 1., 8.), x_star)
    assert reduction.min() >= 2 and np.median(reduction) >= 3, reduction


def test_noisy_targets_with_the_actual_noise_level():
    x_star = heat.hot_rectangles(spatial(x=64, y=64), batch(examples=20), seed=3)
    y_clean = heat.forward(x_star, 1., 8.)
    rng = np.random.default_rng(4)
    clean = _np(y_clean)
    noise = rng.normal(size=clean.shape) * 0.01 * clean.reshape(20, -1).std(axis=1)[:, None, None]
    y_star = y_clean.with_values(math.tensor(clean + noise, y_clean.values.shape))
    x = x_star * 0 + field.mean(y_star)
    residual = _np(y_star) - _np(heat.forward(x, 1., 8.))
    level = np.linalg.norm(noise.reshape(20, -1), axis=1) / np.linalg.norm(residual.reshape(20, -1), axis=1)
    error_before = _l1(x, x_star)
    reduction = error_before / _l1(x + heat.inverse(x, y_star, 1., 8., noise=math.tensor(level, batch('examples'))), x_star)
    assert np.median(reduction) >= 2, reduction
    # the default noise=1e-6 treats the 1 % noise as signal and amplifies it: the error grows instead
    default = error_before / _l1(x + heat.inverse(x, y_star, 1., 8.), x_star)
    assert np.median(default) < 1, default


def test_hot_rectangles_are_anti_aliased_and_reproducible():
    a = heat.hot_rectangles(spatial(x=64, y=64), batch(examples=4), seed=7)
    b = heat.hot_rectangles(spatial(x=64, y=64), batch(examples=4), seed=7)
    assert np.array_equal(_np(a), _np(b))
    values = _np(a)
    assert values.min() >= 0 and values.max() <= 10  # at most 10 rectangles of strength <= 1
    assert np.any((values > 0) & (values != np.round(values, 0)))  # fractional coverage at edges
    assert a.extrapolation == extrapolation.PERIODIC


def test_bad_inputs_raise_naming_the_argument():
    x = heat.hot_rectangles(spatial(x=16, y=16), batch(examples=2), seed=0)
    with pytest.raises(InvalidInputError, match='x must have periodic'):
        heat.forward(x.with_extrapolation(extrapolation.ZERO), 1., 1.)
    with pytest.raises(InvalidInputError, match='y_target must have periodic'):
        heat.inverse(x, x.with_extrapolation(extrapolation.ZERO), 1., 1.)
    with pytest.raises(InvalidInputError, match='y_target.*resolution'):
        heat.inverse(x, heat.hot_rectangles(spatial(x=16, y=8), batch(examples=2), seed=0), 1., 1.)
    with pytest.raises(InvalidInputError, match="examples"):
        heat.inverse(x, heat.hot_rectangles(spatial(x=16, y=16), batch(examples=3), seed=0), 1., 1.)
    with pytest.raises(InvalidInputError, match='y_target contains non-finite'):
        heat.inverse(x, x * float('inf'), 1., 1.)
    with pytest.raises(InvalidInputError, match='noise must be non-negative'):
        heat.inverse(x, x, 1., 1., noise=-1.)
    with pytest.raises(InvalidInputError, match='dt must be finite'):
        heat.forward(x, 1., float('nan'))
