"""Incompressible Navier–Stokes marker transport as a SIP physics, with a reverse-simulation inverse.

The setup follows Holl, Koltun & Thuerey 2021, appendix B.4.

Forward: a passive marker `m` and the velocity `v` (staggered MAC grid, periodic box) are advected with
second-order MacCormack advection, `v` is made divergence-free by a CG pressure solve and rescaled to the
kinetic energy of the previous step (inviscid; numerical diffusion only). Defaults: 64 × 64 cells of size 1,
`t = 2` in 8 steps of `Δt = 0.25`. The unknown is the initial velocity `v0`; the observation is the last
marker frame. All functions treat batch dims other than `time` as independent examples.

Inverse (`inverse`): a reverse-simulation estimator of the low-dimensional part of `v0` — a uniform translation
plus one Gaussian vortex of known radius (the prior of the data, `translation_vortex`). See its docstring
for what it estimates and its limits. Data: `random_example` draws `(m0, v0)` like the paper's data set.

Every public function refuses bad arguments with `phi_hig.errors.InvalidInputError` naming the argument and the
allowed values: `steps` is an integer ≥ 1, `dt` a finite number > 0 (time runs forward; `reverse_markers` does the
reversal itself), `radius` a finite number > 0, grids periodic and on the same bounds; booleans are not numbers.
"""
from typing import NamedTuple, Tuple, Union

import numpy as np
from phi import field
from phi.field import CenteredGrid, StaggeredGrid, Field
from phi.geom import Box
from phi.physics import advect, fluid as phi_fluid
from phiml import math
from phiml.math import Shape, Solve, Tensor, batch, spatial, channel, extrapolation

from ._checks import (require_grid, require_vector_grid, require_same_grid, require_batch_compatible, require_periodic,
                      require_number, require_steps, require_range, require_seed, require_shape, require_bounds,
                      require_solve, require_finite)
from ..errors import InvalidInputError

__all__ = ['DT', 'STEPS', 'VORTEX_RADIUS', 'pressure_solve', 'kinetic_energy', 'to_staggered', 'step', 'simulate',
           'forward', 'loss', 'translation_vortex', 'VortexFit', 'fit_translation_vortex', 'inverse', 'reverse_markers',
           'FluidExample', 'random_example']

DT = 0.25
STEPS = 8
VORTEX_RADIUS = 8.


# ------------------------------------------------------------------------------------------------- simulation

def pressure_solve(velocity: Field) -> Solve:
    """CG for the periodic pressure Poisson problem: `rank_deficiency=0` (needed in float32 and float64 in PhiFlow
    3.4), tolerance 1e-8 in float64 and 1e-4 in float32, starting from zero pressure."""
    require_grid('velocity', velocity)
    return _pressure_solve(velocity)


def _pressure_solve(velocity: Field) -> Solve:
    tol = 1e-8 if velocity.values.dtype.precision == 64 else 1e-4
    x0 = CenteredGrid(0, extrapolation.PERIODIC, velocity.bounds, velocity.resolution)
    return Solve('CG', tol, tol, max_iterations=10 * velocity.resolution.volume, x0=x0, rank_deficiency=0)


def kinetic_energy(velocity: Field) -> Tensor:
    """`E = ∫ v² dx` per example (sum of squared staggered components times the cell volume)."""
    require_grid('velocity', velocity)
    return _kinetic_energy(velocity)


def _kinetic_energy(velocity: Field) -> Tensor:
    return math.sum(velocity.values ** 2, math.non_batch(velocity.values)) * math.prod(velocity.dx, 'vector')


def to_staggered(v: Field) -> StaggeredGrid:
    """`v` as a periodic staggered grid (centred values are interpolated to the faces)."""
    require_vector_grid('v', v)
    if v.is_staggered:
        return v
    return field.resample(v, StaggeredGrid(0, extrapolation.PERIODIC, v.bounds, v.resolution))


def step(v: Field, m: Field, dt: float = DT, solve: Solve = None) -> Tuple[Field, Field]:
    """One time step: advect `m` and `v` (MacCormack), project `v`, rescale `v` to its energy before the step.

    Guarantees: the returned velocity is divergence-free up to the pressure-solve tolerance and has the kinetic
    energy of the input velocity (unless that is zero).

    Args:
        v: Velocity, centred or staggered periodic 2D vector grid.
        m: Marker, periodic `CenteredGrid` on the grid of `v`.
        dt: Time step, a finite number > 0.
        solve: Pressure `Solve`; defaults to `pressure_solve(v)`.
    """
    v, m = _validated(v, m, 'v', 'm')
    return _step(v, m, _require_dt(dt), require_solve('solve', solve))


def _step(v: Field, m: Field, dt: float, solve: Solve = None) -> Tuple[Field, Field]:
    """`step` without the argument checks (the simulation loop checks once)."""
    energy = _kinetic_energy(v)
    m = advect.mac_cormack(m, v, dt)
    v = advect.mac_cormack(v, v, dt)
    v, _ = phi_fluid.make_incompressible(v, (), solve or _pressure_solve(v))
    new_energy = _kinetic_energy(v)
    return v * math.where(new_energy > 0, math.sqrt(energy / math.where(new_energy > 0, new_energy, 1)), 1), m


def simulate(v0: Field, m0: Field, *, dt: float = DT, steps: int = STEPS) -> Tuple[Field, Field]:
    """Runs the forward simulation and returns the marker and velocity trajectories.

    `v0` (centred or staggered, periodic) is first projected to be divergence-free; then `steps` calls of `step`.

    Args:
        v0: Initial velocity, centred or staggered periodic 2D vector grid.
        m0: Initial marker, periodic `CenteredGrid` on the grid of `v0`.
        dt: Time step, a finite number > 0.
        steps: Number of steps, an integer ≥ 1.

    Returns:
        `(markers, velocities)`, each stacked along `batch('time')` with `steps + 1` frames; frame 0 holds `m0`
        and the projected `v0`.
    """
    v0, m0 = _validated(v0, m0)
    dt, steps = _require_dt(dt), require_steps('steps', steps)
    v, _ = phi_fluid.make_incompressible(to_staggered(v0), (), _pressure_solve(v0))
    m = m0
    markers, velocities = [m], [v]
    for _ in range(steps):
        v, m = _step(v, m, dt)
        markers.append(m)
        velocities.append(v)
    return field.stack(markers, batch('time')), field.stack(velocities, batch('time'))


def forward(v0: Field, m0: Field, *, dt: float = DT, steps: int = STEPS) -> Field:
    """Marker trajectory (`steps + 1` frames along `batch('time')`) from initial velocity `v0` and marker `m0`.

    The observation of the SIP task is its last frame, `forward(v0, m0).time[-1]`.
    """
    return simulate(v0, m0, dt=dt, steps=steps)[0]


def loss(trajectory: Field, m_target: Field) -> Tensor:
    """Per-example `½‖m_T − m*‖²` of the last frame (an L2 observation loss; the paper weights frequencies).

    Args:
        trajectory: Marker trajectory along `batch('time')`, as returned by `forward`.
        m_target: Observed final marker, `CenteredGrid` on the grid of the trajectory.
    """
    require_grid('trajectory', trajectory, staggered=False)
    if 'time' not in trajectory.shape:
        raise InvalidInputError(f"trajectory must be a marker trajectory with a batch dim 'time' (as returned by forward) "
                                f"but has shape {trajectory.shape}")
    require_grid('m_target', m_target, staggered=False)
    require_same_grid('trajectory', trajectory.time[-1], 'm_target', m_target)
    diff = trajectory.time[-1].values - m_target.values
    return 0.5 * math.sum(diff ** 2, spatial)


# ----------------------------------------------------------------------------------------------------- prior

def translation_vortex(template: Field, translation: Tensor, strength: Tensor, centre: Tensor,
                       radius: float = VORTEX_RADIUS) -> Field:
    """Uniform velocity plus a Gaussian vortex, sampled like `template` (centred or staggered, periodic).

    `v(r) = translation + strength · ẑ×d/radius · exp(−|d|²/(2 radius²))` with `d = r − centre` taken to the nearest
    periodic image. The vortex speed peaks at `|d| = radius` with `strength·e^{−1/2}`; `strength > 0` is
    counter-clockwise. It is divergence-free in the continuum and has zero mean, so `translation` is the mean.

    Args:
        template: 2D grid whose type, resolution and bounds the result takes.
        translation: Vector `Tensor` (channel `vector` with the template's axes), optionally with batch dims.
        strength: Finite number or `Tensor` with batch dims only.
        centre: Position `Tensor` (channel `vector`), optionally with batch dims.
        radius: Vortex radius in physical units, a finite number > 0.
    """
    require_grid('template', template)
    if template.spatial_rank != 2:
        raise InvalidInputError(f"template must be a 2D grid but has resolution {template.resolution}")
    translation = _require_vector('translation', translation, template)
    strength = require_number('strength', strength, batch_like=('template', template))
    centre = _require_vector('centre', centre, template)
    radius = _require_radius(radius)
    for (name_a, a), (name_b, b) in [(('translation', translation), ('strength', strength)),
                                     (('translation', translation), ('centre', centre)), (('strength', strength), ('centre', centre))]:
        require_batch_compatible(name_a, a, name_b, b)
    size = template.bounds.size

    def velocity(position):
        d = (position - centre + size / 2) % size - size / 2
        swirl = math.stack([-d.vector['y'], d.vector['x']], channel(vector='x,y'))
        return translation + strength * swirl / radius * math.exp(-math.squared_norm(d) / (2 * radius ** 2))
    if template.is_staggered:
        return StaggeredGrid(velocity, extrapolation.PERIODIC, template.bounds, template.resolution)
    return CenteredGrid(velocity, extrapolation.PERIODIC, template.bounds, template.resolution)


class VortexFit(NamedTuple):
    """Low-dimensional description of a velocity field: mean translation and the best-fitting vortex."""
    translation: Tensor
    strength: Tensor
    centre: Tensor


def fit_translation_vortex(v: Field, radius: float = VORTEX_RADIUS) -> VortexFit:
    """Projects `v` onto the prior: translation = mean velocity; vortex centre = argmax of the matched filter.

    The matched filter correlates `v − translation` with the unit vortex at every cell centre (by FFT, periodic),
    picks the cell with the largest |correlation|, refines it to sub-cell accuracy with a parabola per axis, and
    sets the strength to correlation / ‖unit vortex‖². Exact for `v = translation_vortex(...)` up to
    discretization; other structure of `v` (small vortices) biases it only through its overlap with the vortex.

    Args:
        v: Periodic 2D velocity, centred or staggered.
        radius: Radius of the fitted vortex, a finite number > 0.
    """
    require_vector_grid('v', v)
    require_periodic('v', v)
    radius = _require_radius(radius)
    centred = field.resample(v, CenteredGrid(0, extrapolation.PERIODIC, v.bounds, v.resolution)) if v.is_staggered else v
    dims = centred.resolution.names
    values = math.stop_gradient(centred.values).numpy([*batch(centred.values).names, *dims, 'vector'])
    batch_shape = batch(centred.values)
    values = values.reshape(batch_shape.volume, *centred.resolution.sizes, 2)
    translation = values.mean(axis=(1, 2))
    lower = centred.bounds.lower.numpy('vector')
    dx = centred.dx.numpy('vector')
    origin = CenteredGrid(0, extrapolation.PERIODIC, centred.bounds, centred.resolution)
    unit = translation_vortex(origin, math.wrap([0., 0.], channel(vector='x,y')), 1., centred.bounds.lower + centred.dx / 2, radius)
    kernel = unit.values.numpy([*dims, 'vector'])
    norm2 = float((kernel ** 2).sum())
    spectrum = np.conj(np.fft.fft2(kernel, axes=(0, 1)))
    strengths, centres = [], []
    for b in range(values.shape[0]):
        residual = values[b] - translation[b]
        corr = np.real(np.fft.ifft2(np.fft.fft2(residual, axes=(0, 1)) * spectrum, axes=(0, 1))).sum(-1)
        i, j = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
        offsets = [_parabola_peak(corr[(i - 1) % corr.shape[0], j], corr[i, j], corr[(i + 1) % corr.shape[0], j]),
                   _parabola_peak(corr[i, (j - 1) % corr.shape[1]], corr[i, j], corr[i, (j + 1) % corr.shape[1]])]
        centres.append(lower + (np.array([i, j]) + 0.5 + np.array(offsets)) * dx)
        strengths.append(corr[i, j] / norm2)
    vec = channel(vector='x,y')
    return VortexFit(math.tensor(translation.reshape(*batch_shape.sizes, 2), batch_shape & vec),
                     math.tensor(np.array(strengths).reshape(batch_shape.sizes), batch_shape),
                     math.tensor(np.array(centres).reshape(*batch_shape.sizes, 2), batch_shape & vec))


def _parabola_peak(left, centre, right) -> float:
    curvature = left - 2 * centre + right
    return 0. if curvature == 0 else float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


# --------------------------------------------------------------------------------------------------- inverse

def inverse(v0: Field, m_target: Field, m0: Field, *, y: Field = None, trajectory: Tuple[Field, Field] = None,
            dt: float = DT, steps: int = STEPS, radius: float = VORTEX_RADIUS, max_centre_shift: float = None,
            max_relative_strength_change: float = 1., search_below: float = 0.25) -> Field:
    """Correction `Δv0` of translation and vortex (strength, centre) from a forward and a reverse simulation.

    Uses only the current estimate `v0`, the initial marker `m0` and the observed final marker `m_target`:

    1. Fit the prior to `v0` (`fit_translation_vortex`): translation τ, vortex strength s and centre p.
    2. Simulate forward from `(v0, m0)`: markers `m_k`, velocities `v_k`.
    3. Simulate the marker in reverse from `m_target` through the same estimated flow (`Δt → −Δt`, using the
       stored forward velocities `v_k`, i.e. the exact time reversal of the estimated flow): markers `m^rev_k`.
       If `v0` were right, `m^rev_k ≈ m_k`; an error `δv` of the initial velocity displaces `m^rev_k` against
       `m_k` by about `D = T·δv` (exact for translations, first order for the rotation of a vortex).
    4. Translation, robustly for large errors: `δτ₀ = mean_k (com(m^rev_k) − com(m_k)) / T`.
    5. Remove `δτ₀·T` from `m^rev_k` (Fourier shift) and fit the remaining differences to first order,
       `m^rev_k − m_k ≈ −T·(δτ + δs·G_k + s·∂G_k/∂p·δp)·∇m̄_k`, by least squares over all steps and cells
       (`G_k`: unit vortex at its position `p + τ·t_k` at step k, `m̄_k = ½(m_k + m^rev_k)`).
       If the estimate has (almost) no vortex, `|s| < search_below`, there is no centre to linearize about:
       the vortex is then placed at the candidate centre (a grid of spacing `radius/2`) whose fit of
       `(δτ, δs)` leaves the smallest residual.
    6. `Δv0 = translation_vortex(τ+δτ₀+δτ, s+δs, p+δp) − translation_vortex(τ, s, p)`, sampled like `v0`.

    Limits: it corrects only the five prior parameters and never the small-scale structure of `v0`; the
    vortex radius is assumed known (`radius`); the first-order fit is accurate for displacements that are
    small compared to the marker's features (large strength or centre errors are corrected partially per step
    and the step sizes are capped); the centres of mass assume the marker does not wrap around the periodic
    boundary; the vortex centre is only observable where the marker has structure near the vortex.

    Args:
        v0: Current estimate of the initial velocity, centred (vector) or staggered periodic grid.
        m_target: Observed marker at `t = steps·dt`, `CenteredGrid` like `m0`.
        m0: Known initial marker, periodic `CenteredGrid`.
        y: Accepted for the common `inverse` interface and ignored: the estimator needs the velocity trajectory,
            which `forward` does not return, so the forward simulation is run again (`simulate`) unless
            `trajectory` is given.
        trajectory: `(markers, velocities)` as returned by `simulate(v0, m0, dt=dt, steps=steps)`, to skip that
            simulation when the caller has already run it (the result is then the same). Checked for its number
            of frames and its grid, not for having come from `v0`.
        dt, steps: Time stepping of the forward simulation: `dt` a finite number > 0, `steps` an integer ≥ 1.
        radius: Vortex radius of the prior, a finite number > 0.
        max_centre_shift: Cap of |δp| per step, a finite number ≥ 0; default `radius`.
        max_relative_strength_change: Cap of |δs| per step relative to |s|, a finite number ≥ 0.
        search_below: Below this |s| the vortex centre is searched instead of linearized (caps not applied); a
            finite number ≥ 0.

    Returns:
        `Δv0`, a grid of the same kind, resolution, batch dims, backend and dtype as `v0`. It is computed in
        NumPy float64 (the estimator is not differentiated), whatever the backend of the inputs.
    """
    v0, m0 = _validated(v0, m0)
    require_grid('m_target', m_target, staggered=False)
    require_periodic('m_target', m_target)
    require_same_grid('m0', m0, 'm_target', m_target)
    require_batch_compatible('v0', v0, 'm_target', m_target)
    if y is not None:
        require_grid('y', y)
    dt, steps, radius = _require_dt(dt), require_steps('steps', steps), _require_radius(radius)
    if max_centre_shift is not None:
        max_centre_shift = require_number('max_centre_shift', max_centre_shift, non_negative=True, tensor=False)
    max_relative_strength_change = require_number('max_relative_strength_change', max_relative_strength_change,
                                                  non_negative=True, tensor=False)
    search_below = require_number('search_below', search_below, non_negative=True, tensor=False)
    backend, dtype = v0.values.backend, v0.values.dtype
    with math.NUMPY, math.precision(64):  # no gradient is needed: NumPy/SciPy is faster and float64 safer
        v0, m0, m_target = (_numpy64(f) for f in (v0, m0, m_target))
        fit = fit_translation_vortex(v0, radius)
        if trajectory is None:
            markers, velocities = simulate(v0, m0, dt=dt, steps=steps)
        else:
            markers, velocities = _validated_trajectory(trajectory, m0, steps)
        reverse = reverse_markers(m_target, velocities, dt)
        caps = (radius if max_centre_shift is None else max_centre_shift, max_relative_strength_change, search_below)
        new = _corrected_prior(markers, reverse, fit, dt, radius, *caps)
        correction = translation_vortex(v0, *new, radius) - translation_vortex(v0, *fit, radius)
    return correction.with_values(math.cast(math.convert(correction.values, backend), dtype))


def reverse_markers(m_target: Field, velocities: Field, dt: float = DT) -> Field:
    """Marker trajectory run backwards from `m_target` through the stored velocities (`Δt → −Δt`).

    Frame `k` (of `velocities.time.size`) is the marker advected from the last frame back to step `k` with the
    velocities `v_{N−1}, …, v_k` that the forward simulation used; the last frame is `m_target` itself.

    Args:
        m_target: Final marker, periodic `CenteredGrid`.
        velocities: Velocity trajectory on the grid of `m_target` with at least 2 frames along `batch('time')`, as
            returned by `simulate`.
        dt: The forward time step, a finite number > 0 (the reversal negates it).
    """
    require_grid('m_target', m_target, staggered=False)
    require_periodic('m_target', m_target)
    require_vector_grid('velocities', velocities)
    frames = velocities.shape.get_size('time') if 'time' in velocities.shape else 0
    if frames < 2:
        raise InvalidInputError(f"velocities must be a velocity trajectory with at least 2 frames along batch dim 'time' "
                                f"(as returned by simulate) but has shape {velocities.shape}")
    require_same_grid('velocities', velocities, 'm_target', m_target)
    dt = _require_dt(dt)
    steps = velocities.shape.get_size('time') - 1
    frames = [m_target]
    for k in reversed(range(steps)):
        frames.insert(0, advect.mac_cormack(frames[0], velocities.time[k], -dt))
    return field.stack(frames, batch('time'))


def _corrected_prior(markers, reverse, fit: VortexFit, dt, radius, max_shift, max_relative_change, search_below) -> VortexFit:
    """Steps 4–5 of `inverse` for every example: the prior parameters after one correction."""
    steps = markers.shape.get_size('time') - 1
    shape = batch(markers.values).without('time') & batch(reverse.values).without('time') & batch(fit.strength)
    order = [*shape.names, 'time', *markers.resolution.names]
    fwd = math.expand(markers.values, shape).numpy(order).reshape(shape.volume, steps + 1, *markers.resolution.sizes)
    rev = math.expand(reverse.values, shape).numpy(order).reshape(shape.volume, steps + 1, *markers.resolution.sizes)
    tau = math.expand(fit.translation, shape).numpy([*shape.names, 'vector']).reshape(-1, 2)
    s = math.expand(fit.strength, shape).numpy(shape.names).reshape(-1)
    p = math.expand(fit.centre, shape).numpy([*shape.names, 'vector']).reshape(-1, 2)
    grid = (markers.dx.numpy('vector'), markers.bounds.lower.numpy('vector'), markers.bounds.size.numpy('vector'))
    times = dt * np.arange(steps + 1)
    d_tau, d_s, d_p = np.zeros_like(tau), np.zeros_like(s), np.zeros_like(p)
    for b in range(shape.volume):
        d_tau[b], d_s[b], d_p[b] = _estimate(fwd[b], rev[b], tau[b], s[b], p[b], times, dt * steps, *grid, radius, search_below)
        if abs(s[b]) >= search_below:  # caps of the linearized step (a searched centre is not a step)
            shift = np.linalg.norm(d_p[b])
            if shift > max_shift:
                d_p[b] *= max_shift / shift
            d_s[b] = np.clip(d_s[b], -max_relative_change * abs(s[b]), max_relative_change * abs(s[b]))
    vec = channel(vector='x,y')
    return VortexFit(math.tensor((tau + d_tau).reshape(*shape.sizes, 2), shape & vec),
                     math.tensor((s + d_s).reshape(shape.sizes), shape),
                     math.tensor((p + d_p).reshape(*shape.sizes, 2), shape & vec))


def _estimate(fwd, rev, tau, s, p, times, total_time, dx, lower, size, radius, search_below):
    """Steps 4–5 of `inverse` for one example on NumPy arrays `(time, x, y)`; returns (δτ, δs, δp) uncapped."""
    coords = [lower[d] + (np.arange(fwd.shape[1 + d]) + 0.5) * dx[d] for d in range(2)]
    X, Y = np.meshgrid(*coords, indexing='ij')
    com_f = np.array([_centre_of_mass(f, X, Y) for f in fwd])
    com_r = np.array([_centre_of_mass(r, X, Y) for r in rev])
    d_tau0 = np.mean(com_r - com_f, axis=0) / total_time
    rev = np.stack([_fourier_shift(r, -d_tau0 * total_time, dx) for r in rev])
    mean = 0.5 * (fwd + rev)
    grad = [(np.roll(mean, -1, 1 + d) - np.roll(mean, 1, 1 + d)) / (2 * dx[d]) for d in range(2)]
    rhs = -(rev - fwd).reshape(-1)
    drift = (tau + d_tau0)[:, None] * times[None, :]  # vortex centre moves with the translation

    def columns(centre, with_centre):
        ddx = (X[None] - centre[0] - drift[0][:, None, None] + size[0] / 2) % size[0] - size[0] / 2
        ddy = (Y[None] - centre[1] - drift[1][:, None, None] + size[1] / 2) % size[1] - size[1] / 2
        g = np.exp(-(ddx ** 2 + ddy ** 2) / (2 * radius ** 2)) / radius
        basis = [(1., 0.), (0., 1.), (-ddy * g, ddx * g)]  # translation x, y; unit vortex
        if with_centre:  # ∂/∂p_x and ∂/∂p_y of s·G(r − p)
            basis += [(s * (-ddy * g * ddx / radius ** 2), s * (-g + ddx ** 2 * g / radius ** 2)),
                      (s * (g - ddy ** 2 * g / radius ** 2), s * (ddx * g * ddy / radius ** 2))]
        return np.stack([(total_time * (bu * grad[0] + bv * grad[1])).reshape(-1) for bu, bv in basis], -1)

    if abs(s) < search_below:  # no vortex to linearize about: place it where it explains the data best
        candidates = [lower + np.array([i, j]) * radius / 2 for i in np.arange(0, size[0] / (radius / 2)) for j in np.arange(0, size[1] / (radius / 2))]
        translation_cols = columns(p, False)[:, :2]
        q, _ = np.linalg.qr(translation_cols)
        r_perp = rhs - q @ (q.T @ rhs)
        best, best_gain = candidates[0], -1.
        for c in candidates:  # residual of the 3-column fit = ‖r⊥‖² − (v⊥·r⊥)²/‖v⊥‖², v⊥ ⊥ translation columns
            v = columns(c, False)[:, 2]
            v_perp = v - q @ (q.T @ v)
            norm2 = np.sum(v_perp * v_perp)  # elementwise, not BLAS dot: avoids thread contention with torch
            gain = np.sum(v_perp * r_perp) ** 2 / norm2 if norm2 > 0 else 0.
            if gain > best_gain:
                best, best_gain = c, gain
        theta, _ = _least_squares(columns(best, False), rhs)
        return d_tau0 + theta[:2], theta[2], best - p
    theta, _ = _least_squares(columns(p, True), rhs)
    return d_tau0 + theta[:2], theta[2], theta[3:]


def _least_squares(a, r):
    """Column-scaled least squares `argmin ‖aθ − r‖`; columns without signal get θ = 0. Returns (θ, residual)."""
    scale = np.linalg.norm(a, axis=0)
    active = scale > 1e-12 * max(scale.max(), 1e-300)
    theta = np.zeros(a.shape[1])
    if active.any():
        theta[active] = np.linalg.lstsq(a[:, active] / scale[active], r, rcond=1e-10)[0] / scale[active]
    return theta, float(np.linalg.norm(a @ theta - r))


def _centre_of_mass(m, X, Y):
    total = m.sum()
    return np.zeros(2) if total == 0 else np.array([(m * X).sum(), (m * Y).sum()]) / total


def _fourier_shift(m, shift, dx):
    kx = np.fft.fftfreq(m.shape[0], d=dx[0])[:, None]
    ky = np.fft.fftfreq(m.shape[1], d=dx[1])[None, :]
    phase = np.exp(-2j * np.pi * (kx * shift[0] + ky * shift[1]))
    return np.real(np.fft.ifft2(np.fft.fft2(m) * phase))


# ------------------------------------------------------------------------------------------------------- data

class FluidExample(NamedTuple):
    """A generated example: marker `m0`, centred velocity `v0` and the parameters of its large-scale part."""
    m0: CenteredGrid
    v0: CenteredGrid
    translation: Tensor
    strength: Tensor
    centre: Tensor


def random_example(resolution: Shape = spatial(x=64, y=64), batch_shape: Shape = batch(examples=1),
                   seed: Union[int, np.random.Generator, None] = None, *, bounds: Box = None,
                   time: float = DT * STEPS, radius: float = VORTEX_RADIUS, strength: Tuple[float, float] = (1., 4.),
                   small_scale: float = 0.1, marker_smoothness: float = 3.) -> FluidExample:
    """Draws `(m0, v0)` like the paper's Navier–Stokes data (Holl, Koltun & Thuerey 2021, appendix B.4).

    * `m0`: smooth random noise thresholded at 0 (values 0/1) inside a box of half the domain size per axis,
      placed uniformly so that it lies inside the domain.
    * `v0` (cell-centred, periodic): the uniform velocity `(domain centre − com(m0))/time`, plus a Gaussian vortex
      (`translation_vortex`, radius `radius`) of strength uniform in `strength` with random sign, centred
      uniformly inside the marker box, plus small random vortices: a divergence-free field from a random
      stream function with spectrum ∝ `exp(−|k|/k₀)`, scaled to RMS speed `small_scale`·(vortex strength).

    Deterministic for an integer `seed`.

    Args:
        resolution: Two spatial dims, each of size ≥ 2.
        batch_shape: Batch dims of the result (one or more).
        seed: None, an integer ≥ 0 or a NumPy `Generator`.
        bounds: Physical domain, a `Box` over the dims of `resolution`; defaults to cells of size 1.
        time: Duration `t > 0` over which the translation carries the marker to the centre.
        radius: Vortex radius, > 0.
        strength: Range `(low, high)` of the vortex strength magnitude, `0 ≤ low ≤ high`; the sign is random.
        small_scale: RMS speed of the small vortices relative to the vortex strength, ≥ 0.
        marker_smoothness: Smoothness of the marker noise (Gaussian filter width in cells), ≥ 0.
    """
    resolution = require_shape('resolution', resolution, 'spatial', rank=2, min_size=2)
    batch_shape = require_shape('batch_shape', batch_shape, 'batch')
    bounds = require_bounds('bounds', bounds, resolution)
    seed = require_seed('seed', seed)
    time = require_number('time', time, positive=True, tensor=False)
    radius = _require_radius(radius)
    strength = require_range('strength', strength, non_negative=True)
    small_scale = require_number('small_scale', small_scale, non_negative=True, tensor=False)
    marker_smoothness = require_number('marker_smoothness', marker_smoothness, non_negative=True, tensor=False)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    nx, ny = resolution.sizes
    bounds = bounds or Box(**dict(zip(resolution.names, resolution.sizes)))
    grid = CenteredGrid(0, extrapolation.PERIODIC, bounds, resolution)
    lower, size, dx = grid.bounds.lower.numpy('vector'), grid.bounds.size.numpy('vector'), grid.dx.numpy('vector')
    n = batch_shape.volume
    markers = np.zeros((n, nx, ny))
    translations, strengths, centres, fine = np.zeros((n, 2)), np.zeros(n), np.zeros((n, 2)), np.zeros((n, nx, ny, 2))
    kx, ky = np.fft.fftfreq(nx)[:, None], np.fft.fftfreq(ny)[None, :]
    k = np.sqrt(kx ** 2 + ky ** 2)
    for b in range(n):
        bx, by = nx // 2, ny // 2
        x0, y0 = rng.integers(0, nx - bx + 1), rng.integers(0, ny - by + 1)
        noise = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(bx, by))) * np.exp(-(marker_smoothness * np.pi) ** 2 * (np.fft.fftfreq(bx)[:, None] ** 2 + np.fft.fftfreq(by)[None, :] ** 2))))
        markers[b, x0:x0 + bx, y0:y0 + by] = noise > 0
        X, Y = np.meshgrid(lower[0] + (np.arange(nx) + 0.5) * dx[0], lower[1] + (np.arange(ny) + 0.5) * dx[1], indexing='ij')
        com = _centre_of_mass(markers[b], X, Y)
        translations[b] = (lower + size / 2 - com) / time
        strengths[b] = rng.uniform(*strength) * rng.choice([-1., 1.])
        centres[b] = lower + (np.array([x0, y0]) + rng.random(2) * np.array([bx, by])) * dx
        psi_hat = (rng.normal(size=(nx, ny)) + 1j * rng.normal(size=(nx, ny))) * np.exp(-k / 0.05) * (k > 0)
        psi = np.real(np.fft.ifft2(psi_hat))
        u = (np.roll(psi, -1, 1) - np.roll(psi, 1, 1)) / (2 * dx[1])
        v = -(np.roll(psi, -1, 0) - np.roll(psi, 1, 0)) / (2 * dx[0])
        rms = np.sqrt(np.mean(u ** 2 + v ** 2))
        fine[b] = np.stack([u, v], -1) * (small_scale * abs(strengths[b]) / rms if rms > 0 else 0)
    vec = channel(vector='x,y')
    m0 = grid.with_values(math.tensor(markers.reshape(*batch_shape.sizes, nx, ny), batch_shape & resolution))
    translation = math.tensor(translations.reshape(*batch_shape.sizes, 2), batch_shape & vec)
    strength_t = math.tensor(strengths.reshape(batch_shape.sizes), batch_shape)
    centre = math.tensor(centres.reshape(*batch_shape.sizes, 2), batch_shape & vec)
    large = translation_vortex(grid, translation, strength_t, centre, radius)
    v0 = large + large.with_values(math.tensor(fine.reshape(*batch_shape.sizes, nx, ny, 2), batch_shape & resolution & vec))
    return FluidExample(m0, v0, translation, strength_t, centre)


# ---------------------------------------------------------------------------------------------------- checks

def _numpy64(f: Field) -> Field:
    return f.with_values(math.cast(math.convert(math.stop_gradient(f.values), math.NUMPY), math.DType(float, 64)))


def _validated_trajectory(trajectory, m0: Field, steps: int) -> Tuple[Field, Field]:
    if not isinstance(trajectory, (tuple, list)) or len(trajectory) != 2:
        raise InvalidInputError(f"trajectory must be the pair (markers, velocities) returned by simulate() but got {type(trajectory).__name__}")
    markers, velocities = trajectory
    for name, f in (('trajectory markers', markers), ('trajectory velocities', velocities)):
        if not isinstance(f, Field) or f.shape.get_size('time') != steps + 1:
            raise InvalidInputError(f"{name} must be a grid with {steps + 1} frames along 'time' (steps={steps}) but got "
                                    f"{getattr(f, 'shape', type(f).__name__)}")
        if f.resolution != m0.resolution:
            raise InvalidInputError(f"{name} must have the resolution of m0, {m0.resolution}, but has {f.resolution}")
    return _numpy64(markers), _numpy64(velocities)


def _validated(v0, m0, v_name: str = 'v0', m_name: str = 'm0') -> Tuple[Field, Field]:
    """Velocity and marker checked: periodic 2D grids (vector / centred scalar) on the same grid."""
    require_grid(m_name, m0, staggered=False)
    if m0.spatial_rank != 2:
        raise InvalidInputError(f"{m_name} must be a 2D grid (the fluid physics is two-dimensional) but has resolution {m0.resolution}")
    require_vector_grid(v_name, v0)
    require_periodic(v_name, v0)
    require_periodic(m_name, m0)
    require_same_grid(v_name, v0, m_name, m0)
    return v0, m0


def _require_dt(dt) -> float:
    return require_number('dt', dt, positive=True, tensor=False)


def _require_radius(radius) -> float:
    return require_number('radius', radius, positive=True, tensor=False)


def _require_vector(name: str, value, template: Field) -> Tensor:
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
