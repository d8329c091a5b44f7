"""Poisson's equation: infer the source x of `∇²y = x` from y* (Holl, Koltun & Thuerey 2022, §3.5; Holl, Koltun &
Thuerey 2021, §3.2 and appendix B.2).

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

from typing import Literal, Optional

import numpy as np
import torch
from phiml import math

from .base import Experiment
from ..sip.inverses import Inverse
from .settings import Count, Grid, Positive, factory
from ..nets import unet
from ..physics import poisson as physics
from ..physics.grids import to_grid, from_grid

__all__ = ['poisson']


@factory(test=dict(resolution=(16, 16), batch_size=4, n_test=4))
def poisson(preset: str = 'paper', resolution: Grid(8, "the 4-level U-net; the paper's 80 × 60 is not, use e.g. (80, 64)") = (64, 64), batch_size: Count = 128,
            solver: Optional[Literal['cg', 'dst']] = None, noise_scale: Positive = 10., n_test: Count = 64,
            cg_tolerance: Positive = 1e-5) -> Experiment:
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
    solver = solver or ('dst' if preset == 'test' else 'cg')
    h, w = resolution
    exact = physics.DSTPoisson(h, w)

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
        """`Δx = −∇²(y − y*)` with the Laplacian of the forward solve (`phi_hig.physics.poisson.inverse`)."""
        y = simulate(z) if y is None else y
        dx = physics.inverse(to_grid(z[:, 0]), to_grid(targets[:, 0]), y=to_grid(y[:, 0]))
        return from_grid(dx)[:, None]

    def loss(y, targets):
        return 0.5 * ((y[:, 0] - targets[:, 0]) ** 2).flatten(1).sum(1)

    def generate(rng, n):
        x_star = torch.as_tensor(physics.noise(rng, n, (h, w), noise_scale))
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
        generate=generate, test_set=test_set, metrics=metrics, inverses={'default': Inverse(inverse)}, eval_every=20, threads=1 if preset == 'test' else None,
        settings=dict(preset=preset, resolution=[h, w], batch_size=batch_size, solver=solver, noise_scale=noise_scale,
                      n_test=n_test, cg_tolerance=cg_tolerance, boundary='zero Dirichlet'),
        description="Poisson ∇²y = x: infer x from y* (U-net); Adam/SGD through the solve vs SIP with ∇²")
