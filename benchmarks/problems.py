"""The HIG paper's problem sizes for the step benchmark: network, inputs, targets, physics, per-sample loss.

TEMPORARY: the oscillator and quantum-dipole simulations below are minimal batched PyTorch versions written
for this benchmark only (REFERENCE.md §2). When ``phi_hig.experiments`` provides these experiments, the
benchmark should import them from there instead. The Poisson physics is PhiFlow's zero-Dirichlet
``field.laplace`` on the 8×8 grid, as in the paper.

Every problem is seeded: the same case gives the same weights and data in every process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Problem:
    """One HIG step's worth of work: ``loss(simulate(net(inputs)), targets)`` per sample, and τ."""
    name: str
    net: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    simulate: Callable
    loss: Callable
    truncation: float

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


def mlp(sizes, activation) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1])


def sum_squares(y, target):
    return 0.5 * ((y - target) ** 2).sum(-1)


# ---------------------------------------------------------------- Poisson (8×8, zero Dirichlet, PhiFlow)

def dirichlet_laplace_8x8(z: torch.Tensor) -> torch.Tensor:
    """``field.laplace`` of the network output on the 8×8 grid with φ = 0 on all sides (Δx = 1)."""
    from phi import field
    from phi.field import CenteredGrid
    from phiml import math as pm
    from phiml.math import batch, spatial
    values = pm.tensor(z.reshape(z.shape[0], 8, 8), batch('b'), spatial('x,y'), convert=False)
    return field.laplace(CenteredGrid(values, 0, x=8, y=8)).values.native('b,x,y').reshape(z.shape[0], 64)


def poisson(hidden=(64, 256, 64), batch: int = 64, seed: int = 0) -> Problem:
    """HIG paper §3.2: the network maps the source ρ to φ, the loss compares ∇²φ with ρ (τ = 1e-5).
    hidden (64, 256, 64): 41,408 parameters (paper); (64, 128, 64): 24,896 (authors' code)."""
    torch.manual_seed(seed)
    net = mlp([64, *hidden, 64], nn.Tanh)
    rho = torch.randn(batch, 64)
    rho = (rho - rho.mean(1, keepdim=True)) / rho.std(1, keepdim=True)
    return Problem(f'poisson{sum(p.numel() for p in net.parameters())}', net, rho, rho, dirichlet_laplace_8x8,
                   sum_squares, 1e-5)


# ---------------------------------------------------------------- nonlinear oscillators (RK4, 96 steps)

def oscillators_simulate(z: torch.Tensor, dt: float = 0.125, coupling: float = 1.0, c=(0.0, 3.0)) -> torch.Tensor:
    """Two masses, ``ẍ_i = −x_i ± coupling·(x_1 − x_2)³ − u·c_i`` (free ends), RK4, one control per step.

    The initial state ``(x_1, x_2, p_1, p_2)`` is the network input, stored in the first 4 columns of z
    by `oscillators`'s wrapper; here z holds ``[state, controls]``."""
    s, u = z[:, :4], z[:, 4:]
    c1, c2 = c

    def f(state, ut):
        x1, x2, p1, p2 = state.unbind(-1)
        cube = coupling * (x1 - x2) ** 3
        return torch.stack([p1, p2, -x1 - cube - ut * c1, -x2 + cube - ut * c2], -1)

    for t in range(u.shape[1]):
        ut = u[:, t]
        k1 = f(s, ut)
        k2 = f(s + 0.5 * dt * k1, ut)
        k3 = f(s + 0.5 * dt * k2, ut)
        k4 = f(s + dt * k3, ut)
        s = s + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return s


class _WithInput(nn.Module):
    """``x -> [x, net(x)]``: passes the initial state through to the simulation (it has no parameters)."""
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.cat([x, self.net(x)], 1)


def oscillators(batch: int = 128, seed: int = 0) -> Problem:
    """HIG paper §3.1: return each state to itself after 96 RK4 steps of 0.125 (τ = 1e-6, 2,956 params)."""
    torch.manual_seed(seed)
    net = _WithInput(mlp([4, 20, 20, 20, 96], nn.ReLU))
    x0 = torch.rand(batch, 4)
    return Problem('oscillators', net, x0, x0, oscillators_simulate, sum_squares, 1e-6)


# ---------------------------------------------------------------- quantum dipole (Crank–Nicolson, 384 steps)

N_INTERIOR = 14
DX = 2.0 / 15


def _hamiltonian_parts():
    n = N_INTERIOR
    lap = (torch.diag(torch.full((n,), -2.0)) + torch.diag(torch.ones(n - 1), 1) + torch.diag(torch.ones(n - 1), -1)) / DX ** 2
    x = torch.arange(1, n + 1) * DX
    return -lap, torch.diag(x)           # H0 = −Δ (infinite well, Dirichlet walls), dipole operator x̂


def qdipole_simulate(z: torch.Tensor, dt: float = 0.05) -> torch.Tensor:
    """``i∂_tψ = (−Δ + u(t)·x̂)ψ`` from the ground state, one Crank–Nicolson step per control (standard CN,
    not the authors' modified scheme). Returns ``[Re ψ, Im ψ]`` of the final state, ``(b, 28)``."""
    h0, xop = _hamiltonian_parts()
    h0, xop = h0.to(z.dtype), xop.to(z.dtype)
    energies, modes = torch.linalg.eigh(h0)
    psi = modes[:, 0].to(torch.complex64 if z.dtype == torch.float32 else torch.complex128)
    psi = psi.expand(z.shape[0], -1).unsqueeze(-1)
    eye = torch.eye(N_INTERIOR, dtype=psi.dtype)
    for t in range(z.shape[1]):
        h = h0.to(psi.dtype) + z[:, t, None, None].to(psi.dtype) * xop.to(psi.dtype)   # (b, n, n)
        half = 0.5j * dt * h
        psi = torch.linalg.solve(eye + half, (eye - half) @ psi)
    psi = psi.squeeze(-1)
    return torch.cat([psi.real, psi.imag], 1)


def infidelity(y, target):
    n = N_INTERIOR
    a = torch.complex(y[:, :n], y[:, n:])
    b = torch.complex(target[:, :n], target[:, n:])
    return 1 - ((a.conj() * b).sum(-1).abs() ** 2)


def qdipole(batch: int = 16, seed: int = 0) -> Problem:
    """HIG paper §3.3: reach a random superposition of the 1st and 2nd excited states (τ = 1e-5, 9,484 params)."""
    torch.manual_seed(seed)
    net = mlp([2 * N_INTERIOR, 20, 20, 20, 384], nn.Tanh)
    _, modes = torch.linalg.eigh(_hamiltonian_parts()[0])
    coeff = torch.randn(batch, 2, dtype=torch.complex64)
    coeff = coeff / coeff.abs().pow(2).sum(1, keepdim=True).sqrt()
    psi = coeff[:, :1] * modes[:, 1].to(torch.complex64) + coeff[:, 1:] * modes[:, 2].to(torch.complex64)
    target = torch.cat([psi.real, psi.imag], 1)
    return Problem('qdipole', net, target, target, qdipole_simulate, infidelity, 1e-5)


CASES = {
    'poisson41k': lambda: poisson((64, 256, 64)),
    'poisson25k': lambda: poisson((64, 128, 64)),
    'oscillators': lambda: oscillators(128),
    'oscillators512': lambda: oscillators(512),
    'qdipole': lambda: qdipole(16),
}
"""Benchmark cases. ``oscillators512`` is Adam's paper batch size (used for the Adam comparison)."""
