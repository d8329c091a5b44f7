"""SIP on PhiML's JAX networks against SIP on torch from the same float64 weights, the physics inverses on JAX
Fields against the same inverses on torch Fields, and the generic inverses on batched JAX functions."""
import numpy as np
import pytest
import torch

jax = pytest.importorskip('jax')
import jax.numpy as jnp  # noqa: E402
from phiml import math  # noqa: E402
from phiml.backend.jax import JAX  # noqa: E402
from phiml.backend.torch import TORCH  # noqa: E402
from phiml.math import batch, spatial, extrapolation  # noqa: E402
from phiml import nn as pnn  # noqa: E402

from phi_hig import inverses, sip_step, InvalidInputError  # noqa: E402
from phi_hig.physics import heat, poisson, fluid  # noqa: E402

from test_hig_jax import stax_conv, stax_mlp, jax_flat, torch_flat, rel  # noqa: E402


def grid(values, backend, boundary):
    """A CenteredGrid of ``values`` (b, x, y) on ``backend`` (created under it: PhiFlow converts to the default)."""
    from phi.field import CenteredGrid
    with backend:
        return CenteredGrid(math.wrap(backend.as_tensor(values), batch('b'), spatial('x,y')), boundary,
                            x=values.shape[1], y=values.shape[2])


def test_sip_heat_on_jax_equals_sip_on_torch(float64):
    """Two SIP steps (heat's Bayesian inverse, SGD on the proxy loss) from the same conv-net weights: rel. ≤ 1e-8."""
    net, twin = stax_conv()
    values = np.random.default_rng(0).random((3, 8, 8))
    conditions = dict(diffusivity=2., dt=1.)
    y_j = heat.forward(grid(values, JAX, extrapolation.PERIODIC), **conditions)
    y_t = heat.forward(grid(values, TORCH, extrapolation.PERIODIC), **conditions)
    with JAX:
        opt = pnn.sgd(net, 0.1)
    opt_t = torch.optim.SGD(twin.parameters(), 0.1)
    for _ in range(2):
        r = sip_step(net, opt, y_j, y_j, heat, conditions)
        r_t = sip_step(twin, opt_t, y_t, y_t, heat, conditions)
        assert r.proxy_loss.default_backend.name == 'jax'
        assert rel(r.proxy_loss.numpy('b'), r_t.proxy_loss.numpy('b')) < 1e-10
    assert rel(jax_flat(net), torch_flat(twin, True)) < 1e-8


def test_sip_with_a_generic_inverse_on_jax_arrays_equals_torch(float64):
    """Raw batch-first arrays, the Gauss–Newton inverse of a batched function, SGD: rel. ≤ 1e-8. (Not Adam: PhiML
    1.16's JAX update_weights never advances Adam's step counter, so its bias correction stays at step 1.)"""
    net, twin = stax_mlp([3, 5, 2])
    x = np.random.default_rng(1).standard_normal((4, 3))
    forward_j = lambda z: jnp.stack([z[:, 0] + z[:, 1] ** 3, jnp.sin(z[:, 1])], -1)
    forward_t = lambda z: torch.stack([z[:, 0] + z[:, 1] ** 3, torch.sin(z[:, 1])], -1)
    target = np.random.default_rng(2).standard_normal((4, 2)) * 0.3
    with JAX:
        opt = pnn.sgd(net, 0.1)
    opt_t = torch.optim.SGD(twin.parameters(), 0.1)
    for _ in range(2):
        sip_step(net, opt, jnp.asarray(x), jnp.asarray(target), (forward_j, inverses.gauss_newton(forward_j)))
        sip_step(twin, opt_t, torch.tensor(x), torch.tensor(target), (forward_t, inverses.gauss_newton(forward_t)))
    assert rel(jax_flat(net), torch_flat(twin)) < 1e-8
    with pytest.raises(InvalidInputError, match='PhiML JAX optimizer'):
        sip_step(net, opt_t, jnp.asarray(x), jnp.asarray(target), (forward_j, inverses.gauss_newton(forward_j)))


def test_the_physics_inverses_run_on_jax_fields(float64):
    """Poisson and heat compute on JAX and equal their torch results; the fluid inverse estimates on the backend of
    its input (JAX here) and agrees with the NumPy estimate within its stated accuracy, 1e-3 (the float32 estimate's
    bound; JAX's float64 estimate differs from NumPy's by about 9e-5: its vortex prior sampled on JAX differs in the
    third digit, while the simulations agree to 1e-15). Its simulations jit-compiled on JAX: the grid's cell centres
    are cached outside the trace (a tracer cached by the first compiled simulation escaped into the second; one
    simulation step shows it as two do, and compiles in less time)."""
    rng = np.random.default_rng(3)
    x, target = rng.standard_normal((2, 8, 8)), rng.standard_normal((2, 8, 8))
    results = {}
    for name, backend in (('jax', JAX), ('torch', TORCH)):
        xp, tp = grid(x, backend, extrapolation.PERIODIC), grid(target, backend, extrapolation.PERIODIC)
        xz, tz = grid(x, backend, extrapolation.ZERO), grid(target, backend, extrapolation.ZERO)
        results[name] = [heat.inverse(xp, tp, diffusivity=1., dt=1.), poisson.inverse(xz, tz),
                         heat.forward(xp, diffusivity=1., dt=1.), poisson.forward(xz)]
    for a, b in zip(results['jax'], results['torch']):
        assert a.values.default_backend.name == 'jax'
        assert rel(a.values.numpy('b,x,y'), b.values.numpy('b,x,y')) < 1e-8
    example = fluid.random_example(spatial(x=16, y=16), batch(examples=1), seed=6, radius=2.)
    to_jax = lambda f: f.with_values(math.convert(f.values, JAX))
    m_target = fluid.forward(example.v0, example.m0, steps=1).time[-1]
    dv = fluid.inverse(to_jax(example.v0 * 0.5), to_jax(m_target), to_jax(example.m0), steps=1, radius=2., jit=True)
    dv_np = fluid.inverse(example.v0 * 0.5, m_target, example.m0, steps=1, radius=2.)
    assert dv.values.default_backend.name == 'jax'
    assert rel(dv.values.numpy('examples,x,y,vector'), dv_np.values.numpy('examples,x,y,vector')) < 1e-3


@pytest.mark.parametrize('name,kwargs,tolerance', [('gradient_descent', {}, 1e-12), ('newton', {}, 1e-12),
                                                   ('saddle_free_newton', {}, 1e-12), ('gauss_newton', {}, 1e-12),
                                                   ('iterative', dict(iterations=3), 1e-5)])
def test_the_generic_inverses_on_jax_functions_equal_torch(name, kwargs, tolerance):
    """Each factory's inverse of a batched JAX function (a per-example condition included) equals its inverse of
    the same torch function, float64."""
    rng = np.random.default_rng(4)
    x, target, a = rng.standard_normal((5, 3)), rng.standard_normal((5, 2)), rng.standard_normal((5, 1))
    with jax.enable_x64(True):
        fj = lambda z, a: jnp.stack([jnp.sin(z[:, 0]) * a[:, 0] + z[:, 1] ** 3, z[:, 2] * z[:, 0]], -1)
        d_j = getattr(inverses, name)(fj, **kwargs)(jnp.asarray(x), jnp.asarray(target), a=jnp.asarray(a))
        assert isinstance(d_j, jax.Array) and d_j.dtype == jnp.float64
    ft = lambda z, a: torch.stack([torch.sin(z[:, 0]) * a[:, 0] + z[:, 1] ** 3, z[:, 2] * z[:, 0]], -1)
    d_t = getattr(inverses, name)(ft, **kwargs)(torch.tensor(x), torch.tensor(target), a=torch.tensor(a))
    assert rel(np.asarray(d_j), d_t.numpy()) < tolerance
    with pytest.raises(InvalidInputError, match='x must be a JAX array'):
        getattr(inverses, name)(fj, **kwargs)(jnp.asarray(x)[0], jnp.asarray(target))
