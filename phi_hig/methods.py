"""Training methods as interchangeable steppers: first-order torch optimizers, HIG, Gauss–Newton and SIP.

Each method takes ``(inputs, targets)`` and makes one update of the network through the experiment's
physics. Hyperparameters use the batch-mean convention for g (see `phi_hig.optimizer`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .errors import InvalidInputError
from .optimizer import HIG, hig_step

__all__ = ['METHODS', 'make_method', 'Method']

FIRST_ORDER = {
    'adam': torch.optim.Adam,
    'sgd': torch.optim.SGD,
    'adagrad': torch.optim.Adagrad,
    'adadelta': torch.optim.Adadelta,
    'rmsprop': torch.optim.RMSprop,
}
SECOND_ORDER = {'hig': -0.5, 'gn': -1.0}
METHODS = tuple(FIRST_ORDER) + tuple(SECOND_ORDER) + ('sip',)
"""All method names the runner knows."""

_RUNNER_KEYS = {'batch_size'}
_HIG_KEYS = {'lr', 'truncation', 'kappa', 'beta', 'relative', 'method'}


class Method:
    """One training method bound to a network and an experiment's physics.

    Attributes:
        name: method name.
        hyper: the hyperparameters in use.
        optimizer: the underlying ``torch.optim.Optimizer`` (checkpointed by the runner).
        last_info: diagnostics of the last step (a `HIGStepInfo` for hig/gn, else None).
    """

    def __init__(self, name: str, net: nn.Module, simulate, loss, hyper: dict, inverse=None):
        self.name, self.net, self.simulate, self.loss, self.hyper = name, net, simulate, loss, dict(hyper)
        self.inverse = inverse
        self.last_info = None
        opt_args = {k: v for k, v in hyper.items() if k not in _RUNNER_KEYS}
        if name in FIRST_ORDER or name == 'sip':
            if opt_args.get('lr', 1) < 0:
                raise InvalidInputError(f"{name}: learning rate must be >= 0, got {opt_args['lr']}")
            cls = FIRST_ORDER['adam' if name == 'sip' else name]
            opt_args.pop('optimizer', None)
            self.optimizer = cls(net.parameters(), **opt_args)
        elif name in SECOND_ORDER:
            unknown = set(opt_args) - _HIG_KEYS - {'max_bytes', 'chunk_rows'}
            if unknown:
                raise InvalidInputError(f"{name}: unknown hyperparameters {sorted(unknown)}")
            opt_args.setdefault('kappa', SECOND_ORDER[name])
            lr = opt_args.pop('lr', 1.0)
            self.optimizer = HIG(net, learning_rate=lr, **opt_args)
        else:
            raise InvalidInputError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
        if name == 'sip' and inverse is None:
            raise InvalidInputError("method 'sip' needs an experiment with an inverse physics solver")

    def step(self, inputs: torch.Tensor, targets) -> float:
        """One update; returns the batch-mean physics loss before the update."""
        if isinstance(self.optimizer, HIG):
            self.last_info = hig_step(self.net, self.optimizer, inputs, targets, self.simulate, self.loss)
            return self.last_info.loss
        if self.name == 'sip':
            from .sip import sip_step
            result = sip_step(self.net, self.optimizer, inputs, targets, (self.simulate, self.inverse),
                              loss=self.loss)
            physics_loss = _mean_value(result.physics_loss)
            if physics_loss != physics_loss or abs(physics_loss) == float('inf'):
                from .errors import NonFiniteStepError
                raise NonFiniteStepError("sip: the physics loss is not finite")
            return physics_loss
        self.optimizer.zero_grad(set_to_none=True)
        z = self.net(inputs)
        y = self.simulate(z) if self.simulate is not None else z
        loss = self.loss(y, targets).mean()
        if not bool(torch.isfinite(loss)):
            from .errors import NonFiniteStepError
            raise NonFiniteStepError(f"{self.name}: the loss is not finite; the weights were left untouched")
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _mean_value(per_example) -> float:
    """Mean of a per-example loss given as a torch tensor or a PhiML tensor."""
    if isinstance(per_example, torch.Tensor):
        return float(per_example.mean())
    from phiml import math
    return float(math.mean(per_example, per_example.shape))


def make_method(name: str, net: nn.Module, experiment, overrides: Optional[dict] = None) -> Method:
    """The method ``name`` with the experiment's default hyperparameters, updated by ``overrides``."""
    if name not in experiment.methods:
        raise InvalidInputError(f"experiment {experiment.name!r} does not define method {name!r}; "
                                f"it supports {', '.join(experiment.methods)}")
    hyper = dict(experiment.methods[name])
    hyper.update(overrides or {})
    return Method(name, net, experiment.simulate, experiment.loss, hyper, inverse=experiment.inverse)
