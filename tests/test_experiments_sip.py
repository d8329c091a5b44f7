"""The SIP experiments (Holl, Koltun & Thuerey 2022; 2021) on the runner: data statistics, physics round trips, inverses, and every
experiment × method for two steps at its `test` preset."""
import math

import numpy as np
import pytest
import torch

import phi_hig
from phi_hig.errors import InvalidInputError
from phi_hig.training.methods import make_method
from phi_hig import experiments
import importlib

# the modules (the package's attribute of the same name is the factory function)
sine_module = importlib.import_module('phi_hig.experiments.sine')
from phi_hig.physics import heat as heat_physics, fluid as fluid_physics
from phiml.math import batch, spatial

SIP = ('poisson', 'heat', 'fluid', 'sine', 'exp', 'synthetic2d')


@pytest.fixture(scope='module')
def built():
    return {name: experiments.get(name, preset='test') for name in SIP}


@pytest.mark.parametrize('name', SIP)
def test_every_method_runs_two_steps(built, name):
    ex = built[name]
    result = phi_hig.train(ex, list(ex.methods), steps=2, seed=0, progress=False, eval_every=2)
    for method, final in result.summary['final'].items():
        assert final['status'] == 'ok', (method, final['status'])
        assert final['steps'] == 2
        assert math.isfinite(final['test_loss'])


# ------------------------------------------------------------------------------------------------- data

class _CountingGenerator(np.random.Generator):
    """Records the values drawn by `integers` (the rectangle counts of `hot_rectangles`)."""

    def __init__(self, seed):
        super().__init__(np.random.PCG64(seed))
        self.drawn = []

    def integers(self, low, high=None, *args, **kwargs):
        value = super().integers(low, high, *args, **kwargs)
        self.drawn.append((low, high, int(value)))
        return value


def test_hot_rectangles_count_between_4_and_10():
    rng = _CountingGenerator(3)
    x = heat_physics.hot_rectangles(spatial(x=16, y=16), batch(b=200), rng)
    counts = [n for lo, hi, n in rng.drawn]
    assert all((lo, hi) == (4, 11) for lo, hi, _ in rng.drawn) and len(counts) == 200
    assert min(counts) == 4 and max(counts) == 10
    values = x.values.numpy(['b', 'x', 'y'])
    assert values.min() >= 0 and (values.reshape(200, -1).max(1) > 0).all()


def test_heat_targets_are_diffused_ground_truth(built):
    ex = experiments.get('heat', preset='test')
    inputs, targets = ex.test_set
    assert targets.dtype == torch.float64 and inputs.dtype == torch.float32
    y = ex.simulate(targets[:, 1:2])
    torch.testing.assert_close(y, targets[:, :1])
    # diffusion keeps the mean; the mean-shifted network reproduces it
    net = ex.make_net()
    x = net(inputs)
    torch.testing.assert_close(x.mean((1, 2, 3)).double(), targets[:, 1].mean((1, 2)), atol=1e-5, rtol=0)


def test_fluid_marker_fill_fraction():
    example = fluid_physics.random_example(spatial(x=32, y=32), batch(b=16), np.random.default_rng(0))
    m0 = example.m0.values.numpy(['b', 'x', 'y'])
    assert set(np.unique(m0)) <= {0., 1.}
    fill = m0.mean(axis=(1, 2))  # the marker box covers 1/4 of the domain, about half of it is marked
    assert 0.05 < fill.mean() < 0.2 and fill.min() > 0


# ------------------------------------------------------------------------------------------ physics / inverses

def test_poisson_solvers_agree_and_sip_inverse_recovers_x_star():
    ex_cg = experiments.get('poisson', preset='test', solver='cg')
    ex_dst = experiments.get('poisson', preset='test', solver='dst')
    inputs, targets = ex_dst.test_set
    x_star = targets[:, 1:2].double()
    y_cg, y_dst = ex_cg.simulate(x_star), ex_dst.simulate(x_star)
    assert float((y_cg - y_dst).abs().max() / y_dst.abs().max()) < 1e-4
    z = torch.zeros_like(x_star).requires_grad_(True)
    ex_cg.loss(ex_cg.simulate(z), targets.double()).sum().backward()
    g_cg = z.grad.clone()
    z.grad = None
    ex_dst.loss(ex_dst.simulate(z), targets.double()).sum().backward()
    assert float((g_cg - z.grad).abs().max() / z.grad.abs().max()) < 1e-4  # adjoint CG == exact gradient
    dx = ex_dst.inverse(torch.zeros_like(x_star), targets.double())
    assert float((dx - x_star).abs().max()) < 1e-5  # the stored targets are float32


def test_heat_inverse_improves_on_zero_mean_guess():
    ex = experiments.get('heat', preset='test')
    _, targets = ex.test_set
    x0 = targets[:, :1].clone()  # the observation itself as first guess
    dx = ex.inverse(x0, targets)
    before = (x0 - targets[:, 1:2]).abs().sum()
    after = (x0 + dx - targets[:, 1:2]).abs().sum()
    assert after < 0.7 * before


def test_sine_updates():
    a = torch.rand(4000, 1, dtype=torch.float64) * 10 + 0.1
    x = torch.rand(4000, 1, dtype=torch.float64) * 3 - 1
    x = torch.where(x.abs() < 0.05, torch.full_like(x, 0.5), x)
    best = sine_module.closest_minimum(a, x)
    torch.testing.assert_close(torch.sin(a / best), -torch.ones_like(a))
    assert bool((best > 0).all())
    torch.testing.assert_close(best[x <= 0], (a / (1.5 * math.pi))[x <= 0])
    # for x > 0 no other positive minimum is closer: check the neighbouring phases
    for shift in (-1, 1):
        phase = a / best + 2 * math.pi * shift
        other = a / phase
        valid = (other > 0) & (x > 0)
        assert bool(((other - x).abs()[valid] >= (best - x).abs()[valid] - 1e-9).all())
    u = a / x
    d1 = -a * torch.cos(u) / x ** 2
    d2 = -a ** 2 * torch.sin(u) / x ** 4 + 2 * a * torch.cos(u) / x ** 3
    newton = sine_module.newton_update(a, x, clip=1e9)
    convex = d2 > 0
    torch.testing.assert_close(newton[convex], (-d1 / d2)[convex])  # = −P′/P″ where P″ > 0
    torch.testing.assert_close(newton[convex], (x ** 2 * torch.cos(u) / (2 * x * torch.cos(u) - a * torch.sin(u)))[convex])
    assert bool((newton * d1 <= 0).all())  # always descends on P
    inv = sine_module.inverse_gradient_update(a, x, clip=1e9)
    ok = torch.cos(u).abs() > 1e-3
    torch.testing.assert_close(inv[ok], (x ** 2 * (torch.sin(u) + 1) / (a * torch.cos(u)))[ok])
    # y* = −1 is a double root of P − y*, so the inverse-gradient step halves the distance to the minimum
    x1 = best * 1.01
    x2 = x1 + sine_module.inverse_gradient_update(a, x1)
    ratio = (x2 - best).abs() / (x1 - best).abs()
    assert abs(float(ratio.median()) - 0.5) < 0.02 and float(ratio.max()) < 0.55


def test_sine_adam_gradient_is_clipped():
    ex = experiments.get('sine', preset='test')
    z = torch.tensor([[1e-3, 5.], [1., 1.]], requires_grad=True)
    ex.simulate(z[:, :1], z[:, 1:]).sum().backward()
    assert float(z.grad[:, 0].abs().max()) <= 1.


def test_variants_use_their_inverse_and_supervised_matches_labels(built):
    ex = built['sine']
    method = make_method('supervised', ex.make_net(), ex)
    assert method.base == 'sip' and method.inverse is ex.inverses['supervised']
    assert make_method('sip_lbfgs', built['heat'].make_net(), built['heat']).inverse is built['heat'].inverses['lbfgs']
    with pytest.raises(InvalidInputError):
        make_method('adam', ex.make_net(), ex, overrides={'inverse': 'nope'})


def test_clip_limits_the_gradient_norm(built):
    ex = built['synthetic2d']
    net = ex.make_net()
    before = [p.detach().clone() for p in net.parameters()]
    method = make_method('sgd', net, ex, overrides={'clip': 1e-3, 'lr': 1.})
    x, t = ex.test_set
    method.step(x, t)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)])
    assert float(step.norm()) <= 1e-3 * (1 + 1e-4)


def test_exp_sip_and_synthetic_sip_solve_single_problems():
    ex = experiments.get('exp', preset='test')
    _, t = ex.test_set
    z = torch.zeros(t.shape[0], 1)
    for _ in range(30):
        z = z + ex.inverse(z, t)
    assert float((z[:, 0] - t[:, 1]).abs().max()) < 1e-3
    ex = experiments.get('synthetic2d', preset='test', xi=32.)
    _, t = ex.test_set
    z = torch.zeros(t.shape[0], 2)
    for _ in range(30):
        z = z + ex.inverse(z, t)
    assert float((ex.simulate(z) - t[:, :2]).abs().max()) < 1e-3


def test_fluid_inverse_after_simulate_reuses_the_trajectory_without_changing_the_update(built, monkeypatch):
    ex = built['fluid']
    inputs, targets = ex.test_set
    z = torch.cat([0.3 * torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(1)), inputs[:, :1]], 1)
    other = z.clone()
    other[0, 0, 0, 0] += 1.
    ex.simulate(other)  # the memo now holds a different z: the inverse must simulate itself
    fresh = ex.inverse(z, targets)
    calls = []
    original = fluid_physics.simulate
    monkeypatch.setattr(fluid_physics, 'simulate', lambda *a, **k: calls.append(1) or original(*a, **k))
    ex.simulate(z)
    calls.clear()
    reused = ex.inverse(z, targets)
    assert calls == []  # no second simulation of the same z
    torch.testing.assert_close(reused, fresh, rtol=0, atol=0)
