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
from helpers import refused


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
    with pytest.raises(InvalidInputError, match='noise must be a finite number >= 0'):
        heat.inverse(x, x, 1., 1., noise=-1.)
    with pytest.raises(InvalidInputError, match='dt must be a finite number >= 0.*got nan'):
        heat.forward(x, 1., float('nan'))


NUMBER = 'must be a finite number'
_X = heat.hot_rectangles(spatial(x=16, y=16), batch(examples=2), seed=0)


@pytest.mark.parametrize('name, value, message', [
    ('diffusivity', True, 'diffusivity ' + NUMBER), ('dt', np.True_, 'dt ' + NUMBER),      # booleans are not numbers
    ('diffusivity', math.ones(batch(examples=3)), "batch dimension 'examples' has size 2 in x but 3 in diffusivity"),
    ('dt', math.ones(spatial(x=3)), 'dt must be a finite number (or a PhiML Tensor of such numbers with batch dims only), got a Tensor of shape'),
])
def test_forward_refuses_bad_diffusion_parameters(name, value, message):
    refused(lambda: heat.forward(_X, **({'diffusivity': 1., 'dt': 1.} | {name: value})), message)


def test_numpy_scalars_and_zero_d_arrays_are_numbers():
    expected = heat.forward(_X, 0.5, 3.)
    for diffusivity, dt in [(np.float32(0.5), np.int64(3)), (np.array(0.5), np.array(3.))]:
        assert np.max(np.abs(_np(heat.forward(_X, diffusivity, dt)) - _np(expected))) == 0


@pytest.mark.parametrize('name, value, message', [
    ('signal_prior', 'a', 'signal_prior must be a finite number > 0 and < 1'),
    ('signal_prior', None, 'signal_prior must be a finite number > 0 and < 1'),
    ('lower_threshold', -0.5, 'lower_threshold must be a finite number >= 0 and <= 1'),
    ('lower_threshold', 'a', 'lower_threshold must be a finite number >= 0 and <= 1'),
    ('upper_threshold', 2., 'upper_threshold must be a finite number >= 0 and <= 1'),
    ('upper_threshold', True, 'upper_threshold must be a finite number >= 0 and <= 1'),
    ('upper_threshold', None, 'upper_threshold must be a finite number >= 0 and <= 1'),
    ('max_exponent', float('nan'), 'max_exponent must be a finite number > 0 and <= 700'),
    ('max_exponent', float('inf'), 'max_exponent must be a finite number > 0 and <= 700'),
    ('max_exponent', -1., 'max_exponent must be a finite number > 0 and <= 700'),
    ('max_exponent', True, 'max_exponent must be a finite number > 0 and <= 700'),
    ('max_exponent', None, 'max_exponent must be a finite number > 0 and <= 700'),
    ('signal_amplitude', math.ones(spatial(x=16)), 'signal_amplitude must be a finite number (or a PhiML Tensor'),
    ('y', _X.with_extrapolation(extrapolation.ZERO), 'y must have periodic boundaries'),
])
def test_inverse_refuses_bad_thresholds_and_options(name, value, message):
    refused(lambda: heat.inverse(_X, _X * 0.9, 1., 1., **{name: value}), message)


@pytest.mark.parametrize('name, value, message', [
    ('count', (-1, 2), 'count must be a pair (low, high) of integers >= 0 with low <= high'),
    ('count', (5, 3), 'count must be a pair (low, high) of integers >= 0 with low <= high, got low 5 > high 3'),
    ('count', (1.5, 3), 'count must be a pair (low, high) of integers'),
    ('count', (True, 2), 'count must be a pair (low, high) of integers'),
    ('count', 3, 'count must be a pair (low, high)'),
    ('half_size', (-1., 2.), 'half_size must be a pair (low, high) of finite numbers >= 0'),
    ('half_size', (0., float('inf')), 'half_size must be a pair (low, high) of finite numbers >= 0'),
    ('strength', (1., 0.), 'strength must be a pair (low, high) of finite numbers with low <= high'),
    ('strength', (float('nan'), 1.), 'strength must be a pair (low, high) of finite numbers'),
    ('centre_fraction', 0., 'centre_fraction must be a finite number > 0 and <= 1'),
    ('centre_fraction', 1.5, 'centre_fraction must be a finite number > 0 and <= 1'),
    ('centre_fraction', float('nan'), 'centre_fraction must be a finite number > 0 and <= 1'),
    ('centre_fraction', True, 'centre_fraction must be a finite number > 0 and <= 1'),
    ('seed', 1.5, 'seed must be None, an integer >= 0 or a numpy.random.Generator'),
    ('seed', -1, 'seed must be None, an integer >= 0 or a numpy.random.Generator'),
    ('resolution', batch(x=8), 'resolution must be a PhiML Shape of one or more spatial dims'),
    ('resolution', (8, 8), 'resolution must be a PhiML Shape of one or more spatial dims'),
    ('batch_shape', batch(examples=0), 'batch_shape must be a PhiML Shape of one or more batch dims of size >= 1'),
    ('bounds', 3, 'bounds must be None or a phi.geom.Box over the dims x,y'),
    ('bounds', Box(x=1, y=1, z=1), 'bounds must be None or a phi.geom.Box over the dims x,y'),
])
def test_hot_rectangles_refuses_bad_ranges_and_shapes(name, value, message):
    arguments = dict(resolution=spatial(x=8, y=8), batch_shape=batch(examples=2), seed=0) | {name: value}
    refused(lambda: heat.hot_rectangles(**arguments), message)


def test_hot_rectangles_accepts_the_edges_of_its_ranges():
    x = heat.hot_rectangles(spatial(x=8, y=8), batch(examples=3), seed=np.int64(1), count=(0, 0), centre_fraction=1)
    assert np.all(_np(x) == 0)  # zero rectangles: an empty field
    x = heat.hot_rectangles(spatial(x=8, y=8), batch(examples=3), seed=1, count=(2, 2), half_size=(1., 1.), strength=(1., 1.))
    assert np.allclose(_np(x).sum(axis=(1, 2)), 2 * 2 * 2)  # two 2x2 rectangles of strength 1 per example (overlaps add)
