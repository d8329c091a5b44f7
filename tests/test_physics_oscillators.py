"""Oscillator chains (phi_hig.physics.oscillators): RK4 against the analytic forced oscillator, energy
conservation of the nonlinear chain, and the right-hand side against the Hamiltonian's gradient."""
import math

import pytest
import torch

from phi_hig.physics.oscillators import chain_rhs, hamiltonian, simulate_chain


def forced_harmonic(s0, u, c, t):
    """Analytic solution of ẋ = p, ṗ = −x − c·u (u constant) per mass: x = −cu + (x0 + cu)cos t + p0 sin t."""
    n = s0.shape[-1] // 2
    x0, p0 = s0[..., :n], s0[..., n:]
    shift = c * u[..., None]
    x = -shift + (x0 + shift) * math.cos(t) + p0 * math.sin(t)
    p = -(x0 + shift) * math.sin(t) + p0 * math.cos(t)
    return torch.cat([x, p], -1)


def test_rk4_matches_uncoupled_harmonic_oscillator():
    torch.manual_seed(1)
    s0 = torch.rand(5, 4, dtype=torch.float64)
    u_const = torch.randn(5, dtype=torch.float64)
    c = torch.tensor([0.0, 3.0], dtype=torch.float64)
    f = chain_rhs(0.0, (0.0, 3.0))
    errors = []
    for steps in (96, 192):
        dt = 12.0 / steps
        s = simulate_chain(s0, u_const[:, None].expand(5, steps), dt, f)
        errors.append(float((s - forced_harmonic(s0, u_const, c, 12.0)).abs().max()))
    assert errors[0] < 5e-4  # amplitudes up to ~5: RK4 phase error ~(Δt)⁵/120 per step
    assert 12 < errors[0] / errors[1] < 20  # fourth order: halving Δt divides the error by ~16


@pytest.mark.parametrize('cubic', [1.0, 4.0])
def test_nonlinear_chain_conserves_hamiltonian(cubic):
    torch.manual_seed(2)
    s0 = torch.rand(64, 4, dtype=torch.float64)
    f = chain_rhs(cubic, (0.0, 3.0))
    h0 = hamiltonian(s0, cubic)
    drift = []
    for steps in (96, 192):
        s = simulate_chain(s0, torch.zeros(64, steps, dtype=torch.float64), 12.0 / steps, f)
        drift.append(float(((hamiltonian(s, cubic) - h0) / h0).abs().max()))
    assert drift[0] < {1.0: 1e-3, 4.0: 1e-2}[cubic]
    assert drift[1] < drift[0] / 8  # shrinks with Δt like the integrator error (~Δt⁴)


def test_chain_rhs_is_minus_gradient_of_hamiltonian():
    s = torch.rand(7, 4, dtype=torch.float64, requires_grad=True)
    u = torch.randn(7, dtype=torch.float64)
    h = sum(hamiltonian(s[i:i + 1], 1.0, float(u[i])) for i in range(7)).sum()
    grad, = torch.autograd.grad(h, s)
    rhs = chain_rhs(1.0, (0.0, 3.0))(s.detach(), u)
    assert torch.allclose(rhs[:, :2], grad[:, 2:])    # ẋ = ∂H/∂p
    assert torch.allclose(rhs[:, 2:], -grad[:, :2])   # ṗ = −∂H/∂x
