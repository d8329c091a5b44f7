"""The HIG experiments (oscillators, poisson8, quantum_dipole, linear_chain): physics against independent
computations (analytic solutions, SciPy), sizes against the papers, and every method for two steps."""
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import torch

import phi_hig
from phi_hig.experiments import get
from phi_hig.physics.oscillators import chain_rhs, simulate_chain
from test_physics_oscillators import forced_harmonic
import importlib
qd = importlib.import_module('phi_hig.experiments.quantum_dipole')  # the module (the package attribute is the factory)
from phi_hig.experiments.poisson8 import laplace_flat, noise_sources

HIG_FAMILY = ['oscillators', 'poisson8', 'quantum_dipole', 'linear_chain']


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py: one torch thread


# ------------------------------------------------------------------------------------------------ oscillators

def test_oscillators_simulate_is_the_forced_chain():
    """The experiment's simulate with k = 0 against the analytic forced oscillator (z = controls, the initial state
    its condition)."""
    ex = get('oscillators', cubic=0.0)
    s0 = ex.test_set[0][:3].double()
    u = torch.full((3, 96), 0.2, dtype=torch.float64)
    y = ex.simulate(u, s0)
    expected = forced_harmonic(s0, u[:, 0], torch.tensor([0.0, 3.0], dtype=torch.float64), 12.0)
    assert float((y - expected).abs().max()) < 1e-4


def test_oscillator_settings():
    ex = get('oscillators')
    assert ex.settings['parameters'] == 2956 == sum(p.numel() for p in ex.make_net().parameters())
    assert ex.settings['cubic'] == 1.0 and get('oscillators', alpha=1.0).settings['cubic'] == 4.0
    table2 = {'adadelta': (512, 0.1), 'adagrad': (512, 0.1), 'adam': (512, 3e-4), 'gn': (128, 1.0),
              'hig': (128, 1.0), 'rmsprop': (512, 1e-4), 'sgd': (512, 0.1)}
    assert {m: (h['batch_size'], h['lr']) for m, h in ex.methods.items()} == table2
    assert ex.methods['hig']['truncation'] == ex.methods['gn']['truncation'] == 1e-6
    assert ex.train_set[0].shape == (4096, 4) and torch.equal(ex.train_set[0], ex.train_set[1])


# ----------------------------------------------------------------------------------------------- linear chain

def test_linear_chain_matches_matrix_exponential():
    """24 RK4 steps of 0.5 with constant control against expm of the affine system (SciPy)."""
    ex = get('linear_chain')
    s0 = ex.test_set[0][:4].double()
    u = 0.3
    A = np.zeros((5, 5))  # state (x1, x2, p1, p2, 1)
    A[0, 2] = A[1, 3] = 1
    A[2:4, 0:2] = -np.eye(2) + 0.2 * np.array([[-1, 1], [1, -1]])
    A[3, 4] = -1.0 * u  # −c·u with c = (0, 1)
    exact = (scipy.linalg.expm(A * 12.0) @ np.concatenate([s0.numpy(), np.ones((4, 1))], 1).T).T[:, :4]
    y = ex.simulate(torch.full((4, 24), u, dtype=torch.float64), s0)
    assert np.abs(y.numpy() - exact).max() < 2e-2  # Δt = 0.5 is coarse: RK4 error, not a bug
    y_fine = simulate_chain(s0, torch.full((4, 480), u, dtype=torch.float64), 0.025, chain_rhs(0.0, (0, 1), linear=0.2))
    assert np.abs(y_fine.numpy() - exact).max() < 1e-6


def test_linear_chain_sip_inverse_hits_the_target():
    """The physics is linear in the controls: one pseudo-inverse step lands on the target exactly."""
    ex = get('linear_chain')
    torch.manual_seed(3)
    s0 = ex.test_set[0][:6].double()
    u = torch.randn(6, 24, dtype=torch.float64)
    du = ex.inverse(u, s0, s0)  # targets s0, condition s0
    assert du.shape == u.shape
    assert float((ex.simulate(u + du, s0) - s0).abs().max()) < 1e-9
    assert ex.settings['parameters'] == 1444


# --------------------------------------------------------------------------------------------- quantum dipole

def test_crank_nicolson_conserves_norm():
    torch.manual_seed(4)
    psi = torch.randn(8, 14, dtype=torch.complex128)
    psi = psi / psi.norm(dim=1, keepdim=True)
    u = 5 * torch.randn(8, 384, dtype=torch.float64)
    for solver in ('dense', 'tridiagonal'):
        out = qd.crank_nicolson(psi, u, solver=solver)
        assert float((out.norm(dim=1) - 1).abs().max()) <= 1e-12
    assert float((qd.crank_nicolson(psi, u, solver='dense') - qd.crank_nicolson(psi, u, solver='tridiagonal')).abs().max()) < 1e-12


def test_discrete_eigenstates_and_energies():
    dx = 2 / 15
    H0 = qd.hamiltonian_matrix(torch.zeros(1, dtype=torch.float64))[0].numpy()
    numeric = np.linalg.eigvalsh(H0)
    analytic = [qd.eigen_energy(n) for n in range(1, 15)]
    assert np.allclose(numeric, analytic, rtol=1e-12)
    assert abs(analytic[0] - 4 / dx ** 2 * math.sin(math.pi / 30) ** 2) < 1e-12
    for n in (1, 2, 3):
        v = qd.eigenstate(n).numpy()
        assert np.allclose(H0 @ v, qd.eigen_energy(n) * v, atol=1e-10)
        assert abs(np.linalg.norm(v) - 1) < 1e-14
    # without control an eigenstate only picks up the Crank–Nicolson phase ((1 − iΔtE/2)/(1 + iΔtE/2))^N
    E, dt, N = qd.eigen_energy(2), 0.05, 384
    psi = qd.crank_nicolson(qd.eigenstate(2).to(torch.complex128)[None], torch.zeros(1, N, dtype=torch.float64))
    phase = ((1 - 0.5j * dt * E) / (1 + 0.5j * dt * E)) ** N
    assert np.allclose(psi[0].numpy(), phase * qd.eigenstate(2).numpy(), atol=1e-11)


def test_quantum_dipole_loss_metrics_and_sizes():
    ex = get('quantum_dipole')
    assert ex.settings['parameters'] == 9484
    assert get('quantum_dipole', network='cnn').settings['parameters'] == 21984
    inputs, targets = ex.test_set
    assert inputs.shape == (1024, 28) and targets.shape == (1024, 14, 2)
    assert torch.allclose(qd.to_complex(targets).abs().pow(2).sum(1), torch.ones(1024), atol=1e-5)
    # targets live in span(Ψ_1, Ψ_2): no weight on the ground state
    assert float(qd.overlap(qd.eigenstate(1, dtype=torch.float32).to(torch.complex64), qd.to_complex(targets)).abs().max()) < 1e-5
    assert float(ex.loss(targets, targets).abs().max()) < 1e-6
    assert torch.allclose(ex.loss(targets * -1, targets), torch.zeros(1024), atol=1e-6)  # a global phase is free
    # the ground state has zero overlap with the target: loss 1; metrics of a perfect state are 0
    ground = torch.stack([qd.eigenstate(1, dtype=torch.float32), torch.zeros(14)], -1).expand(1024, 14, 2)
    assert torch.allclose(ex.loss(ground, targets), torch.ones(1024), atol=1e-5)


def test_quantum_dipole_simulate_without_control_keeps_the_ground_state():
    ex = get('quantum_dipole', preset='test')
    y = ex.simulate(torch.zeros(3, 24, dtype=torch.float64))
    psi = qd.to_complex(y)
    assert torch.allclose(qd.overlap(qd.eigenstate(1).to(psi.dtype), psi).abs(), torch.ones(3, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------- poisson

def test_poisson8_operator_is_the_scipy_five_point_laplacian():
    eye = torch.eye(64, dtype=torch.float64)
    A = laplace_flat(eye).T.numpy()   # column k = Laplacian of unit vector k
    d2 = scipy.sparse.diags([1, -2, 1], [-1, 0, 1], shape=(8, 8))
    I = scipy.sparse.identity(8)
    L = (scipy.sparse.kron(d2, I) + scipy.sparse.kron(I, d2)).toarray()
    assert np.array_equal(A, L)
    assert laplace_flat(eye.float()).dtype == torch.float32


def test_poisson8_data_and_sizes():
    state = np.random.get_state()[1].copy()
    phi, rho = noise_sources(7, 32)
    assert np.array_equal(state, np.random.get_state()[1])  # NumPy's global stream untouched
    phi2, _ = noise_sources(7, 32)
    assert torch.equal(phi, phi2)
    assert torch.allclose(phi.mean(1), torch.zeros(32), atol=1e-5)
    assert torch.allclose(phi.std(1, unbiased=False), torch.ones(32), atol=1e-4)
    assert torch.allclose(laplace_flat(phi.double()).float(), rho, atol=1e-5)
    ex = get('poisson8')
    assert ex.settings['parameters'] == 41408 == sum(p.numel() for p in ex.make_net().parameters())
    assert get('poisson8', network='code').settings['parameters'] == 24896
    assert ex.methods['hig']['lr'] == pytest.approx(0.64) and ex.methods['hig']['batch_size'] == 64
    inputs, targets = ex.test_set
    assert float(ex.loss(laplace_flat(targets[:, 1]), targets).max()) < 1e-9  # φ* solves the problem


# ------------------------------------------------------------------------------------------- every method runs

@pytest.mark.parametrize('name', HIG_FAMILY)
def test_every_method_runs_two_steps(name):
    ex = get(name, preset='test')
    result = phi_hig.train(ex, list(ex.methods), steps=2, progress=False)
    for m in ex.methods:
        final = result.summary['final'][m]
        assert final['status'] == 'ok', (m, final['status'])
        assert final['steps'] == 2 and math.isfinite(final['test_loss'])


def test_quantum_dipole_cnn_runs_hig():
    ex = get('quantum_dipole', preset='test', network='cnn')
    result = phi_hig.train(ex, ['hig', 'adam'], steps=2, progress=False)
    assert all(f['status'] == 'ok' for f in result.summary['final'].values())
