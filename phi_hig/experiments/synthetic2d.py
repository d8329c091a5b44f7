"""Synthetic 2-D process `P(x) = (sin(x̂₁)/ξ, ξ·x̂₂)` with `x̂ = γ·R_φ·x` (Holl, Koltun & Thuerey 2022, §3.4 and
Fig. 5).

ξ sets the conditioning (the two outputs scale with 1/ξ and ξ), φ couples x₁ and x₂ (φ = 0: independent).
Targets are reachable, `y* = P(x*)` with x* ~ U(−1, 1)²; the network `NN(y*) = x` is 2 → 32 → 64 → 32 → 2 ReLU
(the authors' code), batch 100. `variant='code'` uses the authors' code's process `(sin(10x̂₁/ξ), 10ξ·x̂₂)`.

Tensors: inputs `(b, 2)` = y*; targets `(b, 4)` = (y*, x*); x* is read only by `metrics`.
Methods: SGD, Adam, Adagrad, Adadelta, RMSprop through the physics, and 'sip' = SIP with the saddle-free
Newton inverse (`phi_hig.inverses.saddle_free_newton`). Metrics: `y_error` = ‖P(x) − y*‖₂ and `x_error` = ‖x − x*‖₂
(means over the held-out set). The sweeps over ξ and φ of Fig. 5d/e are in `demos/synthetic2d.py`.
"""
from __future__ import annotations

import math

from typing import Literal

import numpy as np
import torch

from .base import Experiment
from ..sip.inverses import newton_inverse
from .settings import Count, Positive, factory
from ..nets import dense

__all__ = ['synthetic2d']


@factory(test=dict(batch_size=8, n_test=32))
def synthetic2d(preset: str = 'paper', xi: Positive = 1., phi: float = 0., gamma: float = 1.,
                variant: Literal['paper', 'code'] = 'paper', batch_size: Count = 100, n_test: Count = 1000,
                lr: Positive = 1e-3) -> Experiment:
    """Build the synthetic 2-D experiment.

    The default inverse (saddle-free Newton) has the option ``max_step`` (method hyperparameter
    ``inverse_options``): the cap of its step per eigen-direction (default 1, > 0).

    Args:
        preset: 'paper' or 'test' (batch 8, 32 test examples).
        xi: conditioning ξ.
        phi: coupling angle φ in degrees.
        gamma: scale γ of x̂.
        variant: 'paper' `(sin(x̂₁)/ξ, ξx̂₂)` or 'code' `(sin(10x̂₁/ξ), 10ξx̂₂)`.
        batch_size: batch of every method (authors' code: 100).
        n_test: held-out examples.
        lr: learning rate of every method except Adadelta (lr 1, its usual value).
    """
    c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
    rotation = torch.tensor([[c, -s], [s, c]]) * gamma

    def simulate(z):
        x_hat = z @ rotation.to(z.dtype).T
        if variant == 'paper':
            return torch.stack([torch.sin(x_hat[:, 0]) / xi, xi * x_hat[:, 1]], 1)
        return torch.stack([torch.sin(10 * x_hat[:, 0] / xi), 10 * xi * x_hat[:, 1]], 1)

    def loss(y, targets):
        return 0.5 * ((y - targets[:, :2]) ** 2).sum(1)

    def generate(rng, n):
        x_star = torch.as_tensor(rng.uniform(-1, 1, size=(n, 2)), dtype=torch.float32)
        y_star = simulate(x_star)
        return y_star, torch.cat([y_star, x_star], 1)

    def metrics(net, inputs, targets):
        x = net(inputs)
        return {'y_error': float((simulate(x) - targets[:, :2]).norm(dim=1).mean()),
                'x_error': float((x - targets[:, 2:]).norm(dim=1).mean())}

    methods = {name: dict(lr=lr, batch_size=batch_size) for name in ('sgd', 'adam', 'adagrad', 'rmsprop', 'sip')}
    methods['adadelta'] = dict(lr=1., batch_size=batch_size)
    return Experiment(
        name='synthetic2d', make_net=lambda: dense([2, 32, 64, 32, 2]), simulate=simulate, loss=loss,
        methods=methods, generate=generate, test_set=generate(np.random.default_rng(987654), n_test),
        metrics=metrics, inverses={'default': newton_inverse(simulate, 2, max_step=1.)},
        eval_every=100, threads=1,
        settings=dict(preset=preset, xi=xi, phi=phi, gamma=gamma, variant=variant, batch_size=batch_size,
                      n_test=n_test, lr=lr),
        description="P(x) = (sin(x̂₁)/ξ, ξx̂₂), x̂ = γR_φx: first-order optimizers vs SIP (saddle-free Newton)")
