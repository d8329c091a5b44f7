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
_VARIANT_KEYS = {'base', 'inverse', 'clip', 'inverse_options'}
"""Keys of a method variant (see `make_method`): never passed to the optimizer."""
_HIG_KEYS = {'lr', 'truncation', 'kappa', 'beta', 'relative', 'method', 'structured'}


class Method:
    """One training method bound to a network and an experiment's physics.

    Attributes:
        name: method name.
        hyper: the hyperparameters in use.
        optimizer: the underlying ``torch.optim.Optimizer`` (checkpointed by the runner).
        last_info: diagnostics of the last step (a `HIGStepInfo` for hig/gn, else None).
    """

    def __init__(self, name: str, net: nn.Module, simulate, loss, hyper: dict, inverse=None, base: str = None,
                 inverse_options: Optional[dict] = None):
        self.name, self.net, self.simulate, self.loss, self.hyper = name, net, simulate, loss, dict(hyper)
        self.inverse = inverse
        self.inverse_options = dict(inverse_options or {})  # SIP: passed to the inverse on every step
        self.last_info = None
        self.clip = hyper.get('clip')
        name = self.base = base or hyper.get('base') or name
        opt_args = {k: v for k, v in hyper.items() if k not in _RUNNER_KEYS and k not in _VARIANT_KEYS}
        if self.clip is not None and (name in SECOND_ORDER or not self.clip > 0):
            raise InvalidInputError(f"{self.name}: clip (max gradient norm) must be > 0 and needs a first-order "
                                    f"method or sip, got clip={self.clip!r} with {name!r}")
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
        if self.base == 'sip':
            from .sip import sip_step
            optimizer = self.optimizer if self.clip is None else _Clipped(self.optimizer, self.net, self.clip)
            result = sip_step(self.net, optimizer, inputs, targets, (self.simulate, self.inverse),
                              loss=self.loss, inverse_options=self.inverse_options)
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
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
        self.optimizer.step()
        return float(loss.detach())


class _Clipped:
    """An optimizer whose `step` first clips the global gradient norm of `net` to `max_norm`."""

    def __init__(self, optimizer, net, max_norm):
        self.optimizer, self.net, self.max_norm = optimizer, net, max_norm

    def zero_grad(self, *args, **kwargs):
        self.optimizer.zero_grad(*args, **kwargs)

    def step(self):
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.max_norm)
        self.optimizer.step()


def _mean_value(per_example) -> float:
    """Mean of a per-example loss given as a torch tensor or a PhiML tensor."""
    if isinstance(per_example, torch.Tensor):
        return float(per_example.mean())
    from phiml import math
    return float(math.mean(per_example, per_example.shape))


def make_method(name: str, net: nn.Module, experiment, overrides: Optional[dict] = None) -> Method:
    """The method ``name`` with the experiment's default hyperparameters, updated by ``overrides``.

    An experiment may define *variants* of the base methods as data, under any name, with three extra keys:

    * ``base``: the base method (one of `METHODS`; default: the name itself), e.g.
      ``'sip_lbfgs': dict(base='sip', inverse='lbfgs', lr=1e-3, batch_size=128)``;
    * ``inverse``: for SIP, the key of the inverse solver in ``experiment.inverses`` (default: ``'default'``).
      Supervised training is SIP with an inverse that returns ``x_label − z`` (proxy loss ``½‖z − x_label‖²``);
    * ``inverse_options``: for SIP, a dict overriding options of that `Inverse` (validated by `Inverse.resolve`);
    * ``clip``: for first-order methods and SIP, the maximum global norm of the network gradient (clipped
      before each optimizer step).
    """
    if name not in experiment.methods:
        raise InvalidInputError(f"experiment {experiment.name!r} does not define method {name!r}; "
                                f"it supports {', '.join(experiment.methods)}")
    hyper = dict(experiment.methods[name])
    hyper.update(overrides or {})
    base = hyper.get('base', name)
    if base not in METHODS:
        raise InvalidInputError(f"method {name!r} of experiment {experiment.name!r} has base {base!r}; "
                                f"known: {', '.join(METHODS)}")
    # SIP inverses (data format: phi_hig.experiments.base.Inverse): the variant's 'inverse' key picks one of
    # experiment.inverses ('default' unless given); 'inverse_options' override its options, validated here.
    inverses = getattr(experiment, 'inverses', None) or {}
    key = hyper.get('inverse')
    if key is not None and key not in inverses:
        raise InvalidInputError(f"method {name!r}: experiment {experiment.name!r} has no inverse "
                                f"{key!r}; it has {', '.join(inverses) or 'none'}")
    inverse, inverse_options = inverses.get('default' if key is None else key), None
    if hyper.get('inverse_options') is not None:
        if base != 'sip':
            raise InvalidInputError(f"method {name!r}: inverse_options need a SIP method, but its base is {base!r}")
        if inverse is None:
            raise InvalidInputError(f"method {name!r}: experiment {experiment.name!r} has no inverse to take "
                                    f"inverse_options")
    if base == 'sip' and inverse is not None:
        inverse_options = inverse.resolve(hyper.get('inverse_options'))
    return Method(name, net, experiment.simulate, experiment.loss, hyper, inverse=inverse, base=base,
                  inverse_options=inverse_options)
