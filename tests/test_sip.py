"""SIP machinery: the proxy loss and the training step (Holl, Koltun & Thuerey 2021, appendix A.1, Theorem 1)."""
import copy

import numpy as np
import pytest
import torch
from phi import field, math
from phi.field import CenteredGrid
from phiml.math import batch, spatial, channel, extrapolation

from phi_hig import inverses, sip
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
    """`P(x) = (sin(x̂₁)/ξ, ξ·x̂₂)` with `x̂ = R_φ x` (Holl, Koltun & Thuerey 2022, §3.4, without γ), batched over rows."""
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


# ------------------------------------------------------------------ Theorem 1 (Holl, Koltun & Thuerey 2021)

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
    error = _gradient_descent_equals_backprop(net, targets, targets, forward, inverses.gradient_descent(forward),
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


def test_bad_inputs_raise_naming_the_argument():
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


# -------------------------------------------------------------------------------------- shapes are never broadcast

def test_sip_loss_refuses_phiml_tensors_of_different_dims_instead_of_an_outer_product():
    prediction = math.random_normal(batch(examples=3), spatial(x=4))
    with pytest.raises(InvalidInputError, match='correction has shape .* but prediction has shape'):
        sip.sip_loss(prediction, math.random_normal(batch(examples=3), spatial(y=4)))
    with pytest.raises(InvalidInputError, match='correction has shape'):
        sip.sip_loss(prediction, math.random_normal(spatial(x=4)))  # missing batch dim
    with pytest.raises(InvalidInputError, match='correction has shape'):
        sip.sip_loss(prediction, math.random_normal(batch(examples=3, seeds=2), spatial(x=4)))
    # the order of the dims does not matter
    values = np.random.default_rng(0).normal(size=(4, 3))
    reordered = math.tensor(values, spatial('x'), batch('examples'))
    assert reordered.shape.names == ('x', 'examples')
    expected = 0.5 * ((prediction.numpy('examples,x') - values.T) ** 2).sum(1)
    assert np.allclose(sip.sip_loss(prediction, reordered).numpy('examples'), expected)


def test_sip_loss_refuses_fields_with_different_batch_dims():
    a = CenteredGrid(math.random_normal(batch(examples=2), spatial(x=4, y=4)), 0, x=4, y=4)
    b = CenteredGrid(math.random_normal(batch(seeds=2), spatial(x=4, y=4)), 0, x=4, y=4)
    with pytest.raises(InvalidInputError, match='correction has shape'):
        sip.sip_loss(a, b)


def test_l2_loss_refuses_mismatched_shapes():
    with pytest.raises(InvalidInputError, match=r'y_target has shape \(4, 1\) but y has shape \(4, 3\)'):
        sip.l2_loss(torch.zeros(4, 3), torch.zeros(4, 1))
    with pytest.raises(InvalidInputError, match='y_target has shape'):
        sip.l2_loss(math.zeros(batch(b=2), spatial(x=3)), math.zeros(batch(b=2), spatial(y=3)))


def _net_with_gradients():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3)
    net(torch.randn(5, 3)).sum().backward()  # .grad holds values from an earlier backward pass
    return net, [p.detach().clone() for p in net.parameters()], [p.grad.clone() for p in net.parameters()]


def _untouched(net, weights, grads):
    return (all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))
            and all(p.grad is not None and torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads)))


def test_sip_step_refuses_an_update_of_another_shape_and_leaves_weights_and_grad():
    net, weights, grads = _net_with_gradients()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    inverse = lambda x, y_target, *, y=None: (y_target - y)[:, :1]  # (B, 1) for x of shape (B, 3)
    with pytest.raises(InvalidInputError, match=r'dx has shape \(4, 1\) but the prediction x has shape \(4, 3\)'):
        sip.sip_step(net, opt, torch.randn(4, 3), torch.randn(4, 3), (lambda x: x, inverse))
    assert _untouched(net, weights, grads)


def test_sip_step_refuses_phiml_updates_with_extra_dims():
    net = torch.nn.Linear(3, 3)
    inputs = math.random_normal(batch(examples=4), channel(vector=3))
    inverse = lambda x, y_target, *, y=None: math.expand(y_target - y, batch(seeds=2))
    with pytest.raises(InvalidInputError, match='dx has shape .* but the prediction x has shape'):
        sip.sip_step(net, torch.optim.SGD(net.parameters(), lr=0.1), inputs, inputs, (lambda x: x, inverse))


def test_failed_sip_steps_leave_weights_and_grad_as_they_were():
    from phi_hig import NonFiniteStepError
    net, weights, grads = _net_with_gradients()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    identity = lambda x: x
    nan_inverse = lambda x, y_target, *, y=None: x * float('nan')
    with pytest.raises(NonFiniteStepError):
        sip.sip_step(net, opt, torch.randn(4, 3), torch.randn(4, 3), (identity, nan_inverse))
    assert _untouched(net, weights, grads)
    good_inverse = lambda x, y_target, *, y=None: y_target - y
    targets = torch.randn(4, 3)
    targets[2, 1] = float('inf')
    with pytest.raises(InvalidInputError, match='targets contains non-finite'):
        sip.sip_step(net, opt, torch.randn(4, 3), targets, (identity, good_inverse))
    with pytest.raises(InvalidInputError, match='must hold numbers'):
        sip.sip_step(net, opt, torch.randn(4, 3), torch.randn(4, 3), (identity, lambda x, t, *, y=None: x > 0))
    with pytest.raises(InvalidInputError, match='inverse_options must be None or a dict'):
        sip.sip_step(net, opt, torch.randn(4, 3), torch.randn(4, 3), (identity, good_inverse), inverse_options=[1])
    assert _untouched(net, weights, grads)


@pytest.mark.parametrize('lr', [float('nan'), float('inf'), -0.1])
def test_sip_step_refuses_a_bad_learning_rate_set_after_construction(lr):
    """A rate written into param_groups later (by a scheduler, load_state_dict or user code) is checked at every
    step: refused, and the weights and gradients are left as they were."""
    net, weights, grads = _net_with_gradients()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.param_groups[0]['lr'] = lr
    with pytest.raises(InvalidInputError, match=r"learning rate param_groups\[0\]\['lr'\]"):
        sip.sip_step(net, opt, torch.randn(4, 3), torch.randn(4, 3), (lambda x: x, lambda x, t, *, y=None: t - y))
    assert _untouched(net, weights, grads)


def test_sip_step_refuses_conditions_and_options_the_physics_cannot_take():
    """A missing or unknown condition and a mistyped inverse option are named before the network runs."""
    net, weights, grads = _net_with_gradients()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    forward = lambda x, scale: scale * x
    inverse = lambda x, y_target, *, y=None, scale, noise=0.: (y_target - y) / scale
    args = net, opt, torch.randn(4, 3), torch.randn(4, 3), (forward, inverse)
    with pytest.raises(InvalidInputError, match="physics forward .*cannot take .*none.*scale"):
        sip.sip_step(*args)
    with pytest.raises(InvalidInputError, match="physics forward .*cannot take .*scale, dt"):
        sip.sip_step(*args, conditions=dict(scale=2., dt=1.))
    with pytest.raises(InvalidInputError, match="physics inverse .*cannot take .*nosie"):
        sip.sip_step(*args, conditions=dict(scale=2.), inverse_options=dict(nosie=0.1))
    assert _untouched(net, weights, grads)
    sip.sip_step(*args, conditions=dict(scale=2.), inverse_options=dict(noise=0.1))  # the right names run
    assert not _untouched(net, weights, grads)


def test_sip_step_refuses_a_prediction_without_gradient():
    """A network whose output is detached has nothing to train: a clear refusal instead of torch's backward error."""
    net, weights, grads = _net_with_gradients()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    detached = lambda x: net(x).detach()
    with pytest.raises(InvalidInputError, match='does not depend on the network'):
        sip.sip_step(detached, opt, torch.randn(4, 3), torch.randn(4, 3), (lambda x: x, lambda x, t, *, y=None: t - y))
    assert _untouched(net, weights, grads)


def test_sip_step_passes_conditions_by_position_by_name_or_as_one_value():
    """The rule of hig_step: a tuple goes by position, a dict by name, one value as one argument. Each gives the
    update of physics that closes over the same per-example values (SIP runs the physics on the batch as it is)."""
    torch.manual_seed(8)
    net0 = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    y_target = torch.randn(4, 3)
    a = torch.rand(4, 3) + 0.5

    def forward(x, a, shift=0.):
        return a * x + shift

    def inverse(x, y_target, a, shift=0., *, y=None):
        return (y_target - y) / a

    def trained(physics, conditions=None):
        net = copy.deepcopy(net0)
        sip.sip_step(net, torch.optim.SGD(net.parameters(), lr=0.1), y_target, y_target, physics, conditions)
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def closing_over(shift):
        return lambda x: a * x + shift, lambda x, y_target, *, y=None: (y_target - y) / a
    reference = trained(closing_over(0.25))
    assert torch.allclose(trained((forward, inverse), (a, 0.25)), reference, rtol=1e-14, atol=0)
    assert torch.allclose(trained((forward, inverse), dict(a=a, shift=0.25)), reference, rtol=1e-14, atol=0)
    assert torch.allclose(trained((forward, inverse), a), trained(closing_over(0.)), rtol=1e-14, atol=0)
    assert not torch.allclose(reference, trained(closing_over(0.)))


def test_sip_step_refuses_a_condition_without_the_batch_of_the_predictions():
    net, weights, grads = _net_with_gradients()
    forward = lambda x, a: a * x  # noqa: E731
    inverse = lambda x, y_target, a, *, y=None: (y_target - y) / a  # noqa: E731
    with pytest.raises(InvalidInputError, match=r"conditions\[0\] is a torch tensor of shape \(2, 3\), but the "
                                                r"predictions hold 4 examples"):
        sip.sip_step(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.randn(4, 3), torch.randn(4, 3),
                     (forward, inverse), (torch.ones(2, 3),))
    assert _untouched(net, weights, grads)
