"""All-or-nothing HIG steps and refused settings: whatever state the optimizer is in, a failed step changes nothing."""

import numpy as np
import pytest
import torch
from torch import nn

from phi_hig import HIG, hig_step, half_inverse, InvalidInputError, NonFiniteStepError, PhiHigError
from phi_hig.hig import DenseJacobian, HalfInverse, apply_half_inverse

from test_half_inverse import reference, random_matrix


def _problem(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)
    x = torch.randn(6, 2, dtype=dtype)
    t = torch.randn(6, 2, dtype=dtype)
    return net, x, t


def _loss(y, t):
    return 0.5 * ((y - t) ** 2).sum(1)


def _state(net, opt):
    return [p.detach().clone() for p in net.parameters()], [None if p.grad is None else p.grad.clone()
                                                          for p in net.parameters()]


def _unchanged(net, before):
    weights, grads = before
    assert all(torch.equal(p, w) for p, w in zip(net.parameters(), weights))


# a scheduler multiplies the base lr by its factor, so True becomes the number 0.5 there: not a bad value
@pytest.mark.parametrize('how,bad', [(how, bad) for how in ('param_groups', 'load_state_dict', 'scheduler')
                                     for bad in (float('nan'), float('inf'), -0.1, True)
                                     if not (how == 'scheduler' and bad is True)])
def test_invalid_learning_rate_reaching_param_groups_is_refused_before_any_change(how, bad):
    net, x, t = _problem()
    opt = HIG(net, learning_rate=0.5)
    if how == 'param_groups':
        opt.param_groups[0]['lr'] = bad
    elif how == 'load_state_dict':
        state = opt.state_dict()
        state['param_groups'][0]['lr'] = bad
        opt.load_state_dict(state)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch == 0 else bad)
        sched.step()
    before = _state(net, opt)
    with pytest.raises(InvalidInputError, match=r"param_groups\[0\]\['lr'\] must be a finite number >= 0"):
        hig_step(net, opt, x, t, None, _loss)
    _unchanged(net, before)


def test_second_param_group_checked_too():
    net, x, t = _problem()
    opt = HIG([{'params': [net[0].weight, net[0].bias]}, {'params': [net[2].weight, net[2].bias], 'lr': 0.1}])
    opt.param_groups[1]['lr'] = float('nan')
    before = _state(net, opt)
    with pytest.raises(InvalidInputError, match=r"param_groups\[1\]"):
        hig_step(net, opt, x, t, None, _loss)
    _unchanged(net, before)


def test_update_overflowing_the_parameter_dtype_raises_and_changes_nothing():
    net, x, t = _problem(torch.float32)
    opt = HIG(net, learning_rate=1e300, kappa=-1.0)  # lr·d beyond float32's 3.4e38, finite in float64
    before = _state(net, opt)
    with pytest.raises(NonFiniteStepError, match='not finite in the parameters'):
        hig_step(net, opt, x, t, None, _loss)
    _unchanged(net, before)


@pytest.mark.parametrize('scale', [1e-170, 1e-100, 1e100, 1e160])
@pytest.mark.parametrize('shape', [(8, 20), (20, 8)])
@pytest.mark.parametrize('path', ['auto', 'gram', 'dual', 'svd'])
def test_full_rank_jacobian_at_any_scale_gives_the_svd_answer(scale, shape, path):
    """d(s·J) = s^(κ+β)·d(J) on every path: half_inverse divides a given J by an exact power of two first
    (1e-170: its Gram entries would underflow to 0; 1e160: overflow to inf)."""
    rng = np.random.default_rng(1)
    J = random_matrix(rng, *shape, np.logspace(0, -3, min(shape)), [])
    g = rng.standard_normal(shape[0])
    kappa, beta = -0.5, -0.25
    expected = scale ** (kappa + beta) * reference(J, g, kappa, beta, 1e-6)
    d, info = half_inverse(scale * J, g, kappa, beta, 1e-6, path=path, return_info=True)
    assert np.all(np.isfinite(d))
    assert np.linalg.norm(d - expected) <= 1e-9 * np.linalg.norm(expected)
    assert info.sigma_max == pytest.approx(scale, rel=1e-9)


@pytest.mark.parametrize('scale', [1e-170, 1e160])
def test_the_core_falls_back_to_the_normalized_svd_when_an_operators_gram_under_or_overflows(scale):
    """An operator (here a dense one, not normalized) whose float64 Gram matrix is out of range: 'auto' takes the
    SVD path of its matrix, normalized, and gives the right answer."""
    rng = np.random.default_rng(1)
    J = random_matrix(rng, 8, 20, np.logspace(0, -3, 8), [])
    g = rng.standard_normal(8)
    expected = scale ** -0.75 * reference(J, g, -0.5, -0.25, 1e-6)
    d, info = apply_half_inverse(HalfInverse(-0.5, -0.25, 1e-6), DenseJacobian(torch.from_numpy(scale * J)),
                                 torch.from_numpy(g))
    assert info.path == 'svd' and 'under- or overflows' in info.fallback
    assert np.linalg.norm(d.numpy() - expected) <= 1e-9 * np.linalg.norm(expected)


def test_a_result_whose_true_value_overflows_raises():
    with pytest.raises(NonFiniteStepError, match='overflows'):
        half_inverse(4 * np.eye(3), np.ones(3), kappa=-0.5, beta=1000.0)  # 4^999.5 overflows float64
    d = half_inverse(1e-100 * np.eye(3), np.ones(3), kappa=1.0, beta=-3.5)  # 1e250: representable
    assert np.allclose(d, 1e250 * np.ones(3), rtol=1e-12)


def test_absolute_truncation_scales_with_j():
    """An absolute τ applies to the σ of the given J, also on the normalized SVD path."""
    rng = np.random.default_rng(2)
    J = random_matrix(rng, 6, 9, np.array([1.0, 0.5, 1e-3, 1e-4]), [])
    g = rng.standard_normal(6)
    for scale in (1e-170, 1.0, 1e160):
        d = half_inverse(scale * J, g, -1.0, 0.0, 2e-3 * scale, relative=False)
        expected = reference(scale * J, g, -1.0, 0.0, 2e-3 * scale, relative=False) if scale == 1.0 else \
            reference(J, g, -1.0, 0.0, 2e-3, relative=False) / scale
        assert np.linalg.norm(d - expected) <= 1e-9 * np.linalg.norm(expected)


def test_forced_gram_path_of_an_operator_at_overflowing_scale_says_what_to_use():
    J = torch.eye(4, dtype=torch.float64) * 1e160
    with pytest.raises(NonFiniteStepError, match="use path='auto' or 'svd'"):
        apply_half_inverse(HalfInverse(path='gram'), DenseJacobian(J), torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize('kwargs,match', [(dict(max_bytes='big'), 'max_bytes must be a finite number > 0'),
                                          (dict(max_bytes=-1), 'max_bytes must be a finite number > 0'),
                                          (dict(max_bytes=float('nan')), 'max_bytes must be a finite number > 0'),
                                          (dict(return_info='no'), 'return_info must be True or False')])
def test_half_inverse_refuses_bad_keyword_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        half_inverse(np.eye(3), np.ones(3), **kwargs)


def test_float32_result_that_overflows_raises():
    J = (np.eye(3) * 1e-30).astype(np.float32)
    g = np.full(3, 1e10, np.float32)
    with pytest.raises(NonFiniteStepError, match='overflows float32'):
        half_inverse(J, g, kappa=-1.0, truncation=0)


@pytest.mark.parametrize('kwargs,match', [
    (dict(kappa=True), 'kappa must be a finite number >= -1 and <= 1'),
    (dict(kappa=-1.5), 'kappa must be a finite number >= -1 and <= 1'),
    (dict(beta=float('inf')), 'beta must be a finite number'),
    (dict(truncation=1.0), 'truncation must be a finite number >= 0 and < 1'),
    (dict(truncation=-1e-3), 'truncation'),
    (dict(truncation=True), 'truncation'),
    (dict(relative=1), 'relative must be True or False'),
    (dict(path='fast'), "path must be one of 'auto', 'gram', 'dual', 'svd'"),
])
def test_invalid_settings_are_refused_naming_the_setting(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        HalfInverse(**kwargs)
    with pytest.raises(InvalidInputError, match=match):
        HIG(nn.Linear(2, 2), **kwargs)


def test_numpy_scalars_are_numbers():
    s = HalfInverse(np.float32(-0.5), np.float64(0.0), np.float64(1e-5))
    assert s.kappa == -0.5 and isinstance(s.kappa, float)
    opt = HIG(nn.Linear(2, 2), learning_rate=np.float32(0.5), truncation=np.float64(1e-4))
    assert opt.param_groups[0]['lr'] == 0.5


@pytest.mark.parametrize('kwargs,match', [
    (dict(max_bytes=0), 'max_bytes must be a finite number > 0'),
    (dict(max_bytes=-5), 'max_bytes'),
    (dict(chunk_rows=0), 'chunk_rows must be an integer'),
    (dict(learning_rate=float('nan')), 'learning_rate must be a finite number >= 0'),
    (dict(structured='yes'), 'structured must be None, True or False'),
])
def test_invalid_optimizer_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        HIG(nn.Linear(2, 2), **kwargs)


def test_empty_batch_is_refused():
    net, _, _ = _problem()
    with pytest.raises(InvalidInputError, match='at least one example'):
        hig_step(net, HIG(net), torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, 2), None, _loss)


def test_non_finite_network_weights_raise_and_change_nothing():
    net, x, t = _problem()
    with torch.no_grad():
        net[0].weight[0, 0] = float('nan')
    opt = HIG(net)
    before = _state(net, opt)
    with pytest.raises(NonFiniteStepError):
        hig_step(net, opt, x, t, None, _loss)
    assert all(torch.equal(p, w) or (torch.isnan(p) == torch.isnan(w)).all() for p, w in zip(net.parameters(),
                                                                                             before[0]))


def test_every_refusal_is_a_phi_hig_error():
    assert issubclass(InvalidInputError, PhiHigError) and issubclass(NonFiniteStepError, PhiHigError)


@pytest.mark.parametrize('net,match', [(np.zeros(3), 'torch.nn.Module or an iterable'),
                                       (lambda x: x, 'torch.nn.Module or an iterable'),
                                       ([], 'no parameters'), ([np.zeros(2)], 'torch tensors as parameters'),
                                       ([{'params': []}], 'parameter group without tensors')])
def test_hig_refuses_what_is_not_torch_parameters(net, match):
    with pytest.raises(InvalidInputError, match=match):
        HIG(net)


def test_integer_inputs_and_a_loss_without_gradient_are_refused_before_any_change():
    net, x, t = _problem()
    opt = HIG(net)
    before = _state(net, opt)
    with pytest.raises(InvalidInputError, match='floating-point'):
        hig_step(net, opt, x.long(), t, None, _loss)
    with pytest.raises(InvalidInputError, match='not differentiable in y'):
        hig_step(net, opt, x, t, None, lambda y, t: _loss(y.detach(), t))
    _unchanged(net, before)
