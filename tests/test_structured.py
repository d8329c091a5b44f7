"""The structured (factored) Jacobian: Gram matrices, JᵀJ, Jᵀc and HIG updates without forming J.

Every check compares against `brute_force_jacobian` (one autograd pass per sample and output row) in float64.
"""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import phi_hig
from phi_hig import HIG, hig_step, InvalidInputError
from phi_hig.hig.jacobian import jacobian_factors

from test_jacobian import brute_force_jacobian, laplace_physics, mlp, nonlinear_physics, Scale


class Largest(TorchDispatchMode):
    """Records the largest storage (bytes) of any tensor an aten op returns inside the context."""
    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = list(args) + list((kwargs or {}).values())
        seen = {a.untyped_storage().data_ptr() for a in flat if isinstance(a, torch.Tensor)}
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:  # views: no new storage
                self.bytes = max(self.bytes, t.untyped_storage().nbytes())
        return out


class Reshape(nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def cnn2d(seed=0):
    """Circular and zero padding, stride 2, dilation, an asymmetric 'same' kernel, then a Linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Reshape(2, 6, 6),
        nn.Conv2d(2, 3, 3, padding=1, padding_mode='circular'), nn.Tanh(),
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 3, (2, 3), dilation=(1, 2), padding='same', padding_mode='circular', bias=False), nn.Tanh(),
        nn.Flatten(), nn.Linear(27, 5)).double()


def cnn1d(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(Reshape(2, 8), nn.Conv1d(2, 3, 3, padding=1, padding_mode='circular'), nn.Tanh(),
                         nn.Conv1d(3, 2, 3, stride=2, dilation=2, padding=2), nn.Tanh(),
                         nn.Flatten(), nn.Linear(8, 4)).double()


def positions_mlp(seed=0):
    """A Linear layer applied to (batch, 4, 3): its per-sample gradient sums over 4 positions."""
    torch.manual_seed(seed)
    return nn.Sequential(Reshape(4, 3), nn.Linear(3, 5), nn.Tanh(), nn.Flatten(), nn.Linear(20, 4)).double()


def cnn_laplace(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(Reshape(1, 4, 4), nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(3, 1, 3, padding=1, padding_mode='circular'), nn.Flatten()).double()


CASES = {  # name: (network factory, simulate, input size, batch)
    'tanh-mlp': (lambda: mlp([3, 7, 5, 4], nn.Tanh), nonlinear_physics, 3, 5),
    'relu-mlp': (lambda: mlp([3, 9, 6, 4], nn.ReLU), nonlinear_physics, 3, 5),
    'cnn2d': (cnn2d, nonlinear_physics, 72, 3),
    'cnn1d': (cnn1d, nonlinear_physics, 16, 4),
    'linear-on-positions': (positions_mlp, nonlinear_physics, 12, 4),
    'mlp+phiflow-laplace': (lambda: mlp([5, 12, 16], nn.Tanh), laplace_physics(4), 5, 3),
    'cnn+phiflow-laplace': (cnn_laplace, laplace_physics(4), 16, 2),
}


def relerr(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize('case', list(CASES))
def test_structured_gram_matches_explicit_jacobian(case, float64):
    make, simulate, n_in, batch = CASES[case]
    net = make()
    torch.manual_seed(1)
    x = torch.randn(batch, n_in, dtype=torch.float64)
    J = brute_force_jacobian(net, x, simulate)
    factors = jacobian_factors(net, x, simulate, structured=True)
    assert factors.structured and not factors.mixed
    G = factors.gram()
    assert G.dtype == torch.float64 and G.shape == (J.shape[0],) * 2
    assert relerr(G, J @ J.T) <= 1e-10
    assert relerr(factors.gram_dual(), J.T @ J) <= 1e-10
    c = torch.randn(J.shape[0], dtype=torch.float64)
    assert relerr(factors.vjp(c), J.T @ c) <= 1e-10
    assert relerr(factors.matrix(), J) <= 1e-12
    # tiny blocks: the chunked assembly (several row blocks per layer) gives the same matrices
    small = jacobian_factors(net, x, simulate, structured=True, chunk_rows=5, chunk_bytes=64)
    assert relerr(small.gram(), J @ J.T) <= 1e-10
    assert relerr(small.gram_dual(), J.T @ J) <= 1e-10
    assert relerr(small.vjp(c), J.T @ c) <= 1e-10


def per_sample_loss(y, target):
    return 0.5 * ((y - target) ** 2).sum(-1)


@pytest.mark.parametrize('case,path', [('tanh-mlp', 'gram'), ('cnn2d', 'gram'), ('cnn2d', 'auto'),
                                         ('cnn1d', 'dual'), ('mlp+phiflow-laplace', 'gram'),
                                         ('cnn+phiflow-laplace', 'auto')])
@pytest.mark.parametrize('kappa', [-0.5, -1.0])
def test_structured_update_matches_half_inverse(case, path, kappa, float64):
    make, simulate, n_in, batch = CASES[case]
    net = make()
    torch.manual_seed(2)
    x = torch.randn(batch, n_in, dtype=torch.float64)
    J = brute_force_jacobian(net, x, simulate)
    y = simulate(net(x)).detach().reshape(batch, -1)
    target = torch.randn_like(y)
    g = ((y - target) / batch).reshape(-1)
    tau, lr = 1e-5, 0.3
    expected = -lr * phi_hig.half_inverse(J, g, kappa=kappa, truncation=tau, path='svd')
    before = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).clone()
    opt = HIG(net, learning_rate=lr, truncation=tau, kappa=kappa, path=path)
    info = hig_step(net, opt, x, target, simulate, lambda yy, t: per_sample_loss(yy.reshape(batch, -1), t))
    step = torch.cat([p.detach().reshape(-1) for p in net.parameters()]) - before
    assert relerr(step, expected) <= 1e-6
    dual = path == 'dual' or (path == 'auto' and J.shape[1] < J.shape[0])
    assert info.path == ('gram-dual' if dual else 'gram+structured')


def test_unknown_layers_fall_back_per_layer(float64):
    """A learned scale, a grouped convolution and GroupNorm are not factored: their columns come from the
    per-sample (torch.func) path, the others stay factored; the result is the same J."""
    torch.manual_seed(3)
    net = nn.Sequential(Reshape(2, 6, 6), nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(),
                        nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.GroupNorm(2, 4), nn.Tanh(),
                        nn.Flatten(), nn.Linear(144, 6), Scale(6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(3, 72, dtype=torch.float64)
    J = brute_force_jacobian(net, x, nonlinear_physics)
    factors = jacobian_factors(net, x, nonlinear_physics, chunk_bytes=4096)
    assert factors.mixed and not factors.structured
    assert len(factors.layers) == 3  # first conv and the two Linear layers
    n_dense = sum(factors.params[i].numel() for i in factors.dense_cols)
    assert n_dense == 4 * 2 * 9 + 4 + 4 + 4 + 6 and factors.dense_block.shape == (J.shape[0], n_dense)
    assert relerr(factors.gram(), J @ J.T) <= 1e-10
    assert relerr(factors.gram_dual(), J.T @ J) <= 1e-10
    assert relerr(factors.matrix(), J) <= 1e-12
    c = torch.randn(J.shape[0], dtype=torch.float64)
    assert relerr(factors.vjp(c), J.T @ c) <= 1e-10
    with pytest.raises(InvalidInputError, match='structured=True'):
        jacobian_factors(net, x, nonlinear_physics, structured=True)
    # the HIG step through the mixed form
    target = torch.randn(3, 3, dtype=torch.float64)
    y = nonlinear_physics(net(x)).detach()
    expected = -phi_hig.half_inverse(J, ((y - target) / 3).reshape(-1), truncation=1e-6, path='svd')
    before = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).clone()
    info = hig_step(net, HIG(net, 1.0, 1e-6, path='gram'), x, target, nonlinear_physics, per_sample_loss)
    assert info.path == 'gram+mixed'
    step = torch.cat([p.detach().reshape(-1) for p in net.parameters()]) - before
    assert relerr(step, expected) <= 1e-6


def test_forced_dense_path_gives_same_update():
    net = mlp([3, 8, 6, 4], nn.Tanh, seed=4)
    net2 = mlp([3, 8, 6, 4], nn.Tanh, seed=4)
    x = torch.randn(6, 3, dtype=torch.float64)
    target = torch.randn(6, 3, dtype=torch.float64)
    i1 = hig_step(net, HIG(net, 1.0, 1e-6, path='gram'), x, target, nonlinear_physics, per_sample_loss)
    i2 = hig_step(net2, HIG(net2, 1.0, 1e-6, path='gram', structured=False), x, target, nonlinear_physics,
                  per_sample_loss)
    assert (i1.path, i2.path) == ('gram+structured', 'gram')
    for p, q in zip(net.parameters(), net2.parameters()):
        assert torch.allclose(p, q, rtol=1e-10, atol=1e-12)
    with pytest.raises(InvalidInputError, match='structured'):
        HIG(net, structured='yes')


def test_nothing_of_size_theta_times_rows_is_allocated():
    """Gram assembly, eigh and Jᵀc of the structured step stay far below |θ|·b·|y| floats (here a
    factor 100 above G itself), with row blocks bounded by chunk_bytes."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(16, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 16))
    sim = laplace_physics(4)
    x = torch.randn(8, 16)
    target = torch.randn(8, 16)
    factors = jacobian_factors(net, x, sim, chunk_bytes=2 ** 16)
    R, n = factors.n_rows, factors.n_params
    assert n > 50 * R
    with Largest() as probe:
        G = factors.gram()
        factors.vjp(torch.randn(R, dtype=torch.float64))
    assert probe.bytes <= max(R * R * 8, 2 ** 16 + R * 8, n * 8)  # G, a row block, the result Jᵀc
    with Largest() as probe:
        hig_step(net, HIG(net, 1.0, 1e-5), x, target, sim, per_sample_loss)
    assert probe.bytes < R * n * 4 / 20
    conv = cnn2d().float()
    xc = torch.randn(16, 72)
    factors = jacobian_factors(conv, xc, nonlinear_physics, chunk_bytes=2 ** 12)
    with Largest() as probe:
        factors.gram()
    assert probe.bytes <= factors.n_rows ** 2 * 8


def test_eigh64_matches_torch():
    from phi_hig.hig import eigh64
    a = torch.randn(40, 50, dtype=torch.float64)
    G = a @ a.T
    mu, w = torch.linalg.eigh(G)
    mu2, w2 = eigh64(G.clone())
    assert torch.allclose(mu, mu2, rtol=1e-12, atol=1e-10)
    assert torch.allclose((w2 * mu2) @ w2.T, G, rtol=1e-10, atol=1e-10)
