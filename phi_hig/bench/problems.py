"""The HIG paper's problem sizes for the step benchmark: network, inputs, targets, physics, per-sample loss.

Every problem is built from the package's experiment of the same physics (``phi_hig.experiments``): its
network (``make_net``), its simulation, its per-sample loss, its first training batch and its HIG truncation τ.
The benchmark holds no physics or data generator of its own.

Every problem is seeded like the runner (`phi_hig.train`) seeds a run: ``torch.manual_seed(seed)`` before
``make_net()``, and the batch is the first ``batch`` examples of ``DataStream(experiment, seed)``. The same
case therefore gives the same weights and data in every process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from phi_hig import experiments
from phi_hig.experiments import DataStream
from phi_hig.experiments.base import no_conditions, simulate_batch


@dataclass
class Problem:
    """One HIG step's worth of work: ``loss(simulate(net(inputs), …), targets)`` per sample, and τ; the physics
    takes the batch's conditions ``conditions(inputs, targets)`` (the experiment's) besides z."""
    name: str
    net: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    simulate: Callable
    loss: Callable
    truncation: float
    conditions: Callable = no_conditions

    def batch_conditions(self, n: Optional[int] = None):
        """The conditions of the first ``n`` examples (default all), for ``hig_step(..., conditions=)``."""
        return self.conditions(self.inputs[:n], self.targets[:n])

    def outputs(self, net: nn.Module, n: Optional[int] = None):
        """``y``: the simulation of ``net``'s predictions of the first ``n`` examples (default all)."""
        return simulate_batch(self.simulate, self.conditions, net(self.inputs[:n]), self.inputs[:n], self.targets[:n])

    @property
    def n_params(self) -> int:
        """|θ|: the number of the network's parameters (entries)."""
        return sum(p.numel() for p in self.net.parameters())


def from_experiment(name: str, experiment: str, batch: int = None, seed: int = 0, **settings) -> Problem:
    """The problem of ``phi_hig.experiments.get(experiment, **settings)`` at the batch size ``batch`` (default:
    the experiment's HIG batch size): freshly initialized network, first batch of the seed's data stream."""
    ex = experiments.get(experiment, **settings)
    hig = ex.methods['hig']
    batch = int(hig['batch_size'] if batch is None else batch)
    torch.manual_seed(seed)
    net = ex.make_net()
    inputs, targets = DataStream(ex, seed).next(batch)
    return Problem(name, net, inputs, targets, ex.simulate, ex.loss, float(hig['truncation']), ex.conditions)


CASES = {
    # HIG paper §2.1 toy: b = 256, |y| = 2 (γ in the physics), 1-7-2 tanh network, 30 parameters
    'toy': lambda: from_experiment('toy', 'toy', 256),
    # HIG paper §3.2: 8×8 Poisson, b = 64, |y| = 64, τ = 1e-5; network 'paper' (hidden 64-256-64,
    # 41,408 parameters, the paper text) and 'code' (hidden 64-128-64, 24,896, the authors' code)
    'poisson41k': lambda: from_experiment('poisson41k', 'poisson8', 64, network='paper'),
    'poisson25k': lambda: from_experiment('poisson25k', 'poisson8', 64, network='code'),
    # HIG paper §3.1: two oscillators, 96 RK4 steps, |y| = 4, τ = 1e-6, 2,956 parameters
    'oscillators': lambda: from_experiment('oscillators', 'oscillators', 128),
    'oscillators512': lambda: from_experiment('oscillators512', 'oscillators', 512),
    # HIG paper §3.3: quantum dipole, 384 Crank–Nicolson steps, |y| = 28, τ = 1e-5, MLP with 9,484 parameters
    'qdipole': lambda: from_experiment('qdipole', 'quantum_dipole', 16, network='mlp'),
}
"""Benchmark cases. ``oscillators512`` is Adam's paper batch size (used for the Adam comparison)."""
