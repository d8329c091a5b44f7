"""Per-sample Jacobians and Gram matrices against a brute-force per-sample autograd loop."""
import time

import pytest
import torch
from torch import nn

import phi_hig
from phi_hig import JacobianTooLargeError, InvalidInputError
from phi_hig.hig.jacobian import jacobian_factors


def brute_force_jacobian(net, inputs, simulate):
    """One backward pass per (sample, output) row on a batch of one sample: slow and obviously right."""
    from phiml.backend.torch import TORCH
    params = [p for p in net.parameters() if p.requires_grad]
    with TORCH:  # PhiML traces solve matrices with the context backend; they must be torch tensors here
        return _brute_force(net, inputs, simulate, params)


def _brute_force(net, inputs, simulate, params):
    rows = []
    for i in range(inputs.shape[0]):
        n_out = simulate(net(inputs[i:i + 1])).numel()
        for k in range(n_out):  # a fresh graph per row (PhiML's solve backward does not support retain_graph)
            y = simulate(net(inputs[i:i + 1])).reshape(-1)
            grads = torch.autograd.grad(y[k], params, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]))
    return torch.stack(rows)


def mlp(sizes, act=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1]).double()


def nonlinear_physics(z):
    return torch.stack([z[:, 0] * z[:, 1], torch.sin(z[:, 2]), z[:, 3] ** 2 + z[:, 0]], -1)


def laplace_physics(n=4):
    """Zero-Dirichlet 5-point Laplacian of an n×n grid through PhiFlow (not vmap-traceable)."""
    from phi import field
    from phi.field import CenteredGrid
    from phiml import math
    from phiml.math import batch, spatial

    def simulate(z):
        values = math.tensor(z.reshape(z.shape[0], n, n), batch('b'), spatial('x,y'), convert=False)
        grid = CenteredGrid(values, 0, x=n, y=n)
        return field.laplace(grid).values.native('b,x,y').reshape(z.shape[0], -1)
    return simulate


def poisson_solve_physics(n=4):
    """y = ∇⁻² z by conjugate gradient on a zero-Dirichlet n×n grid (implicit gradient through solve_linear)."""
    from phi import field
    from phi.field import CenteredGrid
    from phiml import math
    from phiml.math import batch, spatial, Solve

    def simulate(z):
        values = math.tensor(z.reshape(z.shape[0], n, n), batch('b'), spatial('x,y'), convert=False)
        rhs = CenteredGrid(values, 0, x=n, y=n)
        y = field.solve_linear(field.laplace, rhs, Solve('CG', 1e-12, 1e-12, x0=rhs * 0))
        return y.values.native('b,x,y').reshape(z.shape[0], -1)
    return simulate


CASES = {
    'tanh-mlp+nonlinear': (lambda: mlp([3, 7, 5, 4], nn.Tanh), nonlinear_physics, 3),
    'relu-mlp+nonlinear': (lambda: mlp([3, 9, 6, 4], nn.ReLU), nonlinear_physics, 3),
    'mlp+identity': (lambda: mlp([2, 5, 3], nn.Tanh), None, 2),
    'mlp+dirichlet-laplace': (lambda: mlp([5, 12, 16], nn.Tanh), laplace_physics(4), 5),
    'mlp+cg-poisson': (lambda: mlp([5, 12, 16], nn.Tanh), poisson_solve_physics(4), 5),
}


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('structured', [None, False])
def test_jacobian_and_gram_match_brute_force(case, structured, float64):
    make, simulate, n_in = CASES[case]
    net = make()
    torch.manual_seed(1)
    x = torch.randn(5, n_in, dtype=torch.float64)
    sim = simulate or (lambda z: z)
    reference = brute_force_jacobian(net, x, sim)
    factors = jacobian_factors(net, x, sim, structured=structured, chunk_rows=7)  # small chunks on purpose
    assert factors.structured == (structured is None)
    J = factors.matrix()
    assert J.shape == reference.shape
    assert torch.allclose(J, reference, rtol=1e-9, atol=1e-9 * reference.abs().max())
    G = factors.gram()
    G_ref = reference @ reference.T
    assert G.dtype == torch.float64
    assert (G - G_ref).norm() <= 1e-10 * G_ref.norm()
    c = torch.randn(J.shape[0], dtype=torch.float64)
    assert torch.allclose(factors.vjp(c), reference.T @ c, rtol=1e-9, atol=1e-10)
    H = factors.gram_dual()
    assert (H - reference.T @ reference).norm() <= 1e-10 * (reference.T @ reference).norm()


def test_public_functions_and_param_subset():
    net = mlp([3, 6, 4], nn.Tanh)
    x = torch.randn(4, 3, dtype=torch.float64)
    J = phi_hig.per_sample_jacobian(net, x, nonlinear_physics)
    assert torch.allclose(J, brute_force_jacobian(net, x, nonlinear_physics))
    G = phi_hig.gram(net, x, nonlinear_physics)
    assert torch.allclose(G, J @ J.T)
    first = list(net[0].parameters())
    J1 = phi_hig.per_sample_jacobian(net, x, nonlinear_physics, params=first)
    assert torch.allclose(J1, J[:, :sum(p.numel() for p in first)])
    y, P = phi_hig.physics_jacobian(nonlinear_physics, net(x))
    assert P.shape == (4, 3, 4) and y.shape == (4, 3)


class Scale(nn.Module):
    """A layer the structured path does not know: elementwise learned scale."""
    def __init__(self, n):
        super().__init__()
        self.s = nn.Parameter(torch.linspace(0.5, 1.5, n, dtype=torch.float64))

    def forward(self, x):
        return x * self.s


def test_unknown_layers_fall_back():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), Scale(6), nn.Linear(6, 4)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    factors = jacobian_factors(net, x, nonlinear_physics)
    assert not factors.structured
    ref = brute_force_jacobian(net, x, nonlinear_physics)
    assert torch.allclose(factors.matrix(), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(InvalidInputError, match='structured=True'):
        jacobian_factors(net, x, nonlinear_physics, structured=True)


def test_weight_sharing_falls_back():
    torch.manual_seed(3)
    lin = nn.Linear(4, 4).double()

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))
    net = Twice()
    x = torch.randn(3, 4, dtype=torch.float64)
    factors = jacobian_factors(net, x, nonlinear_physics)
    assert not factors.structured
    assert torch.allclose(factors.matrix(), brute_force_jacobian(net, x, nonlinear_physics))


def test_batch_norm_is_refused():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(InvalidInputError, match='batch norm'):
        phi_hig.per_sample_jacobian(net, torch.randn(4, 3))


def test_size_guard_raises_before_allocating():
    """A heat-sized output (b = 128 × 4096 values) would need a 2 TiB Gram matrix."""
    calls = []

    def simulate(z):
        calls.append(z.shape[0])
        return z.repeat(1, 4096)
    net = nn.Linear(2, 1)
    t0 = time.perf_counter()
    with pytest.raises(JacobianTooLargeError, match=r'524288 x 524288 would need 2 TiB, above the limit of 4 GiB'):
        phi_hig.gram(net, torch.randn(128, 2), simulate)
    assert time.perf_counter() - t0 < 5
    assert calls == [1]  # only a forward of one sample ran (to learn |y|), no replicated pass
    with pytest.raises(JacobianTooLargeError, match='max_bytes'):
        phi_hig.per_sample_jacobian(nn.Linear(2, 64), torch.randn(64, 2), max_bytes=1e5)
    assert issubclass(JacobianTooLargeError, MemoryError)


def test_simulate_must_keep_batch():
    with pytest.raises(InvalidInputError, match='batch size'):
        phi_hig.physics_jacobian(lambda z: z[:1], torch.randn(3, 2))


class TiedAutoencoder(nn.Module):
    """A decoder tied to its encoder: the encoder's weight is read a second time outside the encoder's forward."""
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 3)
        self.dec_bias = nn.Parameter(torch.linspace(-0.2, 0.3, 4))

    def forward(self, x):
        return nn.functional.linear(torch.tanh(self.enc(x)), self.enc.weight.t(), self.dec_bias)


class BorrowingHead(nn.Module):
    """A Linear layer whose weight another module (not registering it) reads in its own forward."""
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = _Borrow(self.body)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


class _Borrow(nn.Module):
    def __init__(self, source: nn.Linear):
        super().__init__()
        object.__setattr__(self, 'source', source)  # a reference, not a submodule

    def forward(self, h):
        return h @ self.source.weight


@pytest.mark.parametrize('make,tied,dense', [(TiedAutoencoder, 'enc.weight', 'dec_bias, enc.weight, enc.bias'),
                                             (BorrowingHead, 'body.weight', 'body.weight, body.bias')])
def test_parameters_used_outside_their_layer_get_exact_columns(make, tied, dense):
    """The hooks of a layer see its own call only; a weight also read elsewhere gets its columns from torch.func."""
    torch.manual_seed(4)
    net = make().double()
    x = torch.randn(5, 4, dtype=torch.float64)
    reference = brute_force_jacobian(net, x, nonlinear_physics)
    for structured in (None, False):
        factors = jacobian_factors(net, x, nonlinear_physics, structured=structured, chunk_rows=6)
        assert not factors.structured
        assert torch.allclose(factors.matrix(), reference, rtol=1e-10, atol=1e-12)
        assert (factors.gram() - reference @ reference.T).norm() <= 1e-10 * (reference @ reference.T).norm()
    with pytest.raises(InvalidInputError, match=f"structured=True .*no tied weights.*; not so: {dense}$"):
        jacobian_factors(net, x, nonlinear_physics, structured=True)
    names = [n for n, _ in net.named_parameters()]
    sizes = [p.numel() for p in net.parameters()]
    columns = torch.cat([torch.arange(sum(sizes[:i]), sum(sizes[:i + 1])) for i, n in enumerate(names) if n != tied])
    rest = [p for n, p in net.named_parameters() if n != tied]  # the tied weight not trained: its layer factored
    factors = jacobian_factors(net, x, nonlinear_physics, params=rest)
    assert len(factors.layers) == 1
    assert torch.allclose(factors.matrix(), reference[:, columns], rtol=1e-10, atol=1e-12)


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        return nn.functional.dropout(self.lin(x), 0.3, self.training)


@pytest.mark.parametrize('make,match', [
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2), nn.Linear(4, 4)), "Dropout '1'"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.AlphaDropout(0.2), nn.Linear(4, 4)), "AlphaDropout '1'"),
    (FunctionalDropout, "drew random numbers")])
@pytest.mark.parametrize('structured', [None, False])
def test_dropout_in_training_mode_is_refused(make, match, structured):
    """Dropout draws another mask for every replicated row of an example; after net.eval() the Jacobian is exact."""
    torch.manual_seed(5)
    net = make().double()
    x = torch.randn(3, 3, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match=f"{match}.*net.eval()"):
        jacobian_factors(net, x, nonlinear_physics, structured=structured)
    net.eval()
    reference = brute_force_jacobian(net, x, nonlinear_physics)
    assert torch.allclose(jacobian_factors(net, x, nonlinear_physics, structured=structured).matrix(), reference,
                          rtol=1e-10, atol=1e-12)
    net.train()  # checked again in training mode, after a network that passed in eval mode
    with pytest.raises(InvalidInputError, match=f"{match}.*net.eval()"):
        jacobian_factors(net, x, nonlinear_physics, structured=structured)


def test_network_torch_func_cannot_trace_is_refused_in_one_line():
    """structured=False forms J with torch.func; a forward pass it cannot trace is refused in one line."""
    class Preallocated(nn.Module):  # writes into a tensor it allocates: vmap cannot batch the in-place copy
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)

        def forward(self, x):
            out = torch.zeros(x.shape[0], 4, dtype=x.dtype)
            out[:] = self.lin(x)
            return out
    net = Preallocated().double()
    with pytest.raises(InvalidInputError, match=r"lin.weight, lin.bias .* torch.func.vjp and vmap, which failed .*"
                                                r"RuntimeError: .*") as err:
        jacobian_factors(net, torch.randn(3, 3, dtype=torch.float64), nonlinear_physics, structured=False)
    assert '\n' not in str(err.value)
