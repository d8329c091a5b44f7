"""The exponential function `P(x) = eˣ`, x* ~ U(−12, 0), y* = P(x*) ∈ (0, 1] (Holl, Koltun & Thuerey 2022, §3,
Fig. 2 and appendix C.2).

The curvature around each solution `x* = log y*` scales with y*², so the examples with small y* have vanishing
gradients: SGD and Adam through the physics fit the large y* and fail on the small ones, while the
scale-invariant updates fit all. The paper's Figure 2 plots predicted against true x (`demos/exp.py`).

Network `NN(y*) = x`: 1 → 10 → 20 → 10 → 1, ReLU (our choice; the paper does not state it). By default it reads
`log y*` (`network_input='log'`): a ReLU network fed y* itself cannot tell y* = 1e-5 from 2e-5 (the whole lower
half of the x* range maps to inputs below 2.5e-3), which would measure representation, not optimization. With
`log y*` the ideal network is the identity, and what remains is the gradient scale `∝ y*²` the claim is about.
`network_input='y'` feeds y* unchanged.
Tensors: inputs `(b, 1)` = log y* (or y*); targets `(b, 2)` = (y*, x*); x* is read only by `metrics`.

Methods: 'sgd' and 'adam' through the physics; 'sip' = SIP with Newton's method on `L = ½(eˣ − y*)²`
(saddle-free: the Hessian `eˣ(2eˣ − y*)` is negative where `eˣ < y*/2`, where plain Newton would climb; steps
capped at 2 in x); 'rescaled' = the physics gradient rescaled to unit length per example (`Δx = −g/|g|`, SIP
with that update — equivalent to back-propagating the rescaled gradient).
"""
from __future__ import annotations

from typing import Literal, Tuple

import numpy as np
import torch

from .base import Experiment
from ..sip.inverses import Inverse, newton_inverse
from .settings import Count, Positive, factory
from ..errors import InvalidInputError
from ..nets import dense

__all__ = ['exp']


@factory(test=dict(batch_size=8, n_test=32))
def exp(preset: str = 'paper', batch_size: Count = 128, n_test: Count = 1000, x_range: Tuple[float, float] = (-12., 0.),
        lr: Positive = 1e-3, network_input: Literal['log', 'y'] = 'log') -> Experiment:
    """Build the exponential experiment.

    The default inverse (saddle-free Newton) has the option ``max_step`` (method hyperparameter
    ``inverse_options``): the cap of its step in x (default 2, > 0).

    Args:
        preset: 'paper' or 'test' (batch 8, 32 test examples).
        batch_size: batch of every method.
        n_test: held-out examples.
        x_range: range `(low, high)` of the uniform ground truth x*, low < high.
        lr: Adam learning rate (SGD uses 10·lr).
        network_input: 'log' (log y*, default) or 'y' (y* itself).
    """
    if not x_range[0] < x_range[1]:
        raise InvalidInputError(f"setting 'x_range' of experiment 'exp' must be (low, high) with low < high; got {x_range!r}")

    def simulate(z):
        return torch.exp(z)

    def loss(y, targets):
        return 0.5 * ((y - targets[:, :1]) ** 2).sum(1)

    def rescaled(z, targets, *, y=None):
        y = simulate(z) if y is None else y
        g = (y - targets[:, :1]) * y  # ∂L/∂x
        return -g / g.abs().clamp_min(1e-30)

    def generate(rng, n):
        x_star = torch.as_tensor(rng.uniform(*x_range, size=(n, 1)), dtype=torch.float32)
        y_star = torch.exp(x_star)
        return (torch.log(y_star) if network_input == 'log' else y_star), torch.cat([y_star, x_star], 1)

    def metrics(net, inputs, targets):
        x = net(inputs)
        err = (x - targets[:, 1:]).abs()
        small = targets[:, 1:] < -6
        return {'x_error': float(err.mean()), 'x_error_small_y': float(err[small].mean()),
                'x_error_large_y': float(err[~small].mean())}

    methods = {
        'sgd': dict(lr=10 * lr, batch_size=batch_size),
        'adam': dict(lr=lr, batch_size=batch_size),
        'sip': dict(lr=lr, batch_size=batch_size),
        'rescaled': dict(base='sip', inverse='rescaled', lr=lr, batch_size=batch_size),
    }
    return Experiment(
        name='exp', make_net=lambda: dense([1, 10, 20, 10, 1]), simulate=simulate, loss=loss, methods=methods,
        generate=generate, test_set=generate(np.random.default_rng(987654), n_test), metrics=metrics,
        inverses={'default': newton_inverse(simulate, 1, max_step=2.),
                  'rescaled': Inverse(rescaled)},
        eval_every=100, threads=1,
        settings=dict(preset=preset, batch_size=batch_size, n_test=n_test, x_range=list(x_range), lr=lr,
                      network_input=network_input),
        description="P(x) = exp(x), x* ~ U(−12, 0): SGD/Adam vs SIP (Newton) vs the rescaled gradient")
