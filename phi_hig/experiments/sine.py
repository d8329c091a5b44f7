"""Single-parameter optimization `P_a(x) = sin(a/x)`, y* = −1, a ∈ [0.1, 10.1) (Holl, Koltun & Thuerey 2021, §3.1
and appendix B.1).

The network `NN(a) = x` (1 → 10 → 20 → 10 → 1, ReLU, 461 parameters) must find, for every a, an x with
`sin(a/x) = −1`; the minima `x_n = a/(3π/2 + 2πn)` accumulate at 0, so the problem is multimodal and its
gradients grow without bound as x → 0. Adam 0.002, batch 1000. Metric: mean of `sin(a/x) + 1` (0 at a minimum).

Tensors: inputs `(b, 1)` = a; targets `(b, 2)` = (y* = −1, a). The network predicts `z = x`; a is each
example's condition (`Experiment.conditions`: the input), so `simulate(x, a) = sin(a/x)` and every inverse
receives a after the targets.

Methods (variants as data, see `phi_hig.training.methods.make_method`):

* 'supervised': SIP with the 'supervised' inverse — the labels are the minima closest to the fixed initial
  guess x₀ = 1 (what an optimizer started at x₀ finds), proxy loss ½‖x − x_label‖².
* 'adam': Adam through the physics with the physics gradient ∂P/∂x clipped to [−1, 1] (the paper's
  remedy for its unbounded growth; `simulate` has a custom backward).
* 'sip_newton': SIP with the analytic Newton step on P, `Δx = −P′/|P″|` (flipped towards minima where
  P″ < 0), clipped to [−1, 1].
* 'sip_inverse_gradient': SIP with `Δx = (y* − P)/P′` (the inverse gradient), clipped to [−1, 1].
* 'sip': SIP with the analytic inverse (the 'default' inverse) — the positive minimum closest to the current x
  (`closest_minimum`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import Experiment, inputs_as_conditions
from ..sip.inverses import Inverse
from .settings import Count, Positive, factory
from .. import checks
from ..nets import accept_conditioned_keys, dense

__all__ = ['sine', 'closest_minimum', 'newton_update', 'inverse_gradient_update']

TWO_PI = 2 * math.pi


def closest_minimum(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The positive minimum `x* = a/(3π/2 + 2πn)`, n ≥ 0, of `sin(a/x)` closest to `x`.

    Candidates are the two phases `3π/2 + 2πn` bracketing `a/x` (`n = ⌊a/(2πx) − 3/4⌋` and n + 1), with n clamped
    to ≥ 0: the special cases n = 0 and n = −1 of the reference formula `n = round(a/(2πx) − 3/4)` (x beyond the
    largest minimum a/(3π/2), or x ≤ 0) map to the largest minimum a/(3π/2) (for x ≤ 0 the nearest positive
    minima would be the ones accumulating at 0+). Allowing negative solutions made network outputs that cross
    0 jump between the two accumulation branches and collapse onto x ≈ 0, where every x is close to some
    minimum; with positive solutions only this still happens from some initializations (README, 'What the
    demos reproduce': the analytic inverse does not converge on every seed).
    """
    safe = torch.where(x > 0, x, torch.full_like(x, float('inf')))
    t = a / (TWO_PI * safe) - 0.75
    n0 = torch.floor(t)
    best, best_dist = None, None
    for n in (n0, n0 + 1):
        candidate = a / (1.5 * math.pi + TWO_PI * n.clamp_min(0))
        dist = (candidate - x).abs()
        best = candidate if best is None else torch.where(dist < best_dist, candidate, best)
        best_dist = dist if best_dist is None else torch.minimum(dist, best_dist)
    return best


def newton_update(a, x, clip: float = 1.):
    """Newton step on `P = sin(a/x)`: `Δx = −P′/|P″| = x²cos(a/x)/|2x·cos(a/x) − a·sin(a/x)|·sign(x)…`, clipped.

    Computed as `−P′/|P″|`: where `P″ < 0` (near maxima) plain Newton would climb, so the step is flipped to
    descend. Clipped to `[−clip, clip]`.
    """
    u = a / x
    d1 = -a * torch.cos(u) / x ** 2
    d2 = -a ** 2 * torch.sin(u) / x ** 4 + 2 * a * torch.cos(u) / x ** 3
    return (-d1 / d2.abs().clamp_min(1e-30)).clamp(-clip, clip)


def inverse_gradient_update(a, x, clip: float = 1., y_target: float = -1.):
    """Inverse-gradient step `Δx = (y* − P)/P′ = x²(sin(a/x) + 1)/(a·cos(a/x))` (for y* = −1), clipped."""
    u = a / x
    d1 = -a * torch.cos(u) / x ** 2
    d1 = torch.where(d1.abs() < 1e-30, torch.full_like(d1, 1e-30), d1)
    return ((y_target - torch.sin(u)) / d1).clamp(-clip, clip)


class _ClippedSine(torch.autograd.Function):
    """`sin(a/x)` whose backward uses `∂P/∂x` clipped to `[−clip, clip]` (∂P/∂a is not needed)."""

    @staticmethod
    def forward(ctx, x, a, clip):
        ctx.save_for_backward(x, a)
        ctx.clip = clip
        return torch.sin(a / x)

    @staticmethod
    def backward(ctx, grad):
        x, a = ctx.saved_tensors
        d1 = (-a * torch.cos(a / x) / x ** 2).clamp(-ctx.clip, ctx.clip)
        return grad * d1, None, None


@factory(test=dict(batch_size=16, n_test=32))
def sine(preset: str = 'paper', batch_size: Count = 1000, n_test: Count = 1000, x0: Positive = 1.,
         clip: Positive = 1., lr: Positive = 0.002) -> Experiment:
    """Build the single-parameter experiment.

    The 'newton' and 'inverse_gradient' inverses have the option ``clip`` (method hyperparameter
    ``inverse_options``): the bound of their steps, `Δx ∈ [−clip, clip]` (default 1, > 0).

    Args:
        preset: 'paper' or 'test' (batch 16, 32 test examples).
        batch_size: batch of every method (paper: 1000).
        n_test: held-out a values (uniform in [0.1, 10.1)).
        x0: fixed initial guess defining the supervised labels (> 0).
        clip: bound of the physics gradient ∂P/∂x in Adam's backward pass, `[−clip, clip]` (the paper's 1).
        lr: Adam learning rate of every method (paper: 0.002).
    """

    def simulate(x, a):
        return _ClippedSine.apply(x, a, clip)

    def loss(y, targets):
        return 0.5 * ((y - targets[:, :1]) ** 2).sum(1)

    def update(step, **options):
        """The Inverse whose Δx is `step(a, x, **options)`."""
        def solve(x, targets, a, *, y=None, **values):
            return step(a, x, **values)
        return Inverse(solve, options, check_clip if options else None)

    def check_clip(options):
        checks.number('clip', options['clip'], low=0, low_open=True)

    inverses = {
        'default': update(lambda a, x: closest_minimum(a, x) - x),
        'newton': update(newton_update, clip=1.),
        'inverse_gradient': update(inverse_gradient_update, clip=1.),
        'supervised': update(lambda a, x: closest_minimum(a, torch.full_like(x, x0)) - x),
    }

    def generate(rng, n):
        a = torch.as_tensor(rng.uniform(0.1, 10.1, size=(n, 1)), dtype=torch.float32)
        return a, torch.cat([-torch.ones_like(a), a], 1)

    def metrics(net, inputs, targets):
        value = torch.sin(inputs / net(inputs)) + 1
        return {'sin_plus_one': float(value.mean()), 'sin_plus_one_median': float(value.median())}

    methods = {
        'supervised': dict(base='sip', inverse='supervised', lr=lr, batch_size=batch_size),
        'adam': dict(lr=lr, batch_size=batch_size),
        'sip_newton': dict(base='sip', inverse='newton', lr=lr, batch_size=batch_size),
        'sip_inverse_gradient': dict(base='sip', inverse='inverse_gradient', lr=lr, batch_size=batch_size),
        'sip': dict(lr=lr, batch_size=batch_size),
    }
    return Experiment(
        name='sine', make_net=lambda: accept_conditioned_keys(dense([1, 10, 20, 10, 1])), simulate=simulate,
        loss=loss, methods=methods, generate=generate, test_set=generate(np.random.default_rng(987654), n_test),
        metrics=metrics, conditions=inputs_as_conditions, inverses=inverses, eval_every=100, threads=1,
        settings=dict(preset=preset, batch_size=batch_size, n_test=n_test, x0=x0, clip=clip, lr=lr),
        description="sin(a/x) = −1: supervised, Adam (clipped ∂P/∂x), SIP with Newton, inverse gradient, closest minimum")
