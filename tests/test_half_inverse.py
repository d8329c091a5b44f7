"""half_inverse against an independent float64 NumPy SVD implementation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from phi_hig import half_inverse, InvalidInputError

EPS = np.finfo(np.float64).eps


def reference(J, g, kappa, beta=0.0, tau=0.0, relative=True):
    """Plain NumPy float64 transcription of d = max(σ)^β V Λ^κ Uᵀ g over kept σ."""
    J = np.asarray(J, np.float64)
    g = np.asarray(g, np.float64)
    U, S, Vt = np.linalg.svd(J, full_matrices=False)
    if S[0] == 0:
        return np.zeros(J.shape[1])
    thr = max(tau * S[0] if relative else tau, max(J.shape) * EPS * S[0])
    k = S > thr
    return S[0] ** beta * (Vt[k].T @ (S[k] ** kappa * (U[:, k].T @ g)))


def random_matrix(rng, m, n, kept, dropped):
    """J = Q1 diag(s) Q2ᵀ with prescribed singular values (kept ones first, then the dropped ones)."""
    r = min(m, n)
    s = np.zeros(r)
    s[:len(kept)] = kept
    s[len(kept):len(kept) + len(dropped)] = dropped
    q1, _ = np.linalg.qr(rng.standard_normal((m, r)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return (q1 * s) @ q2.T


def spectrum(rng, r, tau, cond):
    """Kept σ log-spaced in [1/cond, 1], dropped σ well below τ (none sit on the truncation edge)."""
    n_keep = max(1, (2 * r) // 3)
    kept = np.sort(np.logspace(0, -np.log10(cond), n_keep))[::-1]
    dropped = tau * np.logspace(-1, -3, r - n_keep) if r > n_keep else np.zeros(0)
    return kept, dropped


SHAPES = [(12, 30), (30, 12)]
KAPPAS = [-1, -0.5, 0, 0.5, 1]
BETAS = [0.0, -0.5]
TAUS = [1e-2, 1e-4, 1e-6, 1e-8]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('kappa', KAPPAS)
@pytest.mark.parametrize('beta', BETAS)
@pytest.mark.parametrize('tau', TAUS)
def test_svd_path_matches_reference(shape, kappa, beta, tau):
    rng = np.random.default_rng(abs(hash((shape, kappa, beta, tau))) % 2**32)
    m, n = shape
    cond = min(1e8, 0.1 / tau)
    kept, dropped = spectrum(rng, min(m, n), tau, cond)
    J = random_matrix(rng, m, n, kept, dropped)
    g = rng.standard_normal(m)
    d = half_inverse(J, g, kappa, beta, tau, path='svd')
    ref = reference(J, g, kappa, beta, tau)
    tol = max(1e-10, 1e-15 * cond)
    assert np.linalg.norm(d - ref) <= tol * np.linalg.norm(ref)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('kappa', KAPPAS)
@pytest.mark.parametrize('beta', BETAS)
@pytest.mark.parametrize('tau', TAUS)
def test_gram_path_matches_reference(shape, kappa, beta, tau):
    rng = np.random.default_rng(1 + abs(hash((shape, kappa, beta, tau))) % 2**32)
    m, n = shape
    cond = min(1e6, 0.1 / tau)
    kept, dropped = spectrum(rng, min(m, n), tau, cond)
    J = random_matrix(rng, m, n, kept, dropped)
    g = rng.standard_normal(m)
    d, info = half_inverse(J, g, kappa, beta, tau, path='gram', return_info=True)
    assert info.path == ('gram-dual' if n < m else 'gram')
    ref = reference(J, g, kappa, beta, tau)
    assert np.linalg.norm(d - ref) <= max(1e-12, 1e-15 * cond ** 2) * np.linalg.norm(ref)


def test_gram_path_high_condition_accuracy():
    """At kept condition 1e6 the Gram path is still within 1e-15·cond² (measured ≈ 2e-17·cond²)."""
    rng = np.random.default_rng(7)
    for m, n in [(40, 200), (200, 40)]:
        kept = np.logspace(0, -6, 40)
        J = random_matrix(rng, m, n, kept, [])
        g = rng.standard_normal(m)
        d = half_inverse(J, g, -0.5, 0, 1e-7, path='gram')
        ref = reference(J, g, -0.5, 0, 1e-7)
        assert np.linalg.norm(d - ref) <= 1e-3 * np.linalg.norm(ref)


def test_auto_picks_path():
    rng = np.random.default_rng(3)
    J = random_matrix(rng, 10, 20, np.logspace(0, -9, 10), [])
    g = rng.standard_normal(10)
    _, info = half_inverse(J, g, truncation=3e-5, return_info=True)
    assert info.path == 'gram' and info.rank == 5  # σ = 1 … 1e-4 kept
    _, info = half_inverse(J, g, truncation=3e-9, return_info=True)
    assert info.path == 'svd' and info.rank == 9
    _, info = half_inverse(J.T.copy(), rng.standard_normal(20), truncation=1e-6, return_info=True)
    assert info.path == 'gram-dual'


def test_auto_equals_svd_within_gram_accuracy():
    rng = np.random.default_rng(4)
    J = random_matrix(rng, 30, 50, np.logspace(0, -4, 30), [])
    g = rng.standard_normal(30)
    a = half_inverse(J, g, truncation=1e-5)
    s = half_inverse(J, g, truncation=1e-5, path='svd')
    assert np.linalg.norm(a - s) <= 1e-8 * np.linalg.norm(s)


@pytest.mark.parametrize('path', ['svd', 'gram'])
def test_float32_input(path):
    rng = np.random.default_rng(5)
    for m, n in [(20, 50), (50, 20)]:
        J = random_matrix(rng, m, n, np.logspace(0, -2, 15), []).astype(np.float32)
        g = rng.standard_normal(m).astype(np.float32)
        d = half_inverse(J, g, -0.5, 0, 1e-6, path=path)
        assert d.dtype == np.float32
        ref = reference(J.astype(np.float64), g.astype(np.float64), -0.5, 0, 1e-6)
        assert np.linalg.norm(d - ref) <= 2e-4 * np.linalg.norm(ref)


@pytest.mark.parametrize('path', ['svd', 'gram', 'auto'])
def test_gradient_descent_limit(path):
    rng = np.random.default_rng(6)
    for m, n in [(8, 30), (30, 8)]:
        J, g = rng.standard_normal((m, n)), rng.standard_normal(m)
        d = half_inverse(J, g, kappa=1, beta=0, truncation=0, path=path)
        np.testing.assert_allclose(d, J.T @ g, rtol=1e-11, atol=1e-12 * np.abs(J.T @ g).max())


@pytest.mark.parametrize('path', ['svd', 'auto'])
def test_gauss_newton_equals_pinv_on_rank_deficient(path):
    rng = np.random.default_rng(8)
    for m, n, r in [(15, 25, 6), (25, 15, 6), (10, 10, 3)]:
        J = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
        g = rng.standard_normal(m)
        d = half_inverse(J, g, kappa=-1, truncation=0, path=path)
        ref = np.linalg.pinv(J) @ g
        assert np.linalg.norm(d - ref) <= 1e-9 * np.linalg.norm(ref)


def test_gram_truncation_zero_never_amplifies_roundoff():
    rng = np.random.default_rng(9)
    J = rng.standard_normal((20, 3)) @ rng.standard_normal((3, 40))
    g = rng.standard_normal(20)
    d = half_inverse(J, g, kappa=-1, truncation=0, path='gram')
    ref = np.linalg.pinv(J) @ g
    assert np.linalg.norm(d - ref) <= 1e-6 * np.linalg.norm(ref)


@pytest.mark.parametrize('path', ['svd', 'gram', 'auto'])
@pytest.mark.parametrize('kappa', [-1, -0.5, 0, 1])
def test_zero_and_rank_deficient_are_finite(path, kappa):
    d = half_inverse(np.zeros((5, 7)), np.ones(5), kappa=kappa, beta=-0.5, path=path)
    assert np.all(d == 0)
    J = np.zeros((5, 7))
    J[0, 0] = 2.0
    d = half_inverse(J, np.ones(5), kappa=kappa, truncation=0, path=path)
    assert np.all(np.isfinite(d))
    expected = np.zeros(7)
    expected[0] = 2.0 ** kappa
    np.testing.assert_allclose(d, expected, rtol=1e-12)


def test_truncation_discards_not_clamps():
    """A singular value below the threshold contributes exactly zero (not τ·σ_max)."""
    J = np.diag([1.0, 1e-3, 1e-7])
    g = np.ones(3)
    for path in ['svd', 'gram']:
        d = half_inverse(J, g, kappa=-1, truncation=1e-5, path=path)
        np.testing.assert_allclose(d, [1.0, 1e3, 0.0], rtol=1e-9)
    d = half_inverse(J, g, kappa=-1, truncation=1e-2, relative=False, path='svd')
    np.testing.assert_allclose(d, [1.0, 0.0, 0.0])


def test_torch_input_keeps_device_and_dtype():
    rng = np.random.default_rng(10)
    J = torch.tensor(rng.standard_normal((6, 9)), dtype=torch.float32)
    g = torch.tensor(rng.standard_normal(6), dtype=torch.float32)
    d = half_inverse(J, g)
    assert isinstance(d, torch.Tensor) and d.dtype == torch.float32 and d.device == J.device
    ref = reference(J.double().numpy(), g.double().numpy(), -0.5, 0, 1e-6)
    assert np.linalg.norm(d.double().numpy() - ref) <= 2e-4 * np.linalg.norm(ref)


def test_phiml_tensor_input():
    from phiml import math
    from phiml.math import batch, channel, instance
    rng = np.random.default_rng(11)
    Jn = rng.standard_normal((4, 3, 10))
    gn = rng.standard_normal((4, 3))
    J = math.wrap(Jn, batch('b'), channel('y'), instance('params'))  # wrap keeps float64
    g = math.wrap(gn, batch('b'), channel('y'))
    d = half_inverse(J, g, kappa=-0.5, truncation=1e-6)
    assert d.shape.names == ('params',)
    ref = reference(Jn.reshape(12, 10), gn.reshape(12), -0.5, 0, 1e-6)
    assert d.dtype.precision == 64
    with math.precision(64):  # PhiML converts natives to the context precision
        np.testing.assert_allclose(d.numpy('params'), ref, rtol=1e-9)
    with pytest.raises(InvalidInputError, match='row dims'):
        half_inverse(J, math.tensor(rng.standard_normal(4), batch('b')) * math.ones(channel(y=2)))


def test_bad_inputs_raise():
    J, g = np.ones((3, 4)), np.ones(3)
    Jnan = J.copy(); Jnan[1, 2] = np.nan
    with pytest.raises(InvalidInputError, match='J contains 1 non-finite'):
        half_inverse(Jnan, g)
    with pytest.raises(InvalidInputError, match='g contains'):
        half_inverse(J, np.array([1, np.inf, 0.]))
    with pytest.raises(InvalidInputError, match=r'g must have shape \(3,\)'):
        half_inverse(J, np.ones(4))
    with pytest.raises(InvalidInputError, match='J must be 2-D'):
        half_inverse(np.ones((3, 4, 1)), g)
    with pytest.raises(InvalidInputError, match='kappa'):
        half_inverse(J, g, kappa=1.5)
    with pytest.raises(InvalidInputError, match='kappa'):
        half_inverse(J, g, kappa=-1.01)
    with pytest.raises(InvalidInputError, match='truncation'):
        half_inverse(J, g, truncation=-1e-6)
    with pytest.raises(InvalidInputError, match='truncation'):
        half_inverse(J, g, truncation=float('nan'))
    with pytest.raises(InvalidInputError, match='path'):
        half_inverse(J, g, path='qr')
    with pytest.raises(InvalidInputError, match='beta'):
        half_inverse(J, g, beta=float('inf'))
    with pytest.raises(InvalidInputError, match='floating-point'):
        half_inverse(np.ones((3, 4), dtype=int), g)
    with pytest.raises(ValueError):  # InvalidInputError is a ValueError
        half_inverse(J, g, kappa=2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 16), n=st.integers(1, 16), log_scale=st.floats(-3, 3), seed=st.integers(0, 2**31 - 1),
       kappa=st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), path=st.sampled_from(['svd', 'auto']))
def test_property_matches_reference_and_scales(m, n, log_scale, seed, kappa, path):
    rng = np.random.default_rng(seed)
    r = min(m, n)
    kept = np.logspace(0, -3, r) * 10 ** log_scale
    J = random_matrix(rng, m, n, kept, [])
    g = rng.standard_normal(m)
    d = half_inverse(J, g, kappa, 0.0, 1e-6, path=path)
    ref = reference(J, g, kappa, 0.0, 1e-6)
    assert np.linalg.norm(d - ref) <= 1e-8 * np.linalg.norm(ref) + 1e-300
    # relative truncation makes the step homogeneous of degree κ + β in J
    c = 7.0
    d_scaled = half_inverse(c * J, g, kappa, -0.5, 1e-6, path=path)
    d_base = half_inverse(J, g, kappa, -0.5, 1e-6, path=path)
    assert np.linalg.norm(d_scaled - c ** (kappa - 0.5) * d_base) <= 1e-8 * np.linalg.norm(d_scaled) + 1e-300
