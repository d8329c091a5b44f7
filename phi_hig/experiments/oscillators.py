"""Control of nonlinear coupled oscillators (Schnell, Holl & Thuerey 2022, §3.1 and appendix B.2; Figure 2 and
Table 2).

A chain of ``n`` masses (paper: 2) with positions ``x_i`` and momenta ``p_i`` obeys (paper eq. 20, written
from the Hamiltonian of eq. 8 with free chain ends)

    ẋ_i = p_i,   ṗ_i = −x_i − k·(x_i − x_{i+1})³ − k·(x_i − x_{i−1})³ − c_i·u(t),

integrated with classical RK4 for 96 steps of Δt = 0.125 with the control ``u`` piecewise constant per step
and ``c = (0, 3)``. ``k`` is the coefficient of the cubic terms: ``k = 1`` in the authors' code that produced
the paper's figures (the default), ``k = 4α = 4`` for the paper text's α = 1 (``alpha=1``).

Note on signs: eq. 20 as printed has ``+4α(x_i − x_{i−1})³``; the Hamiltonian gives the minus sign used here
(and by the authors' code), which conserves ``H``. The sign of the control term is immaterial for learning
(the linear output layer learns either sign); we follow eq. 8.

The task: from a random state ``s = (x, p) ~ U[0, 1)⁴`` return to the same state after T = 12. The network
consumes the target (= initial state) and emits the 96 control values ``z = (u_1 … u_96)``; the simulation also
needs the initial state, each example's condition (`Experiment.conditions`: the input), ``simulate(u, s)``.
`phi_hig.hig_step` repeats each s with its controls wherever it evaluates the physics.

Loss per sample: ``Σ_j (y_j − y*_j)²`` (sum over the 4 state components, as the authors' code; the paper calls
it MSE). The values the paper plots (Adam ~1e-4, GN ~1e-6, HIG ~1e-7) are this quantity averaged over the
test set.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from .base import Experiment, inputs_as_conditions
from .settings import Count, Positive, Seed, factory
from ..errors import InvalidInputError
from ..nets import accept_conditioned_keys, keras_dense
from ..physics.oscillators import chain_rhs, simulate_chain, sum_squares

__all__ = ['oscillators']


@factory(test=dict(steps=12, n_train=64, n_test=64))
def oscillators(preset: str = 'paper', n_oscillators: Count = 2, steps: Count = 96, dt: Positive = 0.125,
                cubic: Optional[float] = None, alpha: Optional[float] = None, control: Sequence[float] = (0.0, 3.0),
                n_train: Count = 4096, n_test: Count = 4096, hidden: Sequence[Count] = (20, 20, 20),
                batch_size: Optional[Dict[str, Count]] = None, data_seed: Seed = 0) -> Experiment:
    """Build the nonlinear-oscillator control experiment.

    Args:
        preset: 'paper' (the sizes above) or 'test' (12 steps, 64 + 64 samples, batch 8).
        n_oscillators: number of masses (paper: 2).
        steps: RK4 steps = number of controls (paper: 96).
        dt: time step (paper: 0.125).
        cubic: coefficient k of the cubic terms (default 1, the authors' code).
        alpha: the paper text's interaction strength; sets ``cubic = 4α`` (α = 1 → 4). Give cubic or alpha.
        control: the control vector c (paper: (0, 3)).
        n_train, n_test: data set sizes (paper: 4096 each).
        hidden: hidden layer widths (paper: 20, 20, 20, ReLU).
        batch_size: per-method batch size overrides of the Table 2 values, e.g. ``{'hig': 64}``.
        data_seed: seed of the data sets.
    """
    if cubic is not None and alpha is not None:
        raise InvalidInputError("experiment 'oscillators' takes the setting 'cubic' or 'alpha', not both")
    cubic = 4.0 * alpha if alpha is not None else (1.0 if cubic is None else float(cubic))
    control = tuple(float(c) for c in control)
    if len(control) != n_oscillators:
        control = (0.0,) * (n_oscillators - 1) + (control[-1],)
    big, small = 512, 128
    if preset == 'test':
        big, small = 8, 8
    n_state = 2 * n_oscillators
    gen = torch.Generator().manual_seed(data_seed)
    train = torch.rand(n_train, n_state, generator=gen)
    test = torch.rand(n_test, n_state, generator=gen)
    f = chain_rhs(cubic, control)
    sizes = [n_state, *hidden, steps]

    def make_net():  # checkpoints of the former Conditioned wrapper still load
        return accept_conditioned_keys(keras_dense(sizes, 'relu'))

    def simulate(u, s0):
        """Controls ``u = (u_1 … u_steps)`` from the initial states ``s0`` ``(b, 2n)`` → final states
        ``(b, 2n)``."""
        return simulate_chain(s0, u, dt, f)

    # Table 2 of the paper. The first-order optimizers get Keras' default constants (the authors used TF 2.5):
    # Adam/Adagrad/RMSprop/Adadelta ε = 1e-7, Adagrad initial accumulator 0.1, RMSprop ρ = 0.9, Adadelta ρ = 0.95.
    # HIG and GN: η = 1 on the gradient g of the batch-mean loss (the authors' code divides the summed loss by b).
    # GN with η = 1 on the mean is a pseudo-inverse step shrunk by 1/b (a full GN step would be η = b).
    methods = {
        'adadelta': dict(lr=0.1, batch_size=big, rho=0.95, eps=1e-7),
        'adagrad': dict(lr=0.1, batch_size=big, initial_accumulator_value=0.1, eps=1e-7),
        'adam': dict(lr=3e-4, batch_size=big, eps=1e-7),
        'gn': dict(lr=1.0, batch_size=small, truncation=1e-6, kappa=-1.0),
        'hig': dict(lr=1.0, batch_size=small, truncation=1e-6, kappa=-0.5),
        'rmsprop': dict(lr=1e-4, batch_size=big, alpha=0.9, eps=1e-7),
        'sgd': dict(lr=0.1, batch_size=big),
    }
    if preset == 'test':  # 8 samples × 4 outputs: GN at τ = 1e-6 inverts noise and diverges at once
        methods['gn']['truncation'] = 1e-2
    unknown = sorted(set(batch_size or {}) - set(methods))
    if unknown:
        raise InvalidInputError(f"setting 'batch_size' of experiment 'oscillators' names unknown methods {unknown}; "
                                f"its methods are {', '.join(methods)}")
    for m, b in (batch_size or {}).items():
        methods[m]['batch_size'] = b
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return Experiment(
        name='oscillators', make_net=make_net, simulate=simulate, loss=sum_squares, methods=methods,
        train_set=(train, train.clone()), test_set=(test, test.clone()), conditions=inputs_as_conditions,
        eval_every=50 if preset == 'paper' else 1, threads=1,
        settings=dict(preset=preset, n_oscillators=n_oscillators, steps=steps, dt=dt, cubic=cubic, control=control,
                      n_train=n_train, n_test=n_test, hidden=list(hidden), parameters=n_params, data_seed=data_seed),
        description=f"nonlinear oscillators (HIG §3.1): {n_oscillators} masses, RK4 {steps}×{dt}, cubic {cubic:g}, "
                    f"net {'-'.join(map(str, sizes))} ReLU ({n_params} parameters)")
