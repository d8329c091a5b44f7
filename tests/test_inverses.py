"""Generic inverse updates of phi_hig.inverses: convergence against analytic solutions, agreement with
`half_inverse`, and the refusals of their settings and inputs."""
import time
import numpy as np
import pytest
import torch

from phi_hig import inverses
from phi_hig.errors import InvalidInputError, PhiHigError
from phi_hig.sip import l2_loss
from test_sip import rotated_sine


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# ----------------------------------------------------------------------------------------- generic inverses

def test_newton_converges_quadratically_on_exp():
    forward = torch.exp
    y_target = torch.tensor([[1.], [0.3], [1e-3]])
    x_star = torch.log(y_target)
    x = x_star + 0.4
    inverse = inverses.newton(forward)
    errors = [(x - x_star).abs()]
    for _ in range(6):
        x = x + inverse(x, y_target)
        errors.append((x - x_star).abs())
    errors = torch.cat(errors, dim=1)  # (examples, iterations)
    assert errors[:, -1].max() <= 1e-14
    for e_now, e_next in zip(errors.T[:-1], errors.T[1:]):
        active = e_now > 1e-6
        assert torch.all(e_next[active] <= 2. * e_now[active] ** 2), (e_now, e_next)  # |L'''/(2L'')| = 1.5 at x*


def test_newton_update_matches_hand_derived_formula_on_exp():
    x, y_target = torch.tensor([[0.2], [-1.]]), torch.tensor([[0.5], [0.9]])
    ex = torch.exp(x)
    expected = -ex * (ex - y_target) / (ex * (2 * ex - y_target))  # −L'/L'' for L = ½(eˣ − y*)²
    assert torch.allclose(inverses.newton(torch.exp)(x, y_target), expected)


@pytest.mark.parametrize('phi', [0., np.pi / 4])
def test_saddle_free_newton_is_scale_invariant_on_rotated_sine(phi):
    """Iterations to converge do not grow with the conditioning ξ. Measured over generator seeds 0–4, φ = 0 and 45°,
    ξ = 1, 8, 32 (float64; the same under MKL_CBWR=COMPATIBLE/AVX2, ATEN_CPU_CAPABILITY=default, 1 and 2 threads):
    every start converges, in at most 25 iterations (the budget of 75 is 3× that); medians 6 (φ = 0) and 5 (45°)
    and 99 % quantiles 14–16 are the same for every ξ."""
    generator = torch.Generator().manual_seed(3)
    x_star = (torch.rand(1000, 2, generator=generator) * 2 - 1) * 3
    x_start = (torch.rand(1000, 2, generator=generator) * 2 - 1) * 3
    counts = {}
    for xi in (1., 8., 32.):
        forward = rotated_sine(xi, phi)
        y_star, x = forward(x_star), x_start.clone()
        inverse = inverses.saddle_free_newton(forward)
        converged_at = torch.full((1000,), -1)
        for iteration in range(76):
            y = forward(x)
            done = ((y[:, 0] - y_star[:, 0]).abs() * xi <= 1e-8) & ((y[:, 1] - y_star[:, 1]).abs() / xi <= 1e-8)
            converged_at = torch.where((converged_at < 0) & done, torch.tensor(iteration), converged_at)
            if iteration < 75:
                x = x + inverse(x, y_star)
        assert (converged_at >= 0).float().mean() >= 0.99, xi
        counts[xi] = converged_at[converged_at >= 0].float()
    for xi in (8., 32.):
        assert counts[xi].median() <= counts[1.].median()
        assert torch.quantile(counts[xi], 0.99) <= torch.quantile(counts[1.], 0.99) + 2


def test_saddle_free_newton_caps_steps_along_flat_directions():
    forward = rotated_sine(1., 0.)
    x = torch.tensor([[np.pi / 2 - 1e-9, 0.]])  # sin is flat: H ≈ 0 along x₁
    step = inverses.saddle_free_newton(forward, max_step=0.5)(x, torch.tensor([[-0.5, 0.]]))
    assert step.abs().max() <= 0.5 + 1e-12


def test_gauss_newton_matches_half_inverse_per_example():
    from phi_hig.hig import half_inverse
    rng = np.random.default_rng(4)
    jac = rng.normal(size=(5, 6, 4))
    jac[1, :, 3] = jac[1, :, 0] * 2  # rank-deficient example
    jac[2] *= np.array([1, 1e-3, 1e-8, 1])  # a singular value below the truncation
    rhs = rng.normal(size=(5, 6))
    batched = inverses.pseudo_inverse_apply(torch.tensor(jac), torch.tensor(rhs), truncation=1e-6).numpy()
    for b in range(5):
        expected = np.asarray(half_inverse(jac[b], rhs[b], kappa=-1., truncation=1e-6))
        assert np.allclose(batched[b], expected, rtol=1e-9, atol=1e-12), b


def test_generic_inverses_take_conditions_by_position_and_by_name():
    """forward(x, a, *, k) with a per-example a (its rows repeated with x in the Jacobian pass) and a shared k:
    the Gauss–Newton step equals NumPy's pseudo-inverse of the per-example Jacobian from torch.autograd; the other
    inverses give the same step for a by position and by name."""
    torch.manual_seed(9)
    x, a, t = torch.rand(5, 3) + 0.2, torch.rand(5, 2) + 0.5, torch.rand(5, 4)

    def forward(x, a, *, k):
        return k * torch.cat([torch.sin(x[:, :2] * a), x[:, 1:] ** 2 * a[:, :1]], 1)
    dx = inverses.gauss_newton(forward, truncation=1e-12)(x, t, a, k=2.0)
    for i in range(5):
        J = torch.autograd.functional.jacobian(lambda xi: forward(xi[None], a[i:i + 1], k=2.0)[0], x[i]).numpy()
        residual = (t[i] - forward(x[i:i + 1], a[i:i + 1], k=2.0)[0]).numpy()
        assert np.allclose(dx[i].numpy(), np.linalg.pinv(J, rcond=1e-12) @ residual, rtol=1e-9, atol=1e-12), i
    for build in (inverses.gauss_newton, inverses.gradient_descent, inverses.saddle_free_newton):
        assert torch.allclose(build(forward)(x, t, a, k=2.0), build(forward)(x, t, a=a, k=2.0), rtol=1e-14, atol=0)


def test_gauss_newton_solves_a_linear_problem_in_one_step():
    matrix = torch.tensor([[2., 1.], [0., 3.], [1., -1.]])
    forward = lambda x: x @ matrix.T
    x_star = torch.tensor([[1., -2.], [0.5, 0.3]])
    x = torch.zeros(2, 2)
    x = x + inverses.gauss_newton(forward)(x, forward(x_star))
    assert torch.allclose(x, x_star, atol=1e-12)


def test_iterative_lbfgs_update_reduces_the_loss_and_converges_with_more_iterations():
    scale = torch.tensor([1., 10.])
    forward = lambda x: x * scale
    x_star = torch.tensor([[1., -2.], [0.5, 0.3], [-1., 1.]])
    y_star, x = forward(x_star), torch.zeros(3, 2)
    before = l2_loss(forward(x), y_star)
    one = x + inverses.iterative(forward, iterations=1)(x, y_star)
    assert torch.all(l2_loss(forward(one), y_star) < before)
    many = x + inverses.iterative(forward, iterations=50)(x, y_star)
    assert torch.allclose(many, x_star, atol=1e-5)


def test_bad_inputs_raise_naming_the_argument():
    inverse = inverses.newton(torch.exp)
    with pytest.raises(InvalidInputError, match='y_target has 2 examples but x has 3'):
        inverse(torch.zeros(3, 1), torch.ones(2, 1))
    with pytest.raises(InvalidInputError, match='x contains non-finite'):
        inverse(torch.tensor([[float('nan')]]), torch.ones(1, 1))


# ------------------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize('value', [float('nan'), float('inf'), 0., -1., True, '1'])
def test_gradient_descent_refuses_a_learning_rate_that_is_not_a_finite_positive_number(value):
    with pytest.raises(InvalidInputError, match='learning_rate must be a finite number > 0'):
        inverses.gradient_descent(torch.exp, learning_rate=value)


@pytest.mark.parametrize('value', [0., -1., float('inf'), float('nan'), True])
def test_saddle_free_newton_refuses_a_max_step_that_is_not_finite_and_positive(value):
    with pytest.raises(InvalidInputError, match='max_step must be a finite number > 0'):
        inverses.saddle_free_newton(torch.exp, max_step=value)


@pytest.mark.parametrize('kwargs, match', [
    (dict(truncation=-1e-6), 'truncation must be a finite number >= 0 and < 1'),
    (dict(truncation=float('nan')), 'truncation must be'),
    (dict(truncation=1.), 'truncation must be a finite number >= 0 and < 1'),  # relative: would discard everything
    (dict(truncation=True), 'truncation must be'),
    (dict(truncation=-1., relative=False), 'truncation must be a finite number >= 0'),
    (dict(relative='yes'), 'relative must be True or False'),
])
def test_gauss_newton_refuses_bad_truncation_settings(kwargs, match):
    forward = lambda x: 2 * x
    with pytest.raises(InvalidInputError, match=match):
        inverses.gauss_newton(forward, **kwargs)
    with pytest.raises(InvalidInputError, match=match):
        inverses.pseudo_inverse_apply(torch.eye(2)[None], torch.ones(1, 2), **kwargs)


def test_gauss_newton_accepts_an_absolute_truncation_above_one():
    forward = lambda x: 2 * x
    dx = inverses.gauss_newton(forward, truncation=1.5, relative=False)(torch.zeros(1, 2), torch.ones(1, 2))
    assert torch.allclose(dx, torch.full((1, 2), 0.5))  # σ = 2 > 1.5 is kept: J⁺r = r/2


@pytest.mark.parametrize('kwargs, match', [
    (dict(iterations=0), 'iterations must be an integer >= 1'),
    (dict(iterations=2.), 'iterations must be an integer >= 1'),
    (dict(iterations=True), 'iterations must be an integer >= 1'),
    (dict(method='LBFGS'), "method must be one of 'L-BFGS-B', 'BFGS', 'CG', 'GD'"),
])
def test_iterative_refuses_bad_settings_when_built(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        inverses.iterative(lambda x: x, **kwargs)


def test_factories_refuse_a_forward_that_is_not_callable():
    for build in (inverses.gradient_descent, inverses.newton, inverses.saddle_free_newton, inverses.gauss_newton,
                  inverses.iterative):
        with pytest.raises(InvalidInputError, match='forward must be a callable'):
            build('exp')


def test_newton_on_a_singular_hessian_names_the_examples_and_suggests_saddle_free_newton():
    """L = ½(x²)² has L'' = 6x² = 0 at x = 0 (example 1): the Newton step does not exist there."""
    inverse = inverses.newton(lambda x: x ** 2)
    with pytest.raises(InvalidInputError, match=r'singular .*example\(s\) \[1\].*saddle_free_newton') as error:
        inverse(torch.tensor([[1.], [0.]]), torch.zeros(2, 1))
    assert isinstance(error.value, PhiHigError) and not isinstance(error.value, torch.linalg.LinAlgError)
    # a rank-deficient Hessian in a 2-D problem (the loss ignores x₂)
    with pytest.raises(InvalidInputError, match='saddle_free_newton'):
        inverses.newton(lambda x: x[:, :1])(torch.zeros(3, 2), torch.ones(3, 1))


def test_gauss_newton_refuses_a_forward_whose_output_does_not_match_the_targets():
    inverse = inverses.gauss_newton(lambda x: x[:, :1])  # (B, 1), but the targets are (B, 3)
    with pytest.raises(InvalidInputError, match=r'shape of y_target \(4, 3\), got torch.Size\(\[4, 1\]\)'):
        inverse(torch.zeros(4, 3), torch.ones(4, 3))


def test_pseudo_inverse_apply_refuses_mismatched_shapes():
    with pytest.raises(InvalidInputError, match=r'rhs must be a torch tensor of shape \(2, 3\)'):
        inverses.pseudo_inverse_apply(torch.ones(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(InvalidInputError, match=r'jac must be a torch tensor of shape \(B, m, n\)'):
        inverses.pseudo_inverse_apply(torch.ones(3, 4), torch.ones(3))


@pytest.mark.parametrize('build', ['gradient_descent', 'newton', 'saddle_free_newton', 'gauss_newton', 'iterative'])
def test_a_non_finite_simulation_is_refused_naming_the_examples(build):
    """forward(x) = NaN for example 1 only: every generic inverse says so instead of returning NaN (or, for an
    optimizer that stops at a NaN objective, a silent zero step)."""
    import phi_hig.inverses as inv
    from phi_hig.errors import NonFiniteStepError

    def forward(x):  # NaN where x₁ > 10 (row by row: the Jacobian pass repeats the rows)
        return torch.where(x[:, :1] > 10, torch.full_like(x, float('nan')), x ** 3)
    inverse = getattr(inv, build)(forward)
    x = torch.rand(3, 2, dtype=torch.float64) + 0.5
    x[1, 0] = 20.
    with pytest.raises(NonFiniteStepError, match=r'for example\(s\) \[1\]'):
        inverse(x, torch.zeros(3, 2, dtype=torch.float64))


def test_iterative_refuses_before_the_optimizer_and_leaves_no_thread_behind():
    """PhiML's minimize runs one waiting thread per example; an error inside it used to leave them blocked for ever
    (the process could not exit). Shape errors are refused before it starts, and a forward that fails later ends
    the optimization and raises, with every thread gone."""
    import threading
    import phi_hig.inverses as inv
    before = set(threading.enumerate())
    x = torch.rand(5, 3, dtype=torch.float64)
    forward = lambda x: x ** 2
    with pytest.raises(InvalidInputError, match='shape'):
        inv.iterative(forward, iterations=3)(x, torch.zeros(5, 2, dtype=torch.float64))
    with pytest.raises(InvalidInputError, match=r'one value per example, shape \(5,\)'):
        inv.iterative(forward, iterations=3, loss=lambda y, t: ((y - t) ** 2).sum())(x, forward(x))
    calls = []

    def failing_later(x):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError('the solver broke down')
        return x ** 2
    with pytest.raises(RuntimeError, match='the solver broke down'):
        inv.iterative(failing_later, iterations=5)(x, torch.ones(5, 3, dtype=torch.float64))
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.mark.parametrize('build', ['gradient_descent', 'newton', 'saddle_free_newton', 'gauss_newton'])
def test_a_forward_without_gradient_is_refused(build):
    import phi_hig.inverses as inv
    inverse = getattr(inv, build)(lambda x: (x ** 3).detach())
    with pytest.raises(InvalidInputError, match='not differentiable in'):
        inverse(torch.rand(3, 2, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))


def test_iterative_uses_a_given_simulation_instead_of_running_it_again():
    """sip_step passes y = forward(x): the check before the optimizer uses it (one forward fewer per step), a y of
    the wrong shape is refused, and the update is the same."""
    import phi_hig.inverses as inv
    calls = []

    def forward(x):
        calls.append(1)
        return x ** 2
    x = torch.rand(5, 3, dtype=torch.float64) + 0.5
    target = torch.ones(5, 3, dtype=torch.float64)
    without = inv.iterative(forward, iterations=2)(x, target)
    n_without, calls[:] = len(calls), []
    with_y = inv.iterative(forward, iterations=2)(x, target, y=x ** 2)
    assert len(calls) == n_without - 1 and torch.allclose(with_y, without, rtol=1e-12, atol=0)
    with pytest.raises(InvalidInputError, match='shape'):
        inv.iterative(forward, iterations=2)(x, target, y=torch.ones(5, 2, dtype=torch.float64))
