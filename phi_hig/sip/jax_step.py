"""SIP's weight update on PhiML's JAX networks: the proxy loss minimized by a PhiML JAX optimizer.

`phi_hig.sip.sip_step` computes the prediction, the inverse-physics correction ``x̃ = x + Δx`` and every check on
any backend; on a JAX network (``StaxNet``) the last part, "minimize ½‖NN(y*) − stop_gradient(x̃)‖² by one optimizer
step", is ``phiml.nn.update_weights`` with a PhiML JAX optimizer (``phiml.nn.adam(net)`` on the JAX backend), which
differentiates the proxy loss with JAX (Holl, Koltun & Thuerey 2022, §3.2). Only imported for a JAX network.
"""
from __future__ import annotations

import weakref

import numpy as np
from phiml import math, nn

from ..convert import call_network
from ..errors import InvalidInputError, NonFiniteStepError

__all__ = ['check_optimizer', 'update_on_jax']

_PROXIES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""One proxy-loss function per network: PhiML's JAX optimizer keeps one update function per loss function."""


def check_optimizer(optimizer) -> None:
    """Refuse (`InvalidInputError`) anything but a PhiML JAX optimizer for a JAX network."""
    if callable(getattr(optimizer, 'zero_grad', None)) or not callable(getattr(optimizer, 'update', None)):
        raise InvalidInputError(f"a PhiML JAX network trains with a PhiML JAX optimizer (phiml.nn.adam(net), "
                                f"nn.sgd(net), … on the JAX backend), got {type(optimizer).__module__}."
                                f"{type(optimizer).__name__}")


def update_on_jax(network, optimizer, inputs: tuple, correction, proxy) -> None:
    """One optimizer step on ``mean(sip_loss(network(*inputs), correction))`` (``correction`` a constant), refused
    before any weight changes when ``proxy`` (the per-example proxy loss at the current weights) is not finite."""
    from phiml.backend.jax import JAX
    from .loss import sip_loss
    mean = math.mean(proxy, math.batch(proxy)) if isinstance(proxy, math.Tensor) else proxy.mean()
    if not np.isfinite(float(mean.native() if isinstance(mean, math.Tensor) else mean)):
        raise NonFiniteStepError("SIP step: the proxy loss is not finite (non-finite prediction or inverse update); "
                                 "the weights were left untouched")
    loss = _PROXIES.get(network)
    if loss is None:
        def loss(target, network_inputs):  # fixed names: PhiML's gradient passes the arguments by name
            per_example = sip_loss(call_network(network, *network_inputs), target)
            if isinstance(per_example, math.Tensor):
                return math.mean(per_example, math.batch(per_example))
            return math.wrap(per_example.mean())
        _PROXIES[network] = loss  # not math.jit_compile'd: PhiML 1.16's compiled JAX update then gives wrong steps
    with JAX:
        nn.update_weights(network, optimizer, loss, correction, tuple(inputs))
