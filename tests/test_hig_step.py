"""hig_step and the HIG optimizer against a NumPy float64 SVD of a brute-force Jacobian."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from phi_hig import HIG, hig_step, HIGUsageError, NonFiniteStepError, InvalidInputError

from test_half_inverse import reference
from test_jacobian import brute_force_jacobian, mlp, nonlinear_physics, TiedAutoencoder


def flat_params(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).numpy().copy()


def per_sample_loss(y, target):
    return 0.5 * ((y - target) ** 2).sum(-1)


def expected_update(net, x, target, simulate, kappa, beta, tau, lr):
    J = brute_force_jacobian(net, x, simulate).numpy()
    y = simulate(net(x)).detach().numpy()
    g = ((y - target.numpy()) / x.shape[0]).reshape(-1)  # gradient of the batch-mean loss
    return -lr * reference(J, g, kappa, beta, tau)


@pytest.mark.parametrize('sizes,batch,path', [
    ([3, 8, 6, 4], 4, 'gram'),    # |θ| = 114 > b·|y| = 12: Gram path, J never formed
    ([3, 3, 4], 20, 'dual'),      # |θ| = 28 < b·|y| = 60: dual path
    ([3, 8, 6, 4], 4, 'svd'),
    ([3, 3, 4], 20, 'svd'),
    ([3, 8, 6, 4], 4, 'auto'),
    ([3, 3, 4], 20, 'auto'),
])
@pytest.mark.parametrize('kappa,beta', [(-0.5, 0.0), (-1.0, 0.0), (-0.5, -0.5), (1.0, 0.0)])
def test_update_matches_reference(sizes, batch, path, kappa, beta):
    net = mlp(sizes, nn.Tanh, seed=4)
    torch.manual_seed(5)
    x = torch.randn(batch, sizes[0], dtype=torch.float64)
    target = torch.randn(batch, 3, dtype=torch.float64)
    tau, lr = 1e-5, 0.7
    before = flat_params(net)
    expected = expected_update(net, x, target, nonlinear_physics, kappa, beta, tau, lr)
    opt = HIG(net, learning_rate=lr, truncation=tau, kappa=kappa, beta=beta, path=path)
    info = hig_step(net, opt, x, target, nonlinear_physics, per_sample_loss)
    step = flat_params(net) - before
    assert np.linalg.norm(step - expected) <= 1e-6 * np.linalg.norm(expected)
    if path == 'gram' or (path == 'auto' and sizes[1] == 8):
        assert info.path == 'gram+structured'
    if path == 'dual' or (path == 'auto' and sizes[1] == 3):
        assert info.path == 'gram-dual'
    assert info.rank == len(info.singular_values) > 0
    assert info.time_total >= info.time_linalg >= 0


def test_tied_decoder_step_matches_reference():
    """The default HIG(net) on a decoder tied to its encoder (F.linear(h, enc.weight.t(), b)): the step of the
    exact Jacobian, not of the encoder's own use of its weight alone."""
    torch.manual_seed(6)
    net = TiedAutoencoder().double()
    x, target = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    before = flat_params(net)
    expected = expected_update(net, x, target, nonlinear_physics, -0.5, 0.0, 1e-5, 0.7)
    hig_step(net, HIG(net, learning_rate=0.7, truncation=1e-5), x, target, nonlinear_physics, per_sample_loss)
    step = flat_params(net) - before
    assert np.linalg.norm(step - expected) <= 1e-6 * np.linalg.norm(expected)

def test_float32_network_update_close_to_float64_reference():
    net = mlp([2, 16, 16, 2], nn.Tanh, seed=6).float()
    x = torch.randn(32, 2)
    target = torch.randn(32, 2)
    sim = lambda z: torch.stack([z[:, 0], 0.01 * z[:, 1]], -1)
    net64 = mlp([2, 16, 16, 2], nn.Tanh, seed=6)
    expected = expected_update(net64, x.double(), target.double(), sim, -0.5, 0, 1e-3, 1.0)
    before = flat_params(net)
    hig_step(net, HIG(net, 1.0, 1e-3), x, target, sim, per_sample_loss)
    step = flat_params(net) - before
    assert np.linalg.norm(step - expected) <= 1e-3 * np.linalg.norm(expected)


def test_plain_step_raises_usage_error():
    net = nn.Linear(2, 2)
    opt = HIG(net)
    net(torch.randn(3, 2)).sum().backward()
    with pytest.raises(HIGUsageError, match='hig_step'):
        opt.step()


def test_state_dict_and_scheduler():
    net = nn.Linear(2, 2)
    opt = HIG(net, learning_rate=0.5, truncation=1e-5, kappa=-1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    with pytest.warns(UserWarning, match='before `optimizer.step'):  # no step yet: torch's warning is right
        sched.step()
    assert opt.param_groups[0]['lr'] == pytest.approx(0.05)
    state = opt.state_dict()
    opt2 = HIG(net)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]['lr'] == pytest.approx(0.05)
    assert opt2.settings.kappa == -1 and opt2.settings.truncation == 1e-5


def test_state_dict_carries_the_settings_outside_the_groups(tmp_path):
    """max_bytes, chunk_rows and structured survive a (weights-only) checkpoint round trip; a state without them
    (an earlier release) keeps the current values; invalid values are refused before anything changes."""
    net = nn.Linear(2, 2)
    torch.save(HIG(net, learning_rate=0.3, max_bytes=1e6, chunk_rows=7, structured=False).state_dict(),
               tmp_path / 'opt.pt')
    state = torch.load(tmp_path / 'opt.pt', weights_only=True)
    opt = HIG(net)
    opt.load_state_dict(state)
    assert (opt.max_bytes, opt.chunk_rows, opt.structured, opt.param_groups[0]['lr']) == (1e6, 7, False, 0.3)
    old = {k: v for k, v in state.items() if k != 'hig'}
    opt = HIG(net, chunk_rows=5, structured=True)
    opt.load_state_dict(old)
    assert (opt.max_bytes, opt.chunk_rows, opt.structured, opt.param_groups[0]['lr']) == (4 * 1024 ** 3, 5, True, 0.3)
    for bad, match in [({'chunk_rows': 0}, 'chunk_rows'), ({'structured': 'yes'}, 'structured'),
                       ({'max_bytes': -1}, 'max_bytes'), ({'chunks': 3}, r"state_dict\['hig'\]")]:
        opt = HIG(net, learning_rate=0.5)
        with pytest.raises(InvalidInputError, match=match):
            opt.load_state_dict(dict(state, hig=dict(state['hig'], **bad)))
        assert (opt.max_bytes, opt.chunk_rows, opt.structured, opt.param_groups[0]['lr']) == \
            (4 * 1024 ** 3, 16384, None, 0.5)


def test_scheduler_after_hig_step_does_not_warn():
    """hig_step is the optimizer's step for torch's schedulers: stepping one after it gives no warning about the
    order; stepping one before any hig_step still does."""
    net, x = nn.Linear(2, 2), torch.randn(4, 2)
    opt = HIG(net, learning_rate=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            hig_step(net, opt, x, x, None, per_sample_loss)
            sched.step()
    assert not [w for w in caught if 'lr_scheduler' in str(w.message)]
    assert opt.param_groups[0]['lr'] == 0.125
    opt = HIG(net, learning_rate=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with pytest.warns(UserWarning, match='before `optimizer.step'):
        sched.step()



def test_method_is_the_deprecated_name_of_path():
    """``HIG(method=)`` and ``half_inverse(method=)`` warn and mean ``path``; giving both is refused; a state saved
    before the rename (settings key 'method') loads, and its path is the one the next step takes."""
    net = nn.Linear(2, 2)
    with pytest.warns(DeprecationWarning, match="path='svd'"):
        assert HIG(net, method='svd').settings.path == 'svd'
    with pytest.raises(InvalidInputError, match="give path only"):
        HIG(net, path='gram', method='svd')
    with pytest.raises(InvalidInputError, match="give path only"):
        HIG(net, path='auto', method='svd')  # an explicit 'auto' is a given path too
    from phi_hig import half_inverse
    J, g = np.array([[2.0, 0.0], [0.0, 0.5]]), np.array([1.0, 1.0])
    with pytest.warns(DeprecationWarning, match='half_inverse'):
        d = half_inverse(J, g, kappa=-1, method='gram')
    np.testing.assert_allclose(d, [0.5, 2.0])  # J⁻¹g of a diagonal J
    old = HIG(net, learning_rate=0.25, path='svd').state_dict()
    for group in old['param_groups']:  # what the previous release saved: the path under the key 'method'
        group['method'] = group.pop('path')
    opt = HIG(net)
    opt.load_state_dict(old)
    assert 'method' not in opt.param_groups[0] and opt.settings.path == 'svd' and opt.param_groups[0]['lr'] == 0.25
    x, target = torch.randn(3, 2), torch.randn(3, 2)
    assert hig_step(net, opt, x, target, None, per_sample_loss).path == 'svd'

def test_invalid_settings():
    net = nn.Linear(2, 2)
    with pytest.raises(InvalidInputError, match='kappa'):
        HIG(net, kappa=-2)
    with pytest.raises(InvalidInputError, match='truncation'):
        HIG(net, truncation=float('nan'))
    with pytest.raises(InvalidInputError, match='learning_rate'):
        HIG(net, learning_rate=-1)
    with pytest.raises(InvalidInputError, match='path'):
        HIG(net, path='fast')


def test_non_finite_step_leaves_weights_untouched():
    net = mlp([2, 5, 2], nn.Tanh, seed=7)
    x = torch.randn(6, 2, dtype=torch.float64)
    opt = HIG(net)
    before = flat_params(net)
    target = torch.randn(6, 2, dtype=torch.float64)
    target[2, 1] = float('nan')
    with pytest.raises(NonFiniteStepError, match='loss'):
        hig_step(net, opt, x, target, None, per_sample_loss)
    assert np.array_equal(flat_params(net), before)
    with pytest.raises(NonFiniteStepError):
        hig_step(net, opt, x, torch.zeros(6, 2, dtype=torch.float64), lambda z: z * float('inf'), per_sample_loss)
    assert np.array_equal(flat_params(net), before)


def test_loss_must_be_per_sample():
    net = mlp([2, 5, 2], nn.Tanh)
    with pytest.raises(InvalidInputError, match='one value per example'):
        hig_step(net, HIG(net), torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64), None,
                 lambda y, t: ((y - t) ** 2).sum())


def test_phiml_dense_net():
    """20 HIG steps on PhiML's float32 `dense_net` divide the loss by ≥ 10. Measured first/final over seeds 0–4:
    58.7, 51.0, 80.1, 52.8, 56.9 (worst 51.0 under every kernel setting of the README, 5× the threshold); gradient
    descent (κ = 1, same η) reaches 1.3–1.7. (The former check, loss[-1] < loss[0] over 5 steps, had ratios 1.25–1.9.)"""
    from phi.torch.nets import dense_net
    torch.manual_seed(0)
    net = dense_net(2, 3, [8, 8], activation='tanh')
    assert isinstance(net, nn.Module)
    x = torch.randn(10, 2)
    target = torch.randn(10, 3)
    opt = HIG(net, learning_rate=1.0, truncation=1e-6)
    first = per_sample_loss(net(x), target).mean().item()
    for _ in range(20):
        hig_step(net, opt, x, target, None, per_sample_loss)
    assert first / per_sample_loss(net(x), target).mean().item() >= 10


def test_hig_trains_ill_conditioned_toy():
    """Toy of the HIG paper at γ = 0.01 (γ inside the physics), float64: 2000 HIG steps cut the loss by ≥ 6x.

    No exact trajectory matters: measured first/final over seeds 0–4: 53.7, 50.2, 72.1, 23.2, 24.3; under
    MKL_CBWR=COMPATIBLE/AVX2, ATEN_CPU_CAPABILITY=default, OPENBLAS_CORETYPE=Haswell and 1 or 2 threads seed 0
    ranges 43.0–54.7 and the worst seed stays at 23.2, 3.9× the threshold (seeds 5–9: ≥ 26). Gradient descent
    (κ = 1, same η and steps) reaches 1.2–2.1 or diverges, so the test fails for an update that is not
    half-inverted. (The former 500 float32 steps ended at ratios 4.1–5.6 against a threshold of 5: seed 0 failed
    on AMD EPYC.)
    """
    torch.manual_seed(0)
    x = torch.rand(1024, 1, dtype=torch.float64) * 2 - 1
    target = torch.cat([torch.sin(6 * x), torch.cos(9 * x)], 1)
    sim = lambda z: torch.stack([z[:, 0], 0.01 * z[:, 1]], -1)
    net = nn.Sequential(nn.Linear(1, 7), nn.Tanh(), nn.Linear(7, 2)).double()
    opt = HIG(net, 1.0, 1e-6)
    first = per_sample_loss(sim(net(x)), target).mean().item()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, several are slow on a loaded machine
    try:
        for _ in range(2000):
            idx = torch.randint(0, 1024, (256,))
            hig_step(net, opt, x[idx], target[idx], sim, per_sample_loss)
    finally:
        torch.set_num_threads(threads)
    assert first / per_sample_loss(sim(net(x)), target).mean().item() >= 6
