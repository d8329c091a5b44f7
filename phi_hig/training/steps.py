"""What a method kind trains with on one backend (`Builder`: an optimizer builder and a step), and the torch steps of
the built-in kinds (`phi_hig.training.kinds`): each makes one update of ``method.net`` for a
`phi_hig.training.methods.Method` and returns the batch-mean loss before it.

* `first_order_step`: a torch first-order optimizer on the batch-mean loss through the physics;
* `half_inverse_step`: `phi_hig.hig_step` (HIG, Gauss–Newton);
* `sip_torch_step`: `phi_hig.sip_step` through the experiment's inverse (SIP; Holl, Koltun & Thuerey 2022, §3.2).

Each passes the physics the batch's conditions (``method.conditions(inputs, targets)``, the experiment's
`phi_hig.experiments.Experiment.conditions`). Each refuses a non-finite loss with
`phi_hig.errors.NonFiniteStepError` before any weight changes, and a learning rate that is not a finite number >= 0
with `phi_hig.errors.InvalidInputError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from .. import checks, processes
from ..convert import example_mean
from ..errors import InvalidInputError, NonFiniteStepError
from ..hig.optimizer import hig_step

__all__ = ['Builder', 'STEP_KEYS', 'optimizer_args', 'first_order_step', 'half_inverse_step', 'sip_torch_step']

STEP_KEYS = ('batch_size', 'base', 'inverse', 'clip', 'inverse_options')
"""Keys the runner or a step reads and no optimizer constructor takes (`optimizer_args` leaves them out)."""


@dataclass(frozen=True)
class Builder:
    """How a kind trains on one backend.

    Attributes:
        build: ``build(params, hyper) -> optimizer``: the optimizer over the network's parameters for validated
            hyperparameters ``hyper``; it provides ``state_dict`` / ``load_state_dict`` (checkpoints).
        step: ``step(method, inputs, targets) -> float``: one update of ``method.net`` (``method`` a
            `phi_hig.training.methods.Method`) returning the batch-mean loss before it; on a non-finite loss it
            raises `phi_hig.errors.NonFiniteStepError` and leaves the weights untouched.
    """
    build: Callable
    step: Callable


def optimizer_args(hyper: Mapping) -> dict:
    """The validated hyperparameters an optimizer constructor takes: all but `STEP_KEYS`."""
    return {k: v for k, v in hyper.items() if k not in STEP_KEYS}


def first_order_step(method, inputs, targets) -> float:
    """One step of a torch first-order optimizer on the batch-mean loss through the physics, the gradient clipped to
    ``method.clip`` first; a non-finite loss is refused (on every rank together) before any gradient exists."""
    checks.learning_rates(method.optimizer.param_groups, f"{method.name}: ")
    method.optimizer.zero_grad(set_to_none=True)
    loss = example_mean(method.loss(method.simulate_batch(method.net(inputs), inputs, targets), targets))
    if not processes.refuse_together(bool(torch.isfinite(loss)), method.net, loss.device):
        raise NonFiniteStepError(f"{method.name}: the loss is not finite; the weights were left untouched")
    loss.backward()
    if method.clip is not None:
        torch.nn.utils.clip_grad_norm_(method.net.parameters(), method.clip)
    method.optimizer.step()
    return float(loss.detach())


def half_inverse_step(method, inputs, targets) -> float:
    """One `phi_hig.hig_step` (which checks its own learning rates); its diagnostics become ``method.last_info``."""
    method.last_info = hig_step(method.net, method.optimizer, inputs, targets, method.simulate, method.loss,
                                conditions=method.conditions(inputs, targets))
    return method.last_info.loss


def sip_torch_step(method, inputs, targets) -> float:
    """One `phi_hig.sip_step` through the experiment's inverse with the ``inverse_options`` hyperparameter; returns
    the batch-mean physics loss at the prediction."""
    from ..sip.step import sip_step
    checks.learning_rates(method.optimizer.param_groups, f"{method.name}: ")
    if method.inverse is None:
        raise InvalidInputError(f"method {method.name!r} is SIP and needs an experiment with an inverse physics solver")
    optimizer = method.optimizer if method.clip is None else _Clipped(method.optimizer, method.net, method.clip)
    result = sip_step(method.net, optimizer, inputs, targets, (method.simulate, method.inverse.solve),
                      method.conditions(inputs, targets), loss=method.loss,
                      inverse_options=dict(method.hyper.get('inverse_options') or {}))
    physics_loss = float(example_mean(result.physics_loss))
    if not math.isfinite(physics_loss):
        raise NonFiniteStepError(f"{method.name}: the physics loss is not finite")
    return physics_loss


class _Clipped:
    """An optimizer whose `step` first clips the global gradient norm of `net` to `max_norm`."""

    def __init__(self, optimizer, net, max_norm):
        self.optimizer, self.net, self.max_norm = optimizer, net, max_norm

    def zero_grad(self, *args, **kwargs):
        self.optimizer.zero_grad(*args, **kwargs)

    def step(self):
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.max_norm)
        self.optimizer.step()
