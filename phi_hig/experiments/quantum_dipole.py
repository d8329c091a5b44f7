"""Quantum dipole control (Schnell, Holl & Thuerey 2022, §3.3 and appendix B.4; Figure 4).

A particle in an infinite well on [0, 2] obeys ``i∂_tΨ = (−Δ + V + u(t)·x̂)Ψ``. Discretization (as the
authors' code): 16 grid points with Δx = 2/15, Ψ = 0 on the walls, so 14 interior unknowns at
``x_j = j·Δx`` (j = 1 … 14); ``−Δ`` is the 3-point stencil ``(2Ψ_j − Ψ_{j−1} − Ψ_{j+1})/Δx²``; Crank–Nicolson
in time, ``(1 + i·Δt/2·H_n) Ψ_{n+1} = (1 − i·Δt/2·H_n) Ψ_n`` with ``H_n = −Δ + u_n·x̂`` and the control
``u_n`` constant over each of the 384 steps of Δt = 0.05 (T = 19.2). Crank–Nicolson is the Cayley transform
of a Hermitian matrix, hence unitary: it conserves the norm to round-off. The paper cites a "modified"
Crank–Nicolson scheme (Winckel et al. 2009); the authors' code, which produced the figures, uses this
plain one.

The systems of all samples are solved together at each time step with one batched dense complex LU
(``torch.linalg.solve`` on ``(b, 14, 14)``); no loop over samples or grid points. A batched tridiagonal
solver by parallel cyclic reduction (`tridiagonal_solve`, ⌈log₂ 14⌉ = 4 vectorized levels) is kept as
``solver='tridiagonal'``: measured on this 2-core CPU for the 448 systems of a HIG Jacobian pass
(b = 16 × |y| = 28, 384 steps, forward + backward, complex64) it took about 2× longer than the dense solve
(PyTorch's complex division and the ~20 small ops per level cost more than LAPACK on 14 × 14 matrices).

Task: start in the ground state Ψ_0 (the discrete eigenstate n = 1); the target is a random superposition
``(c_1Ψ_1 + c_2Ψ_2)/‖c‖`` of the first and second excited states with ``c ~ N(0, 1)²`` (real, as in the
authors' code; ``phases=True`` adds uniformly random phases). The network reads the target
(Re, Im interleaved, 28 values) and emits the 384 controls. y = the final state as ``(b, 14, 2)`` (Re, Im).
Loss ``1 − |⟨Ψ_a, Ψ_b⟩|²``; metrics: the low-energy loss ``(|⟨Ψ_a, Ψ_1⟩| − |⟨Ψ_1, Ψ_b⟩|)²`` and the
high-energy loss (same with Ψ_2).

Networks: 'mlp' 28 → 20 → 20 → 20 (tanh) → 384, 9484 parameters (paper); 'cnn': six Conv1d layers with
kernel 3, 20 features, tanh and no padding on the (2 channels × 14 points) input, so the length shrinks
14 → 12 → … → 2, then Flatten (40) → Linear → 384. Count: 2·20·3 + 20 = 140, 5 × (20·20·3 + 20) = 6100,
40·384 + 384 = 15744; total 21,984, the paper's number — so "valid" padding is the layout that reproduces it.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from .base import Experiment
from .settings import Count, Positive, Seed, factory
from ..errors import InvalidInputError
from ..nets import keras_dense, parameter_count

__all__ = ['quantum_dipole', 'eigenstate', 'eigen_energy', 'crank_nicolson', 'tridiagonal_solve', 'hamiltonian_matrix', 'DipoleCNN']


def eigenstate(n: int, points: int = 14, dtype=torch.float64) -> torch.Tensor:
    """The n-th (n = 1: ground state) normalized eigenstate of the discrete Dirichlet Laplacian on ``points``
    interior points: ``sin(π n j / (points + 1))``, j = 1 … points."""
    j = torch.arange(1, points + 1, dtype=torch.float64)
    v = torch.sin(math.pi * n * j / (points + 1))
    return (v / v.norm()).to(dtype)


def eigen_energy(n: int, points: int = 14, dx: float = 2 / 15) -> float:
    """Eigenvalue of ``−Δ`` (3-point, Dirichlet) for `eigenstate(n)`: ``(4/Δx²)·sin²(π n / (2(points+1)))``."""
    return 4 / dx ** 2 * math.sin(math.pi * n / (2 * (points + 1))) ** 2


def _minus_laplacian(points: int, dx: float, **kw) -> torch.Tensor:
    """``−Δ`` (3-point, Dirichlet walls) as a dense ``(points, points)`` matrix; ``kw``: dtype and device."""
    return (2 * torch.eye(points, **kw) - torch.diag(torch.ones(points - 1, **kw), 1)
            - torch.diag(torch.ones(points - 1, **kw), -1)) / dx ** 2


def hamiltonian_matrix(u: torch.Tensor, points: int = 14, dx: float = 2 / 15) -> torch.Tensor:
    """``H = −Δ + u·x̂`` for a batch of controls ``u`` (``(b,)``): ``(b, points, points)`` in u's dtype."""
    kw = dict(dtype=u.dtype, device=u.device)
    x = torch.arange(1, points + 1, **kw) * dx
    return _minus_laplacian(points, dx, **kw) + u[:, None, None] * torch.diag(x)


def tridiagonal_solve(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Solve the batched tridiagonal systems ``a_j x_{j−1} + b_j x_j + c_j x_{j+1} = d_j`` (all ``(B, n)``;
    ``a_0`` and ``c_{n−1}`` are ignored) by parallel cyclic reduction.

    Each of the ⌈log₂ n⌉ levels eliminates, for every row at once, the couplings at distance s = 1, 2, 4, …
    (rows outside the system act as identity rows), leaving a diagonal system. The loop runs over the levels,
    never over grid points or samples. No pivoting: stable for the Crank–Nicolson matrices ``1 + iK`` (K real
    symmetric, Hermitian part the identity).
    """
    n = b.shape[-1]
    pad = torch.nn.functional.pad
    a = pad(a[..., 1:], (1, 0))
    c = pad(c[..., :-1], (0, 1))
    s = 1
    while s < n:
        # rows j−s and j+s as views into padded copies (outside rows: b = 1, a = c = d = 0)
        inv_b = 1 / pad(b, (s, s), value=1.)
        ap, cp, dp = pad(a, (s, s)), pad(c, (s, s)), pad(d, (s, s))
        k1 = a * inv_b[..., :n]
        k2 = c * inv_b[..., 2 * s:]
        b = b - cp[..., :n] * k1 - ap[..., 2 * s:] * k2
        d = d - dp[..., :n] * k1 - dp[..., 2 * s:] * k2
        a = -ap[..., :n] * k1
        c = -cp[..., 2 * s:] * k2
        s *= 2
    return d / b


def crank_nicolson(psi0: torch.Tensor, u: torch.Tensor, dt: float = 0.05, dx: float = 2 / 15,
                   return_all: bool = False, solver: str = 'dense') -> torch.Tensor:
    """Evolve complex states ``psi0`` (``(b, points)``) with the controls ``u`` (``(b, steps)``, real).

    Each step solves ``(1 + iΔt/2·H) Ψ' = (1 − iΔt/2·H) Ψ`` for all samples at once. Differentiable in ``u``
    and ``psi0``. Returns the final state, or all states ``(b, steps+1, points)``.

    Args:
        solver: 'dense' (default: ``torch.linalg.solve`` on the ``(b, points, points)`` matrices, LU with
            pivoting) or 'tridiagonal' (`tridiagonal_solve`, parallel cyclic reduction). Both agree to 1e-14
            in float64; the dense solve is faster on this CPU (see the module docstring).
    """
    b, points = psi0.shape
    real = u.dtype
    cdtype = torch.complex128 if real == torch.float64 else torch.complex64
    kw, ckw = dict(dtype=real, device=u.device), dict(dtype=cdtype, device=u.device)
    x = (torch.arange(1, points + 1, **kw) * dx).to(cdtype)
    half = 0.5j * dt
    off = -half / dx ** 2                                # iΔt/2 · (−1/Δx²): off-diagonals of 1 + iΔt/2·H
    diag0 = 1 + 2 * half / dx ** 2
    psi = psi0.to(cdtype)
    states = [psi] if return_all else None
    if solver == 'dense':
        a_base = torch.eye(points, **ckw) + half * _minus_laplacian(points, dx, **kw).to(cdtype)
    offs = torch.full((b, points), off, **ckw)
    for n in range(u.shape[1]):
        pot = (half * u[:, n:n + 1].to(cdtype)) * x      # (b, points): iΔt/2·u·x_j
        zero = torch.zeros_like(psi[:, :1])
        neighbours = torch.cat([zero, psi[:, :-1]], 1) + torch.cat([psi[:, 1:], zero], 1)
        rhs = (2 - diag0 - pot) * psi - off * neighbours  # (1 − iΔt/2·H) Ψ
        if solver == 'dense':
            psi = torch.linalg.solve(a_base + torch.diag_embed(pot), rhs.unsqueeze(-1)).squeeze(-1)
        else:
            psi = tridiagonal_solve(offs, diag0 + pot, offs, rhs)
        if return_all:
            states.append(psi)
    return torch.stack(states, 1) if return_all else psi


def to_real(psi: torch.Tensor) -> torch.Tensor:
    return torch.stack([psi.real, psi.imag], dim=-1)


def to_complex(y: torch.Tensor) -> torch.Tensor:
    return torch.complex(y[..., 0], y[..., 1])


def overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``⟨a, b⟩ = Σ conj(a)·b`` per sample for complex ``(…, points)`` tensors."""
    return (a.conj() * b).sum(-1)


def fidelity_loss(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``1 − |⟨Ψ_target, Ψ_y⟩|²`` for states given as ``(b, points, 2)`` (Re, Im)."""
    return 1 - overlap(to_complex(target), to_complex(y)).abs() ** 2


class DipoleCNN(nn.Module):
    """Six Conv1d(k=3, 20 features, tanh, no padding) on (Re, Im) × 14 points, then Linear(40 → 384): 21,984
    parameters. Input: the interleaved (Re, Im) target, ``(b, 28)``."""

    def __init__(self, points: int = 14, features: int = 20, layers: int = 6, out: int = 384):
        super().__init__()
        convs, c = [], 2
        for _ in range(layers):
            conv = nn.Conv1d(c, features, 3)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            convs += [conv, nn.Tanh()]
            c = features
        self.convs = nn.Sequential(*convs)
        self.points = points
        self.head = nn.Linear(features * (points - 2 * layers), out)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        """The controls ``(b, out)`` of the interleaved (Re, Im) targets ``x`` ``(b, 2·points)``."""
        h = x.reshape(x.shape[0], self.points, 2).transpose(1, 2)
        return self.head(self.convs(h).flatten(1))


@factory(test=dict(steps=24, n_train=32, n_test=32))
def quantum_dipole(preset: str = 'paper', network: Literal['mlp', 'cnn'] = 'mlp', steps: Count = 384,
                   dt: Positive = 0.05, points: Count = 14, n_train: Count = 1024, n_test: Count = 1024,
                   phases: bool = False, data_seed: Seed = 0) -> Experiment:
    """Build the quantum-dipole control experiment.

    Args:
        preset: 'paper' or 'test' (24 steps, 32 + 32 samples, batch 4).
        network: 'mlp' (9484 parameters) or 'cnn' (21,984 parameters).
        steps: Crank–Nicolson steps = number of controls (paper: 384).
        dt: time step (paper: 0.05).
        points: interior grid points (paper: 14, i.e. 16 points on [0, 2] with the walls); at least 3 (the
            target mixes the eigenstates 2 and 3), and at least 13 for the 'cnn' (six valid 3-point convolutions).
        n_train, n_test: data set sizes (paper: 1024 each).
        phases: give the two target components random relative phases (the authors' code draws phases but
            does not use them: real targets).
        data_seed: seed of the data sets.
    """
    least = 13 if network == 'cnn' else 3
    if points < least:
        raise InvalidInputError(f"setting 'points' of experiment 'quantum_dipole' must be an integer >= {least} for "
                                f"network {network!r}; got {points!r}")
    batch = 16
    if preset == 'test':
        batch = 4
    dx = 2 / (points + 1)
    rng = np.random.default_rng(data_seed)

    def targets(n):
        c = rng.standard_normal((n, 2))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        ph = np.exp(1j * rng.uniform(0, 2 * np.pi, (n, 2))) if phases else np.ones((n, 2))
        basis = torch.stack([eigenstate(2, points), eigenstate(3, points)]).numpy()
        psi = (c * ph) @ basis
        y = np.stack([psi.real, psi.imag], -1).astype(np.float32)
        return torch.from_numpy(y.reshape(n, -1)), torch.from_numpy(y)

    train, test = targets(n_train), targets(n_test)
    ground = eigenstate(1, points)
    e1, e2 = eigenstate(2, points), eigenstate(3, points)

    def make_net():
        if network == 'cnn':
            return DipoleCNN(points, out=steps)
        return keras_dense([2 * points, 20, 20, 20, steps], 'tanh')

    def simulate(z):
        psi0 = ground.to(device=z.device, dtype=z.dtype).expand(z.shape[0], points)
        return to_real(crank_nicolson(psi0, z, dt, dx))

    def metrics(net, inputs, y_target):
        """Low- and high-energy losses (paper B.4), test-set means."""
        y = simulate(net(inputs))
        a, b = to_complex(y_target), to_complex(y)
        out = {}
        for name, state in (('low_energy_loss', e1), ('high_energy_loss', e2)):
            s = state.to(device=a.device, dtype=a.dtype)
            out[name] = float(((overlap(a, s).abs() - overlap(s, b).abs()) ** 2).mean())
        return out

    methods = {
        'adam': dict(lr=1e-4, batch_size=batch, eps=1e-7),                              # paper Fig. 4c
        'hig': dict(lr=0.5, batch_size=batch, truncation=1e-5, kappa=-0.5),              # paper Fig. 4c, mean g
        'gn': dict(lr=1.0, batch_size=batch, truncation=1e-5, kappa=-1.0),
    }
    if network == 'cnn':  # the paper's best CNN runs (B.4): HIG η = 0.7, τ = 1e-4, b = 16; Adam η = 2e-4, b = 256
        methods['hig'].update(lr=0.7, truncation=1e-4)
        methods['adam'].update(lr=2e-4, batch_size=256 if preset == 'paper' else batch)
    with torch.random.fork_rng():
        n_params = parameter_count(make_net())
    return Experiment(
        name='quantum_dipole', make_net=make_net, simulate=simulate, loss=fidelity_loss, methods=methods,
        train_set=train, test_set=test, metrics=metrics, eval_every=20 if preset == 'paper' else 1, threads=1,
        settings=dict(preset=preset, network=network, steps=steps, dt=dt, points=points, dx=dx, n_train=n_train,
                      n_test=n_test, phases=phases, parameters=n_params, data_seed=data_seed),
        description=f"quantum dipole (HIG §3.3): Crank–Nicolson {steps}×{dt}, {points} unknowns, {network} "
                    f"({n_params} parameters)")
