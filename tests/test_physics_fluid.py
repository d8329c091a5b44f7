"""Navier–Stokes physics: projection, transport, and the reverse-simulation inverse of translation + vortex."""
import numpy as np
import pytest
from phi import field, math
from phi.field import CenteredGrid, StaggeredGrid
from phi.geom import Box
from phiml.math import batch, spatial, channel, extrapolation

from phi_hig.errors import InvalidInputError
from phi_hig.physics import fluid
from helpers import refused

VEC = channel(vector='x,y')


pytestmark = pytest.mark.usefixtures('float64')  # conftest.py: PhiML precision 64 for every test


def _blob(resolution=spatial(x=64, y=64), centre=(24., 30.), width=5.):
    def f(p):
        return math.exp(-((p.vector['x'] - centre[0]) ** 2 + (p.vector['y'] - centre[1]) ** 2) / (2 * width ** 2))
    return CenteredGrid(f, extrapolation.PERIODIC, x=resolution.get_size('x'), y=resolution.get_size('y'),
                        bounds=Box(x=resolution.get_size('x'), y=resolution.get_size('y')))


def _centre_of_mass(m):
    values = m.values.numpy([*batch(m.values).names, 'x', 'y'])
    x = (np.arange(values.shape[-2]) + 0.5)[:, None] * float(m.dx.vector['x'])
    y = (np.arange(values.shape[-1]) + 0.5)[None, :] * float(m.dx.vector['y'])
    total = values.sum(axis=(-2, -1))
    return np.stack([(values * x).sum(axis=(-2, -1)) / total, (values * y).sum(axis=(-2, -1)) / total], -1)


def test_projected_velocity_is_divergence_free_after_every_step_and_energy_is_kept():
    example = fluid.random_example(spatial(x=32, y=32), batch(examples=2), seed=0, radius=4.)
    markers, velocities = fluid.simulate(example.v0, example.m0, steps=4)
    assert markers.shape.get_size('time') == velocities.shape.get_size('time') == 5
    divergence = field.divergence(velocities).values
    assert float(math.max(abs(divergence), divergence.shape).numpy()) <= 1e-4
    energy = fluid.kinetic_energy(velocities).numpy('time,examples')
    assert np.allclose(energy[1:], energy[:1], rtol=1e-10)  # renormalized to the previous step's energy


def test_pressure_solve_works_in_float32():
    math.set_global_precision(32)
    example = fluid.random_example(spatial(x=32, y=32), batch(examples=2), seed=1, radius=4.)
    v0 = example.v0.with_values(math.to_float(example.v0.values))
    markers, velocities = fluid.simulate(v0, example.m0, steps=2)
    assert velocities.values.dtype.precision == 32
    assert np.all(np.isfinite(markers.values.numpy(markers.values.shape.names)))


def test_uniform_velocity_carries_the_centre_of_mass_by_v_times_t():
    m0 = _blob()
    v0 = CenteredGrid(math.wrap([3., -2.], VEC), extrapolation.PERIODIC, m0.bounds, m0.resolution)
    trajectory = fluid.forward(v0, m0)  # t = 2 in 8 steps of 0.25
    shift = _centre_of_mass(trajectory.time[-1]) - _centre_of_mass(m0)
    assert np.all(np.abs(shift - np.array([6., -4.])) <= 0.1), shift


def test_fit_recovers_translation_and_vortex_parameters():
    grid = CenteredGrid(0, extrapolation.PERIODIC, Box(x=64, y=64), spatial(x=64, y=64))
    v = fluid.translation_vortex(grid, math.wrap([1., -0.5], VEC), -2.5, math.wrap([30.3, 20.6], VEC))
    fit = fluid.fit_translation_vortex(v)
    assert np.allclose(fit.translation.numpy('vector'), [1., -0.5], atol=1e-3)
    assert abs(float(fit.strength) + 2.5) <= 0.05
    assert np.allclose(fit.centre.numpy('vector'), [30.3, 20.6], atol=0.15)


def test_inverse_corrects_vortex_strength_and_centre_in_the_right_direction():
    example = fluid.random_example(spatial(x=64, y=64), batch(examples=2), seed=3)
    truth = fluid.translation_vortex(example.v0, example.translation, example.strength, example.centre)
    m_target = fluid.forward(truth, example.m0).time[-1]
    cases = batch(case='strong,weak,shifted')
    strength = math.stack([example.strength * 1.5, example.strength * 0.5, example.strength], cases)
    centre = math.stack([example.centre, example.centre, example.centre + math.wrap([3., 0.], VEC)], cases)
    estimate = fluid.translation_vortex(example.v0, example.translation, strength, centre)
    correction = fluid.inverse(estimate, m_target, example.m0)
    assert type(correction) is type(estimate) and correction.shape == estimate.shape
    error_before = math.sqrt(math.sum((estimate - truth).values ** 2, math.non_batch)).numpy('case,examples')
    error_after = math.sqrt(math.sum((estimate + correction - truth).values ** 2, math.non_batch)).numpy('case,examples')
    assert np.all(error_after < error_before), error_after / error_before
    before, after = fluid.fit_translation_vortex(estimate), fluid.fit_translation_vortex(estimate + correction)
    change = (after.strength - before.strength).numpy('case,examples')
    sign = np.sign(example.strength.numpy('examples'))
    assert np.all(change[0] * sign < 0) and np.all(change[1] * sign > 0)  # too strong → weaker, too weak → stronger
    assert np.all((after.centre - before.centre).vector['x'].case['shifted'].numpy('examples') < 0)


def test_inverse_of_staggered_estimate_is_staggered_and_reduces_translation_error():
    example = fluid.random_example(spatial(x=32, y=32), batch(examples=1), seed=4, radius=4., strength=(0.5, 1.))
    truth = fluid.translation_vortex(example.v0, example.translation, example.strength, example.centre, radius=4.)
    m_target = fluid.forward(truth, example.m0, steps=4).time[-1]
    template = StaggeredGrid(0, extrapolation.PERIODIC, example.v0.bounds, example.v0.resolution)
    wrong = fluid.translation_vortex(template, example.translation + math.wrap([1., -1.], VEC), example.strength, example.centre, radius=4.)
    correction = fluid.inverse(wrong, m_target, example.m0, steps=4, radius=4.)
    assert correction.is_staggered
    translation_error_before = np.linalg.norm([1., -1.])
    after = fluid.fit_translation_vortex(wrong + correction, radius=4.).translation - example.translation
    assert np.linalg.norm(after.numpy('examples,vector')) < 0.5 * translation_error_before


def test_bad_inputs_raise_naming_the_argument():
    example = fluid.random_example(spatial(x=16, y=16), batch(examples=2), seed=5, radius=2.)
    with pytest.raises(InvalidInputError, match='m_target.*resolution'):
        fluid.inverse(example.v0, _blob(spatial(x=16, y=8)), example.m0)
    other = fluid.random_example(spatial(x=16, y=16), batch(examples=3), seed=5, radius=2.)
    with pytest.raises(InvalidInputError, match='examples'):
        fluid.inverse(example.v0, other.m0, example.m0)
    with pytest.raises(InvalidInputError, match='v0 contains non-finite'):
        fluid.forward(example.v0 * float('nan'), example.m0)
    with pytest.raises(InvalidInputError, match='m0.*resolution'):
        fluid.forward(example.v0, _blob(spatial(x=8, y=16)))
    with pytest.raises(InvalidInputError, match='periodic'):
        fluid.forward(example.v0.with_extrapolation(extrapolation.ZERO), example.m0)


def test_inverse_from_zero_velocity_places_a_vortex_of_the_right_sign():
    """With no vortex in the estimate the centre is searched; one correction must get the sense of rotation right."""
    example = fluid.random_example(spatial(x=32, y=32), batch(examples=4), seed=5, radius=4.)
    truth = fluid.translation_vortex(example.v0, example.translation, example.strength, example.centre, radius=4.)
    m_target = fluid.forward(truth, example.m0).time[-1]
    estimate = example.v0 * 0
    correction = fluid.inverse(estimate, m_target, example.m0, radius=4.)
    error_before = math.sqrt(math.sum((estimate - truth).values ** 2, math.non_batch)).numpy('examples')
    error_after = math.sqrt(math.sum((estimate + correction - truth).values ** 2, math.non_batch)).numpy('examples')
    assert np.all(error_after < 0.5 * error_before), error_after / error_before
    fitted = fluid.fit_translation_vortex(estimate + correction, radius=4.)
    assert np.all(np.sign(fitted.strength.numpy('examples')) == np.sign(example.strength.numpy('examples')))


def test_inverse_with_the_callers_trajectory_equals_inverse_that_simulates_itself():
    example = fluid.random_example(spatial(x=16, y=16), batch(examples=2), seed=6, radius=2.)
    estimate = example.v0 * 0.5
    m_target = fluid.forward(example.v0, example.m0, steps=3).time[-1]
    with math.precision(64):
        trajectory = fluid.simulate(estimate, example.m0, steps=3)
    own = fluid.inverse(estimate, m_target, example.m0, steps=3, radius=2.)
    reused = fluid.inverse(estimate, m_target, example.m0, steps=3, radius=2., trajectory=trajectory)
    assert math.max(abs(own.values - reused.values), math.non_batch(own.values) & batch(own.values)) < 1e-12
    with pytest.raises(InvalidInputError, match='trajectory markers.*4 frames'):
        fluid.inverse(estimate, m_target, example.m0, steps=3, trajectory=(trajectory[0].time[:2], trajectory[1]))
    with pytest.raises(InvalidInputError, match='trajectory must be the pair'):
        fluid.inverse(estimate, m_target, example.m0, steps=3, trajectory=trajectory[0])
    with math.precision(32):
        coarse = fluid.simulate(estimate.with_values(math.to_float(estimate.values)), example.m0, steps=3)
    refused(lambda: fluid.inverse(estimate, m_target, example.m0, steps=3, trajectory=coarse),
            'trajectory markers must have been simulated in float64 or finer (precision=64) but holds float32')


# ------------------------------------------------------------- the batched estimator, its precision, jit

def test_inverse_equals_the_numpy_float64_reference_estimator():
    """The batched PhiML estimator against the former per-example NumPy one (tests/fluid_reference.py) on a grid
    that is not square (x and y must not be swapped): vortices searched, linearized and capped."""
    import fluid_reference as reference
    n, radius, steps = 6, 4., 3
    example = fluid.random_example(spatial(x=32, y=16), batch(examples=n), seed=8, radius=radius)
    m_target = fluid.forward(example.v0, example.m0, steps=steps).time[-1]
    scale = math.tensor([0.01, 0.6, 1.4, 3., 0.02, 1.], batch('examples'))  # 0.01, 0.02: searched; 3: capped
    shift = math.tensor(np.random.default_rng(2).normal(0, 1.5, (n, 2)), batch('examples'), VEC)
    estimate = fluid.translation_vortex(example.v0, example.translation + 0.2 * shift, example.strength * scale,
                                        example.centre + shift, radius=radius)
    update = fluid.inverse(estimate, m_target, example.m0, steps=steps, radius=radius)

    values = estimate.values.numpy(['examples', 'x', 'y', 'vector'])
    lower, dx, size = (a.numpy('vector') for a in (estimate.bounds.lower, estimate.dx, estimate.bounds.size))
    origin = CenteredGrid(0, extrapolation.PERIODIC, estimate.bounds, estimate.resolution)
    kernel = fluid.translation_vortex(origin, math.wrap([0., 0.], VEC), 1., estimate.bounds.lower + estimate.dx / 2,
                                      radius).values.numpy(['x', 'y', 'vector'])
    prior = reference.fit(values, lower, dx, kernel)
    markers, velocities = fluid.simulate(estimate, example.m0, steps=steps)
    reverse = fluid.reverse_markers(m_target, velocities)
    corrected = reference.corrected_prior(markers.values.numpy('examples,time,x,y'), reverse.values.numpy('examples,time,x,y'),
                                          *prior, fluid.DT, dx, lower, size, radius, radius, 1., 0.25)

    def vortex(tau, s, p):
        return fluid.translation_vortex(estimate, math.tensor(tau, batch('examples'), VEC), math.tensor(s, batch('examples')),
                                        math.tensor(p, batch('examples'), VEC), radius)
    expected = (vortex(*corrected) - vortex(*prior)).values.numpy(['examples', 'x', 'y', 'vector']).reshape(n, -1)
    got = update.values.numpy(['examples', 'x', 'y', 'vector']).reshape(n, -1)
    assert np.all(np.linalg.norm(got - expected, axis=1) <= 1e-9 * np.linalg.norm(expected, axis=1))
    linearized = np.abs(prior[1]) >= 0.25
    capped = np.isclose(np.abs(corrected[1] - prior[1]), np.abs(prior[1])) | np.isclose(np.linalg.norm(corrected[2] - prior[2], axis=1), radius)
    assert np.any(capped & linearized) and not np.all(linearized)


def test_float32_inverse_on_torch_is_within_1e_3_of_float64_on_256_examples():
    """The experiment's precision: float32 simulations and estimate on torch against float64 (the paper's size is
    benchmarks/fluid_inverse_precision.py; here 16 × 16, radius 2, one step: the plain simulations dominate)."""
    from benchmarks.fluid_inverse_precision import relative_differences
    result = relative_differences(16, 256, 1)
    assert result['relative'].max() <= 1e-3, np.sort(result['relative'])[-5:]


def test_jit_compiled_simulations_equal_the_plain_ones_and_carry_no_gradient():
    import torch
    from phiml.backend.torch import TORCH
    with TORCH, math.precision(32):
        example = fluid.random_example(spatial(x=16, y=16), batch(examples=2), seed=9, radius=2.)
        v0 = example.v0.with_values(math.tensor(example.v0.values.native(example.v0.values.shape).float().requires_grad_(True),
                                                example.v0.values.shape))
        m0 = example.m0.with_values(math.to_float(example.m0.values))
        plain = fluid.simulate(v0, m0, steps=2)
        compiled = fluid.simulate(v0, m0, steps=2, jit=True)
        reverse_plain = fluid.reverse_markers(plain[0].time[-1], plain[1])
        reverse_compiled = fluid.reverse_markers(plain[0].time[-1], plain[1], jit=True)
    for a, b in ((plain[0], compiled[0]), (plain[1], compiled[1]), (reverse_plain, reverse_compiled)):
        assert float(math.max(abs(a.values - b.values), a.values.shape)) <= 1e-6 * float(math.max(abs(a.values), a.values.shape))
    assert plain[0].values.native(plain[0].values.shape).requires_grad
    assert not compiled[0].values.native(compiled[0].values.shape).requires_grad
    assert isinstance(compiled[0].values.native(compiled[0].values.shape), torch.Tensor)


def test_inverse_keeps_the_backend_and_dtype_of_v0():
    from phiml.backend.torch import TORCH
    example = fluid.random_example(spatial(x=16, y=16), batch(examples=2), seed=10, radius=2.)
    m_target = fluid.forward(example.v0, example.m0, steps=2).time[-1]
    with TORCH, math.precision(32):
        v0 = example.v0.with_values(math.to_float(math.convert(example.v0.values, TORCH))) * 0.5
    assert v0.values.dtype.precision == 32
    for precision in (32, 64):
        update = fluid.inverse(v0, m_target, example.m0, steps=2, radius=2., precision=precision)
        assert update.values.backend == TORCH and update.values.dtype == v0.values.dtype  # (.native() casts to the global precision)


# ------------------------------------------------------------------------------------ refused arguments

STEPS, DT, RADIUS = 'steps must be an integer >= 1', 'dt must be a finite number > 0', 'radius must be a finite number > 0'
_EXAMPLE = fluid.random_example(spatial(x=16, y=16), batch(examples=2), seed=7, radius=2.)


@pytest.mark.parametrize('name, value, message', [
    ('steps', 0, STEPS), ('steps', -1, STEPS), ('steps', 2.5, STEPS), ('steps', True, STEPS), ('steps', '3', STEPS),
    ('dt', 0., DT), ('dt', -0.25, DT), ('dt', float('nan'), DT), ('dt', float('inf'), DT), ('dt', True, DT), ('dt', 'a', DT),
])
def test_forward_refuses_zero_steps_and_non_positive_time_steps(name, value, message):
    """On today's main steps=0 returned the initial frame, dt=-0.25 ran the flow backwards and dt=nan ended in a
    CG `Diverged` traceback."""
    refused(lambda: fluid.forward(_EXAMPLE.v0, _EXAMPLE.m0, **{name: value}), message)
    refused(lambda: fluid.simulate(_EXAMPLE.v0, _EXAMPLE.m0, **{name: value}), message)


@pytest.mark.parametrize('name, value, message', [
    ('steps', 0, STEPS), ('dt', 0., DT), ('dt', -0.25, DT), ('radius', 0., RADIUS), ('radius', -1., RADIUS),
    ('radius', float('nan'), RADIUS), ('radius', True, RADIUS),
    ('max_centre_shift', -1., 'max_centre_shift must be a finite number >= 0'),
    ('max_centre_shift', float('nan'), 'max_centre_shift must be a finite number >= 0'),
    ('max_relative_strength_change', float('nan'), 'max_relative_strength_change must be a finite number >= 0'),
    ('search_below', -1., 'search_below must be a finite number >= 0'),
    ('y', 3, 'y must be a PhiFlow grid Field'),
    ('m_target', _EXAMPLE.m0.with_extrapolation(extrapolation.ZERO), 'm_target must have periodic boundaries'),
    ('precision', 16, 'precision must be one of 32, 64'), ('precision', 64., 'precision must be an integer'),
    ('jit', 1, 'jit must be True or False'),
])
def test_inverse_refuses_what_gave_nan_or_a_silent_result(name, value, message):
    """On today's main steps=0, dt=0, radius ≤ 0 and max_relative_strength_change=nan returned NaN corrections."""
    arguments = dict(m_target=_EXAMPLE.m0, steps=2) | {name: value}
    refused(lambda: fluid.inverse(_EXAMPLE.v0 * 0.5, m0=_EXAMPLE.m0, **arguments), message)


def test_step_and_reverse_markers_refuse_bad_arguments():
    v = fluid.to_staggered(_EXAMPLE.v0)
    shifted = CenteredGrid(_EXAMPLE.m0.values, extrapolation.PERIODIC, bounds=Box['x,y', 1:17, 0:16])
    refused(lambda: fluid.step(v, _EXAMPLE.m0, -1.), DT)
    refused(lambda: fluid.step(v, _EXAMPLE.m0, solve='CG'), 'solve must be None or a phiml.math.Solve')
    refused(lambda: fluid.step(v.with_extrapolation(extrapolation.ZERO), _EXAMPLE.m0), 'v must have periodic boundaries')
    refused(lambda: fluid.step(v, shifted), 'm has bounds lower (x=1, y=0), upper (x=17, y=16) but v has bounds lower (x=0, y=0)')
    refused(lambda: fluid.step(3, _EXAMPLE.m0), 'v must be a PhiFlow grid Field')
    velocities = fluid.simulate(_EXAMPLE.v0, _EXAMPLE.m0, steps=1)[1]
    refused(lambda: fluid.reverse_markers(_EXAMPLE.m0, velocities, dt=0.), DT)
    refused(lambda: fluid.reverse_markers(_EXAMPLE.m0, velocities, dt=float('nan')), DT)
    refused(lambda: fluid.reverse_markers(_EXAMPLE.m0, v), "velocities must be a velocity trajectory with at least 2 frames")
    refused(lambda: fluid.reverse_markers(_blob(spatial(x=8, y=8)), velocities), 'm_target has resolution')


@pytest.mark.parametrize('name, value, message', [
    ('radius', 0., RADIUS), ('radius', float('nan'), RADIUS), ('radius', True, RADIUS),
    ('strength', float('nan'), 'strength must be a finite number'), ('strength', True, 'strength must be a finite number'),
    ('translation', 1., 'translation must be a PhiML Tensor with channel dim vector=x,y'),
    ('translation', math.wrap([1., float('nan')], VEC), 'translation contains non-finite values'),
    ('centre', math.wrap([1., 2., 3.], channel(vector='x,y,z')), 'centre must be a PhiML Tensor with channel dim vector=x,y'),
    ('strength', math.ones(batch(examples=3)), "batch dimension 'examples' has size 2 in template but 3 in strength"),
])
def test_translation_vortex_refuses_bad_parameters(name, value, message):
    arguments = dict(translation=math.wrap([1., 0.], VEC), strength=1., centre=math.wrap([8., 8.], VEC)) | {name: value}
    refused(lambda: fluid.translation_vortex(_EXAMPLE.v0, **arguments), message)


def test_fit_translation_vortex_refuses_non_vector_fields_and_bad_radius():
    refused(lambda: fluid.fit_translation_vortex(_EXAMPLE.v0, 0.), RADIUS)
    refused(lambda: fluid.fit_translation_vortex(_EXAMPLE.v0, -1.), RADIUS)
    refused(lambda: fluid.fit_translation_vortex(_EXAMPLE.m0), 'v must be a vector field with one component per spatial axis')
    refused(lambda: fluid.fit_translation_vortex(_EXAMPLE.v0 * float('nan')), 'v contains non-finite values')


@pytest.mark.parametrize('name, value, message', [
    ('time', 0., 'time must be a finite number > 0'), ('time', float('nan'), 'time must be a finite number > 0'),
    ('radius', 0., RADIUS), ('radius', -1., RADIUS),
    ('strength', (2., 1.), 'strength must be a pair (low, high) of finite numbers >= 0 with low <= high'),
    ('strength', (-1., 2.), 'strength must be a pair (low, high) of finite numbers >= 0'),
    ('small_scale', float('nan'), 'small_scale must be a finite number >= 0'),
    ('marker_smoothness', -1., 'marker_smoothness must be a finite number >= 0'),
    ('seed', 'a', 'seed must be None, an integer >= 0 or a numpy.random.Generator'),
    ('resolution', spatial(x=1, y=1), 'resolution must be a PhiML Shape of 2 spatial dims of size >= 2'),
    ('resolution', spatial(x=16), 'resolution must be a PhiML Shape of 2 spatial dims'),
    ('batch_shape', 2, 'batch_shape must be a PhiML Shape of one or more batch dims'),
    ('bounds', 3, 'bounds must be None or a phi.geom.Box over the dims x,y'),
])
def test_random_example_refuses_bad_settings(name, value, message):
    arguments = dict(resolution=spatial(x=16, y=16), batch_shape=batch(examples=1), seed=0, radius=2.) | {name: value}
    refused(lambda: fluid.random_example(**arguments), message)


def test_numpy_integers_and_scalars_are_accepted():
    expected = fluid.forward(_EXAMPLE.v0, _EXAMPLE.m0, steps=2, dt=0.25)
    same = fluid.forward(_EXAMPLE.v0, _EXAMPLE.m0, steps=np.int64(2), dt=np.float32(0.25))  # 0.25 is exact in float32
    assert math.max(abs(same.values - expected.values), same.values.shape) == 0


def test_loss_and_helpers_refuse_non_grids():
    trajectory = fluid.forward(_EXAMPLE.v0, _EXAMPLE.m0, steps=1)
    refused(lambda: fluid.loss(trajectory.time[-1], _EXAMPLE.m0), "trajectory must be a marker trajectory with a batch dim 'time'")
    refused(lambda: fluid.loss(trajectory, _blob(spatial(x=8, y=8))), 'm_target has resolution')
    for call in (fluid.kinetic_energy, fluid.pressure_solve):
        refused(lambda: call(3), 'velocity must be a PhiFlow grid Field')
    refused(lambda: fluid.to_staggered(_EXAMPLE.m0), 'v must be a vector field')
