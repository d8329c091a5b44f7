"""Heat equation: infer the initial temperature x from the diffused y* (Holl, Koltun & Thuerey 2022; Holl, Koltun
& Thuerey 2021, §3.3 and appendix B.3).

64 × 64 periodic cells of size 1, `t·ν = 8` (diffusivity 8, time 1), exact Fourier-space diffusion
(`phi_hig.physics.heat.forward`).

* Data: `phi_hig.physics.heat.hot_rectangles` (4–10 anti-aliased hot rectangles, centres in the middle 80 %,
  half-sizes U(0, 10) cells, strengths U(0, 1), overlaps add); y* = P(x*). Infinite data.
* Precision: physics in float64 (simulate casts the network output up), network in float32.
* Network: the periodic U-net (37,697 parameters) with its output shifted to the mean of y* per example
  (periodic diffusion preserves the mean, so x* has the mean of y*).
* Inverses: 'sip' uses `phi_hig.physics.heat.inverse` (Bayesian-damped inverse diffusion, ε = 1e-6);
  'sip_lbfgs' uses `n` iterations of L-BFGS-B (`phi_hig.inverses.iterative`) per example on ½‖P(x) − y*‖².
* Tensors: inputs `(b, 1, H, W)` float32 = y*; targets `(b, 2, H, W)` float64 = (y*, x*). Loss and inverses
  read channel 0 only; x* is read only by `metrics`.
* Metrics: `x_error_sum` = Σ|x − x*| per example (the paper's curves), `x_error_per_cell`, and
  `x_error_sum_clamped` with x clamped ≥ 0 (the authors' final test values).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from phiml import math
from phiml.math import batch, spatial, extrapolation

from .base import Experiment
from .settings import Count, Grid, factory
from .. import checks
from ..sip.inverses import Inverse, iterative
from ..nets import unet
from ..physics import heat as physics
from ..physics.grids import to_grid, from_grid

__all__ = ['heat', 'MeanShift']

DIFFUSIVITY, TIME = 8., 1.


class MeanShift(nn.Module):
    """`x = net(y*) − mean(net(y*)) + mean(y*)` per example (means over all but the batch dimension)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y):
        """``net(y) − mean(net(y)) + mean(y)`` per example: the prediction keeps the observation's mean (diffusion
        conserves it)."""
        x = self.net(y)
        dims = tuple(range(1, x.ndim))
        return x - x.mean(dims, keepdim=True) + y.mean(dims, keepdim=True)


@factory(test=dict(resolution=(16, 16), batch_size=4, n_test=4))
def heat(preset: str = 'paper', resolution: Grid(8, 'the 4-level U-net') = (64, 64), batch_size: Count = 128,
         n_test: Count = 64) -> Experiment:
    """Build the heat experiment.

    The inverses' options (method hyperparameter ``inverse_options``): 'default' ``noise`` = ε, the relative
    noise level of the Bayesian-damped inverse (1e-6; finite, >= 0); 'lbfgs' ``iterations`` = n, the L-BFGS-B
    iterations per step (paper: 32, 'test': 2; an integer >= 1).

    Args:
        preset: 'paper' (64 × 64, batch 128) or 'test' (16 × 16, batch 4, 4 test examples, 2 L-BFGS-B iterations).
        resolution: periodic grid `(H, W)`, each divisible by 8 (4-level U-net).
        batch_size: batch of every method (paper: 128).
        n_test: size of the held-out set.
    """
    lbfgs_iterations = 32
    if preset == 'test':
        lbfgs_iterations = 2
    h, w = resolution
    periodic = extrapolation.PERIODIC

    def diffuse(x64: torch.Tensor) -> torch.Tensor:
        with math.precision(64):
            return from_grid(physics.forward(to_grid(x64.double(), periodic), DIFFUSIVITY, TIME))

    def simulate(z):
        return diffuse(z[:, 0].double())[:, None]

    def inverse(z, targets, *, y=None, noise):
        y = simulate(z) if y is None else y
        dx = physics.inverse(to_grid(z[:, 0], periodic), to_grid(targets[:, 0], periodic), DIFFUSIVITY, TIME,
                             y=to_grid(y[:, 0].to(z.dtype), periodic), noise=noise)
        return from_grid(dx)[:, None]

    def lbfgs(iterations):
        return iterative(lambda flat: diffuse(flat.reshape(-1, h, w)).flatten(1), iterations=iterations)

    def inverse_lbfgs(z, targets, *, y=None, iterations):
        y = None if y is None else y[:, 0].double().flatten(1)  # simulate(z), already known: no extra diffusion
        dx = lbfgs(iterations)(z[:, 0].double().flatten(1), targets[:, 0].double().flatten(1), y=y)
        return dx.reshape(z.shape).to(z.dtype)

    inverses = {
        'default': Inverse(inverse, {'noise': 1e-6}, lambda o: checks.number('noise', o['noise'], low=0)),
        'lbfgs': Inverse(inverse_lbfgs, {'iterations': lbfgs_iterations}, lambda o: lbfgs(o['iterations'])),
    }

    def loss(y, targets):
        return 0.5 * ((y[:, 0] - targets[:, 0]) ** 2).flatten(1).sum(1)

    def generate(rng, n):
        x_star = physics.hot_rectangles(spatial(x=h, y=w), batch(b=n), rng)
        x_star = torch.as_tensor(x_star.values.numpy(['b', 'x', 'y'])).double()
        y_star = diffuse(x_star)
        return y_star[:, None].float(), torch.stack([y_star, x_star], 1)

    def metrics(net, inputs, targets):
        x = net(inputs)[:, 0].double()
        x_star = targets[:, 1]
        err = (x - x_star).abs().flatten(1).sum(1)
        clamped = (x.clamp_min(0) - x_star).abs().flatten(1).sum(1)
        return {'x_error_sum': float(err.mean()), 'x_error_per_cell': float(err.mean()) / (h * w),
                'x_error_sum_clamped': float(clamped.mean())}

    test_set = generate(np.random.default_rng(987654), n_test)
    methods = {
        'adam': dict(lr=1e-3, batch_size=batch_size),
        'sgd': dict(lr=1e-2, momentum=0.9, batch_size=batch_size),  # not stated in the papers: our choice
        'sip': dict(lr=1e-3, batch_size=batch_size),
        'sip_lbfgs': dict(base='sip', inverse='lbfgs', lr=1e-3, batch_size=batch_size),
    }
    return Experiment(
        name='heat', make_net=lambda: MeanShift(unet(1, 1)), simulate=simulate, loss=loss, methods=methods,
        generate=generate, test_set=test_set, metrics=metrics, inverses=inverses,
        eval_every=20, threads=1 if preset == 'test' else None,
        settings=dict(preset=preset, resolution=[h, w], batch_size=batch_size, diffusivity_times_t=DIFFUSIVITY * TIME,
                      n_test=n_test),
        description="Heat (t·ν = 8, periodic): infer hot rectangles from the diffused field; Adam/SGD vs SIP "
                    "(Bayesian-damped inverse) and SIP with L-BFGS-B")
