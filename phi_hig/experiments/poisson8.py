"""The 8×8 Poisson problem of Schnell, Holl & Thuerey 2022 (§3.2 and appendix B.3; Figures 3 and 7).

A network maps a source ``ρ`` on an 8×8 grid (Ω = [0, 8]², Δx = 1) to a potential ``φ`` with ``Δφ = ρ``; the
physics applies PhiFlow's 5-point ``field.laplace`` with φ = 0 on all four sides (``extrapolation.ZERO``) to
the network output, and the loss is ``½‖Δφ − ρ‖²`` per sample (PhiFlow's ``l2_loss``, as the authors' code).

Data (as the authors' code): ``φ* = CenteredGrid(Noise(), ZERO, x=8, y=8)`` (scale 10, smoothness 1,
normalized to mean 0 and std 1 per sample) and ``ρ = field.laplace(φ*)``, fresh examples every step. The
targets also carry φ* so that the metric ``phi_error`` (mean |φ − φ*| per cell) can be reported.

Networks (tanh): ``'paper'`` 64 → 64 → 256 → 64 → 64 with 41,408 parameters (paper text), ``'code'``
64 → 64 → 128 → 64 → 64 with 24,896 parameters (the authors' code).

Learning rates in the batch-mean convention of g: HIG η = 0.64 (the authors' code: 0.01 on the summed loss at
b = 64; the paper text's 0.02 would be 1.28), τ = 1e-5, b = 64; Adam η = 1e-4 (paper Figs. 3c/7b), b = 64.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .base import Experiment
from .settings import Count, Seed, factory
from ..nets import keras_dense

__all__ = ['poisson8', 'laplace_flat', 'noise_sources']


def _grid(values_bxy, res):
    from phi import field  # noqa: F401  (PhiFlow loads on first use)
    from phi.field import CenteredGrid
    from phi.math import extrapolation
    return CenteredGrid(values_bxy, extrapolation.ZERO, x=res, y=res)


def laplace_flat(phi: torch.Tensor, res: int = 8) -> torch.Tensor:
    """PhiFlow's ``field.laplace`` (zero Dirichlet boundary, Δx = 1) of flattened potentials ``(b, res²)``,
    flattened (x-major: index ``i·res + j`` is cell ``(x=i, y=j)``). Works on torch tensors of any dtype."""
    from phi import field, math
    b = phi.shape[0]
    values = math.wrap(phi.reshape(b, res, res), math.batch('b'), math.spatial('x,y'))
    lap = field.laplace(_grid(values, res))
    return lap.values.native(['b', 'x', 'y']).reshape(b, res * res)


def noise_sources(seed: int, n: int, res: int = 8):
    """``(φ*, ρ)`` as float32 torch tensors ``(n, res²)``: PhiFlow ``Noise()`` potentials and their Laplacians.

    PhiFlow draws the noise from NumPy's global generator; it is seeded with ``seed`` here and restored
    afterwards, so other random streams are untouched.
    """
    from phi import field, math
    from phi.field import Noise
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        with math.NUMPY:
            phi = _grid(Noise(math.batch(b=n)), res)
            rho = field.laplace(phi)
            phi_v = phi.values.numpy(['b', 'x', 'y']).reshape(n, -1)
            rho_v = rho.values.numpy(['b', 'x', 'y']).reshape(n, -1)
    finally:
        np.random.set_state(state)
    return torch.as_tensor(phi_v, dtype=torch.float32), torch.as_tensor(rho_v, dtype=torch.float32)


@factory(test=dict(batch_size=4, n_test=16))
def poisson8(preset: str = 'paper', network: Literal['paper', 'code'] = 'paper', res: Count = 8, n_test: Count = 1024,
             batch_size: Count = 64, data_seed: Seed = 0) -> Experiment:
    """Build the 8×8 Poisson experiment.

    Args:
        preset: 'paper' or 'test' (batch 4, 16 held-out examples).
        network: 'paper' (hidden 64-256-64, 41,408 parameters) or 'code' (hidden 64-128-64, 24,896).
        res: grid cells per side (paper: 8).
        n_test: held-out examples (fresh data: the paper evaluates on unseen samples).
        batch_size: batch size of both methods (paper: 64).
        data_seed: seed of the held-out set (the training stream is seeded by the runner).
    """
    hidden = {'paper': (64, 256, 64), 'code': (64, 128, 64)}[network]
    sizes = [res * res, *hidden, res * res]

    def generate(rng: np.random.Generator, n: int):
        phi, rho = noise_sources(int(rng.integers(2 ** 31)), n, res)
        return rho, torch.stack([rho, phi], 1)

    test = generate(np.random.default_rng([data_seed, 99]), n_test)

    def make_net():
        return keras_dense(sizes, 'tanh')

    def simulate(z):
        return laplace_flat(z, res)

    def loss(y, targets):
        return 0.5 * ((y - targets[:, 0]) ** 2).sum(-1)

    def metrics(net, inputs, targets):
        return {'phi_error': float((net(inputs) - targets[:, 1]).abs().mean())}

    # η in the batch-mean convention of g (see the module docstring); Keras' Adam ε = 1e-7 as the authors' code.
    methods = {
        'adam': dict(lr=1e-4, batch_size=batch_size, eps=1e-7),
        'hig': dict(lr=0.01 * 64, batch_size=batch_size, truncation=1e-5, kappa=-0.5),
    }
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return Experiment(
        name='poisson8', make_net=make_net, simulate=simulate, loss=loss, methods=methods, generate=generate,
        test_set=test, metrics=metrics, eval_every=20 if preset == 'paper' else 1, threads=1,
        jax_physics=(simulate, loss),  # PhiFlow's field.laplace and the loss run on JAX arrays as they are
        settings=dict(preset=preset, network=network, res=res, hidden=list(hidden), parameters=n_params,
                      n_test=n_test, batch_size=batch_size, data_seed=data_seed),
        description=f"Poisson {res}×{res} (HIG §3.2): net {'-'.join(map(str, sizes))} tanh ({n_params} parameters)")
