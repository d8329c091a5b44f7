"""Per-example conditions of the physics (hig_step(..., conditions=)): the same update as a network whose output
carries the conditions (`phi_hig.nets.Conditioned`, the formulation without them), for torch tensors, PhiML
tensors and Fields; per-sample Jacobians with conditions against a brute-force loop over examples; the refusals."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from phi_hig import HIG, hig_step, gram, per_sample_jacobian, InvalidInputError
from phi_hig.nets import Conditioned, keras_dense
from phi_hig.physics.oscillators import chain_rhs, simulate_chain, sum_squares

from test_half_inverse import reference
from test_jacobian import Scale, brute_force_jacobian, nonlinear_physics

CHAIN = chain_rhs(0.0, (0.0, 1.0), linear=0.2)  # the linear chain of the PBDL book's HIG notebook
STEPS = 6


def _flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).clone()


def _torch_case():
    """Oscillators from x₀ (b = 8): the network predicts the controls, x₀ is the condition (a tuple, with a
    shared Δt)."""
    torch.manual_seed(1)
    inner = keras_dense([4, 8, 8, STEPS], 'tanh').double()
    x0 = torch.rand(8, 4, dtype=torch.float64)
    with_conditions = (x0, x0, lambda u, s0, dt: simulate_chain(s0, u, dt, CHAIN), sum_squares, (x0, 0.5))
    wrapper = (x0, x0, lambda z: simulate_chain(z[:, STEPS:], z[:, :STEPS], 0.5, CHAIN), sum_squares, None)
    return inner, with_conditions, wrapper


def _tensor_case():
    """PhiML tensors with two batch dims (b=3, c=2); the conditions by name: x0 (all batch dims) and s (only b,
    broadcast along c), which the inputs also carry in their last column."""
    from phiml import math
    from phiml.math import batch, channel
    torch.manual_seed(2)
    inner = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    s = math.random_uniform(batch(b=3)) + 0.5
    x = math.concat([math.random_normal(batch(b=3, c=2), channel(vector=3)),
                     math.expand(s, batch(c=2), channel(vector=1))], 'vector')
    t = math.random_normal(batch(b=3, c=2), channel(vector=3))

    def physics(u, x0, s):
        return u * x0.vector[:3] + s * math.sin(u) ** 2

    def wrapped(z):
        return physics(z.vector[:3], z.vector[3:], z.vector[-1])

    def loss(y, t):
        return math.l2_loss(y - t)
    return inner, (x, t, physics, loss, dict(x0=x, s=s)), (x, t, wrapped, loss, None)


def _field_case():
    """Fields: y = ∇²u + m·u on a zero-Dirichlet 6×6 grid, the coefficient m (the network input) is one Field."""
    from phi import field
    from phi.field import CenteredGrid
    from phi.torch.nets import conv_net
    from phiml import math
    from phiml.math import batch, spatial
    torch.manual_seed(3)
    inner = conv_net(1, 1, [4], activation='tanh').double()
    rng = np.random.default_rng(4)
    x, t = (CenteredGrid(math.tensor(rng.standard_normal((2, 6, 6)), batch('b'), spatial('x,y')), 0, x=6, y=6)
            for _ in range(2))

    def physics(u, m):
        return field.laplace(u) + m * u

    def loss(y, t):
        return math.l2_loss(y.values - t.values)
    return inner, (x, t, physics, loss, x), (x, t, lambda z: physics(z.vector[0], z.vector[1]), loss, None)


CASES = {'torch': _torch_case, 'tensor': _tensor_case, 'field': _field_case}


@pytest.mark.parametrize('kappa', [-0.5, -1.0], ids=['hig', 'gn'])
@pytest.mark.parametrize('kind', list(CASES))
def test_conditions_give_the_update_of_the_network_that_carries_them(kind, kappa, float64):
    """Two steps each (the second with |y| known): updates equal to rel ≤ 1e-12, and the first one equal to an
    independent float64 SVD of the brute-force Jacobian (torch case). The PhiML case runs in chunks of 2 of its 6
    examples: 6 replicated rows take the inputs' batch shape (b=3, c=2), the conditions too."""
    inner, with_conditions, wrapper = CASES[kind]()
    net_c, net_w = copy.deepcopy(inner), Conditioned(copy.deepcopy(inner))
    chunks = dict(chunk_rows=6) if kind == 'tensor' else {}
    opt_c, opt_w = (HIG(n, 0.5, 1e-8, kappa=kappa, **chunks) for n in (net_c, net_w))
    before = _flat(inner)
    for step in range(2):
        x, t, physics, loss, conditions = with_conditions
        info_c = hig_step(net_c, opt_c, x, t, physics, loss, conditions=conditions)
        info_w = hig_step(net_w, opt_w, *wrapper[:4])
        d_c, d_w = _flat(net_c) - before, _flat(net_w) - before
        assert d_w.norm() > 0 and (d_c - d_w).norm() <= 1e-12 * d_w.norm(), f"step {step}"
        assert info_c.loss == pytest.approx(info_w.loss, rel=1e-12)
        if step == 0 and kind == 'torch':
            x0 = x
            J = torch.cat([brute_force_jacobian(inner, x0[i:i + 1], lambda u: physics(u, x0[i:i + 1], 0.5))
                           for i in range(len(x0))]).numpy()
            g = ((physics(inner(x0), x0, 0.5) - x0) * 2 / len(x0)).detach().reshape(-1).numpy()
            expected = -0.5 * reference(J, g, kappa, 0.0, 1e-8)
            assert np.linalg.norm(d_c.numpy() - expected) <= 1e-8 * np.linalg.norm(expected)


def _mixed_problem():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), Scale(6), nn.Linear(6, 4)).double()  # Scale: the dense block
    x = torch.randn(5, 3, dtype=torch.float64)
    a = torch.rand(5, 4, dtype=torch.float64) + 0.5

    def physics(z, a, k):
        return k * nonlinear_physics(z * a)
    return net, x, a, physics


@pytest.mark.parametrize('structured', [None, False])
def test_jacobian_and_gram_with_conditions_match_a_loop_over_examples(structured):
    """Factored (+ the generic block of an unknown layer) and dense paths, in chunks of 7 rows that cut examples'
    copies apart: J and J Jᵀ equal a brute-force loop that gives every example its own condition."""
    net, x, a, physics = _mixed_problem()
    J_ref = torch.cat([brute_force_jacobian(net, x[i:i + 1], lambda z: physics(z, a[i:i + 1], 2.0))
                       for i in range(len(x))])
    conditions = dict(a=a, k=2.0)
    J = per_sample_jacobian(net, x, physics, conditions, structured=structured, chunk_rows=7)
    assert torch.allclose(J, J_ref, rtol=1e-10, atol=1e-12 * J_ref.abs().max())
    G = gram(net, x, physics, conditions, structured=structured, chunk_rows=7)
    assert (G - J_ref @ J_ref.T).norm() <= 1e-10 * (J_ref @ J_ref.T).norm()


def test_structured_and_dense_hig_steps_agree_with_conditions():
    torch.manual_seed(6)
    net = keras_dense([4, 10, 10, STEPS], 'tanh').double()
    x0 = torch.rand(6, 4, dtype=torch.float64)
    steps = {}
    for structured in (None, False):
        n = copy.deepcopy(net)
        info = hig_step(n, HIG(n, 1.0, 1e-10, structured=structured), x0, x0,
                        lambda u, s0: simulate_chain(s0, u, 0.5, CHAIN), sum_squares, conditions=(x0,))
        steps[structured] = (_flat(n) - _flat(net), info.path)
    assert steps[None][1] == 'gram+structured' and steps[False][1] == 'gram'
    assert (steps[None][0] - steps[False][0]).norm() <= 1e-10 * steps[False][0].norm()


def test_a_simulate_that_closes_over_the_batch_is_refused_with_the_rows_and_conditions():
    """The port of the book's notebook as a user first writes it: `lambda u: rk4(x0_batch, u)`."""
    torch.manual_seed(7)
    net = keras_dense([4, 8, STEPS], 'tanh').double()
    x0 = torch.rand(8, 4, dtype=torch.float64)
    opt = HIG(net, 1.0, 1e-10)
    closure = lambda u: simulate_chain(x0, u, 0.5, CHAIN)  # noqa: E731
    before = _flat(net)
    with pytest.raises(InvalidInputError, match=r'returned batch size 8 for a batch of 1 row .*conditions='):
        hig_step(net, opt, x0, x0, closure, sum_squares)  # the first step learns |y| on one example
    hig_step(net, opt, x0, x0, lambda u, s0: simulate_chain(s0, u, 0.5, CHAIN), sum_squares, conditions=x0)
    after = _flat(net)
    assert not torch.equal(after, before)
    with pytest.raises(InvalidInputError, match=r'failed on a batch of 32 rows \(all 8 examples, each repeated '
                                                r'\|y\| = 4 times\): RuntimeError.*b·\|y\| = 8·4 = 32 rows.*'
                                                r'conditions=') as error:
        hig_step(net, opt, x0, x0, closure, sum_squares)  # |y| known: straight to the replicated batch
    assert isinstance(error.value.__cause__, RuntimeError)
    assert torch.equal(_flat(net), after)


def test_conditions_that_do_not_fit_the_examples_are_refused_naming_them(float64):
    from phi.field import CenteredGrid
    from phiml import math
    from phiml.math import batch, channel, spatial
    net = nn.Linear(2, 2).double()
    opt = HIG(net)
    x = torch.randn(4, 2, dtype=torch.float64)
    before = _flat(net)
    physics = lambda z, *c, **k: z  # noqa: E731

    def refused(match, inputs, conditions, simulate=physics):
        with pytest.raises(InvalidInputError, match=match):
            hig_step(net, opt, inputs, inputs, simulate, lambda y, t: ((y - t) ** 2).sum(-1) if
                     isinstance(y, torch.Tensor) else math.l2_loss(y - t), conditions)
    refused(r"conditions\[1\] is a torch tensor of shape \(3, 2\), but the inputs hold 4 examples", x,
            (x, x[:3]))
    refused(r"conditions\['a'\] has batch dims \(bᵇ=2\) \(2 examples\), but the inputs hold 4",
            x, dict(a=math.random_normal(batch(b=2))))
    xt = math.tensor(x, batch('b'), channel(vector=2))
    refused(r"conditions has batch dims \(qᵇ=4\), but the inputs have \(bᵇ=4\).*not there: q", xt,
            math.random_normal(batch(q=4)))
    bad_boundary = CenteredGrid(math.random_normal(batch(b=4), spatial(x=3)), math.random_normal(batch(b=4)), x=3)
    refused(r"conditions\[0\] is a Field whose geometry or boundary depends on the examples", xt, (bad_boundary,))
    refused(r"keys must be strings", x, {0: x})
    refused(r"conditions were given but simulate is None", x, (x,), simulate=None)
    assert torch.equal(_flat(net), before)
