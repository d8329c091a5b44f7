"""Incompressible Navier–Stokes (seed 003 §3.4, B.4): infer the initial velocity v₀ from the markers (m₀, m_t).

Physics `phi_hig.physics.fluid`: periodic 64 × 64 cells of size 1, MAC grid, MacCormack advection, CG pressure
projection, energy renormalization, t = 2 in 8 steps of Δt = 0.25. Data: `phi_hig.physics.fluid.random_example`
(thresholded-noise marker in a half-size box; translation towards the centre + Gaussian vortex + small
vortices), y* = m_t simulated in NumPy float64.

* Network: the periodic 5-level U-net, 2 → 2 channels (49,570 parameters), input (m₀, m_t), output v₀ at cell
  centres. Adam 0.005, batch 64.
* Tensors: inputs `(b, 2, H, W)` = (m₀, m_t); targets `(b, 4, H, W)` = (m_t, m₀, v₀*ˣ, v₀*ʸ). The network is
  wrapped (`WithCondition`) so that its output carries the known m₀ as a third channel, `z = (vˣ, vʸ, m₀)`
  (no parameters, zero update): `simulate(z)` needs m₀ and receives only z. v₀* is read only by `metrics`.
* Loss: frequency-weighted, `½ Σ_k w_k |FFT(m_t − m*)_k|² / N` with `w_k = exp(−|k|/k_w)`, |k| in cycles per
  cell, `k_w = 0.1` (the paper weights low frequencies exponentially more; its exact weights are not stated).
* 'adam' back-propagates through the whole simulation (PhiML on torch, float32; the pressure solves are
  differentiated by adjoint CG solves). 'sip' uses `phi_hig.physics.fluid.inverse`, the reverse-simulation
  estimator of translation and vortex (NumPy float64, no graph); it reuses the trajectory of the SIP step's own
  no-grad simulation of the same z instead of simulating it a second time.
* Data: the simulation costs seconds per example on a CPU, so the training set is finite (`n_train` examples,
  generated once at build time and cached under `cache_dir`), not drawn on the fly as in the paper.
* Metrics: `v_error` = mean |v − v*| per cell and component, `m_error` = Σ|m_t − m*| per example.
* `timing_table` reproduces the paper's table 1: time per example of network inference vs the iterative
  inverse solver (the reverse-simulation update applied repeatedly from v = 0) to reach the same MAE of v₀ (x space, as the paper measures it).
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import torch
from phiml import math
from phiml.math import batch, spatial, extrapolation

from .base import Experiment
from .poisson import to_grid, from_grid
from .sine import WithCondition
from ..nets import unet
from ..physics import fluid as physics

__all__ = ['fluid', 'timing_table', 'frequency_weights']


def frequency_weights(h: int, w: int, k_w: float = 0.1) -> torch.Tensor:
    """`w_k = exp(−|k|/k_w)` per FFT mode of an `(h, w)` grid, |k| in cycles per cell."""
    kx, ky = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing='ij')
    return torch.as_tensor(np.exp(-np.sqrt(kx ** 2 + ky ** 2) / k_w))


class _TorchContext(torch.autograd.Function):
    """Runs `fn(x)` with PhiML's default backend set to torch, in the forward *and* the backward pass.

    PhiML builds helper tensors on the default backend (NumPy unless a script imported `phi.torch.flow`);
    autograd through `solve_linear` then fails in the backward pass, which runs outside any `with TORCH:`.
    """

    @staticmethod
    def forward(ctx, fn, x):
        from phiml.backend.torch import TORCH
        with torch.enable_grad(), TORCH:
            x_in = x.detach().requires_grad_(True)
            y = fn(x_in)
        ctx.save_for_backward(x_in, y)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        from phiml.backend.torch import TORCH
        x_in, y = ctx.saved_tensors
        with torch.enable_grad(), TORCH:
            g, = torch.autograd.grad(y, x_in, grad)
        return None, g


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


def _dataset(seed, n, h, w, steps, cache_dir):
    """`n` examples for `seed`, from the cache when present (generation takes seconds per example)."""
    path = None
    if cache_dir:
        key = hashlib.sha1(json.dumps([seed, n, h, w, steps, 1]).encode()).hexdigest()[:12]
        path = os.path.join(cache_dir, f'fluid_{h}x{w}_{n}_{steps}_{key}.pt')
        if os.path.exists(path):
            return torch.load(path)
    data = _generate(np.random.default_rng(seed), n, h, w, steps)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        torch.save(data, path)
    return data


def fluid(preset: str = 'paper', resolution=(64, 64), batch_size: int = 64, n_train: int = 1024, n_test: int = 32,
          k_w: float = 0.1, lr: float = 0.005, cache_dir: str = 'runs/cache', sim_steps: int = physics.STEPS) -> Experiment:
    """Build the Navier–Stokes experiment.

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
    if preset == 'test':
        resolution, batch_size, n_train, n_test, cache_dir, sim_steps = (16, 16), 2, 2, 2, None, 2
    h, w = (int(r) for r in resolution)
    if h % 16 or w % 16:
        raise ValueError(f"resolution {resolution} must be divisible by 16 for the 5-level U-net")
    weights = frequency_weights(h, w, k_w)
    periodic = extrapolation.PERIODIC

    def final_marker(z: torch.Tensor) -> torch.Tensor:
        v, m0 = to_grid(z[:, :2], periodic), to_grid(z[:, 2], periodic)
        return from_grid(physics.forward(v, m0, steps=sim_steps).time[-1])

    last = {}  # the last no-grad simulation: its input z and trajectory, reused by `inverse` for the same z

    def simulate(z):
        if torch.is_grad_enabled() and z.requires_grad:
            return _TorchContext.apply(final_marker, z)[:, None]
        z = z.detach()
        mt, trajectory = _trajectory_numpy(z[:, :2].double().numpy(), z[:, 2].double().numpy(), sim_steps)
        last.update(z=z.clone(), trajectory=trajectory)
        return torch.as_tensor(mt, dtype=z.dtype)[:, None]

    def loss(y, targets):
        spectrum = torch.fft.fft2(y[:, 0] - targets[:, 0])
        return 0.5 * (weights.to(y.dtype) * spectrum.abs() ** 2).flatten(1).sum(1) / (h * w)

    def inverse(z, targets, *, y=None):
        seen = last.get('z')  # SIP simulates z just before: reuse that trajectory instead of simulating again
        same = seen is not None and seen.shape == z.shape and seen.dtype == z.dtype and torch.equal(seen, z.detach())
        v, m0 = to_grid(z[:, :2], periodic), to_grid(z[:, 2], periodic)
        dv = physics.inverse(v, to_grid(targets[:, 0], periodic), m0, steps=sim_steps,
                             trajectory=last['trajectory'] if same else None)
        return torch.cat([from_grid(dv, vector=True), torch.zeros_like(z[:, 2:])], 1)

    def metrics(net, inputs, targets):
        z = net(inputs)
        y = simulate(z)
        return {'v_error': float((z[:, :2] - targets[:, 2:]).abs().mean()),
                'm_error': float((y[:, 0] - targets[:, 0]).abs().flatten(1).sum(1).mean())}

    train_set = _dataset(1, n_train, h, w, sim_steps, cache_dir)
    test_set = _dataset(987654, n_test, h, w, sim_steps, cache_dir)
    methods = {'adam': dict(lr=lr, batch_size=batch_size), 'sip': dict(lr=lr, batch_size=batch_size)}
    return Experiment(
        name='fluid', make_net=lambda: WithCondition(unet(2, 2, levels=5), columns=(0,)), simulate=simulate,
        loss=loss, methods=methods, train_set=train_set, test_set=test_set, metrics=metrics, inverse=inverse,
        eval_every=10, threads=1 if preset == 'test' else None,
        settings=dict(preset=preset, resolution=[h, w], batch_size=batch_size, n_train=n_train, n_test=n_test, k_w=k_w,
                      lr=lr, sim_steps=sim_steps),
        description="Navier–Stokes: infer v0 from (m0, m_t); Adam through the simulation vs SIP with the "
                    "reverse-simulation inverse")


def timing_table(experiment: Experiment, net, n_examples: int = 4, max_iterations: int = 30, repeats: int = 5) -> dict:
    """The paper's table 1: seconds per example for network inference and for the iterative inverse solver to
    reach the same solution quality, measured as the paper does: MAE of `v0` against the ground truth (x space).

    The solver starts at v = 0 and applies the experiment's inverse update (the reverse-simulation estimator)
    repeatedly, per example, until its MAE is at most the network's MAE on that example or `max_iterations`
    updates were made (then `reached` is False and its time is a lower bound). The check reads the ground truth
    and is not timed. Network inference is timed in eval mode as the best of `repeats` batched calls (a loaded
    machine inflates single timings). Returns per-example rows, the mean and median solver time per example and
    `ratio` (`ratio_median`) = mean (median) solver time / network time per example.
    """
    if n_examples < 1 or repeats < 1 or max_iterations < 1:
        raise ValueError(f"n_examples, repeats and max_iterations must be positive, got {n_examples}, {repeats}, {max_iterations}")
    inputs, targets = (t[:n_examples] for t in experiment.test_set)
    n_examples = inputs.shape[0]
    truth = targets[:, 2:4]

    def mae(z, i):
        return float((z[0, :2] - truth[i]).abs().mean())

    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(inputs)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                z_net = net(inputs)
                times.append(time.perf_counter() - t0)
    finally:
        net.train(was_training)
    t_net = min(times) / n_examples
    rows = []
    for i in range(n_examples):
        x, t = inputs[i:i + 1], targets[i:i + 1]
        goal = mae(z_net[i:i + 1], i)
        z = torch.cat([torch.zeros_like(x), x[:, :1]], 1)
        seconds, iterations, error = 0., 0, mae(z, i)
        while error > goal and iterations < max_iterations:
            t0 = time.perf_counter()
            z = z + experiment.inverse(z, t)
            seconds += time.perf_counter() - t0
            iterations += 1
            error = mae(z, i)
        rows.append(dict(seconds=seconds, iterations=iterations, v_error=error, network_v_error=goal,
                         reached=error <= goal))
    solver = float(np.mean([r['seconds'] for r in rows]))
    median = float(np.median([r['seconds'] for r in rows]))
    return dict(metric='MAE of v0 (x space)', network_seconds_per_example=t_net, solver_seconds_per_example=solver,
                ratio=solver / t_net if t_net > 0 else float('inf'), solver_seconds_median=median,
                ratio_median=median / t_net if t_net > 0 else float('inf'),
                mean_iterations=float(np.mean([r['iterations'] for r in rows])),
                all_reached=all(r['reached'] for r in rows), examples=rows)
