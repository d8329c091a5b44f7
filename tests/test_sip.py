"""SIP machinery: proxy loss, the training step (Theorem 1 of seed 003) and the generic inverse updates."""
import copy

import numpy as np
import pytest
import torch
from phi import field, math
from phi.field import CenteredGrid
from phi.geom import Box
from phiml.math import batch, spatial, channel, extrapolation

from phi_hig import sip
from phi_hig.errors import InvalidInputError
from phi_hig.physics import heat


@pytest.fixture(autouse=True)
def float64():
    previous_precision = math.get_precision()
    math.set_global_precision(64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
    math.set_global_precision(previous_precision)


def rotated_sine(xi, phi):
    """`P(x) = (sin(x̂₁)/ξ, ξ·x̂₂)` with `x̂ = R_φ x` (seed 002 §3.4 without γ), batched over rows."""
    rotation = torch.tensor([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    def forward(x):
        xh = x @ rotation.T
        return torch.stack([torch.sin(xh[:, 0]) / xi, xi * xh[:, 1]], dim=1)
    return forward


# ---------------------------------------------------------------------------------------------- proxy loss

def test_sip_loss_is_half_squared_distance_per_example_and_stops_the_correction_gradient():
    prediction = torch.randn(3, 4, requires_grad=True)
    correction = torch.randn(3, 4, requires_grad=True)
    loss = sip.sip_loss(prediction, correction)
    assert torch.allclose(loss, 0.5 * ((prediction - correction) ** 2).sum(1))
    loss.sum().backward()
    assert torch.allclose(prediction.grad, (prediction - correction).detach())
    assert correction.grad is None


def test_sip_loss_on_fields_and_phiml_tensors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 6)), rng.normal(size=(2, 5, 6))
    grid_a = CenteredGrid(math.tensor(a, batch('examples'), spatial('x,y')), 0, x=5, y=6)
    grid_b = grid_a.with_values(math.tensor(b, batch('examples'), spatial('x,y')))
    expected = 0.5 * ((a - b) ** 2).sum(axis=(1, 2))
    assert np.allclose(sip.sip_loss(grid_a, grid_b).numpy('examples'), expected)
    assert np.allclose(sip.sip_loss(grid_a.values, grid_b.values).numpy('examples'), expected)


# ------------------------------------------------------------------------------------ Theorem 1 (seed 003)

def _gradient_descent_equals_backprop(net, inputs, targets, forward, inverse, predict, conditions=None):
    """SIP step with SGD(lr=1) must move the weights by exactly −∇θ mean(L) of back-propagation."""
    reference = copy.deepcopy(net)
    loss = sip.l2_loss(forward(predict(reference, inputs), **(conditions or {})), targets)
    mean = loss.mean() if isinstance(loss, torch.Tensor) else math.mean(loss, batch).native()
    mean.backward()
    expected = torch.cat([-p.grad.reshape(-1) for p in reference.parameters()])
    before = torch.cat([p.detach().reshape(-1).clone() for p in net.parameters()])
    sip.sip_step(net, torch.optim.SGD(net.parameters(), lr=1.), inputs, targets, (forward, inverse), conditions)
    change = torch.cat([p.detach().reshape(-1) for p in net.parameters()]) - before
    return (torch.linalg.norm(change - expected) / torch.linalg.norm(expected)).item()


def test_sip_with_one_gradient_descent_step_equals_backprop_low_dimensional():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    forward = rotated_sine(8., np.pi / 4)
    targets = forward(torch.rand(32, 2) * 2 - 1)
    error = _gradient_descent_equals_backprop(net, targets, targets, forward, sip.gradient_descent(forward),
                                              lambda n, i: n(i))
    assert error <= 1e-6


def test_sip_with_one_gradient_descent_step_equals_backprop_through_heat_fields():
    """Field physics through `field.native_call`; GD on ½‖P(x) − y*‖² is −P(y − y*) (diffusion is self-adjoint)."""
    from phi.torch import TORCH
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode='circular'), torch.nn.Tanh(),
                              torch.nn.Conv2d(4, 1, 3, padding=1, padding_mode='circular'))
    with TORCH:
        x_star = heat.hot_rectangles(spatial(x=16, y=16), batch(examples=4), seed=0)
        x_star = x_star.with_values(math.tensor(torch.tensor(x_star.values.numpy('examples,x,y')), x_star.values.shape))
        targets = heat.forward(x_star, 0.5, 2.)

        def inverse(x, y_target, *, y=None, diffusivity, dt):
            return -heat.forward(y - y_target, diffusivity, dt)
        error = _gradient_descent_equals_backprop(net, targets, targets, heat.forward, inverse,
                                                  lambda n, i: field.native_call(n, i), dict(diffusivity=0.5, dt=2.))
    assert error <= 1e-6


def test_sip_step_uses_the_physics_module_and_reports_losses():
    from phi.torch import TORCH
    torch.manual_seed(2)
    net = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode='circular')
    with TORCH:
        x_star = heat.hot_rectangles(spatial(x=16, y=16), batch(examples=3), seed=1)
        x_star = x_star.with_values(math.tensor(torch.tensor(x_star.values.numpy('examples,x,y')), x_star.values.shape))
        targets = heat.forward(x_star, 0.5, 2.)
        prediction = field.native_call(net, targets)
        result = sip.sip_step(net, torch.optim.SGD(net.parameters(), lr=0.), targets, targets, heat,
                              dict(diffusivity=0.5, dt=2.), inverse_options=dict(noise=0.))
    expected_physics = sip.l2_loss(heat.forward(prediction, 0.5, 2.), targets)
    assert np.allclose(result.physics_loss.numpy('examples'), math.stop_gradient(expected_physics).numpy('examples'))
    # noise=0 inverts exactly, so the proxy loss is ½‖x − x*‖² up to round-off amplified by ≤ exp(ℓ_max)
    expected_proxy = sip.l2_loss(math.stop_gradient(prediction.values), x_star.values)
    assert np.allclose(result.proxy_loss.numpy('examples'), expected_proxy.numpy('examples'), rtol=1e-6)


# ----------------------------------------------------------------------------------------- generic inverses

def test_newton_converges_quadratically_on_exp():
    forward = torch.exp
    y_target = torch.tensor([[1.], [0.3], [1e-3]])
    x_star = torch.log(y_target)
    x = x_star + 0.4
    inverse = sip.newton(forward)
    errors = [(x - x_star).abs()]
    for _ in range(6):
        x = x + inverse(x, y_target)
        errors.append((x - x_star).abs())
    errors = torch.cat(errors, dim=1)  # (examples, iterations)
    assert errors[:, -1].max() <= 1e-14
    for e_now, e_next in zip(errors.T[:-1], errors.T[1:]):
        active = e_now > 1e-6
        assert torch.all(e_next[active] <= 2. * e_now[active] ** 2), (e_now, e_next)  # |L'''/(2L'')| = 1.5 at x*


def test_newton_update_matches_hand_derived_formula_on_exp():
    x, y_target = torch.tensor([[0.2], [-1.]]), torch.tensor([[0.5], [0.9]])
    ex = torch.exp(x)
    expected = -ex * (ex - y_target) / (ex * (2 * ex - y_target))  # −L'/L'' for L = ½(eˣ − y*)²
    assert torch.allclose(sip.newton(torch.exp)(x, y_target), expected)


@pytest.mark.parametrize('phi', [0., np.pi / 4])
def test_saddle_free_newton_is_scale_invariant_on_rotated_sine(phi):
    generator = torch.Generator().manual_seed(3)
    x_star = (torch.rand(1000, 2, generator=generator) * 2 - 1) * 3
    x_start = (torch.rand(1000, 2, generator=generator) * 2 - 1) * 3
    counts = {}
    for xi in (1., 8., 32.):
        forward = rotated_sine(xi, phi)
        y_star, x = forward(x_star), x_start.clone()
        inverse = sip.saddle_free_newton(forward)
        converged_at = torch.full((1000,), -1)
        for iteration in range(51):
            y = forward(x)
            done = ((y[:, 0] - y_star[:, 0]).abs() * xi <= 1e-8) & ((y[:, 1] - y_star[:, 1]).abs() / xi <= 1e-8)
            converged_at = torch.where((converged_at < 0) & done, torch.tensor(iteration), converged_at)
            if iteration < 50:
                x = x + inverse(x, y_star)
        assert (converged_at >= 0).float().mean() >= 0.99, xi
        counts[xi] = converged_at[converged_at >= 0].float()
    for xi in (8., 32.):
        assert counts[xi].median() <= counts[1.].median()
        assert torch.quantile(counts[xi], 0.99) <= torch.quantile(counts[1.], 0.99) + 2


def test_saddle_free_newton_caps_steps_along_flat_directions():
    forward = rotated_sine(1., 0.)
    x = torch.tensor([[np.pi / 2 - 1e-9, 0.]])  # sin is flat: H ≈ 0 along x₁
    step = sip.saddle_free_newton(forward, max_step=0.5)(x, torch.tensor([[-0.5, 0.]]))
    assert step.abs().max() <= 0.5 + 1e-12


def test_gauss_newton_matches_half_inverse_per_example():
    from phi_hig.hig import half_inverse
    rng = np.random.default_rng(4)
    jac = rng.normal(size=(5, 6, 4))
    jac[1, :, 3] = jac[1, :, 0] * 2  # rank-deficient example
    jac[2] *= np.array([1, 1e-3, 1e-8, 1])  # a singular value below the truncation
    rhs = rng.normal(size=(5, 6))
    batched = sip.pseudo_inverse_apply(torch.tensor(jac), torch.tensor(rhs), truncation=1e-6).numpy()
    for b in range(5):
        expected = np.asarray(half_inverse(jac[b], rhs[b], kappa=-1., truncation=1e-6))
        assert np.allclose(batched[b], expected, rtol=1e-9, atol=1e-12), b


def test_gauss_newton_solves_a_linear_problem_in_one_step():
    matrix = torch.tensor([[2., 1.], [0., 3.], [1., -1.]])
    forward = lambda x: x @ matrix.T
    x_star = torch.tensor([[1., -2.], [0.5, 0.3]])
    x = torch.zeros(2, 2)
    x = x + sip.gauss_newton(forward)(x, forward(x_star))
    assert torch.allclose(x, x_star, atol=1e-12)


def test_iterative_lbfgs_update_reduces_the_loss_and_converges_with_more_iterations():
    scale = torch.tensor([1., 10.])
    forward = lambda x: x * scale
    x_star = torch.tensor([[1., -2.], [0.5, 0.3], [-1., 1.]])
    y_star, x = forward(x_star), torch.zeros(3, 2)
    before = sip.l2_loss(forward(x), y_star)
    one = x + sip.iterative(forward, iterations=1)(x, y_star)
    assert torch.all(sip.l2_loss(forward(one), y_star) < before)
    many = x + sip.iterative(forward, iterations=50)(x, y_star)
    assert torch.allclose(many, x_star, atol=1e-5)


def test_bad_inputs_raise_naming_the_argument():
    inverse = sip.newton(torch.exp)
    with pytest.raises(InvalidInputError, match='y_target has 2 examples but x has 3'):
        inverse(torch.zeros(3, 1), torch.ones(2, 1))
    with pytest.raises(InvalidInputError, match='x contains non-finite'):
        inverse(torch.tensor([[float('nan')]]), torch.ones(1, 1))
    with pytest.raises(InvalidInputError, match='correction must be a torch tensor'):
        sip.sip_loss(torch.zeros(2, 2), np.zeros((2, 2)))
    with pytest.raises(InvalidInputError, match='physics must be'):
        sip.sip_step(torch.nn.Linear(1, 1), None, torch.zeros(1, 1), torch.zeros(1, 1), object())


def test_sip_step_runs_the_fluid_physics_end_to_end_in_float32():
    """Smoke test of the Field path with conditions (fluid: `m0`) and the module's own observation loss."""
    from phi.torch import TORCH
    from phi_hig.physics import fluid
    math.set_global_precision(32)
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(3)
    example = fluid.random_example(spatial(x=16, y=16), batch(examples=2), seed=0, radius=2.)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode='circular')

    def predict(m0, m_target):
        stacked = torch.tensor(math.stack([m0.values, m_target.values], channel('c')).numpy('examples,c,x,y'), dtype=torch.float32)
        values = math.tensor(conv(stacked), batch('examples'), channel(vector='x,y'), spatial('x,y'))
        return CenteredGrid(values, extrapolation.PERIODIC, m0.bounds, m0.resolution)
    with TORCH:
        m_target = fluid.forward(example.v0, example.m0, steps=2).time[-1]
        before = [p.detach().clone() for p in conv.parameters()]
        result = sip.sip_step(predict, torch.optim.SGD(conv.parameters(), lr=1e-3), (example.m0, m_target), m_target,
                              lambda_pair(fluid), dict(m0=example.m0), loss=fluid.loss)
    assert np.all(np.isfinite(result.physics_loss.numpy('examples'))) and np.all(np.isfinite(result.proxy_loss.numpy('examples')))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, conv.parameters()))


def lambda_pair(module):
    """The fluid module with two simulation steps, as a (forward, inverse) pair."""
    return (lambda v0, m0: module.forward(v0, m0, steps=2),
            lambda v0, m_target, *, y=None, m0: module.inverse(v0, m_target, m0, steps=2))


def test_sip_step_with_non_finite_inverse_leaves_weights_untouched():
    from phi_hig import NonFiniteStepError
    from phi_hig.sip import sip_step
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    forward = lambda x: x
    inverse = lambda x, y_target, *, y=None: x * float('nan')
    with pytest.raises(NonFiniteStepError):
        sip_step(net, opt, torch.randn(4, 2), torch.randn(4, 2), (forward, inverse))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
