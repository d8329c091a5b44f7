"""Control of nonlinear coupled oscillators (HIG paper §3.1, B.2; Figure 2 and Table 2).

A chain of ``n`` masses (paper: 2) with positions ``x_i`` and momenta ``p_i`` obeys (paper eq. 20, written
from the Hamiltonian of eq. 8 with free chain ends)

    ẋ_i = p_i,   ṗ_i = −x_i − k·(x_i − x_{i+1})³ − k·(x_i − x_{i−1})³ − c_i·u(t),

integrated with classical RK4 for 96 steps of Δt = 0.125 with the control ``u`` piecewise constant per step
and ``c = (0, 3)``. ``k`` is the coefficient of the cubic terms: ``k = 1`` in the authors' code that produced
the paper's figures (the default), ``k = 4α = 4`` for the paper text's α = 1 (``alpha=1``).

Note on signs: eq. 20 as printed has ``+4α(x_i − x_{i−1})³``; the Hamiltonian gives the minus sign used here
(and by the authors' code), which conserves ``H``. The sign of the control term is immaterial for learning
(the linear output layer learns either sign); we follow eq. 8.

The task: from a random state ``s = (x, p) ~ U[0, 1)⁴`` return to the same state after T = 12. The network
consumes the target (= initial state) and emits the 96 control values; because the simulation also needs the
initial state, the network (`ControlNet`) passes its input through: ``z = (u_1 … u_96, s)``. The pass-through
part has no parameters, so it contributes nothing to the network Jacobian.

Loss per sample: ``Σ_j (y_j − y*_j)²`` (sum over the 4 state components, as the authors' code; the paper calls
it MSE). The values the paper plots (Adam ~1e-4, GN ~1e-6, HIG ~1e-7) are this quantity averaged over the
test set.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .base import Experiment

__all__ = ['oscillators', 'ControlNet', 'keras_dense', 'rk4', 'simulate_chain', 'hamiltonian']


# ---------------------------------------------------------------------------------------------------------------
# Networks shared by the control experiments
# ---------------------------------------------------------------------------------------------------------------

def keras_dense(sizes: Sequence[int], activation: str = 'relu') -> nn.Sequential:
    """Dense network ``sizes[0] → … → sizes[-1]`` with ``activation`` between layers and a linear output,
    initialized like Keras' ``Dense`` (Glorot-uniform weights, zero biases) as in the authors' TF code."""
    act = {'relu': nn.ReLU, 'tanh': nn.Tanh}[activation]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class ControlNet(nn.Module):
    """``z = (body(x), x)``: a control network that passes its input (the initial state) on to the simulation.

    ``controls(x)`` gives the controls alone.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def controls(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.body(x), x], dim=-1)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Physics
# ---------------------------------------------------------------------------------------------------------------

def rk4(f, s: torch.Tensor, u: torch.Tensor, dt: float) -> torch.Tensor:
    """One classical Runge–Kutta step of ``ṡ = f(s, u)`` with u held constant over the step (batched)."""
    k1 = f(s, u)
    k2 = f(s + 0.5 * dt * k1, u)
    k3 = f(s + 0.5 * dt * k2, u)
    k4 = f(s + dt * k3, u)
    return s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def chain_rhs(cubic: float, control: Sequence[float], linear: float = 0.0):
    """Right-hand side ``f(s, u)`` of the oscillator chain with state ``s = (x_1…x_n, p_1…p_n)`` (batch first).

    ``ṗ_i = −x_i + linear·(Lx)_i − cubic·[(x_i − x_{i+1})³ + (x_i − x_{i−1})³] − c_i·u`` with free ends
    (missing neighbours contribute nothing; L is the free-end chain Laplacian).
    """
    c = torch.tensor(list(control), dtype=torch.float64)

    def f(s, u):
        n = s.shape[-1] // 2
        x, p = s[..., :n], s[..., n:]
        force = -x - c.to(device=s.device, dtype=s.dtype) * u.unsqueeze(-1)
        if n > 1 and (cubic or linear):
            d = x[..., 1:] - x[..., :-1]                  # bond i: x_{i+1} − x_i
            bond = cubic * d ** 3 + linear * d             # force of bond i on its left mass
            zero = torch.zeros_like(x[..., :1])
            force = force + torch.cat([bond, zero], -1) - torch.cat([zero, bond], -1)
        return torch.cat([p, force], dim=-1)
    return f


def simulate_chain(s0: torch.Tensor, u: torch.Tensor, dt: float, f) -> torch.Tensor:
    """Integrate ``len(u[0])`` RK4 steps from ``s0`` (``(b, 2n)``) with controls ``u`` (``(b, steps)``)."""
    s = s0
    for t in range(u.shape[-1]):
        s = rk4(f, s, u[..., t], dt)
    return s


def hamiltonian(s: torch.Tensor, cubic: float, u: float = 0.0, control=(0., 3.)) -> torch.Tensor:
    """``H = Σ (x² + p²)/2 + (cubic/4)·Σ_bonds (x_i − x_{i+1})⁴ + u·Σ c_i x_i`` per sample (eq. 8, 4α = cubic)."""
    n = s.shape[-1] // 2
    x, p = s[..., :n], s[..., n:]
    h = 0.5 * (x ** 2 + p ** 2).sum(-1) + cubic / 4 * ((x[..., 1:] - x[..., :-1]) ** 4).sum(-1)
    return h + u * (x * torch.tensor(control, dtype=s.dtype, device=s.device)).sum(-1)


def sum_squares(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``Σ_j (y_j − y*_j)²`` (the authors' ``l2_loss`` per data point)."""
    return ((y - target) ** 2).reshape(y.shape[0], -1).sum(-1)


# ---------------------------------------------------------------------------------------------------------------
# Experiment
# ---------------------------------------------------------------------------------------------------------------

def oscillators(preset: str = 'paper', n_oscillators: int = 2, steps: int = 96, dt: float = 0.125,
                cubic: float = None, alpha: float = None, control=(0.0, 3.0), n_train: int = 4096,
                n_test: int = 4096, hidden: Sequence[int] = (20, 20, 20), batch_size: dict = None,
                data_seed: int = 0) -> Experiment:
    """Build the nonlinear-oscillator control experiment.

    Args:
        preset: 'paper' (the sizes above) or 'test' (12 steps, 64 + 64 samples, batch 8).
        n_oscillators: number of masses (paper: 2).
        steps: RK4 steps = number of controls (paper: 96).
        dt: time step (paper: 0.125).
        cubic: coefficient k of the cubic terms (default 1, the authors' code).
        alpha: the paper text's interaction strength; sets ``cubic = 4α`` (α = 1 → 4). Give cubic or alpha.
        control: the control vector c (paper: (0, 3)).
        n_train, n_test: data set sizes (paper: 4096 each).
        hidden: hidden layer widths (paper: 20, 20, 20, ReLU).
        batch_size: per-method batch size overrides of the Table 2 values, e.g. ``{'hig': 64}``.
        data_seed: seed of the data sets.
    """
    if cubic is not None and alpha is not None:
        raise ValueError("give cubic or alpha, not both")
    cubic = 4.0 * alpha if alpha is not None else (1.0 if cubic is None else float(cubic))
    control = tuple(float(c) for c in control)
    if len(control) != n_oscillators:
        control = (0.0,) * (n_oscillators - 1) + (control[-1],)
    big, small = 512, 128
    if preset == 'test':
        steps, n_train, n_test, big, small = min(steps, 12), 64, 64, 8, 8
    elif preset != 'paper':
        raise ValueError(f"unknown preset {preset!r}")
    n_state = 2 * n_oscillators
    gen = torch.Generator().manual_seed(data_seed)
    train = torch.rand(n_train, n_state, generator=gen)
    test = torch.rand(n_test, n_state, generator=gen)
    f = chain_rhs(cubic, control)
    sizes = [n_state, *hidden, steps]

    def make_net():
        return ControlNet(keras_dense(sizes, 'relu'))

    def simulate(z):
        """``z = (u_1 … u_steps, s0)`` → final state ``(b, 2n)``."""
        return simulate_chain(z[:, steps:], z[:, :steps], dt, f)

    # Table 2 of the paper. The first-order optimizers get Keras' default constants (the authors used TF 2.5):
    # Adam/Adagrad/RMSprop/Adadelta ε = 1e-7, Adagrad initial accumulator 0.1, RMSprop ρ = 0.9, Adadelta ρ = 0.95.
    # HIG and GN: η = 1 on the gradient g of the batch-mean loss (the authors' code divides the summed loss by b).
    # GN with η = 1 on the mean is a pseudo-inverse step shrunk by 1/b (a full GN step would be η = b).
    methods = {
        'adadelta': dict(lr=0.1, batch_size=big, rho=0.95, eps=1e-7),
        'adagrad': dict(lr=0.1, batch_size=big, initial_accumulator_value=0.1, eps=1e-7),
        'adam': dict(lr=3e-4, batch_size=big, eps=1e-7),
        'gn': dict(lr=1.0, batch_size=small, truncation=1e-6, kappa=-1.0),
        'hig': dict(lr=1.0, batch_size=small, truncation=1e-6, kappa=-0.5),
        'rmsprop': dict(lr=1e-4, batch_size=big, alpha=0.9, eps=1e-7),
        'sgd': dict(lr=0.1, batch_size=big),
    }
    if preset == 'test':  # 8 samples × 4 outputs: GN at τ = 1e-6 inverts noise and diverges at once
        methods['gn']['truncation'] = 1e-2
    for m, b in (batch_size or {}).items():
        methods[m]['batch_size'] = int(b)
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return Experiment(
        name='oscillators', make_net=make_net, simulate=simulate, loss=sum_squares, methods=methods,
        train_set=(train, train.clone()), test_set=(test, test.clone()), eval_every=50 if preset == 'paper' else 1,
        threads=1,
        settings=dict(preset=preset, n_oscillators=n_oscillators, steps=steps, dt=dt, cubic=cubic, control=control,
                      n_train=n_train, n_test=n_test, hidden=list(hidden), parameters=n_params, data_seed=data_seed),
        description=f"nonlinear oscillators (HIG §3.1): {n_oscillators} masses, RK4 {steps}×{dt}, cubic {cubic:g}, "
                    f"net {'-'.join(map(str, sizes))} ReLU ({n_params} parameters)")
