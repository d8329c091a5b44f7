"""Poisson's equation (seed 002 §3.5, seed 003 §3.2 and B.2): infer the source x of `∇²y = x` from y*.

Grid: 64 × 64 cells of size 1 with zero-Dirichlet boundaries (PhiFlow's `extrapolation.ZERO`, the authors'
code). The paper's 80 × 60 grid cannot pass a 4-level U-net (60 is not divisible by 2³); other resolutions
divisible by 8 are accepted (`resolution=(80, 64)` is the nearest to the paper's shape).

* Data: x* = PhiFlow-style `Noise(scale=10)` (random complex amplitudes weighted by 1/k², NumPy RNG of the
  data stream), normalized per example to mean 0 and std 1; y* = P(x*). Infinite data.
* Physics P: `phi_hig.physics.poisson.forward` (CG, `solver='cg'`, the paper's) or, with `solver='dst'`, the
  exact solution of the same discrete 5-point system by a discrete sine transform (what CG converges to;
  much faster on CPU and exactly differentiable, so Adam's gradient is the adjoint solve computed in closed
  form). CG runs in NumPy float64 (several times faster than PhiML's torch path on CPU); Adam and SGD
  differentiate it by the adjoint method, a second CG solve `∇⁻²(∂L/∂y)` in the backward pass (a custom
  autograd function: the 5-point Laplacian is symmetric). PhiML's own torch differentiation of the solve
  fails outside a global `math.TORCH` context (NumPy arrays reach autograd), which a library must not set.
* SIP inverse: `phi_hig.physics.poisson.inverse`, `Δx = −∇²(y − y*)` with the same discrete Laplacian.
* Network: the periodic U-net (4 levels, 16 filters, batch norm, circular padding; 37,697 parameters), input
  y*, output x.
* Tensors: inputs `(b, 1, H, W)` = y*; targets `(b, 2, H, W)` = (y*, x*). The loss and the SIP inverse read
  channel 0 only; x* is read only by `metrics`.
* Metrics: `x_error_sum` = Σ|x − x*| per example (the paper's curves), `x_error_per_cell`, `y_loss`.
"""
from __future__ import annotations

import numpy as np
import torch
from phi.field import CenteredGrid
from phi.geom import Box
from phiml import math
from phiml.math import batch, spatial, channel, extrapolation

from .base import Experiment
from ..nets import unet
from ..physics import poisson as physics

__all__ = ['poisson', 'noise', 'to_grid', 'from_grid', 'DSTPoisson']


# ------------------------------------------------------------------------------------------ torch <-> Field

def to_grid(values: torch.Tensor, boundary=extrapolation.ZERO) -> CenteredGrid:
    """`(b, H, W)` scalar or `(b, 2, H, W)` vector torch tensor as a CenteredGrid with cells of size 1."""
    h, w = values.shape[-2:]
    if values.ndim == 3:
        tensor = math.wrap(values, batch('b'), spatial('x,y'))
    else:
        tensor = math.wrap(values, batch('b'), channel(vector='x,y'), spatial('x,y'))
    return CenteredGrid(tensor, boundary, Box(x=h, y=w), x=h, y=w)


def from_grid(grid, vector: bool = False) -> torch.Tensor:
    """The values of a CenteredGrid as a torch tensor `(b, H, W)` (or `(b, 2, H, W)` for vectors)."""
    order = ['b', 'vector', 'x', 'y'] if vector else ['b', 'x', 'y']
    return grid.values.native(order)


# --------------------------------------------------------------------------------------------------- data

def noise(rng: np.random.Generator, n: int, shape=(64, 64), scale: float = 10., smoothness: float = 1.) -> np.ndarray:
    """PhiFlow's `Noise(scale, smoothness)` on a grid of cells of size 1, drawn from a NumPy generator.

    Complex normal amplitudes times `(1/k²)^smoothness` with `k = j·scale/N` per axis (frequency index j; the
    formula of `phi.field.Noise`), modes with `k² ≤ 0.1` removed, real part of the inverse FFT, normalized per
    example to std 1 and then mean 0. Returns `(n, *shape)` float64.
    """
    k = np.meshgrid(*[np.fft.fftfreq(s) * s * scale / s for s in shape], indexing='ij')
    k2 = sum(ki ** 2 for ki in k)
    weight = np.where(k2 > 0.1, 1 / np.where(k2 > 0, k2, 1), 0) ** smoothness
    amp = rng.normal(size=(n, *shape)) + 1j * rng.normal(size=(n, *shape))
    values = np.real(np.fft.ifftn(amp * weight, axes=tuple(range(1, len(shape) + 1))))
    axes = tuple(range(1, len(shape) + 1))
    values /= values.std(axis=axes, keepdims=True)
    values -= values.mean(axis=axes, keepdims=True)
    return values


# ------------------------------------------------------------------------------- exact solve by sine transform

class DSTPoisson:
    """Exact solution of PhiFlow's zero-Dirichlet 5-point system `field.laplace(y) = x` (cells of size 1).

    With zero ghost cells the 1-D second difference on n cells has the eigenvectors `sin(πk(i+1)/(n+1))` and
    eigenvalues `2cos(πk/(n+1)) − 2` (k = 1…n), so `y = S_H (Ŝx / λ) S_W` with orthonormal sine matrices —
    two small matrix products, differentiable by torch autograd (the exact adjoint).
    """

    def __init__(self, h: int, w: int):
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
        s_h, s_w, lam = (t.to(x.dtype) for t in (self.s_h, self.s_w, self.lam))
        coefficients = s_h.T @ x @ s_w
        return s_h @ (coefficients / lam) @ s_w.T


# ---------------------------------------------------------------------------------------------- experiment

def poisson(preset: str = 'paper', resolution=(64, 64), batch_size: int = 128, solver: str = None,
            noise_scale: float = 10., n_test: int = 64, cg_tolerance: float = 1e-5) -> Experiment:
    """Build the Poisson experiment.

    Args:
        preset: 'paper' (64 × 64, batch 128, CG) or 'test' (16 × 16, batch 4, 4 test examples).
        resolution: grid `(H, W)`, each divisible by 8 (4-level U-net).
        batch_size: batch of every method (paper: 128).
        solver: 'cg' (the paper's conjugate gradients, relative tolerance `cg_tolerance`; default of 'paper') or
            'dst' (the exact solution of the same discrete system; default of 'test').
        noise_scale: `Noise(scale=…)` of the ground truth.
        n_test: size of the held-out set.
        cg_tolerance: relative and absolute CG tolerance.
    """
    if preset == 'test':
        resolution, batch_size, n_test = (16, 16), 4, 4
    solver = solver or ('dst' if preset == 'test' else 'cg')
    h, w = (int(r) for r in resolution)
    if h % 8 or w % 8:
        raise ValueError(f"resolution {resolution} must be divisible by 8 for the 4-level U-net "
                         f"(the paper's 80 × 60 is not; use e.g. (80, 64))")
    if solver not in ('cg', 'dst'):
        raise ValueError(f"solver must be 'cg' or 'dst', got {solver!r}")
    exact = DSTPoisson(h, w)

    def cg_numpy(x: torch.Tensor) -> torch.Tensor:
        with math.precision(64):
            grid = to_grid(x.detach().double().numpy())
            y = physics.forward(grid, solve=math.Solve('CG', cg_tolerance, cg_tolerance, x0=grid * 0))
            return torch.as_tensor(np.ascontiguousarray(from_grid(y))).to(x.dtype)

    class CGSolve(torch.autograd.Function):
        """`y = ∇⁻²x` by PhiFlow's CG (NumPy, float64); backward: the adjoint solve `∇⁻²g` (∇² is symmetric)."""

        @staticmethod
        def forward(ctx, x):
            return cg_numpy(x)

        @staticmethod
        def backward(ctx, grad):
            return cg_numpy(grad)

    def simulate(z: torch.Tensor) -> torch.Tensor:
        x = z[:, 0]
        y = exact(x) if solver == 'dst' else CGSolve.apply(x)
        return y[:, None]

    def inverse(z, targets, *, y=None):
        y = simulate(z) if y is None else y
        dx = physics.inverse(to_grid(z[:, 0]), to_grid(targets[:, 0]), y=to_grid(y[:, 0]))
        return from_grid(dx)[:, None]

    def loss(y, targets):
        return 0.5 * ((y[:, 0] - targets[:, 0]) ** 2).flatten(1).sum(1)

    def generate(rng, n):
        x_star = torch.as_tensor(noise(rng, n, (h, w), noise_scale))
        y_star = exact(x_star)  # the exact discrete solution (CG converges to it)
        targets = torch.stack([y_star, x_star], 1).float()
        return targets[:, :1].clone(), targets

    def metrics(net, inputs, targets):
        x = net(inputs)[:, 0]
        err = (x - targets[:, 1]).abs().flatten(1).sum(1)
        y = simulate(x[:, None])
        return {'x_error_sum': float(err.mean()), 'x_error_per_cell': float(err.mean()) / (h * w),
                'y_loss': float(loss(y, targets).mean())}

    test_set = generate(np.random.default_rng(987654), n_test)
    methods = {
        'adam': dict(lr=1e-3, batch_size=batch_size),
        # the paper's SGD: η = 1e-9 with momentum 0.9 (larger rates diverge: ∂L/∂x is huge)
        'sgd': dict(lr=1e-9, momentum=0.9, batch_size=batch_size),
        'sip': dict(lr=1e-3, batch_size=batch_size),
    }
    return Experiment(
        name='poisson', make_net=lambda: unet(1, 1), simulate=simulate, loss=loss, methods=methods,
        generate=generate, test_set=test_set, metrics=metrics, inverse=inverse, eval_every=20, threads=1 if preset == 'test' else None,
        settings=dict(preset=preset, resolution=[h, w], batch_size=batch_size, solver=solver, noise_scale=noise_scale,
                      n_test=n_test, cg_tolerance=cg_tolerance, boundary='zero Dirichlet'),
        description="Poisson ∇²y = x: infer x from y* (U-net); Adam/SGD through the solve vs SIP with ∇²")
