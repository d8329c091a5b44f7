"""HIG and Gauss–Newton on PhiML's JAX networks (StaxNet) against the torch step on the same float64 weights, the
JAX Jacobian operator against jax.jacrev, and the JAX rules: float64 spectral core under JAX's default setting, the
StaxNet workaround, refusals, no re-trace, no torch tensor."""
import json

import numpy as np
import pytest
import torch

jax = pytest.importorskip('jax')
import jax.numpy as jnp  # noqa: E402
from phiml import math  # noqa: E402
from phiml.backend.jax import JAX  # noqa: E402  (PhiML's JAX backend; importing it sets jax_enable_x64)
from phiml.backend.torch import TORCH  # noqa: E402
from phiml.math import batch, channel, spatial, extrapolation  # noqa: E402
from phiml import nn as pnn  # noqa: E402

import phi_hig  # noqa: E402
from phi_hig import HIG, hig_step, half_inverse, HIGUsageError, InvalidInputError  # noqa: E402
from phi_hig.hig import cast_parameters  # noqa: E402
from phi_hig.hig.arrays import TRACES  # noqa: E402

from test_half_inverse import reference  # noqa: E402


@pytest.fixture
def x64_restored():
    """JAX's global float64 setting restored after the test (PhiML's JAX backend sets it when imported)."""
    before = jax.config.jax_enable_x64
    yield
    jax.config.update('jax_enable_x64', before)


def seeded_float64(net, seed):
    """The network's weights redrawn from a seeded NumPy generator (scale 0.5), cast to float64 with
    `cast_parameters` (the StaxNet workaround; PhiML's seeding of JAX networks depends on its default backend)."""
    rng = np.random.default_rng(seed)
    net.parameters = jax.tree_util.tree_map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype),
                                            net.parameters)
    cast_parameters(net, 'float64')


def stax_mlp(sizes, seed=0):
    """A PhiML JAX MLP with float64 weights (built at 32 bit: the StaxNet workaround) and its torch twin."""
    with JAX, math.precision(32):  # the StaxNet workaround: build at 32 bit, then cast
        net = pnn.mlp(sizes[0], sizes[-1], list(sizes[1:-1]), activation='tanh')
    seeded_float64(net, seed)
    leaves = jax.tree_util.tree_leaves(net.parameters)
    layers = []
    for i in range(len(sizes) - 1):
        linear = torch.nn.Linear(sizes[i], sizes[i + 1]).double()
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(np.array(leaves[2 * i]).T))
            linear.bias.copy_(torch.tensor(np.array(leaves[2 * i + 1])))
        layers += [linear, torch.nn.Tanh()]
    return net, torch.nn.Sequential(*layers[:-1])


def stax_conv(seed=0):
    """PhiML's JAX ``conv_net(1, 1, [4])`` (3×3 zero-padded conv, tanh, 1×1 conv) in float64 and its torch twin.
    (PhiML 1.16's JAX conv_net fails with two or more hidden layers: its parameter keys are off by one.)"""
    with JAX, math.precision(32):  # the StaxNet workaround: build at 32 bit, then cast
        net = pnn.conv_net(1, 1, [4], activation='tanh')
    seeded_float64(net, seed)
    p = net.parameters
    twin = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 1)).double()
    with torch.no_grad():
        for conv, (w, b) in ((twin[0], p['conv_in'][0]), (twin[2], p['conv_out'])):
            conv.weight.copy_(torch.tensor(np.array(w)).permute(3, 2, 0, 1))  # (kx, ky, in, out) -> (out, in, kx, ky)
            conv.bias.copy_(torch.tensor(np.array(b).reshape(-1)))
    return net, twin


def torch_flat(twin, conv=False):
    """The torch twin's parameters in the stax leaf layout, flattened."""
    out = []
    for m in twin:
        if isinstance(m, torch.nn.Linear):
            out += [m.weight.detach().T.reshape(-1), m.bias.detach()]
        elif isinstance(m, torch.nn.Conv2d):
            out += [m.weight.detach().permute(2, 3, 1, 0).reshape(-1), m.bias.detach()]
    return torch.cat(out).numpy()


def jax_flat(net):
    return np.concatenate([np.asarray(leaf).reshape(-1) for leaf in jax.tree_util.tree_leaves(net.parameters)])


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ------------------------------------------------------------------------------------------------ the problems

def mlp_problem(kind):
    """MLP 3-6-5-2, b = 5, y = (z₀, 0.3·z₁²) per example: raw JAX arrays or PhiML tensors (batch b, channel v)."""
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    if kind == 'array':
        def sim(z):
            return z[:, :1] * jnp.array([1., 0.]) + 0.3 * z[:, 1:] ** 2 * jnp.array([0., 1.])

        def sim_t(z):
            return torch.stack([z[:, 0], 0.3 * z[:, 1] ** 2], -1)

        def loss(y, target):
            return 0.5 * ((y - target) ** 2).sum(-1)
        return (jnp.asarray(x), jnp.asarray(t), sim, loss), (torch.tensor(x), torch.tensor(t), sim_t, loss)

    def sim_m(z):  # the network's output channel is 'vector' (native_call)
        return math.stack([z.vector[0], 0.3 * z.vector[1] ** 2], channel('vector'))

    def loss_m(y, target):
        return 0.5 * math.sum((y - target) ** 2, 'vector')
    wrap = lambda a, backend: math.tensor(backend.as_tensor(a), batch('b'), channel('vector'))
    return ((wrap(x, JAX), wrap(t, JAX), sim_m, loss_m), (wrap(x, TORCH), wrap(t, TORCH), sim_m, loss_m))


def conv_problem(kind, b):
    """Conv net on a 4×4 grid, physics PhiFlow's ``field.laplace`` (zero Dirichlet), loss ½‖∇²φ − ρ‖²; Fields or
    raw batch-first arrays (the Laplacian then applied through a Field)."""
    from phi import field
    from phi.field import CenteredGrid
    values = np.random.default_rng(2).standard_normal((b, 4, 4))

    def grid(v):
        return CenteredGrid(math.wrap(v, batch('b'), spatial('x,y')), extrapolation.ZERO, x=4, y=4)

    def loss(y, target):
        return math.l2_loss(y - target)
    if kind == 'field':
        with JAX:
            xj = grid(jnp.asarray(values))
        with TORCH:
            xt = grid(torch.tensor(values))
        return (xj, xj, field.laplace, loss), (xt, xt, field.laplace, loss)

    def lap(z):  # (b, 4, 4, 1) on JAX, (b, 1, 4, 4) on torch
        native = z.reshape(z.shape[0], 4, 4)
        return field.laplace(grid(native)).values.native('b,x,y').reshape(z.shape[0], -1)

    def flat_loss(y, target):
        return 0.5 * ((y - target.reshape(target.shape[0], -1)) ** 2).sum(-1)
    xj, xt = jnp.asarray(values[..., None]), torch.tensor(values[:, None])
    return (xj, xj, lap, flat_loss), (xt, xt, lap, flat_loss)


CASES = {  # name: (network factory, problem factory)
    'mlp-array': (lambda: stax_mlp([3, 6, 5, 2]), lambda: mlp_problem('array')),
    'mlp-tensor': (lambda: stax_mlp([3, 6, 5, 2]), lambda: mlp_problem('tensor')),
    'conv-field-gram': (stax_conv, lambda: conv_problem('field', 2)),    # b·|y| = 32 < |θ| = 45: Gram path
    'conv-array-dual': (stax_conv, lambda: conv_problem('array', 4)),    # 64 > 45: dual path
}


@pytest.mark.parametrize('case', list(CASES))
def test_the_jax_step_equals_the_torch_step_on_the_same_float64_weights(case, float64):
    """HIG (κ = −1/2) and Gauss–Newton (κ = −1), three steps each from the same weights: rel. ≤ 1e-8 after one step,
    ≤ 1e-6 after three; the same losses and path."""
    make_nets, make_problem = CASES[case]
    net, twin = make_nets()
    (xj, tj, sim_j, loss_j), (xt, tt, sim_t, loss_t) = make_problem()
    conv = case.startswith('conv')
    start_j, start_t = net.parameters, {k: v.clone() for k, v in twin.state_dict().items()}
    opt, opt_t = HIG(net, learning_rate=0.7, truncation=1e-7), HIG(twin, learning_rate=0.7, truncation=1e-7)
    assert type(opt).__name__ == 'JaxHIG'
    for kappa in (-0.5, -1.0):
        net.parameters = start_j
        twin.load_state_dict(start_t)
        opt.param_groups[0]['kappa'] = kappa
        for group in opt_t.param_groups:
            group['kappa'] = kappa
        for step in range(3):
            info = hig_step(net, opt, xj, tj, sim_j, loss_j)
            info_t = hig_step(twin, opt_t, xt, tt, sim_t, loss_t)
            assert info.path == info_t.path and info.rank == info_t.rank
            assert info.loss == pytest.approx(info_t.loss, rel=1e-9)
            assert rel(jax_flat(net), torch_flat(twin, conv)) <= (1e-8 if step == 0 else 1e-6)


# ------------------------------------------------------------------------ the fused step against the staged step

def _one_step(net, start, opt, problem, fused, monkeypatch):
    """One step from ``start``, fused or staged: the flattened new weights and the info."""
    import phi_hig.hig.jax_fused as jax_fused
    monkeypatch.setattr(jax_fused, 'FUSED_MAX_SIDE', 1024 if fused else 0)
    net.parameters = start
    xj, tj, sim, loss = problem
    info = hig_step(net, opt, xj, tj, sim, loss)
    return jax_flat(net), info


def residual_problem():
    """PhiML's JAX ``res_net(1, 1, [3])`` (float64) for the raw-array Laplacian problem, b = 2 (stepped with
    ``structured=False``: every leaf in the dense block, J's columns from vmapped VJPs)."""
    with JAX, math.precision(32):  # the StaxNet workaround: build at 32 bit, then cast
        net = pnn.res_net(1, 1, [3], activation='tanh')
    seeded_float64(net, 5)
    return net, None


@pytest.mark.parametrize('case', ['mlp-array', 'conv-field-gram', 'conv-array-dual', 'res-net-dense-block'])
def test_the_fused_step_equals_the_staged_step(case, float64, monkeypatch):
    """A small Gram matrix makes the whole step one compiled call (phi_hig.hig.jax_fused);
    with fusion off (FUSED_MAX_SIDE = 0) the staged step gives the same update (rel. 1e-10), loss, spectrum and path,
    for HIG with β = −1/2 and for Gauss–Newton."""
    make_nets, make_problem = CASES[case] if case in CASES else (residual_problem, lambda: conv_problem('array', 2))
    net, _ = make_nets()
    problem = make_problem()[0]
    start = net.parameters
    for kappa, beta in ((-0.5, -0.5), (-1.0, 0.0)):
        opt = HIG(net, learning_rate=0.7, truncation=1e-7, kappa=kappa, beta=beta,
                  structured=False if case.endswith('dense-block') else None)
        fused, info_f = _one_step(net, start, opt, problem, True, monkeypatch)
        staged, info_s = _one_step(net, start, opt, problem, False, monkeypatch)
        assert info_f.time_linalg == 0.0 < info_s.time_linalg  # fused: one call, counted in time_jacobian
        before = jax_flat(type('N', (), {'parameters': start})())
        assert rel(fused - before, staged - before) < 1e-10
        assert info_f.path == info_s.path and info_f.rank == info_s.rank
        assert not case.endswith('dense-block') or info_f.path == 'gram'
        assert info_f.loss == pytest.approx(info_s.loss, rel=1e-12)
        np.testing.assert_allclose(info_f.singular_values, info_s.singular_values, rtol=1e-9)
        assert info_f.sigma_max == pytest.approx(info_s.sigma_max, rel=1e-12)


def test_what_the_fused_step_flags_the_staged_step_decides(float64):
    """On 'auto', a kept σ below 1e-6·σ_max (a kept Gram eigenvalue below 1e-12·μ_max) is beyond the Gram path: the
    fused call runs, is discarded, and the staged step takes the SVD path, matching a float64 SVD of jax.jacrev's J.
    A NaN target: NonFiniteStepError and the weights untouched (the fused update is never applied)."""
    net, _ = stax_mlp([3, 6, 2])
    x = jnp.asarray(np.random.default_rng(3).standard_normal((5, 3)))
    scale = jnp.array([1.0, 3e-7])  # kept Gram eigenvalues ~1e-13·μ_max: above the round-off floor, below 1e-12
    simulate = lambda z: z * scale
    loss = lambda y, t: 0.5 * ((y - t) ** 2).sum(-1)
    J = jacrev_matrix(net, x, simulate)
    y = np.asarray(simulate(net(x)))
    expected = -0.5 * reference(J, (y / 5).reshape(-1), -0.5, 0.0, 1e-12)
    before, fused_before = jax_flat(net), TRACES['fused']
    info = hig_step(net, HIG(net, learning_rate=0.5, truncation=1e-12), x, jnp.zeros((5, 2)), simulate, loss)
    assert TRACES['fused'] == fused_before + 1 and info.path == 'svd'
    assert rel(jax_flat(net) - before, expected) < 1e-7
    params = net.parameters
    with pytest.raises(phi_hig.NonFiniteStepError, match='loss is not finite'):
        hig_step(net, HIG(net), x, jnp.full((5, 2), jnp.nan), simulate, loss)
    assert net.parameters is params


# ------------------------------------------------------------------------------------ the operator vs jax.jacrev

def jacrev_matrix(net, x, simulate):
    """J of ``simulate(net(x_i))`` per example, stacked, from jax.jacrev of the whole per-example function."""
    leaves, treedef = jax.tree_util.tree_flatten(net.parameters)

    def per_example(values, x_i):
        z = phi_hig.hig.jax_jacobian.call_with_parameters(net, jax.tree_util.tree_unflatten(treedef, values),
                                                          x_i[None])
        return simulate(z).reshape(-1)
    jac = jax.jit(jax.vmap(jax.jacrev(per_example), in_axes=(None, 0)))(leaves, x)
    return np.concatenate([np.asarray(j).reshape(j.shape[0] * j.shape[1], -1) for j in jac], axis=1)


def operator_of(net, x, simulate, structured=None):
    from phi_hig.hig.jax_jacobian import JaxJacobian, StaxStructure, call_with_parameters, jacobian_pass
    leaves, treedef = jax.tree_util.tree_flatten(net.parameters)
    structure = StaxStructure(lambda v, xx: call_with_parameters(net, jax.tree_util.tree_unflatten(treedef, v), xx),
                              leaves, x, structured)
    flat = lambda z: simulate(z).reshape(z.shape[0], -1)
    y, a, d, block, _, _ = jax.jit(lambda lv: jacobian_pass(structure, lv, x, flat, lambda y: (y ** 2).sum()))(leaves)
    return structure, JaxJacobian(structure, y, a, d, block)


def residual_net():
    with JAX, math.precision(32):  # the StaxNet workaround: build at 32 bit, then cast
        net = pnn.res_net(1, 2, [3], activation='tanh')
    seeded_float64(net, 3)
    return net


@pytest.mark.parametrize('name', ['mlp', 'conv', 'res_net'])
@pytest.mark.parametrize('structured', [None, False])
def test_the_operator_equals_jacrev(name, structured):
    """J, J Jᵀ, JᵀJ and Jᵀc of the factors equal those of jax.jacrev's J (float64, rel. 1e-12), for an MLP, a conv net
    and a residual conv net (skip connections, a 1×1 sample conv), structured and as one dense block."""
    rng = np.random.default_rng(4)
    if name == 'mlp':
        net, x, simulate = stax_mlp([3, 6, 5, 2])[0], jnp.asarray(rng.standard_normal((4, 3))), lambda z: jnp.sin(z)
    else:
        net = stax_conv()[0] if name == 'conv' else residual_net()
        x, simulate = jnp.asarray(rng.standard_normal((3, 4, 5, 1))), lambda z: z ** 2 - z
    structure, op = operator_of(net, x, simulate, structured)
    assert (structure.rest == []) == (structured is None)
    J = jacrev_matrix(net, x, simulate)
    c = rng.standard_normal(J.shape[0])
    with jax.enable_x64(True):
        assert rel(np.asarray(op.matrix()), J) < 1e-12
        assert rel(np.asarray(op.gram()), J @ J.T) < 1e-12
        assert rel(np.asarray(op.gram_dual()), J.T @ J) < 1e-12
        assert rel(np.asarray(op.vjp(jnp.asarray(c))), J.T @ c) < 1e-12


# --------------------------------------------------------------------------------------------- the JAX rules

def test_the_x64_rule_float64_core_under_jaxs_default_setting(x64_restored):
    """With jax_enable_x64 off (JAX's default), a float32 network trains, its Gram matrix is float64 (a float32 Gram
    would be garbage at τ = 1e-4, REFERENCE §1), the update matches a float64 SVD of J, and the setting stays off."""
    jax.config.update('jax_enable_x64', False)
    with JAX, math.precision(32):  # the StaxNet workaround: build at 32 bit, then cast
        math.seed(5)
        net = pnn.mlp(2, 3, [8], activation='tanh')
    x = jnp.asarray(np.random.default_rng(6).standard_normal((6, 2)), jnp.float32)
    target = jnp.zeros((6, 3), jnp.float32)
    simulate = lambda z: jnp.tanh(z) * jnp.array([1., 1e-2, 1e-3], jnp.float32)
    loss = lambda y, t: 0.5 * ((y - t) ** 2).sum(-1)
    before = jax_flat(net).astype(np.float64)
    J = jacrev_matrix(net, x, simulate).astype(np.float64)
    y = np.asarray(simulate(net(x)), np.float64)
    expected = -reference(J, (y / 6).reshape(-1), -0.5, 0.0, 1e-4)
    seen = []
    from phi_hig.hig.arrays import JaxOps
    original = JaxOps.eigh
    JaxOps.eigh = lambda self, G, **kw: (seen.append(G.dtype), original(self, G, **kw))[1]
    try:
        info = hig_step(net, HIG(net, truncation=1e-4), x, target, simulate, loss)
    finally:
        JaxOps.eigh = original
    assert seen == [np.dtype('float64')] and not jax.config.jax_enable_x64
    assert jax_flat(net).dtype == np.float32 and info.rank < 18
    assert rel(jax_flat(net).astype(np.float64) - before, expected) < 1e-3
    with pytest.raises(InvalidInputError, match="jax_enable_x64"):
        cast_parameters(net, 'float64')


def test_the_staxnet_workaround(float64):
    """At precision 64 PhiML 1.16 leaves net.parameters = None: HIG refuses it naming the workaround, which works."""
    with JAX:
        bad = pnn.mlp(2, 2, [3])
    assert bad.parameters is None
    with pytest.raises(InvalidInputError, match=r"precision.*cast_parameters"):
        HIG(bad)
    with JAX, math.precision(32):
        net = pnn.mlp(2, 2, [3])
    cast_parameters(net, 'float64')
    x = jnp.ones((3, 2))
    hig_step(net, HIG(net), x, x, None, lambda y, t: 0.5 * ((y - t) ** 2).sum(-1))
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(net.parameters))


def test_no_retrace_on_the_second_step_new_data_or_a_new_learning_rate():
    net, _ = stax_mlp([3, 6, 2])
    opt = HIG(net, learning_rate=0.5)
    loss = lambda y, t: 0.5 * ((y - t) ** 2).sum(-1)
    rng = np.random.default_rng(7)
    batch_of = lambda: jnp.asarray(rng.standard_normal((4, 3)))
    hig_step(net, opt, batch_of(), jnp.zeros((4, 2)), jnp.tanh, loss)
    traced = dict(TRACES)
    hig_step(net, opt, batch_of(), jnp.zeros((4, 2)), jnp.tanh, loss)
    opt.param_groups[0]['lr'] = 0.1
    opt.param_groups[0]['truncation'] = 1e-3
    hig_step(net, opt, batch_of(), jnp.ones((4, 2)), jnp.tanh, loss)
    assert dict(TRACES) == traced


def test_the_jax_step_creates_no_torch_tensor(monkeypatch, float64):
    """Every torch function called during the step is recorded (TorchFunctionMode; torch.from_numpy patched)."""
    from torch.overrides import TorchFunctionMode
    (xj, tj, sim, loss), _ = conv_problem('field', 2)
    net, _ = stax_conv()
    opt = HIG(net)
    hig_step(net, opt, xj, tj, sim, loss)  # compiled here; the second step below must not touch torch either
    calls = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(getattr(func, '__name__', str(func)))
            return func(*args, **(kwargs or {}))
    monkeypatch.setattr(torch, 'from_numpy', lambda *a: calls.append('from_numpy'))
    fresh, _ = stax_conv(seed=1)
    with Spy():
        hig_step(net, opt, xj, tj, sim, loss)
        hig_step(fresh, HIG(fresh), xj, tj, sim, loss)  # a first step too: tracing and compiling
    assert calls == []


def test_conditions_equal_the_closure_over_the_same_batch():
    """simulate(z, *conditions) (tuple), (**conditions) (dict) and (z, condition) give the step of a simulate that
    closes over the same per-example values (on JAX the physics runs on the whole batch), to 1e-12."""
    rng = np.random.default_rng(8)
    x, x0, t = (jnp.asarray(rng.standard_normal((5, n))) for n in (3, 2, 2))
    loss = lambda y, target: 0.5 * ((y - target) ** 2).sum(-1)
    results = []
    for conditions, simulate in [(None, lambda z: z * x0 + 0.1 * z ** 2),
                                 ((x0,), lambda z, a: z * a + 0.1 * z ** 2),
                                 ({'a': x0}, lambda z, a: z * a + 0.1 * z ** 2),
                                 (x0, lambda z, a: z * a + 0.1 * z ** 2)]:
        net, _ = stax_mlp([3, 4, 2])
        hig_step(net, HIG(net, learning_rate=0.5), x, t, simulate, loss, conditions=conditions)
        results.append(jax_flat(net))
    for r in results[1:]:
        assert rel(r, results[0]) < 1e-12


def test_the_optimizer_state_is_plain_json():
    net, _ = stax_mlp([2, 3, 2])
    opt = HIG(net, learning_rate=0.3, truncation=1e-4, kappa=-1.0)
    x = jnp.ones((2, 2))
    hig_step(net, opt, x, x, None, lambda y, t: 0.5 * ((y - t) ** 2).sum(-1))
    state = json.loads(json.dumps(opt.state_dict()))
    other = HIG(net)
    other.load_state_dict(state)
    assert other.settings == opt.settings and other.param_groups[0]['lr'] == 0.3 and other.state_dict() == state
    with pytest.raises(InvalidInputError, match='state_dict'):
        other.load_state_dict({'param_groups': [{'lr': 1.0}]})


def test_refusals_name_what_is_supported():
    net, twin = stax_mlp([2, 3, 2])
    opt = HIG(net)
    x = jnp.ones((2, 2))
    loss = lambda y, t: 0.5 * ((y - t) ** 2).sum(-1)
    for backend in (JAX, TORCH):  # PhiML's update_weights dispatches on its default backend
        with backend, pytest.raises(HIGUsageError, match='hig_step'):
            pnn.update_weights(net, opt, lambda v: math.l2_loss(v), math.wrap(x, batch('b'), channel('v')))
    with pytest.raises(InvalidInputError, match='torch tensor, but the network is a JAX network'):
        hig_step(net, opt, x, torch.ones(2, 2), None, loss)
    with pytest.raises(InvalidInputError, match='inputs is a jax array but the network is a torch network; phi_hig'):
        hig_step(twin, HIG(twin), x, x, None, loss)
    with pytest.raises(InvalidInputError, match='distributed HIG steps .* torch networks only'):
        hig_step(net, opt, x, x, None, loss, group=object())
    with pytest.raises(InvalidInputError, match='built on another network'):
        hig_step(stax_mlp([2, 3, 2])[0], opt, x, x, None, loss)
    assert HIG(net, lr=0.25).param_groups[0]['lr'] == 0.25  # torch.optim's spelling, as for a torch network
    with pytest.raises(InvalidInputError, match='give the learning rate once'):
        HIG(net, learning_rate=0.5, lr=0.25)
    with pytest.raises(InvalidInputError, match='chunk_rows must be'):
        HIG(net, chunk_rows=0)

    class KerasModel:  # what a TensorFlow user would pass
        __module__ = 'keras.src.models.sequential'
    with pytest.raises(InvalidInputError, match=r'TensorFlow / Keras .*torch.nn.Module .*JAX networks'):
        HIG(KerasModel())
    with JAX:
        bn = pnn.mlp(2, 2, [3], batch_norm=True)
    with pytest.raises(InvalidInputError, match='mixes the examples.*batch_norm=False'):
        hig_step(bn, HIG(bn), jnp.asarray(np.random.default_rng(0).standard_normal((4, 2)), jnp.float32),
                 jnp.zeros((4, 2), jnp.float32), None, loss)
    with pytest.raises(InvalidInputError, match='same backend'):
        half_inverse(jnp.ones((2, 3)), torch.ones(2))


def test_half_inverse_on_jax_arrays_and_phiml_jax_tensors():
    rng = np.random.default_rng(9)
    J, g = rng.standard_normal((7, 12)), rng.standard_normal(7)
    expected = reference(J, g, -0.5, 0.0, 1e-6)
    for method in ('auto', 'gram', 'dual', 'svd'):
        d = half_inverse(jnp.asarray(J), jnp.asarray(g), method=method)
        assert isinstance(d, jax.Array) and d.dtype == jnp.float64 and rel(np.asarray(d), expected) < 1e-12
    Jt = math.wrap(jnp.asarray(J), batch('rows'), channel('cols'))
    gt = math.wrap(jnp.asarray(g), batch('rows'))
    with math.precision(64):
        d = half_inverse(Jt, gt)
        assert d.default_backend.name == 'jax' and rel(d.numpy('cols'), expected) < 1e-12


def test_no_module_imports_jax_at_import_time():
    """A torch user needs no JAX: importing the package and its parts loads neither JAX nor PhiML's JAX backend."""
    import subprocess
    import sys
    code = ("import sys, phi_hig, phi_hig.hig, phi_hig.sip, phi_hig.training, phi_hig.experiments, phi_hig.nets; "
            "loaded = [m for m in ('jax', 'phiml.backend.jax') if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, '-c', code], check=True)
