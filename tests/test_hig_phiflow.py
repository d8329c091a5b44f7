"""hig_step speaks PhiFlow: Fields, PhiML tensors and torch tensors give the same update; other kinds are refused."""
import copy

import numpy as np
import pytest
import torch

from phi_hig import HIG, hig_step, InvalidInputError, PhiHigError
from phi_hig.backend import torch_backend

from test_half_inverse import reference
from test_jacobian import brute_force_jacobian


def _flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).clone()


def _poisson_problem(seed=0, b=2, res=6):
    """Sources and targets of a zero-Dirichlet 6×6 Poisson problem as float64 NumPy arrays (b, res, res)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, res, res)), rng.standard_normal((b, res, res))


def _conv_net(seed=1):
    from phi.torch.nets import conv_net
    torch.manual_seed(seed)
    return conv_net(1, 1, [4, 4], activation='tanh').double()


def test_fields_tensors_and_torch_give_the_same_update(float64):
    """The same HIG step through Fields (field.laplace), PhiML tensors and hand-converted torch tensors:
    identical updates to 1e-10 relative, equal to an independent float64 SVD of the brute-force Jacobian."""
    from phi import field
    from phi.field import CenteredGrid
    from phiml import math
    from phiml.math import batch, spatial, extrapolation
    x_np, t_np = _poisson_problem()
    net0 = _conv_net()
    settings = dict(learning_rate=0.7, truncation=1e-6)

    def grid(values):
        return CenteredGrid(values, extrapolation.ZERO, x=6, y=6)

    # 1. Fields: network through field.native_call, simulate Field -> Field, loss per example (a PhiML tensor)
    x_f = grid(math.tensor(x_np, batch('b'), spatial('x,y')))
    t_f = grid(math.tensor(t_np, batch('b'), spatial('x,y')))
    net_f = copy.deepcopy(net0)
    info_f = hig_step(net_f, HIG(net_f, **settings), x_f, t_f, field.laplace,
                      lambda y, t: math.l2_loss(y.values - t.values))
    # 2. PhiML tensors: math.native_call, simulate Tensor -> Tensor
    x_t = math.tensor(x_np, batch('b'), spatial('x,y'))
    t_t = math.tensor(t_np, batch('b'), spatial('x,y'))
    net_t = copy.deepcopy(net0)
    hig_step(net_t, HIG(net_t, **settings), x_t, t_t, lambda z: field.laplace(grid(z)).values,
             lambda y, t: math.l2_loss(y - t))

    # 3. torch tensors converted by hand (channels first, as native_call gives them to a torch network)
    def simulate_torch(z):
        values = math.tensor(z[:, 0], batch('b'), spatial('x,y'))
        return field.laplace(grid(values)).values.native(['b', 'x', 'y'])[:, None]
    x_n, t_n = torch.from_numpy(x_np)[:, None], torch.from_numpy(t_np)[:, None]
    net_n = copy.deepcopy(net0)
    hig_step(net_n, HIG(net_n, **settings), x_n, t_n, simulate_torch,
             lambda y, t: 0.5 * ((y - t) ** 2).flatten(1).sum(1))
    before = _flat(net0)
    d_f, d_t, d_n = (_flat(n) - before for n in (net_f, net_t, net_n))
    scale = d_n.norm()
    assert scale > 0
    assert (d_f - d_n).norm() <= 1e-10 * scale
    assert (d_t - d_n).norm() <= 1e-10 * scale
    # independent reference: float64 SVD of J from a brute-force per-(sample, output) autograd loop
    J = brute_force_jacobian(net0, x_n, simulate_torch).numpy()
    with torch_backend():
        y = simulate_torch(net0(x_n)).detach()
    g = ((y - t_n) / x_np.shape[0]).reshape(-1).numpy()
    expected = -0.7 * reference(J, g, -0.5, 0.0, 1e-6)
    assert np.linalg.norm(d_n.numpy() - expected) <= 1e-8 * np.linalg.norm(expected)
    assert info_f.rank > 0


def test_phiml_dense_net_on_tensors_with_channel_dims(float64):
    """A phiml.nn dense net on PhiML tensors with a channel dim, physics Tensor → Tensor, equals the torch form."""
    from phi.torch.nets import dense_net
    from phiml import math
    from phiml.math import batch, channel
    rng = np.random.default_rng(2)
    x_np, t_np = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    torch.manual_seed(3)
    net0 = dense_net(3, 2, [6], activation='tanh').double()
    scale = torch.tensor([1.0, 0.01], dtype=torch.float64)
    net_t, net_n = copy.deepcopy(net0), copy.deepcopy(net0)
    gamma = math.tensor([1.0, 0.01], channel(vector='a,b'))
    hig_step(net_t, HIG(net_t, 1.0, 1e-6), math.tensor(x_np, batch('b'), channel(vector=3)),
             math.tensor(t_np, batch('b'), channel(vector='a,b')), lambda z: z * gamma.vector.as_channel('vector'),
             lambda y, t: math.l2_loss(y - t.vector.as_channel('vector')))
    hig_step(net_n, HIG(net_n, 1.0, 1e-6), torch.from_numpy(x_np), torch.from_numpy(t_np), lambda z: z * scale,
             lambda y, t: 0.5 * ((y - t) ** 2).sum(1))
    before = _flat(net0)
    d_t, d_n = _flat(net_t) - before, _flat(net_n) - before
    assert d_n.norm() > 0 and (d_t - d_n).norm() <= 1e-10 * d_n.norm()


class _NotTorch:
    """Stands for a JAX / TensorFlow network: a callable that is not a torch.nn.Module."""

    def __call__(self, x):
        return x

    def parameters(self):
        return iter([])


@pytest.mark.parametrize('case', ['jax-like network', 'numpy inputs', 'list inputs'])
def test_unsupported_kinds_name_what_is_supported(case):
    net = torch.nn.Linear(2, 2)
    opt = HIG(net)
    inputs = torch.randn(4, 2)
    if case == 'jax-like network':
        with pytest.raises(PhiHigError, match=r'torch\.nn\.Module.*'):
            hig_step(_NotTorch(), opt, inputs, inputs, None, lambda y, t: ((y - t) ** 2).sum(1))
        return
    bad = np.zeros((4, 2)) if case == 'numpy inputs' else [[0., 0.]] * 4
    with pytest.raises(InvalidInputError, match=r'phi_hig supports torch tensors, PhiML tensors and PhiFlow Fields'):
        hig_step(net, opt, bad, inputs, None, lambda y, t: ((y - t) ** 2).sum(1))


def test_jax_backed_tensor_is_refused():
    jax = pytest.importorskip('jax')  # noqa: F841  (only where JAX is installed)
    from phiml import math
    from phiml.backend.jax import JAX
    from phiml.math import batch, channel
    net = torch.nn.Linear(2, 2)
    x = math.convert(math.random_normal(batch(b=4), channel(vector=2)), JAX)
    with pytest.raises(InvalidInputError, match=r"jax backend but the network is a torch network; phi_hig supports"):
        hig_step(net, HIG(net), x, x, None, lambda y, t: math.l2_loss(y - t))


def test_loss_over_the_wrong_dims_is_refused(float64):
    from phiml import math
    from phiml.math import batch, channel
    net = torch.nn.Linear(2, 2).double()
    x = math.random_normal(batch(b=4), channel(vector=2))
    with pytest.raises(InvalidInputError, match='one value per example'):
        hig_step(net, HIG(net), x, x, None, lambda y, t: math.sum((y - t) ** 2, 'b,vector'))  # summed over the batch too
