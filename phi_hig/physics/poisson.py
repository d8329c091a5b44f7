"""Poisson's equation `∇²y = x` as a SIP physics: forward solve by conjugate gradients, exact inverse by the Laplacian.

All functions act on `CenteredGrid`s; batch dimensions are independent examples. The discrete Laplacian is
PhiFlow's `field.laplace` (second-order 5-point stencil in 2D, physical cell sizes, boundary condition taken
from the grid's extrapolation), so `field.laplace(forward(x)) == x` up to the solver tolerance and
`x + inverse(x, forward(x_star)) == x_star` up to the same tolerance.

Periodic and zero-flux (Neumann, `extrapolation.ZERO_GRADIENT`) grids: the Laplacian is singular there
(constants are in its null space) and its range holds only zero-mean sources. Periodic: `forward` solves for the
zero-mean part of `x` and returns the zero-mean solution. Neumann: a source whose mean is not zero (beyond
round-off) has no solution, and `forward` refuses it; a zero-mean source gets the zero-mean solution.
`inverse_laplace_periodic` inverts the periodic operator exactly by dividing by its Fourier symbol (PhiFlow's own
`field.fourier_poisson` is broken in 3.4, and `math.fourier_poisson` uses the continuous symbol, ≈3 % off the
discrete Laplacian).

Zero-Dirichlet grids of cells of size 1: `DSTPoisson` solves the same discrete system as `forward` exactly, by a
discrete sine transform on batched torch tensors (what CG converges to, and exactly differentiable by autograd).
`noise` draws the PhiFlow-style noise sources of the Poisson experiment (Holl, Koltun & Thuerey 2022, §3.5) from a
NumPy generator.

Every function refuses bad arguments with `phi_hig.errors.InvalidInputError` naming the argument.
"""
import numpy as np
import torch
from phi import field
from phi.field import Field
from phiml import math
from phiml.math import Solve

from ._checks import (require_grid, require_same_grid, require_periodic, require_solve, require_integer, require_number,
                      laplace_is_singular, boundary_text)
from ..errors import InvalidInputError

__all__ = ['default_solve', 'forward', 'inverse', 'laplace_symbol', 'inverse_laplace_periodic', 'DSTPoisson', 'noise']


def default_solve(x: Field) -> Solve:
    """CG with PhiML's precision-dependent default tolerances (1e-5 in float32, 1e-12 in float64), starting at 0.

    On singular problems (periodic or zero-flux boundaries) it sets `rank_deficiency=0`, which CG needs to converge
    there (PhiFlow 3.4).
    """
    require_grid('x', x, staggered=False)
    return Solve('CG', x0=x * 0, rank_deficiency=0 if laplace_is_singular(x) else None)


def forward(x: Field, *, solve: Solve = None) -> Field:
    """Solves `∇²y = x` for `y` with the boundary condition of `x` (conjugate gradients).

    Args:
        x: Source term, `CenteredGrid`. Its extrapolation is the boundary condition of `y` (zero Dirichlet for
            `extrapolation.ZERO`). On periodic grids the mean of `x` (per example) is removed first: it is not in
            the range of the Laplacian. With zero-flux (Neumann) boundaries `x` must have zero mean per example
            (to within 1e-5 of its RMS in float32, 1e-10 in float64; that round-off mean is removed).
        solve: Optional `Solve` configuration. Defaults to `default_solve(x)`. On periodic and Neumann grids a
            `rank_deficiency` of 0 is required for CG to converge (PhiFlow 3.4); `default_solve` sets it.

    Returns:
        `y`, a `CenteredGrid` like `x` with `field.laplace(y) == x` (periodic: `x − mean(x)`; periodic and
        Neumann: `y` has zero mean) up to the solver tolerance, on the backend of `x` (outside ``jit``, PhiML
        solves a JAX problem with SciPy; the solution is converted back to JAX, without a gradient).

    Raises:
        InvalidInputError: `x` is not a finite `CenteredGrid`, `solve` is not a `Solve`, or the boundaries are
            zero-flux and `x` has a non-zero mean, so that no solution exists.
    """
    require_grid('x', x, staggered=False)
    require_solve('solve', solve)
    x = _solvable_source(x)
    if solve is None:
        solve = default_solve(x)
    y = math.solve_linear(field.laplace, x, solve)
    if y.values.default_backend != x.values.default_backend:  # PhiML solves an eager JAX problem with SciPy
        y = y.with_values(math.convert(y.values, x.values.default_backend))
    return y


def inverse(x: Field, y_target: Field, *, y: Field = None, solve: Solve = None) -> Field:
    """Update `Δx = −∇²(y − y*)` of one step (η = 1) of the analytic inverse solver.

    Because the Laplacian is exactly the operator that `forward` inverts, `x + Δx = ∇²y*`, i.e. the exact
    source of the target, up to the tolerance of the forward solve.

    Args:
        x: Current estimate of the source, `CenteredGrid`.
        y_target: Target solution `y*` on the same grid as `x` (its values only: the boundary condition is that of
            `x`).
        y: `forward(x)` if already computed; computed otherwise.
        solve: Solver configuration for `forward` when `y` is not given.

    Returns:
        `Δx`, a `CenteredGrid` like `x`.
    """
    require_grid('x', x, staggered=False)
    require_grid('y_target', y_target, staggered=False)
    require_same_grid('x', x, 'y_target', y_target)
    require_solve('solve', solve)
    if y is None:
        y = forward(x, solve=solve)
    else:
        require_grid('y', y, staggered=False)
        require_same_grid('x', x, 'y', y)
    return -field.laplace(y - y_target.with_extrapolation(y.extrapolation))


def laplace_symbol(grid: Field) -> math.Tensor:
    """Fourier symbol `λ_k = Σ_d (2cos(2πk_d) − 2)/Δx_d²` of the periodic second-order Laplacian of `grid`.

    `k_d` are the frequencies of `math.fft` in cycles per cell. `λ_0 = 0`; all other entries are negative.
    """
    require_grid('grid', grid)
    k = math.fftfreq(grid.resolution)  # cycles per cell
    return math.sum((2 * math.cos(2 * math.PI * k) - 2) / grid.dx ** 2, 'vector')


def inverse_laplace_periodic(x: Field) -> Field:
    """Exact inverse of `field.laplace` on a periodic grid, computed in Fourier space.

    Divides the FFT of `x` by the discrete symbol (`laplace_symbol`) and sets the mean mode to zero, so for any
    periodic `x`, `field.laplace(inverse_laplace_periodic(x)) == x − mean(x)` to round-off, and the result has
    zero mean.

    Args:
        x: Periodic `CenteredGrid`.

    Returns:
        Zero-mean periodic `CenteredGrid` `y` with `∇²y = x − mean(x)`.
    """
    require_grid('x', x, staggered=False)
    require_periodic('x', x)
    symbol = laplace_symbol(x)
    safe = math.where(symbol == 0, 1, symbol)
    y_k = math.where(symbol == 0, 0, math.fft(x.values) / safe)
    return x.with_values(math.real(math.ifft(y_k)))


class DSTPoisson:
    """Exact solution of PhiFlow's zero-Dirichlet 5-point system `field.laplace(y) = x` (cells of size 1).

    With zero ghost cells the 1-D second difference on n cells has the eigenvectors `sin(πk(i+1)/(n+1))` and
    eigenvalues `2cos(πk/(n+1)) − 2` (k = 1…n), so `y = S_H (Ŝx / λ) S_W` with orthonormal sine matrices —
    two small matrix products, differentiable by torch autograd (the exact adjoint).

    Invariant: for `x` of shape `(…, h, w)`, `y = DSTPoisson(h, w)(x)` has the shape and dtype of `x` and
    `field.laplace(to_grid(y)) == x` to round-off (`phi_hig.physics.grids.to_grid`, zero boundary), i.e. `y` is
    the solution that `forward` approaches with CG.

    Non-finite values are not refused here: the solve is linear and dense, so a NaN or Inf in one example's `x`
    makes that example's whole `y` non-finite and leaves the other examples exact (the operator is applied per
    leading index). It runs inside the training step, where the caller's finite-loss check (`phi_hig.hig_step`,
    `phi_hig.sip_step`) refuses the step; check `torch.isfinite` first when calling it directly.
    """

    def __init__(self, h: int, w: int):
        h, w = require_integer('h', h, minimum=1), require_integer('w', w, minimum=1)
        self.s_h, lam_h = self._basis(h)
        self.s_w, lam_w = self._basis(w)
        self.lam = lam_h[:, None] + lam_w[None, :]

    @staticmethod
    def _basis(n):
        i = np.arange(n)
        k = np.arange(1, n + 1)
        s = np.sqrt(2 / (n + 1)) * np.sin(np.pi * np.outer(i + 1, k) / (n + 1))
        return torch.as_tensor(s), torch.as_tensor(2 * np.cos(np.pi * k / (n + 1)) - 2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[-2:]) != (self.s_h.shape[0], self.s_w.shape[0]):
            raise InvalidInputError(f"x must be a torch tensor of shape (..., {self.s_h.shape[0]}, {self.s_w.shape[0]}), "
                                    f"got {getattr(x, 'shape', type(x).__name__)}")
        s_h, s_w, lam = (t.to(x.dtype) for t in (self.s_h, self.s_w, self.lam))
        coefficients = s_h.T @ x @ s_w
        return s_h @ (coefficients / lam) @ s_w.T


def noise(rng: np.random.Generator, n: int, shape=(64, 64), scale: float = 10., smoothness: float = 1.) -> np.ndarray:
    """PhiFlow's `Noise(scale, smoothness)` on a grid of cells of size 1, drawn from a NumPy generator.

    Complex normal amplitudes times `(1/k²)^smoothness` with `k = j·scale/N` per axis (frequency index j; the
    formula of `phi.field.Noise`), modes with `k² ≤ 0.1` removed, real part of the inverse FFT, normalized per
    example to std 1 and then mean 0. Returns `(n, *shape)` float64.

    Args:
        rng: A `numpy.random.Generator`.
        n: Number of examples, an integer ≥ 1.
        shape: Grid shape, a tuple of integers ≥ 2.
        scale: Finite number > 0; it must leave at least one frequency with `k² > 0.1`, else every mode is removed.
        smoothness: Finite number ≥ 0.
    """
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), got {rng!r}")
    n = require_integer('n', n, minimum=1)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, '__len__') or len(shape) == 0:
        raise InvalidInputError(f"shape must be a tuple of integers >= 2, got {shape!r}")
    shape = tuple(require_integer(f'shape[{i}]', s, minimum=2) for i, s in enumerate(shape))
    scale = require_number('scale', scale, positive=True, tensor=False)
    smoothness = require_number('smoothness', smoothness, non_negative=True, tensor=False)
    k = np.meshgrid(*[np.fft.fftfreq(s) * s * scale / s for s in shape], indexing='ij')
    k2 = sum(ki ** 2 for ki in k)
    weight = np.where(k2 > 0.1, 1 / np.where(k2 > 0, k2, 1), 0) ** smoothness
    if not np.any(weight > 0):
        raise InvalidInputError(f"scale={scale:g} leaves no frequency with k² > 0.1 on a grid of shape {shape}: the noise "
                                f"would be zero (NaN after normalization); use a larger scale")
    amp = rng.normal(size=(n, *shape)) + 1j * rng.normal(size=(n, *shape))
    values = np.real(np.fft.ifftn(amp * weight, axes=tuple(range(1, len(shape) + 1))))
    axes = tuple(range(1, len(shape) + 1))
    values /= values.std(axis=axes, keepdims=True)
    values -= values.mean(axis=axes, keepdims=True)
    return values


def _is_periodic(x: Field) -> bool:
    return x.extrapolation == math.extrapolation.PERIODIC


def _solvable_source(x: Field) -> Field:
    """`x` projected onto the range of the Laplacian: periodic: minus its mean; Neumann: refused unless its mean is
    round-off, which is removed; Dirichlet: unchanged."""
    if _is_periodic(x):
        return x - field.mean(x)
    if not laplace_is_singular(x):
        return x
    mean = field.mean(x)
    rms = math.sqrt(field.mean(x ** 2))
    tolerance = 1e-10 if x.values.dtype.precision == 64 else 1e-5
    if bool((abs(mean) > tolerance * rms).any):
        worst = float((abs(mean) / math.maximum(rms, 1e-300)).max)
        raise InvalidInputError(
            f"x has a non-zero mean (largest |mean| / RMS over the examples: {worst:.3g}), but with zero-flux "
            f"boundaries ({boundary_text(x.extrapolation)}) ∇²y = x has no solution unless x has zero mean: the Laplacian of y "
            f"integrates to the boundary flux, which is zero. Pass x - field.mean(x), or use Dirichlet boundaries "
            f"(extrapolation.ZERO)")
    return x - mean
