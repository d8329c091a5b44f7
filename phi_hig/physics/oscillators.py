"""Chains of coupled oscillators (Schnell, Holl & Thuerey 2022, §3.1 and eq. 20; Thuerey et al., Physics-based
Deep Learning, chapter "Half-Inverse Gradients"): right-hand side, RK4 integration, Hamiltonian, loss.

A chain of ``n`` masses with positions ``x_i`` and momenta ``p_i`` (state ``s = (x_1…x_n, p_1…p_n)``, batch
first) obeys ``ẋ_i = p_i``, ``ṗ_i = −x_i + linear·(Lx)_i − cubic·[(x_i − x_{i+1})³ + (x_i − x_{i−1})³] − c_i·u(t)``
with free ends (L: the free-end chain Laplacian). The control ``u`` is held constant over each RK4 step. All
functions are batched torch code, differentiable in the state and the controls.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ['rk4', 'chain_rhs', 'simulate_chain', 'hamiltonian', 'sum_squares']


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
    """``H = Σ (x² + p²)/2 + (cubic/4)·Σ_bonds (x_i − x_{i+1})⁴ + u·Σ c_i x_i`` per sample (Schnell, Holl & Thuerey 2022, eq. 8; 4α = cubic)."""
    n = s.shape[-1] // 2
    x, p = s[..., :n], s[..., n:]
    h = 0.5 * (x ** 2 + p ** 2).sum(-1) + cubic / 4 * ((x[..., 1:] - x[..., :-1]) ** 4).sum(-1)
    return h + u * (x * torch.tensor(control, dtype=s.dtype, device=s.device)).sum(-1)


def sum_squares(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``Σ_j (y_j − y*_j)²`` (the authors' ``l2_loss`` per data point)."""
    return ((y - target) ** 2).reshape(y.shape[0], -1).sum(-1)
