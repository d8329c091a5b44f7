"""Linear coupled oscillators of the HIG chapter of Thuerey et al., Physics-based Deep Learning (notebook "Coupled
Oscillators with HIGs").

Two masses, state ``s = (x_1, x_2, p_1, p_2)``:

    ẋ = p,   ṗ = −x + 0.2·L x − c·u(t),   L = [[−1, 1], [1, −1]] (free-end chain Laplacian),  c = (0, 1),

24 RK4 steps of Δt = 0.5 with the control piecewise constant per step. As in `oscillators`, the network
4 → 20 → 20 → 20 (tanh) → 24 reads the target (= initial state, ~U[0, 1)⁴) and predicts the controls z = u; the
simulation starts from the initial state, each example's condition (`Experiment.conditions`: the input),
``simulate(u, s0)``. The loss per sample is ``Σ_j (y_j − y*_j)²``. (The book writes ``+c·u``; the sign of the
control is immaterial for learning.)

Methods (book settings): HIG (SGD, η = 1 on the batch-mean g, b = 32, τ = 1e-10), SIP (per-sample physics
pseudo-inverse of ``∂y/∂u``, τ = 1e-5 relative, then Adam 1e-3 on the proxy loss, b = 256) and Adam (1e-3,
b = 256). Book at 100 s: HIG ≈ 2e-8, Adam ≈ 5e-5, SIP ≈ 8e-5.

SIP detail: the book corrects the controls by ``−J⁺·∂(L/b)/∂y``, a Gauss–Newton step shrunk by 2/b; here the
inverse is the full step ``J⁺(y* − y)`` (`phi_hig.inverses.gauss_newton`, with s0 as its condition). Adam on the
proxy loss is insensitive to that constant factor (up to its ε).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Experiment, inputs_as_conditions
from .settings import Count, Positive, Seed, factory
from ..errors import InvalidInputError
from ..sip.inverses import Inverse, gauss_newton
from ..nets import accept_conditioned_keys, keras_dense
from ..physics.oscillators import chain_rhs, simulate_chain, sum_squares

__all__ = ['linear_chain']


@factory(test=dict(steps=6, n_train=64, n_test=64))
def linear_chain(preset: str = 'paper', steps: Count = 24, dt: Positive = 0.5, coupling: float = 0.2,
                 control: Sequence[float] = (0.0, 1.0), n_train: Count = 4096, n_test: Count = 4096,
                 hidden: Sequence[Count] = (20, 20, 20), data_seed: Seed = 0) -> Experiment:
    """Build the linear-chain control experiment of the book.

    The SIP inverse has the option ``truncation`` (method hyperparameter ``inverse_options``): the relative
    truncation of the per-sample pseudo-inverse (book: rcond 1e-5; finite, >= 0 and < 1).

    Args:
        preset: 'paper' (book sizes) or 'test' (6 steps, 64 + 64 samples, batch 8).
        steps: RK4 steps = number of controls (book: 24).
        dt: time step (book: 0.5).
        coupling: strength of the linear coupling (book: 0.2).
        control: the control vector c, one entry per mass (book: (0, 1)).
        n_train, n_test: data set sizes (book: 4096 training states; it reports the training loss, we hold
            out a separate test set of the same size).
        hidden: hidden widths (tanh).
        data_seed: seed of the data sets.
    """
    if len(control) != 2:
        raise InvalidInputError(f"setting 'control' of experiment 'linear_chain' must have 2 entries (one per mass); "
                                f"got {control!r}")
    big, small = 256, 32
    if preset == 'test':
        big, small = 8, 8
    gen = torch.Generator().manual_seed(data_seed)
    train = torch.rand(n_train, 4, generator=gen)
    test = torch.rand(n_test, 4, generator=gen)
    f = chain_rhs(0.0, control, linear=coupling)
    sizes = [4, *hidden, steps]

    def make_net():  # checkpoints of the former Conditioned wrapper still load
        return accept_conditioned_keys(keras_dense(sizes, 'tanh'))

    def simulate(u, s0):
        """Controls ``u`` ``(b, steps)`` from the initial states ``s0`` ``(b, 4)`` → final states ``(b, 4)``."""
        return simulate_chain(s0, u, dt, f)

    def pinv(truncation):
        return gauss_newton(simulate, truncation=truncation)

    def inverse(u, y_target, s0, *, y=None, truncation):
        """SIP inverse: the per-sample truncated pseudo-inverse step on the controls, ``Δu = J_u⁺(y* − y)``."""
        return pinv(truncation)(u.detach(), y_target, s0.detach())

    methods = {
        'adam': dict(lr=1e-3, batch_size=big, eps=1e-7),       # Keras' ε, as the book's TF code
        'sip': dict(lr=1e-3, batch_size=big, eps=1e-7),
        'hig': dict(lr=1.0, batch_size=small, truncation=1e-10, kappa=-0.5),  # book: SGD η = 1, mean loss
    }
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return Experiment(
        name='linear_chain', make_net=make_net, simulate=simulate, loss=sum_squares, methods=methods,
        train_set=(train, train.clone()), test_set=(test, test.clone()), conditions=inputs_as_conditions,
        inverses={'default': Inverse(inverse, {'truncation': 1e-5}, lambda o: pinv(o['truncation']))},
        eval_every=50 if preset == 'paper' else 1, threads=1,
        settings=dict(preset=preset, steps=steps, dt=dt, coupling=coupling, control=tuple(control), n_train=n_train,
                      n_test=n_test, hidden=list(hidden), parameters=n_params, data_seed=data_seed),
        description=f"linear coupled oscillators (PBDL book): RK4 {steps}×{dt}, net {'-'.join(map(str, sizes))} tanh "
                    f"({n_params} parameters)")
