"""Training methods as interchangeable steppers, and the one rule of which hyperparameters each accepts.

A method is a name an experiment offers (`phi_hig.training.kinds.offered`): a kind of the table
(`phi_hig.training.kinds`: first-order torch optimizers, HIG and Gauss–Newton, SIP, and any registered kind) or a
variant of one defined as data (``'sip_lbfgs': dict(base='sip', inverse='lbfgs', lr=1e-3)``). Each takes
``(inputs, targets)`` and makes one update of the network through the experiment's physics. Hyperparameters use the
batch-mean convention for g (see `phi_hig.hig.optimizer`).

Which keys a method accepts is decided by its kind only (`MethodKind.hyperparameters`, plus the runner's
``batch_size``), and every caller (the runner, the command line's ``--hp`` / ``--lr`` / ``--truncation``, the
dashboard) validates through `MethodDefinition.validate` (`validate_hyperparameters`):

* a first-order method (``adam``, ``sgd``, ``adagrad``, ``adadelta``, ``rmsprop``): exactly the keyword arguments of
  its ``torch.optim`` class (defaults and types read from its signature), plus ``batch_size`` and ``clip`` (maximum
  global gradient norm);
* ``hig`` / ``gn``: the `phi_hig.HIG` constructor's keys (``lr`` for its ``learning_rate``, ``truncation``,
  ``kappa``, ``beta``, ``relative``, ``path``, ``max_bytes``, ``chunk_rows``, ``structured``) plus ``batch_size``;
  the old name ``method`` of ``path`` is accepted with a `RenamedHyperparameterWarning`;
* ``sip``: Adam's keys plus ``batch_size``, ``clip``, ``inverse`` (a key of the experiment's inverses) and
  ``inverse_options.<name>`` for each option of the chosen inverse.

The learning rate is ``lr`` (torch.optim's name, and the key records, summaries and checkpoints hold) and may be
given as ``learning_rate`` too (`phi_hig.HIG`'s and PhiML's name; `ALIASES`), to every method, in ``--hp``, the
dashboard and `phi_hig.train`'s ``overrides``; giving both is refused.

An unknown or inapplicable key, or a value of the wrong type (a bool is not a number; an int is accepted for a
float), is refused with `InvalidInputError` naming the method and the key.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from ..errors import InvalidInputError
from ..experiments.base import no_conditions, simulate_batch
from .hyperparameters import BATCH_SIZE, Hyperparameter
from .kinds import (FIRST_ORDER, METHODS, SECOND_ORDER, MethodKind, RenamedHyperparameterWarning, get_kind,
                    inverse_choices, kind_of, offered, optimizer_args)

__all__ = ['METHODS', 'FIRST_ORDER', 'SECOND_ORDER', 'VARIANT_KEYS', 'ALIASES', 'Hyperparameter', 'MethodDefinition',
           'hyperparameter_spec', 'validate_hyperparameters', 'inverse_choices', 'make_method', 'Method',
           'RenamedHyperparameterWarning']

VARIANT_KEYS = ('base', 'inverse', 'clip')
"""Keys of a method variant (see `make_method`): never passed to the optimizer."""
ALIASES = {'learning_rate': 'lr'}
"""Another spelling -> the key: accepted, without a warning, by every method that has the key and not the spelling
itself, and recorded under the key."""


def _flatten(values: Optional[Mapping]) -> dict:
    """``{'inverse_options': {'noise': 1}}`` -> ``{'inverse_options.noise': 1}``; other keys unchanged."""
    flat = {}
    for key, value in (values or {}).items():
        if key == 'inverse_options' and isinstance(value, Mapping):
            flat.update({f'inverse_options.{k}': v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


class MethodDefinition:
    """A method as an experiment offers it: its name, its kind and the experiment's defaults for it; the one place
    where its hyperparameters are listed (`spec`) and validated (`validate`).

    Args:
        experiment: an `Experiment`.
        name: a method the experiment offers (`phi_hig.training.kinds.offered`).

    Attributes:
        kind: its `MethodKind` (the ``base`` of a variant, else the kind of its name).
        defaults: the experiment's hyperparameters for it (``base`` included for a variant).

    Raises:
        InvalidInputError: the experiment does not define ``name``, or its ``base`` is no known kind.

    Example:
        >>> from phi_hig.experiments import toy
        >>> hig = MethodDefinition(toy(preset='test'), 'hig')
        >>> hig.kind.name, 'path' in hig.spec(), hig.validate({'kappa': -1})['kappa']
        ('hig', True, -1.0)
    """

    def __init__(self, experiment, name: str):
        methods = offered(experiment)
        if name not in methods:
            raise InvalidInputError(f"experiment {experiment.name!r} does not define method {name!r}; it supports "
                                    f"{', '.join(methods)}")
        self.experiment, self.name, self.defaults = experiment, name, methods[name]
        base = self.defaults.get('base', name)
        try:
            self.kind: MethodKind = get_kind(base)
        except InvalidInputError as err:
            raise InvalidInputError(f"method {name!r} of experiment {experiment.name!r} has base {base!r}: "
                                    f"{err}") from None
        self._specs = {}

    def spec(self, inverse: Optional[str] = None) -> Dict[str, Hyperparameter]:
        """Every hyperparameter the method accepts, by key (computed once per ``inverse``: for SIP, the inverse
        whose options are listed; default: the method's own)."""
        chosen = {k: v for k, v in _flatten(self.defaults).items() if k != 'base'}
        if inverse is not None:
            chosen['inverse'] = inverse
        key = chosen.get('inverse') if isinstance(chosen.get('inverse'), str) else None
        if key not in self._specs:
            self._specs[key] = dict(batch_size=BATCH_SIZE, **self.kind.hyperparameters(self.experiment, chosen))
        return self._specs[key]

    def accepts(self, key: str) -> bool:
        """Whether the method accepts ``key`` (or an old name or another spelling of one, `ALIASES`)."""
        spec = self.spec()
        return key in spec or key in self.kind.renamed or (key in ALIASES and ALIASES[key] in spec)

    def canonical(self, values: Mapping) -> dict:
        """``values`` with every other spelling of a key (`ALIASES`) under the key itself.

        Raises:
            InvalidInputError: a key is given under both spellings.
        """
        spec = self.spec()
        out = dict(values)
        for alias, key in ALIASES.items():
            if alias in out and alias not in spec and key in spec:
                if key in out:
                    raise InvalidInputError(f"{self.name}: give {key!r} or {alias!r} (the same hyperparameter), not "
                                            f"both; got {key}={out[key]!r} and {alias}={out[alias]!r}")
                out[key] = out.pop(alias)
        return out

    def validate(self, overrides: Optional[Mapping] = None, *, device='cpu') -> dict:
        """The full hyperparameters: the experiment's defaults updated by ``overrides``, checked.

        Besides the types, the optimizer itself checks the values: it is built on a throw-away parameter on
        ``device`` and, for a first-order method or SIP, makes one step with a zero gradient there (options such as
        Adam's ``capturable`` or ``differentiable`` fail only when stepping).

        Args:
            overrides: key -> value; SIP inverse options as ``{'inverse_options': {...}}`` or
                ``{'inverse_options.NAME': value}``; an old key name (HIG's ``method``) warns and means the new one;
                ``learning_rate`` means ``lr`` (`ALIASES`).
            device: the torch device the method will train on (a valid one:
                `phi_hig.training.spec.check_device`).

        Returns:
            A new dict: the experiment's keys and the overrides, values converted to their kinds; for HIG / GN always
            ``kappa``; for SIP always ``inverse`` and ``inverse_options`` (the chosen inverse's options, updated).
            Nothing is built or trained.

        Raises:
            InvalidInputError: naming the method and the key, for an unknown or inapplicable key (the message lists
                the accepted ones), a value of the wrong type or out of range, a ``base`` override, or values the
                optimizer cannot step with on ``device``.
        """
        name, kind = self.name, self.kind
        overrides = self.canonical(kind.current_names(name, _flatten(overrides)))
        if 'base' in overrides:
            raise InvalidInputError(f"{name}: 'base' cannot be overridden (it names what the variant {name!r} is)")
        merged = kind.current_names(name, {k: v for k, v in _flatten(self.defaults).items() if k != 'base'})
        merged.update(overrides)
        kind.check_experiment(self.experiment, name)
        inverse = merged.get('inverse')
        spec = self.spec(inverse if isinstance(inverse, str) else None)
        for source in (overrides, merged):
            unknown = [k for k in source if k not in spec]
            if unknown:
                what = 'unknown hyperparameter' if source is overrides else f'experiment {self.experiment.name!r} sets'
                raise InvalidInputError(f"{name}: {what} {', '.join(map(repr, unknown))}; {name} ({kind.name}) "
                                        f"accepts {', '.join(spec)}")
        hyper = {'base': self.defaults['base']} if 'base' in self.defaults else {}
        hyper.update({key: spec[key].parse(name, value) for key, value in merged.items()})
        hyper = kind.complete(self.experiment, name, hyper)
        if hyper.get('batch_size', 1) < 1:
            raise InvalidInputError(f"{name}: batch_size must be an integer >= 1, got {hyper['batch_size']!r}")
        if hyper.get('lr', 0.0) < 0:
            raise InvalidInputError(f"{name}: the learning rate lr must be >= 0, got {hyper['lr']!r}")
        # the keys a refusal by the optimizer names: those given, else those not at their default
        args = optimizer_args(hyper)
        named = [k for k in args if k in overrides] or [k for k in args if k in spec and args[k] != spec[k].default]
        kind.check(name, hyper, device, named)
        return hyper


def hyperparameter_spec(experiment, method: str, inverse: Optional[str] = None) -> Dict[str, Hyperparameter]:
    """Every hyperparameter ``method`` of ``experiment`` accepts, by key (the module docstring gives the rule;
    `MethodDefinition.spec`).

    Args:
        experiment: an `Experiment`.
        method: a method name of the experiment (a kind or a variant).
        inverse: for SIP, the inverse whose options are listed (default: the method's own).

    Raises:
        InvalidInputError: the experiment does not define ``method``.
    """
    return MethodDefinition(experiment, method).spec(inverse)


def validate_hyperparameters(experiment, method: str, overrides: Optional[Mapping] = None, *,
                             device='cpu') -> dict:
    """The full hyperparameters of ``method``: the experiment's defaults updated by ``overrides``, checked
    (`MethodDefinition.validate`, which gives the details).

    Raises:
        InvalidInputError: naming the method and the key.
    """
    return MethodDefinition(experiment, method).validate(overrides, device=device)


class Method:
    """One training method bound to a network and an experiment's physics; its kind's `Builder` for ``backend``
    builds the optimizer and makes each step.

    Build it with `make_method`, which validates the hyperparameters first.

    Attributes:
        name: method name.
        kind: its `phi_hig.training.kinds.MethodKind`.
        base: the kind's name.
        backend: the backend it trains on ('torch' or 'jax': then ``simulate`` and ``loss`` are the experiment's
            ``jax_physics`` and the optimizer a `phi_hig.training.jax_steps.JaxTrainer`).
        hyper: the validated hyperparameters in use (`validate_hyperparameters`).
        clip: the maximum global gradient norm (``hyper['clip']``), or None.
        optimizer: the optimizer (checkpointed by the runner).
        inverse: for SIP, the experiment's inverse (a `phi_hig.sip.inverses.Inverse`), called with the
            ``inverse_options`` hyperparameter.
        conditions: ``conditions(inputs, targets)``, the physics' conditions of a batch (the experiment's
            `phi_hig.experiments.Experiment.conditions`): a step passes them to ``simulate``, `phi_hig.hig_step` or
            `phi_hig.sip_step` (`simulate_batch`).
        last_info: diagnostics of the last step (a `HIGStepInfo` for hig/gn, else None).
    """

    def __init__(self, name: str, net: nn.Module, simulate, loss, hyper: dict, inverse=None, *,
                 backend: str = 'torch', conditions=None):
        self.name, self.net, self.simulate, self.loss, self.hyper = name, net, simulate, loss, dict(hyper)
        self.conditions = no_conditions if conditions is None else conditions
        self.kind = kind_of(name, hyper)
        self.base, self.backend = self.kind.name, backend
        self.inverse = inverse
        self.clip = hyper.get('clip')
        self.last_info = None
        self._builder = self.kind.builder(backend)
        self.optimizer = self._builder.build(net.parameters(), self.hyper)

    def simulate_batch(self, z, inputs, targets):
        """``simulate(z, …)`` for the predictions z of the batch ``(inputs, targets)``, with the batch's conditions
        (`phi_hig.experiments.base.simulate_batch`)."""
        return simulate_batch(self.simulate, self.conditions, z, inputs, targets)

    def step(self, inputs: torch.Tensor, targets) -> float:
        """One update; returns the batch-mean physics loss before the update.

        Raises:
            NonFiniteStepError: a non-finite loss; the weights were left untouched.
            InvalidInputError: a learning rate in the optimizer that is not a finite number >= 0 (set after
                construction, e.g. by a scheduler); the weights were left untouched.
        """
        return self._builder.step(self, inputs, targets)

    def load_optimizer_state(self, state: Mapping) -> None:
        """Load an optimizer ``state_dict``, also one saved before a hyperparameter was renamed: a parameter group's
        old key (the kind's ``renamed``) is read under its current name (torch optimizers; a JAX method's
        `phi_hig.training.jax_steps.JaxTrainer` loads its own state)."""
        if self.backend != 'torch':
            self.optimizer.load_state_dict(state)
            return
        groups = []
        for saved, current in zip(state.get('param_groups', []), self.optimizer.state_dict()['param_groups']):
            saved = dict(saved)
            for old, new in self.kind.renamed.items():
                if old in saved and old not in current and new in current:
                    saved[new] = saved.pop(old)
            groups.append(saved)
        self.optimizer.load_state_dict(dict(state, param_groups=groups) if groups else state)


def make_method(name: str, net: nn.Module, experiment, overrides: Optional[dict] = None, *,
                validated: Optional[Mapping] = None, backend: str = 'torch') -> Method:
    """The method ``name`` with the experiment's default hyperparameters, updated by ``overrides``.

    An experiment may define *variants* of the kinds as data, under any name, with four extra keys:

    * ``base``: the kind (a name of the table, `phi_hig.training.kinds.names`; default: the name itself), e.g.
      ``'sip_lbfgs': dict(base='sip', inverse='lbfgs', lr=1e-3, batch_size=128)``;
    * ``inverse``: for SIP, the key of the inverse solver in ``experiment.inverses`` (default: ``'default'``).
      Supervised training is SIP with an inverse that returns ``x_label − z`` (proxy loss ``½‖z − x_label‖²``);
    * ``inverse_options``: for SIP, a dict overriding options of that `Inverse` (validated by `Inverse.resolve`);
    * ``clip``: for first-order methods and SIP, the maximum global norm of the network gradient (clipped before
      each optimizer step).

    ``validated``: hyperparameters `validate_hyperparameters` returned (e.g. a `RunSpec`'s), used as they are
    instead of ``overrides``. ``backend``: 'torch' or 'jax' (the experiment's ``jax_physics``; `run_spec` checks
    that the experiment and the kind support it).

    Raises:
        InvalidInputError: see `validate_hyperparameters`.
    """
    if validated is not None:
        hyper = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in validated.items()}
    else:
        device = next((p.device for p in net.parameters()), 'cpu')
        hyper = validate_hyperparameters(experiment, name, overrides, device=device)
    inverse = inverse_choices(experiment).get(hyper['inverse']) if 'inverse' in hyper else None
    simulate, loss = experiment.jax_physics if backend == 'jax' else (experiment.simulate, experiment.loss)
    return Method(name, net, simulate, loss, hyper, inverse=inverse, conditions=experiment.conditions,
                  backend=backend)
