"""Incompressible Navier–Stokes marker transport as a SIP physics, with a reverse-simulation inverse.

The setup follows Holl, Koltun & Thuerey 2021, appendix B.4.

Forward: a passive marker `m` and the velocity `v` (staggered MAC grid, periodic box) are advected with
second-order MacCormack advection, `v` is made divergence-free by a CG pressure solve and rescaled to the
kinetic energy of the previous step (inviscid; numerical diffusion only). Defaults: 64 × 64 cells of size 1,
`t = 2` in 8 steps of `Δt = 0.25`. The unknown is the initial velocity `v0`; the observation is the last
marker frame. All functions treat batch dims other than `time` as independent examples.

Inverse (`inverse`): a reverse-simulation estimator of the low-dimensional part of `v0` — a uniform translation
plus one Gaussian vortex of known radius (the prior of the data, `translation_vortex`; the prior and the estimator's
fit live in `phi_hig.physics.vortex` and are re-exported here). See its docstring for what it estimates and its
limits. Data: `random_example` draws `(m0, v0)` like the paper's data set.

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
from phiml.backend import Backend
from phiml.math import Shape, Solve, Tensor, batch, spatial, channel, extrapolation

from ._checks import (require_grid, require_vector_grid, require_same_grid, require_batch_compatible, require_periodic,
                      require_number, require_steps, require_range, require_seed, require_shape, require_bounds,
                      require_solve)
from .vortex import (VORTEX_RADIUS, VortexFit, centre_of_mass, fit_translation_vortex, prior_correction,
                     translation_vortex)
from .. import checks
from ..errors import InvalidInputError

__all__ = ['DT', 'STEPS', 'VORTEX_RADIUS', 'pressure_solve', 'kinetic_energy', 'to_staggered', 'step', 'simulate',
           'forward', 'loss', 'translation_vortex', 'VortexFit', 'fit_translation_vortex', 'inverse', 'reverse_markers',
           'FluidExample', 'random_example']

DT = 0.25
STEPS = 8


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
    return _staggered(v)


def _staggered(v: Field) -> StaggeredGrid:
    return v if v.is_staggered else field.resample(v, StaggeredGrid(0, extrapolation.PERIODIC, v.bounds, v.resolution))


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


def simulate(v0: Field, m0: Field, *, dt: float = DT, steps: int = STEPS, jit: bool = False) -> Tuple[Field, Field]:
    """Runs the forward simulation and returns the marker and velocity trajectories.

    `v0` (centred or staggered, periodic) is first projected to be divergence-free; then `steps` calls of `step`.

    Args:
        v0: Initial velocity, centred or staggered periodic 2D vector grid.
        m0: Initial marker, periodic `CenteredGrid` on the grid of `v0`.
        dt: Time step, a finite number > 0.
        steps: Number of steps, an integer ≥ 1.
        jit: Run the simulation as one `phiml.math.jit_compile`d function: traced on the first call for each
            backend, grid, batch shape, dtype, `dt` and `steps` (seconds to a minute), then free of Python overhead
            (2.4–2.6× faster on torch at 64 × 64). The same values as without `jit`; but no gradient flows (the
            inputs are detached: a traced pressure solve is not differentiated like the plain one). Backends that
            cannot compile (NumPy) run the plain simulation.

    Returns:
        `(markers, velocities)`, each stacked along `batch('time')` with `steps + 1` frames; frame 0 holds `m0`
        and the projected `v0`.
    """
    v0, m0 = _validated(v0, m0)
    dt, steps = _require_dt(dt), require_steps('steps', steps)
    if checks.flag('jit', jit):
        return _compiled(_trajectory, v0, m0, dt=dt, steps=steps)
    return _trajectory(v0, m0, dt, steps)


def _trajectory(v0: Field, m0: Field, dt: float, steps: int) -> Tuple[Field, Field]:
    """`simulate` without the argument checks."""
    v, _ = phi_fluid.make_incompressible(_staggered(v0), (), _pressure_solve(v0))
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


def reverse_markers(m_target: Field, velocities: Field, dt: float = DT, *, jit: bool = False) -> Field:
    """Marker trajectory run backwards from `m_target` through the stored velocities (`Δt → −Δt`).

    Frame `k` (of `velocities.time.size`) is the marker advected from the last frame back to step `k` with the
    velocities `v_{N−1}, …, v_k` that the forward simulation used; the last frame is `m_target` itself.

    Args:
        m_target: Final marker, periodic `CenteredGrid`.
        velocities: Velocity trajectory on the grid of `m_target` with at least 2 frames along `batch('time')`, as
            returned by `simulate`.
        dt: The forward time step, a finite number > 0 (the reversal negates it).
        jit: Run it as one `phiml.math.jit_compile`d function, as in `simulate` (no gradient flows).
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
    if checks.flag('jit', jit):
        return _compiled(_reverse, m_target, velocities, dt=dt)
    return _reverse(m_target, velocities, dt)


def _reverse(m_target: Field, velocities: Field, dt: float) -> Field:
    """`reverse_markers` without the argument checks."""
    frames = [m_target]
    for k in reversed(range(velocities.shape.get_size('time') - 1)):
        frames.insert(0, advect.mac_cormack(frames[0], velocities.time[k], -dt))
    return field.stack(frames, batch('time'))


_COMPILED = {}  # (function, precision) -> its math.jit_compile'd version (one trace per shape and constants)


def _compiled(function, *fields: Field, **constants):
    """`function(*fields, **constants)` with `fields` detached and cast to the float precision of the first one,
    jit-compiled where their backend can (the constants are part of the trace's key). One compiled function per
    precision: PhiML's trace key does not hold the dtype (a float32 call would run a float64 trace)."""
    backend, precision = fields[0].values.backend, fields[0].values.dtype.precision
    fields = [f.with_values(math.cast(math.stop_gradient(f.values), math.DType(float, precision))) for f in fields]
    for f in fields:  # PhiFlow caches a grid's cell centres on first use: inside a JAX trace it would cache a tracer
        f.geometry.center  # noqa: B018  (that escapes the trace, e.g. into the next compiled call)
    if not backend.supports(Backend.jit_compile):
        return function(*fields, **constants)
    if (function, precision) not in _COMPILED:
        _COMPILED[function, precision] = math.jit_compile(function, auxiliary_args=','.join(constants))
    with backend, math.precision(precision):
        return _COMPILED[function, precision](*fields, **constants)


# ----------------------------------------------------------------------------------------------------- prior

# --------------------------------------------------------------------------------------------------- inverse

def inverse(v0: Field, m_target: Field, m0: Field, *, y: Field = None, trajectory: Tuple[Field, Field] = None,
            dt: float = DT, steps: int = STEPS, radius: float = VORTEX_RADIUS, max_centre_shift: float = None,
            max_relative_strength_change: float = 1., search_below: float = 0.25, precision: int = 64,
            jit: bool = False) -> Field:
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

    All examples are estimated at once with PhiML operations, on the backend of `v0` (so on the network's device
    and backend when `v0` comes from a network) in `precision` bits.

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
            of frames, its grid and its precision (at least `precision` bits), not for having come from `v0`.
        dt, steps: Time stepping of the forward simulation: `dt` a finite number > 0, `steps` an integer ≥ 1.
        radius: Vortex radius of the prior, a finite number > 0.
        max_centre_shift: Cap of |δp| per step, a finite number ≥ 0; default `radius`.
        max_relative_strength_change: Cap of |δs| per step relative to |s|, a finite number ≥ 0.
        search_below: Below this |s| the vortex centre is searched instead of linearized (caps not applied); a
            finite number ≥ 0.
        precision: Floating-point bits of the simulations and the estimate, 32 or 64 (float32 keeps the update
            within a relative 1e-3 of float64's, tests/test_physics_fluid.py).
        jit: Run the forward and reverse simulations jit-compiled (`simulate`); the same values.

    Returns:
        `Δv0`, a grid of the same kind, resolution, batch dims, backend and dtype as `v0`. It carries no gradient.
    """
    v0, m0 = _validated(v0, m0)
    require_grid('m_target', m_target, staggered=False)
    require_periodic('m_target', m_target)
    require_same_grid('m0', m0, 'm_target', m_target)
    require_batch_compatible('v0', v0, 'm_target', m_target)
    if y is not None:
        require_grid('y', y)
    dt, steps, radius = _require_dt(dt), require_steps('steps', steps), require_number('radius', radius, positive=True, tensor=False)
    if max_centre_shift is not None:
        max_centre_shift = require_number('max_centre_shift', max_centre_shift, non_negative=True, tensor=False)
    max_relative_strength_change = require_number('max_relative_strength_change', max_relative_strength_change,
                                                  non_negative=True, tensor=False)
    search_below = require_number('search_below', search_below, non_negative=True, tensor=False)
    precision = checks.choice('precision', checks.integer('precision', precision), (32, 64))
    jit = checks.flag('jit', jit)
    backend, dtype = v0.values.backend, v0.values.dtype
    if trajectory is not None:
        trajectory = _validated_trajectory(trajectory, m0, steps, precision)
    with backend, math.precision(precision):  # the estimator is not differentiated
        v0, m0, m_target = (_working(f, backend, precision) for f in (v0, m0, m_target))
        if trajectory is None:
            markers, velocities = _compiled(_trajectory, v0, m0, dt=dt, steps=steps) if jit else _trajectory(v0, m0, dt, steps)
        else:
            markers, velocities = (_working(f, backend, precision) for f in trajectory)
        reverse = _compiled(_reverse, m_target, velocities, dt=dt) if jit else _reverse(m_target, velocities, dt)
        caps = (radius if max_centre_shift is None else max_centre_shift, max_relative_strength_change, search_below)
        correction = prior_correction(v0, markers, reverse, dt, radius, *caps)
    return correction.with_values(math.cast(correction.values, dtype))


def _working(f: Field, backend, precision: int) -> Field:
    """`f` detached, on `backend`, in float `precision`."""
    values = math.convert(math.stop_gradient(f.values), backend)
    return f.with_values(math.cast(values, math.DType(float, precision)))


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
    radius = require_number('radius', radius, positive=True, tensor=False)
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
    strengths, centres, fine = np.zeros(n), np.zeros((n, 2)), np.zeros((n, nx, ny, 2))
    kx, ky = np.fft.fftfreq(nx)[:, None], np.fft.fftfreq(ny)[None, :]
    k = np.sqrt(kx ** 2 + ky ** 2)
    for b in range(n):
        bx, by = nx // 2, ny // 2
        x0, y0 = rng.integers(0, nx - bx + 1), rng.integers(0, ny - by + 1)
        noise = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(bx, by))) * np.exp(-(marker_smoothness * np.pi) ** 2 * (np.fft.fftfreq(bx)[:, None] ** 2 + np.fft.fftfreq(by)[None, :] ** 2))))
        markers[b, x0:x0 + bx, y0:y0 + by] = noise > 0
        strengths[b] = rng.uniform(*strength) * rng.choice([-1., 1.])
        centres[b] = lower + (np.array([x0, y0]) + rng.random(2) * np.array([bx, by])) * dx
        psi_hat = (rng.normal(size=(nx, ny)) + 1j * rng.normal(size=(nx, ny))) * np.exp(-k / 0.05) * (k > 0)
        psi = np.real(np.fft.ifft2(psi_hat))
        u = (np.roll(psi, -1, 1) - np.roll(psi, 1, 1)) / (2 * dx[1])
        v = -(np.roll(psi, -1, 0) - np.roll(psi, 1, 0)) / (2 * dx[0])
        rms = np.sqrt(np.mean(u ** 2 + v ** 2))
        fine[b] = np.stack([u, v], -1) * (small_scale * abs(strengths[b]) / rms if rms > 0 else 0)
    with math.NUMPY, math.precision(64):
        com = centre_of_mass(math.tensor(markers, batch('n'), resolution), grid.points).numpy(['n', 'vector'])
    translations = (lower + size / 2 - com) / time
    vec = channel(vector='x,y')
    m0 = grid.with_values(math.tensor(markers.reshape(*batch_shape.sizes, nx, ny), batch_shape & resolution))
    translation = math.tensor(translations.reshape(*batch_shape.sizes, 2), batch_shape & vec)
    strength_t = math.tensor(strengths.reshape(batch_shape.sizes), batch_shape)
    centre = math.tensor(centres.reshape(*batch_shape.sizes, 2), batch_shape & vec)
    large = translation_vortex(grid, translation, strength_t, centre, radius)
    v0 = large + large.with_values(math.tensor(fine.reshape(*batch_shape.sizes, nx, ny, 2), batch_shape & resolution & vec))
    return FluidExample(m0, v0, translation, strength_t, centre)


# ---------------------------------------------------------------------------------------------------- checks

def _validated_trajectory(trajectory, m0: Field, steps: int, precision: int) -> Tuple[Field, Field]:
    if not isinstance(trajectory, (tuple, list)) or len(trajectory) != 2:
        raise InvalidInputError(f"trajectory must be the pair (markers, velocities) returned by simulate() but got {type(trajectory).__name__}")
    markers, velocities = trajectory
    for name, f in (('trajectory markers', markers), ('trajectory velocities', velocities)):
        if not isinstance(f, Field) or f.shape.get_size('time') != steps + 1:
            raise InvalidInputError(f"{name} must be a grid with {steps + 1} frames along 'time' (steps={steps}) but got "
                                    f"{getattr(f, 'shape', type(f).__name__)}")
        if f.resolution != m0.resolution:
            raise InvalidInputError(f"{name} must have the resolution of m0, {m0.resolution}, but has {f.resolution}")
        if f.values.dtype.kind is not float or f.values.dtype.precision < precision:
            raise InvalidInputError(f"{name} must have been simulated in float{precision} or finer (precision="
                                    f"{precision}) but holds {f.values.dtype}")
    return markers, velocities


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
