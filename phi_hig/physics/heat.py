"""Periodic heat equation `∂u/∂t = ν∇²u` as a SIP physics, with its Bayesian-damped inverse and the hot-rectangles data.

The forward map is diffusion over time `dt`, exact in Fourier space: each mode is multiplied by
`exp(−ℓ_k)` with the log-damping `ℓ_k = ν·dt·(2π)²·|k|²`, `k` in cycles per unit length of the physical
grid. PhiFlow's `diffuse.fourier` computes the same with `k` in cycles per *cell*, i.e. it ignores the cell
size: both agree for Δx = 1, and in general `diffuse.fourier(x, ν, dt)` equals `forward(x, ν/Δx², dt)` on
square cells. The paper's case (Holl, Koltun & Thuerey 2021, appendix B.3) is 64 × 64 cells of size 1 with
`ν·dt = 8`.

The inverse (`inverse`) amplifies each Fourier mode of the residual by `exp(ℓ_k·a_k)` with an action
`a_k ∈ [−1, 1]` chosen from the Bayesian probability that the mode is signal rather than noise (Holl, Koltun &
Thuerey 2021, appendix B.3): modes whose amplification stays below roughly `1/(noise·rms(r))` are inverted
exactly, noisy modes get the gradient-descent damping `exp(−ℓ_k)`, undecided ones pass through unchanged. It is
always computed in float64.

Every function refuses bad arguments with `phi_hig.errors.InvalidInputError` naming the argument and the allowed
values (booleans are not numbers; NumPy scalars are).
"""
from typing import Tuple, Union

import numpy as np
from phi.field import CenteredGrid, Field
from phi.geom import Box
from phiml import math
from phiml.math import Shape, Tensor, batch, spatial, extrapolation

from ._checks import (require_grid, require_same_grid, require_periodic, require_number, require_range,
                      require_seed, require_shape, require_bounds)
from ..errors import InvalidInputError

__all__ = ['log_damping', 'forward', 'inverse', 'hot_rectangles']


def log_damping(grid: Field, diffusivity, dt) -> Tensor:
    """`ℓ_k = ν·dt·(2π)²·|k|²` per FFT mode of `grid`, `k` in cycles per unit length (physical cell size `grid.dx`)."""
    require_grid('grid', grid)
    diffusivity, dt = _diffusion_parameters(grid, diffusivity, dt)
    k = math.fftfreq(grid.resolution, grid.dx)
    return diffusivity * dt * (2 * math.PI) ** 2 * math.squared_norm(k)


def forward(x: Field, diffusivity: Union[float, Tensor], dt: Union[float, Tensor]) -> Field:
    """Diffuses the periodic field `x` for time `dt`, exactly in Fourier space and in physical units.

    Guarantees `FFT(y)_k = FFT(x)_k · exp(−ν·dt·(2π)²|k|²)` with `k` in cycles per unit length, so the mean is
    preserved and the result is correct for any cell size, including anisotropic cells. Equals PhiFlow's
    `diffuse.fourier(x, diffusivity, dt)` only for Δx = 1: `diffuse.fourier` measures `k` in cycles per cell,
    i.e. ignores the cell size. Differentiable (PhiML ops on the backend of `x`).

    Args:
        x: Periodic `CenteredGrid`, initial temperature.
        diffusivity: `ν ≥ 0`, number or `Tensor` with batch dims of `x` (e.g. per example).
        dt: Diffusion time `≥ 0`, number or `Tensor` like `diffusivity`.

    Returns:
        `y`, the diffused `CenteredGrid`.
    """
    require_grid('x', x, staggered=False)
    require_periodic('x', x)
    diffusivity, dt = _diffusion_parameters(x, diffusivity, dt)
    kernel = math.exp(-log_damping(x, diffusivity, dt))
    return x.with_values(math.real(math.ifft(math.fft(x.values) * kernel)))


def inverse(x: Field, y_target: Field, diffusivity: Union[float, Tensor], dt: Union[float, Tensor], *,
            y: Field = None,
            noise: Union[float, Tensor] = 1e-6,
            signal_amplitude: Union[float, Tensor] = None,
            signal_prior: float = 0.5,
            lower_threshold: float = 0.5,
            upper_threshold: float = 0.68,
            max_exponent: float = 200.) -> Field:
    """Update `Δx` of one step (η = 1) of the Bayesian-damped inverse diffusion (Holl, Koltun & Thuerey 2021, B.3).

    With `r = y* − y` and `A_k = FFT(r)_k` (unnormalized forward FFT, NumPy convention), per example and mode:

    * noise amplitude `σ = noise·‖r‖₂`, expected signal amplitude `e_k = signal_amplitude·exp(−ℓ_k)`;
    * signal probability `p_k = sigmoid(log_odds)`, `log_odds = ½(|A_k|/σ)² − ½(|A_k|/e_k)² + log(π_s/(1−π_s))`
      (the ratio of the Gaussian likelihoods times the priors, computed in log space so that it cannot
      underflow; `p_k = 0` where `A_k = 0`);
    * action `a_k = 2(p_k − ½)` if `p_k ≤ lower_threshold` or `p_k ≥ upper_threshold`, else 0;
    * `Δx = Re IFFT(A_k·exp(min(ℓ_k·a_k, max_exponent)))`.

    So `a_k = 1` inverts the mode exactly (`x + Δx` then has the target's mode), `a_k = −1` applies the
    gradient-descent damping `exp(−ℓ_k)`, and `a_k = 0` adds the residual unchanged. With `noise = 0` every
    non-zero mode is inverted exactly (up to `max_exponent`). Everything is computed in float64; the result
    has the precision and backend of `x` and carries no gradient.

    A mode is judged signal where `e_k > σ`, i.e. where its amplification `exp(ℓ_k)` stays below about
    `signal_amplitude/(noise·‖r‖)` (≈ `1/(noise·rms(r))` with the default amplitude).

    Note on noisy targets: `noise` is the assumed *relative* noise level `‖n‖/‖r‖`. With the default 1e-6,
    real noise in `y*` is treated as signal in every mode whose amplification is below ~1e6 and is amplified
    into the correction: on the paper's case (64², ν·dt = 8, hot rectangles) with 1 % Gaussian noise per cell,
    one correction from the mean field multiplies the L1 error by ~5,000 (median) instead of dividing it by
    ~3 as with `noise` set to the actual level (`tests/test_physics_heat.py`).

    Args:
        x: Current estimate, periodic `CenteredGrid`.
        y_target: Observed `y*` on the same grid.
        diffusivity: `ν`.
        dt: Diffusion time.
        y: `forward(x, diffusivity, dt)` if already computed (a periodic grid like `x`).
        noise: Relative noise level ε (number or per-example `Tensor`), ≥ 0.
        signal_amplitude: Expected FFT amplitude of the signal at k = 0, > 0 (number or per-example `Tensor`).
            Defaults to the square root of the number of cells (64 on the paper's 64 × 64 grid).
        signal_prior: Prior probability π_s ∈ (0, 1) that a mode is signal (noise prior `1 − π_s`); ½ in the paper.
        lower_threshold: Act (damp) where `p_k ≤ lower_threshold`; a probability in [0, 1].
        upper_threshold: Act (amplify) where `p_k ≥ upper_threshold`; a probability in [0, 1], ≥ `lower_threshold`.
        max_exponent: Upper clamp of `ℓ_k·a_k`, prevents overflow: a number in (0, 700] (`exp(700)` is still a
            finite float64).

    Returns:
        `Δx`, a periodic `CenteredGrid` like `x`.
    """
    require_grid('x', x, staggered=False)
    require_periodic('x', x)
    require_grid('y_target', y_target, staggered=False)
    require_periodic('y_target', y_target)
    require_same_grid('x', x, 'y_target', y_target)
    diffusivity, dt = _diffusion_parameters(x, diffusivity, dt)
    noise = require_number('noise', noise, non_negative=True, batch_like=('x', x))
    if signal_amplitude is not None:
        signal_amplitude = require_number('signal_amplitude', signal_amplitude, positive=True, batch_like=('x', x))
    signal_prior = require_number('signal_prior', signal_prior, low=0, high=1, low_open=True, high_open=True, tensor=False)
    lower_threshold = require_number('lower_threshold', lower_threshold, low=0, high=1, tensor=False)
    upper_threshold = require_number('upper_threshold', upper_threshold, low=0, high=1, tensor=False)
    if lower_threshold > upper_threshold:
        raise InvalidInputError(f"lower_threshold ({lower_threshold}) must not exceed upper_threshold ({upper_threshold})")
    max_exponent = require_number('max_exponent', max_exponent, positive=True, high=700, tensor=False)
    if y is None:
        y = forward(x, diffusivity, dt)
    else:
        require_grid('y', y, staggered=False)
        require_periodic('y', y)
        require_same_grid('x', x, 'y', y)
    with math.precision(64):
        r = math.cast(math.stop_gradient(y_target.values - y.values), math.DType(float, 64))
        ell = math.cast(log_damping(x, diffusivity, dt), math.DType(float, 64))
        amp = math.fft(r)
        mag = math.abs(amp)
        sigma = noise * math.sqrt(math.sum(r ** 2, spatial))
        e0 = math.sqrt(float(x.resolution.volume)) if signal_amplitude is None else signal_amplitude
        log_odds = _log_odds(mag, sigma, ell, e0) + float(np.log(signal_prior / (1 - signal_prior)))
        p = math.where(mag > 0, 1 / (1 + math.exp(-math.clip(log_odds, -700., 700.))), 0.)
        act = math.where((p <= lower_threshold) | (p >= upper_threshold), 2 * (p - 0.5), 0.)
        exponent = math.minimum(ell * act, max_exponent)
        dx = math.real(math.ifft(amp * math.exp(exponent)))
    dx = math.cast(dx, x.values.dtype)
    return x.with_values(dx)


_RATIO_CAP = 1e150  # |A|/σ and |A|/e above this are equal for the decision and their squares stay finite


def _diffusion_parameters(x: Field, diffusivity, dt):
    """`(ν, dt)` checked: finite and ≥ 0, numbers or Tensors with batch dims of `x` only."""
    return (require_number('diffusivity', diffusivity, non_negative=True, batch_like=('x', x)),
            require_number('dt', dt, non_negative=True, batch_like=('x', x)))


def _log_odds(mag: Tensor, sigma: Tensor, ell: Tensor, e0) -> Tensor:
    """`½(|A|/σ)² − ½(|A|/e_k)²` with `e_k = e0·exp(−ℓ_k)`, finite for σ = 0 and for underflowing `e_k`."""
    safe_sigma = math.where(sigma > 0, sigma, 1.)
    over_noise = math.where(sigma > 0, math.minimum(mag / safe_sigma, _RATIO_CAP), _RATIO_CAP)
    # |A|/e_k = |A|·exp(ℓ_k)/e0, evaluated in log space to avoid overflow of exp(ℓ_k)
    log_over_signal = math.log(math.maximum(mag, 1e-300)) + ell - math.log(math.wrap(e0))
    over_signal = math.exp(math.minimum(log_over_signal, float(np.log(_RATIO_CAP))))
    return 0.5 * over_noise ** 2 - 0.5 * over_signal ** 2


def hot_rectangles(resolution: Shape = spatial(x=64, y=64),
                   batch_shape: Shape = batch(examples=1),
                   seed: Union[int, np.random.Generator, None] = None, *,
                   bounds: Box = None,
                   count: Tuple[int, int] = (4, 10),
                   half_size: Tuple[float, float] = (0., 10.),
                   strength: Tuple[float, float] = (0., 1.),
                   centre_fraction: float = 0.8) -> CenteredGrid:
    """Random initial temperatures made of hot axis-aligned rectangles (Holl, Koltun & Thuerey 2021, appendix B.3).

    Per example: `count[0]…count[1]` rectangles (inclusive); centres uniform in the middle `centre_fraction` of
    the domain per axis; half-sizes uniform in `half_size` cells per axis; strengths uniform in `strength`.
    Each cell receives `strength ×` the fraction of its area covered by the rectangle (anti-aliasing);
    overlapping rectangles add. The domain is periodic, so a rectangle crossing the boundary re-enters on
    the other side. Deterministic for an integer `seed`.

    Args:
        resolution: Spatial shape of the grid (any number of spatial dims; 2D in the paper).
        batch_shape: Batch dims of the result (one or more); every entry is an independent example.
        seed: None, an integer ≥ 0 or a NumPy `Generator`.
        bounds: Physical domain, a `Box` over the dims of `resolution`; defaults to cells of size 1.
        count: Inclusive range `(low, high)` of the number of rectangles per example, integers `0 ≤ low ≤ high`.
        half_size: Range `(low, high)` of half-sizes in cells, `0 ≤ low ≤ high`.
        strength: Range `(low, high)` of the rectangle values, finite with `low ≤ high`.
        centre_fraction: Fraction of each axis (centred) in which rectangle centres lie, in (0, 1].

    Returns:
        Periodic `CenteredGrid` with shape `batch_shape & resolution` in float64 NumPy.
    """
    resolution = require_shape('resolution', resolution, 'spatial')
    batch_shape = require_shape('batch_shape', batch_shape, 'batch')
    bounds = require_bounds('bounds', bounds, resolution)
    count = require_range('count', count, integer=True, non_negative=True)
    half_size = require_range('half_size', half_size, non_negative=True)
    strength = require_range('strength', strength)
    centre_fraction = require_number('centre_fraction', centre_fraction, positive=True, high=1, tensor=False)
    seed = require_seed('seed', seed)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sizes = resolution.sizes
    n_examples = batch_shape.volume
    data = np.zeros((n_examples, *sizes))
    edges = [np.arange(n + 1, dtype=np.float64) for n in sizes]  # cell edges in cell units
    for i in range(n_examples):
        for _ in range(rng.integers(count[0], count[1] + 1)):
            centre = [(0.5 - centre_fraction / 2 + centre_fraction * rng.random()) * n for n in sizes]
            half = [rng.uniform(*half_size) for _ in sizes]
            value = rng.uniform(*strength)
            coverage = np.ones(())
            for d, n in enumerate(sizes):
                cov_d = _periodic_overlap(edges[d], centre[d] - half[d], centre[d] + half[d], n)
                coverage = np.multiply.outer(coverage, cov_d)
            data[i] += value * coverage
    values = math.tensor(data.reshape(*batch_shape.sizes, *sizes), batch_shape & resolution)
    if bounds is None:
        bounds = Box(**dict(zip(resolution.names, sizes)))
    return CenteredGrid(values, extrapolation.PERIODIC, bounds=bounds)


def _periodic_overlap(edges: np.ndarray, lo: float, hi: float, period: int) -> np.ndarray:
    """Length of `[lo, hi]` (wrapped periodically) inside each cell `[edges[j], edges[j+1]]`, in cells."""
    total = np.zeros(len(edges) - 1)
    for shift in (-period, 0, period):
        a, b = lo + shift, hi + shift
        total += np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0, None)
    return total
