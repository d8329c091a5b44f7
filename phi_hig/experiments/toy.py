"""The toy example of Schnell, Holl & Thuerey 2022 (§2.1, appendix B.1) and of the HIG chapter of Thuerey et al.,
Physics-based Deep Learning: a badly conditioned 2-D regression.

Target ``ŷ(x) = (sin 6x, cos 9x)`` on x ∈ [−1, 1]. The network output z passes through the "physics"
``y = (z¹, γ·z²)`` and the loss is ``½‖y − ŷ‖²``. γ belongs to the physics, not the loss: only then does the
Jacobian that HIG inverts carry the bad conditioning (with γ inside the loss, HIG stalls at ≈ 0.235).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Experiment
from .settings import Count, factory

__all__ = ['toy']


def _targets(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.sin(6 * x), torch.cos(9 * x)], dim=1)


@factory(test=dict(n_points=64, batch_size=16))
def toy(gamma: float = 0.01, n_points: Count = 1024, batch_size: Count = 256, hidden: Count = 7,
        preset: str = 'paper') -> Experiment:
    """Build the toy experiment.

    Args:
        gamma: scale of the second output in the physics (paper: 1 and 0.01).
        n_points: size of the training set (and of the held-out set); uniform on [−1, 1].
        batch_size: batch size of every method (paper: 256).
        hidden: width of the tanh hidden layer (paper: 7).
        preset: 'paper' or 'test' (64 points, batch 16).
    """
    gen = torch.Generator().manual_seed(12345)
    x_train = torch.rand(n_points, 1, generator=gen) * 2 - 1
    x_test = torch.rand(n_points, 1, generator=gen) * 2 - 1

    def make_net():
        return nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def simulate(z):
        return torch.stack([z[:, 0], gamma * z[:, 1]], dim=-1)

    def loss(y, target):  # torch tensors and JAX arrays alike
        return 0.5 * ((y - target) ** 2).sum(-1)

    def jax_simulate(z):
        import jax.numpy as jnp
        return jnp.stack([z[:, 0], gamma * z[:, 1]], axis=-1)

    def metrics(net, inputs, targets):
        """Neuron saturation (mean |h|, per-unit mean and std of the hidden activations over the set) and
        the y-space position of the first held-out sample."""
        with torch.no_grad():
            h = net[1](net[0](inputs))
            y0 = simulate(net(inputs[:1]))[0]
        out = {'saturation': float(h.abs().mean()), 'sample_y1': float(y0[0]), 'sample_y2': float(y0[1])}
        for i in range(h.shape[1]):
            out[f'h{i}_mean'] = float(h[:, i].mean())
            out[f'h{i}_std'] = float(h[:, i].std())
        return out

    methods = {
        'adam': dict(lr=0.3, batch_size=batch_size),
        'sgd': dict(lr=0.1, batch_size=batch_size),
        # the paper's Gauss–Newton takes full steps Δθ = J⁺r: lr = B with g of the batch-mean loss
        'gn': dict(lr=float(batch_size), batch_size=batch_size, truncation=1e-4, kappa=-1.0),
        'hig': dict(lr=1.0, batch_size=batch_size, truncation=1e-6, kappa=-0.5),
    }
    return Experiment(
        name='toy', make_net=make_net, simulate=simulate, loss=loss, methods=methods,
        train_set=(x_train, _targets(x_train)), test_set=(x_test, _targets(x_test)), metrics=metrics,
        eval_every=50, threads=1, jax_physics=(jax_simulate, loss),
        settings=dict(gamma=gamma, n_points=n_points, batch_size=batch_size, hidden=hidden,
                                     preset=preset),
        description="HIG paper toy: y = (z1, γ z2) fitted to (sin 6x, cos 9x)",
        expected={'gn': "full Gauss–Newton steps (η = b) overshoot, saturate the tanh units and plateau, as in "
                        "Schnell, Holl & Thuerey 2022, §2.1, Fig. 1"})
