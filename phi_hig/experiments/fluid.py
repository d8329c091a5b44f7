"""Incompressible Navier–Stokes: infer the initial velocity v₀ from the markers (m₀, m_t) (Holl, Koltun & Thuerey
2021, §3.4 and appendix B.4).

Physics `phi_hig.physics.fluid`: periodic 64 × 64 cells of size 1, MAC grid, MacCormack advection, CG pressure
projection, energy renormalization, t = 2 in 8 steps of Δt = 0.25. Data: `phi_hig.physics.fluid.random_example`
(thresholded-noise marker in a half-size box; translation towards the centre + Gaussian vortex + small
vortices), y* = m_t simulated in NumPy float64.

* Network: the periodic 5-level U-net, 2 → 2 channels (49,570 parameters), input (m₀, m_t), output v₀ at cell
  centres. Adam 0.005, batch 64.
* Tensors: inputs `(b, 2, H, W)` = (m₀, m_t); targets `(b, 4, H, W)` = (m_t, m₀, v₀*ˣ, v₀*ʸ); the network's output
  z = v₀ `(b, 2, H, W)`. The known m₀ is each example's condition (`Experiment.conditions`: the input's first
  channel, `(b, H, W)`): `simulate(v, m0)`, and the inverse `solve(v, targets, m0, …)`. v₀* is read only by
  `metrics`. (Before, the network was wrapped in `phi_hig.nets.Conditioned` to carry m₀ as a third output
  channel; its checkpoints still load, `phi_hig.nets.accept_conditioned_keys`.)
* Loss: frequency-weighted, `½ Σ_k w_k |FFT(m_t − m*)_k|² / N` with `w_k = exp(−|k|/k_w)`, |k| in cycles per
  cell, `k_w = 0.1` (the paper weights low frequencies exponentially more; its exact weights are not stated).
* 'adam' back-propagates through the whole simulation (PhiML on torch, float32; the pressure solves are
  differentiated by adjoint CG solves). 'sip' uses `phi_hig.physics.fluid.inverse`, the reverse-simulation
  estimator of translation and vortex (no graph), on torch in float32 with jit-compiled simulations (inverse
  options `precision`, `jit`); it reuses the trajectory of the SIP step's own no-grad simulation of the same
  (v, m₀) (torch, float32, jit-compiled) instead of simulating it a second time.
* Data: the simulation costs seconds per example on a CPU, so the training set is finite (`n_train` examples,
  generated once at build time and cached under `cache_dir`), not drawn on the fly as in the paper.
* Metrics: `v_error` = mean |v − v*| per cell and component, `m_error` = Σ|m_t − m*| per example.
* Table 1 of Holl, Koltun & Thuerey 2022 (network inference against the iterative inverse solver) is
  `phi_hig.report.tables.timing_table`.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from phiml import math
from phiml.math import batch, spatial, extrapolation

from .base import Experiment
from ..sip.inverses import Inverse
from .settings import Count, Grid, Positive, factory
from .. import cache, checks
from ..backend import call_in_torch_backend, torch_backend
from ..nets import accept_conditioned_keys, unet
from ..physics import fluid as physics
from ..physics.grids import to_grid, from_grid

__all__ = ['fluid', 'frequency_weights']


def frequency_weights(h: int, w: int, k_w: float = 0.1) -> torch.Tensor:
    """`w_k = exp(−|k|/k_w)` per FFT mode of an `(h, w)` grid, |k| in cycles per cell."""
    kx, ky = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing='ij')
    return torch.as_tensor(np.exp(-np.sqrt(kx ** 2 + ky ** 2) / k_w))


def _trajectory_numpy(v: np.ndarray, m0: np.ndarray, steps: int = physics.STEPS):
    """`physics.simulate` for centred velocities `(b, 2, H, W)` and markers `(b, H, W)`, NumPy float64: the
    final marker as an array and the `(markers, velocities)` trajectory that `physics.inverse` can reuse."""
    with math.NUMPY, math.precision(64):
        grids = to_grid(v, extrapolation.PERIODIC), to_grid(m0, extrapolation.PERIODIC)
        trajectory = physics.simulate(*grids, steps=steps)
        return np.ascontiguousarray(from_grid(trajectory[0].time[-1])), trajectory


def _simulate_numpy(v: np.ndarray, m0: np.ndarray, steps: int = physics.STEPS) -> np.ndarray:
    """Final marker for centred velocities `(b, 2, H, W)` and markers `(b, H, W)`, NumPy float64."""
    return _trajectory_numpy(v, m0, steps)[0]


def _generate(rng, n, h, w, steps):
    example = physics.random_example(spatial(x=h, y=w), batch(b=n), rng, time=physics.DT * steps)
    m0 = example.m0.values.numpy(['b', 'x', 'y'])
    v0 = example.v0.values.numpy(['b', 'vector', 'x', 'y'])
    mt = _simulate_numpy(v0, m0, steps)
    inputs = torch.as_tensor(np.stack([m0, mt], 1), dtype=torch.float32)
    targets = torch.as_tensor(np.concatenate([mt[:, None], m0[:, None], v0], 1), dtype=torch.float32)
    return inputs, targets


def _initial_marker(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The condition of each example (`Experiment.conditions`): its initial marker m₀ `(b, H, W)`, the first
    channel of the inputs (m₀, m_t)."""
    return inputs[:, 0]


def _dataset(seed, n, h, w, steps, cache_dir):
    """`n` examples for `seed`, from the cache when present (generation takes seconds per example)."""
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f'fluid_{h}x{w}_{n}_{steps}_{cache.key(seed, n, h, w, steps, 1)}.pt')
    return cache.load_or_create(path, lambda: _generate(np.random.default_rng(seed), n, h, w, steps))


@factory(test=dict(resolution=(16, 16), batch_size=2, n_train=2, n_test=2, cache_dir=None, sim_steps=2))
def fluid(preset: str = 'paper', resolution: Grid(16, 'the 5-level U-net') = (64, 64), batch_size: Count = 64,
          n_train: Count = 1024, n_test: Count = 32, k_w: Positive = 0.1, lr: Positive = 0.005,
          cache_dir: Optional[str] = 'runs/cache', sim_steps: Count = physics.STEPS) -> Experiment:
    """Build the Navier–Stokes experiment.

    The inverse's options (method hyperparameter ``inverse_options``) are the scalar knobs of
    `phi_hig.physics.fluid.inverse`: ``radius`` (the prior's vortex radius, > 0), ``max_relative_strength_change``
    (> 0) and ``search_below`` (>= 0), with that function's defaults; ``precision`` (32, the default, or 64: the
    bits of its simulations and estimate; float32's update is within a relative 1e-3 of float64's) and ``jit``
    (True, the default: jit-compiled simulations, traced once per batch shape; the same values).

    Args:
        preset: 'paper' (64 × 64, batch 64) or 'test' (16 × 16, 2 time steps, batch 2, 2 training and 2 test
            examples, no cache).
        resolution: periodic grid `(H, W)`, each divisible by 16 (5-level U-net). Smaller is much faster on a CPU.
        batch_size: batch of every method (paper: 64).
        n_train: size of the (cached) training set.
        n_test: size of the held-out set.
        k_w: frequency scale of the loss weights.
        lr: Adam learning rate of both methods (paper: 0.005).
        cache_dir: where generated data sets are stored (None: never cache).
        sim_steps: time steps of Δt = 0.25 (paper: 8, t = 2).
    """
    h, w = resolution
    weights = frequency_weights(h, w, k_w)
    periodic = extrapolation.PERIODIC

    last = {}  # the last no-grad simulation: its (v, m0) and trajectory, reused by `inverse` for the same (v, m0)

    def simulate(v, m0):
        """The final marker `(b, 1, H, W)` from the initial velocity v `(b, 2, H, W)` and marker m0 `(b, H, W)`:
        differentiable in v when it requires a gradient, else jit-compiled and remembered for the inverse."""
        markers = to_grid(m0.detach(), periodic)
        if torch.is_grad_enabled() and v.requires_grad:
            def final_marker(velocity):
                return from_grid(physics.forward(to_grid(velocity, periodic), markers, steps=sim_steps).time[-1])
            return call_in_torch_backend(final_marker, v)[:, None]
        v = v.detach()
        with torch_backend():
            trajectory = physics.simulate(to_grid(v, periodic), markers, steps=sim_steps, jit=True)
        last.update(v=v.clone(), m0=m0.detach().clone(), trajectory=trajectory)
        return from_grid(trajectory[0].time[-1])[:, None]

    def simulated(v, m0, precision):
        """The trajectory of the last no-grad simulation if it simulated these (v, m0) in `precision` or finer."""
        if 'v' not in last or last['trajectory'][0].values.dtype.precision < precision:
            return None
        same = all(a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b.detach())
                   for a, b in ((last['v'], v), (last['m0'], m0)))
        return last['trajectory'] if same else None

    def loss(y, targets):
        spectrum = torch.fft.fft2(y[:, 0] - targets[:, 0])
        return 0.5 * (weights.to(y.dtype) * spectrum.abs() ** 2).flatten(1).sum(1) / (h * w)

    def inverse(v, targets, m0, *, y=None, precision, jit, **options):
        """Δv `(b, 2, H, W)` for the estimate v given the observed m_t (`targets[:, 0]`) and the condition m0."""
        dv = physics.inverse(to_grid(v, periodic), to_grid(targets[:, 0], periodic), to_grid(m0, periodic),
                             steps=sim_steps, precision=precision, jit=jit, trajectory=simulated(v, m0, precision),
                             **options)  # SIP simulated (v, m0) just before: that trajectory, not a second one
        return from_grid(dv, vector=True)

    def check(options):
        checks.number('radius', options['radius'], low=0, low_open=True)
        checks.number('max_relative_strength_change', options['max_relative_strength_change'], low=0, low_open=True)
        checks.number('search_below', options['search_below'], low=0)
        checks.choice('precision', options['precision'], (32, 64))

    options = dict(radius=physics.VORTEX_RADIUS, max_relative_strength_change=1., search_below=0.25, precision=32,
                   jit=True)

    def metrics(net, inputs, targets):
        z = net(inputs)
        y = simulate(z, _initial_marker(inputs, targets))
        return {'v_error': float((z - targets[:, 2:]).abs().mean()),
                'm_error': float((y[:, 0] - targets[:, 0]).abs().flatten(1).sum(1).mean())}

    train_set = _dataset(1, n_train, h, w, sim_steps, cache_dir)
    test_set = _dataset(987654, n_test, h, w, sim_steps, cache_dir)
    methods = {'adam': dict(lr=lr, batch_size=batch_size), 'sip': dict(lr=lr, batch_size=batch_size)}
    return Experiment(
        name='fluid', make_net=lambda: accept_conditioned_keys(unet(2, 2, levels=5)), simulate=simulate,
        loss=loss, methods=methods, train_set=train_set, test_set=test_set, metrics=metrics, conditions=_initial_marker,
        inverses={'default': Inverse(inverse, options, check)},
        eval_every=10, threads=1 if preset == 'test' else None,
        settings=dict(preset=preset, resolution=[h, w], batch_size=batch_size, n_train=n_train, n_test=n_test, k_w=k_w,
                      lr=lr, sim_steps=sim_steps),
        description="Navier–Stokes: infer v0 from (m0, m_t); Adam through the simulation vs SIP with the "
                    "reverse-simulation inverse")
