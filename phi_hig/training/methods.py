"""Training methods as interchangeable steppers, and the one rule of which hyperparameters each accepts.

Each method takes ``(inputs, targets)`` and makes one update of the network through the experiment's
physics: first-order torch optimizers, HIG and Gauss–Newton (`phi_hig.HIG`), and SIP (an inverse solver
step followed by Adam on the proxy loss). Hyperparameters use the batch-mean convention for g (see
`phi_hig.hig.optimizer`).

Which keys a method accepts is decided here only (`hyperparameter_spec`), and every caller (the runner,
the command line's ``--hp`` / ``--lr`` / ``--truncation``, the dashboard) validates through
`validate_hyperparameters`:

* a first-order method (``adam``, ``sgd``, ``adagrad``, ``adadelta``, ``rmsprop``): exactly the keyword
  arguments of its ``torch.optim`` class (defaults and types read from its signature), plus ``batch_size``
  and ``clip`` (maximum global gradient norm);
* ``hig`` / ``gn``: the `phi_hig.HIG` constructor's keys (``lr`` for its ``learning_rate``, ``truncation``,
  ``kappa``, ``beta``, ``relative``, ``method``, ``max_bytes``, ``chunk_rows``, ``structured``) plus
  ``batch_size``;
* ``sip``: Adam's keys plus ``batch_size``, ``clip``, ``inverse`` (a key of the experiment's inverses) and
  ``inverse_options.<name>`` for each option of the chosen inverse.

An unknown or inapplicable key, or a value of the wrong type (a bool is not a number; an int is accepted
for a float), is refused with `InvalidInputError` naming the method and the key.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import checks, processes
from ..errors import InvalidInputError, NonFiniteStepError
from ..hig.optimizer import HIG, hig_step

__all__ = ['METHODS', 'FIRST_ORDER', 'SECOND_ORDER', 'Hyperparameter', 'hyperparameter_spec',
           'validate_hyperparameters', 'inverse_choices', 'make_method', 'Method']

FIRST_ORDER = {
    'adam': torch.optim.Adam,
    'sgd': torch.optim.SGD,
    'adagrad': torch.optim.Adagrad,
    'adadelta': torch.optim.Adadelta,
    'rmsprop': torch.optim.RMSprop,
}
SECOND_ORDER = {'hig': -0.5, 'gn': -1.0}
"""The HIG-family methods and their κ (Schnell, Holl & Thuerey 2022, eq. 5: κ = −1/2 HIG, κ = −1 Gauss–Newton)."""
METHODS = tuple(FIRST_ORDER) + tuple(SECOND_ORDER) + ('sip',)
"""All base method names the runner knows."""

VARIANT_KEYS = ('base', 'inverse', 'clip')
"""Keys of a method variant (see `make_method`): never passed to the optimizer."""
_RUNNER_KEYS = ('batch_size',)


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter a method accepts.

    Attributes:
        name: the key (``inverse_options.NAME`` for an option of a SIP inverse).
        default: the value used when neither the experiment nor the user sets one.
        kind: 'float' (an int is accepted), 'int', 'bool', 'str', 'tuple' (of floats, ``length`` long) or
            'choice' (one of ``choices``).
        nullable: None is accepted too.
    """
    name: str
    default: object
    kind: str
    nullable: bool = False
    choices: tuple = ()
    length: int = 0

    def parse(self, method: str, value):
        """``value`` converted to this kind (float for 'float', tuple for 'tuple'); `InvalidInputError` if it
        has the wrong type or is not finite."""
        where = f"{method}: {self.name}"
        if value is None:
            if self.nullable:
                return None
            raise InvalidInputError(f"{where} must not be None")
        if self.kind == 'bool':
            return checks.flag(where, value)
        if self.kind == 'float':
            return checks.number(where, value)
        if self.kind == 'int':
            return checks.integer(where, value)
        if self.kind == 'tuple':
            if not isinstance(value, (list, tuple)) or len(value) != self.length:
                raise InvalidInputError(f"{where} must be {self.length} finite numbers, e.g. {self.default!r}, "
                                        f"got {value!r}")
            return tuple(checks.number(f"{where}[{i}]", v) for i, v in enumerate(value))
        if self.kind == 'choice':
            return checks.choice(where, value, self.choices)
        if not isinstance(value, str):
            raise InvalidInputError(f"{where} must be a string, got {value!r} ({type(value).__name__})")
        return value


def _kind(annotation, default) -> tuple:
    """(kind, nullable, length) from a signature's annotation (a type or its string) and default."""
    text = str(annotation) if annotation is not inspect.Parameter.empty else ''
    nullable = default is None or 'None' in text or 'Optional' in text
    if text.startswith('tuple') or isinstance(default, tuple):
        return 'tuple', nullable, len(default) if isinstance(default, tuple) else 2
    for kind in ('bool', 'float', 'int', 'str'):
        if kind in text:
            return kind, nullable, 0
    if isinstance(default, bool):
        return 'bool', nullable, 0
    if isinstance(default, (int, float)):
        return 'float', nullable, 0
    return 'str', nullable, 0


def _signature_spec(fn, skip=('self', 'params', 'net'), rename=None) -> Dict[str, Hyperparameter]:
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        key = (rename or {}).get(name, name)
        kind, nullable, length = _kind(p.annotation, p.default)
        out[key] = Hyperparameter(key, p.default, kind, nullable, length=length)
    return out


_BATCH = Hyperparameter('batch_size', 32, 'int')
_CLIP = Hyperparameter('clip', None, 'float', nullable=True)


def inverse_choices(experiment) -> Dict[str, object]:
    """The experiment's SIP inverses by key ('default' first): `phi_hig.sip.inverses.Inverse` objects."""
    return dict(getattr(experiment, 'inverses', None) or {})


def _experiment_defaults(experiment, method: str) -> dict:
    if method not in experiment.methods:
        raise InvalidInputError(f"experiment {experiment.name!r} does not define method {method!r}; "
                                f"it supports {', '.join(experiment.methods)}")
    defaults = dict(experiment.methods[method])
    base = defaults.get('base', method)
    if base not in METHODS:
        raise InvalidInputError(f"method {method!r} of experiment {experiment.name!r} has base {base!r}; "
                                f"known: {', '.join(METHODS)}")
    return defaults


def hyperparameter_spec(experiment, method: str, inverse: Optional[str] = None) -> Dict[str, Hyperparameter]:
    """Every hyperparameter ``method`` of ``experiment`` accepts, by key (the module docstring gives the rule).

    Args:
        experiment: an `Experiment`.
        method: a method name of the experiment (a base method or a variant).
        inverse: for SIP, the inverse whose options are listed (default: the method's own).

    Raises:
        InvalidInputError: the experiment does not define ``method``.
    """
    defaults = _experiment_defaults(experiment, method)
    base = defaults.get('base', method)
    if base in SECOND_ORDER:
        spec = _signature_spec(HIG.__init__, rename={'learning_rate': 'lr'})
        spec['kappa'] = Hyperparameter('kappa', SECOND_ORDER[base], 'float')
        spec['batch_size'] = _BATCH
        return spec
    spec = _signature_spec(FIRST_ORDER['adam' if base == 'sip' else base].__init__)
    spec['batch_size'], spec['clip'] = _BATCH, _CLIP
    if base == 'sip':
        choices = inverse_choices(experiment)
        spec['inverse'] = Hyperparameter('inverse', 'default', 'choice', choices=tuple(choices))
        chosen = choices.get(inverse or defaults.get('inverse') or 'default')
        for name, value in dict(getattr(chosen, 'options', None) or {}).items():
            key = f'inverse_options.{name}'
            kind, nullable, length = _kind(inspect.Parameter.empty, value)
            if isinstance(value, int) and not isinstance(value, bool):
                kind = 'int'
            spec[key] = Hyperparameter(key, value, kind, nullable, length=length)
    return spec


def _flatten(overrides: Mapping) -> dict:
    """``{'inverse_options': {'noise': 1}}`` -> ``{'inverse_options.noise': 1}``; other keys unchanged."""
    flat = {}
    for key, value in (overrides or {}).items():
        if key == 'inverse_options' and isinstance(value, Mapping):
            flat.update({f'inverse_options.{k}': v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def validate_hyperparameters(experiment, method: str, overrides: Optional[Mapping] = None, *,
                             device='cpu') -> dict:
    """The full hyperparameters of ``method``: the experiment's defaults updated by ``overrides``, checked.

    Besides the types, the optimizer itself checks the values: it is built on a throw-away parameter on ``device``
    and, for a first-order method or SIP, makes one step with a zero gradient there (options such as Adam's
    ``capturable`` or ``differentiable`` fail only when stepping).

    Args:
        experiment: an `Experiment`.
        method: a method the experiment defines.
        overrides: key -> value; SIP inverse options as ``{'inverse_options': {...}}`` or
            ``{'inverse_options.NAME': value}``.
        device: the torch device the method will train on (a valid one: `phi_hig.training.spec.check_device`).

    Returns:
        A new dict: the experiment's keys and the overrides, values converted to their kinds; for HIG / GN
        always ``kappa``; for SIP always ``inverse`` and ``inverse_options`` (the chosen inverse's options,
        updated). Nothing is built or trained.

    Raises:
        InvalidInputError: naming the method and the key, for an unknown or inapplicable key (the message lists
            the accepted ones), a value of the wrong type or out of range, a ``base`` override, or values the
            optimizer cannot step with on ``device``.
    """
    defaults = _experiment_defaults(experiment, method)
    overrides = _flatten(overrides)
    if 'base' in overrides:
        raise InvalidInputError(f"{method}: 'base' cannot be overridden (it names what the variant {method!r} is)")
    base = defaults.get('base', method)
    inverse = overrides.get('inverse', defaults.get('inverse'))
    spec = hyperparameter_spec(experiment, method, inverse=inverse if isinstance(inverse, str) else None)
    merged = {k: v for k, v in _flatten(defaults).items() if k != 'base'}
    merged.update(overrides)
    if base == 'sip' and not inverse_choices(experiment):
        raise InvalidInputError(f"{method}: SIP needs an inverse solver, and experiment {experiment.name!r} has none")
    for source in (overrides, merged):
        unknown = [k for k in source if k not in spec]
        if unknown:
            what = 'unknown hyperparameter' if source is overrides else f'experiment {experiment.name!r} sets'
            raise InvalidInputError(f"{method}: {what} {', '.join(map(repr, unknown))}; {method} ({base}) "
                                    f"accepts {', '.join(spec)}")
    hyper = {'base': defaults['base']} if 'base' in defaults else {}
    for key, value in merged.items():
        hyper[key] = spec[key].parse(method, value)
    if base in SECOND_ORDER:
        hyper.setdefault('kappa', SECOND_ORDER[base])
    if base == 'sip':  # the chosen Inverse completes and checks its options (`Inverse.resolve`)
        hyper['inverse'] = hyper.get('inverse') or 'default'
        given = {k.split('.', 1)[1]: hyper.pop(k) for k in list(hyper) if k.startswith('inverse_options.')}
        try:
            hyper['inverse_options'] = inverse_choices(experiment)[hyper['inverse']].resolve(given)
        except InvalidInputError as err:
            raise InvalidInputError(f"{method}: inverse_options: {err}") from None
    args = _optimizer_args(hyper)  # the keys a refusal by the optimizer names: those given, else those not default
    named = [k for k in args if k in overrides] or [k for k in args if k in spec and args[k] != spec[k].default]
    _check_ranges(method, base, hyper, device, named)
    return hyper


def _check_ranges(method: str, base: str, hyper: dict, device='cpu', named=()) -> None:
    """Value checks beyond the type: the optimizer's own, on a throw-away parameter on ``device`` (nothing is
    trained). A first-order optimizer (also SIP's) makes one step with a zero gradient; a refusal names the method
    and the optimizer keys ``named``."""
    if hyper.get('batch_size', 1) < 1:
        raise InvalidInputError(f"{method}: batch_size must be an integer >= 1, got {hyper['batch_size']!r}")
    if hyper.get('lr', 0.0) < 0:
        raise InvalidInputError(f"{method}: the learning rate lr must be >= 0, got {hyper['lr']!r}")
    if hyper.get('clip') is not None and hyper['clip'] <= 0:
        raise InvalidInputError(f"{method}: clip (the maximum gradient norm) must be > 0, got {hyper['clip']!r}")
    dummy = [torch.zeros(1, device=device, requires_grad=True)]
    try:
        optimizer = _build_optimizer(base, dummy, hyper)
    except InvalidInputError as err:
        raise InvalidInputError(f"{method}: {err}") from None
    except (ValueError, TypeError, RuntimeError) as err:
        raise InvalidInputError(f"{method}: {type(err).__name__} from the optimizer: {err}") from None
    if base in SECOND_ORDER:  # HIG's step() always raises HIGUsageError (it steps through hig_step)
        return
    dummy[0].grad = torch.zeros_like(dummy[0])
    try:
        optimizer.step()
    except Exception as err:  # e.g. Adam's capturable=True off an accelerator, differentiable=True on a leaf
        args = _optimizer_args(hyper)
        what = ', '.join(f'{k}={args[k]!r}' for k in named) or 'its hyperparameters'
        raise InvalidInputError(f"{method}: {what} cannot step on {torch.device(device)}: {type(err).__name__}: "
                                f"{' '.join(str(err).split())}") from None


def _optimizer_args(hyper: dict) -> dict:
    return {k: v for k, v in hyper.items()
            if k not in _RUNNER_KEYS and k not in VARIANT_KEYS and k != 'inverse_options'}


def _build_optimizer(base: str, params, hyper: dict) -> torch.optim.Optimizer:
    args = _optimizer_args(hyper)
    if base in SECOND_ORDER:
        lr = args.pop('lr', 1.0)
        return HIG(params, learning_rate=lr, **args)
    return FIRST_ORDER['adam' if base == 'sip' else base](params, **args)


class Method:
    """One training method bound to a network and an experiment's physics.

    Build it with `make_method`, which validates the hyperparameters first.

    Attributes:
        name: method name.
        base: the base method (one of `METHODS`).
        hyper: the validated hyperparameters in use (`validate_hyperparameters`).
        optimizer: the underlying ``torch.optim.Optimizer`` (checkpointed by the runner).
        inverse: for SIP, the experiment's inverse (an `phi_hig.sip.inverses.Inverse` or a bare callable), called
            with the ``inverse_options`` hyperparameter.
        last_info: diagnostics of the last step (a `HIGStepInfo` for hig/gn, else None).
    """

    def __init__(self, name: str, net: nn.Module, simulate, loss, hyper: dict, inverse=None):
        self.name, self.net, self.simulate, self.loss, self.hyper = name, net, simulate, loss, dict(hyper)
        self.base = hyper.get('base', name)
        self.inverse = inverse
        self.clip = hyper.get('clip')
        self.last_info = None
        if self.base == 'sip' and inverse is None:
            raise InvalidInputError(f"method {name!r} is SIP and needs an experiment with an inverse physics solver")
        self.optimizer = _build_optimizer(self.base, net.parameters(), hyper)

    def step(self, inputs: torch.Tensor, targets) -> float:
        """One update; returns the batch-mean physics loss before the update.

        Raises:
            NonFiniteStepError: a non-finite loss; the weights were left untouched.
            InvalidInputError: a learning rate in the optimizer that is not a finite number >= 0 (set after
                construction, e.g. by a scheduler); the weights were left untouched.
        """
        if isinstance(self.optimizer, HIG):  # hig_step checks its own learning rates
            self.last_info = hig_step(self.net, self.optimizer, inputs, targets, self.simulate, self.loss)
            return self.last_info.loss
        checks.learning_rates(self.optimizer.param_groups, f"{self.name}: ")
        if self.base == 'sip':
            from ..sip.step import sip_step
            optimizer = self.optimizer if self.clip is None else _Clipped(self.optimizer, self.net, self.clip)
            result = sip_step(self.net, optimizer, inputs, targets, (self.simulate, self.inverse.solve),
                              loss=self.loss, inverse_options=dict(self.hyper.get('inverse_options') or {}))
            physics_loss = _mean_value(result.physics_loss)
            if not math.isfinite(physics_loss):
                raise NonFiniteStepError(f"{self.name}: the physics loss is not finite")
            return physics_loss
        self.optimizer.zero_grad(set_to_none=True)
        z = self.net(inputs)
        y = self.simulate(z) if self.simulate is not None else z
        loss = self.loss(y, targets).mean()
        finite = bool(torch.isfinite(loss))
        if isinstance(self.net, DistributedDataParallel):  # every rank refuses, or none (no rank left waiting)
            finite = processes.all_true(finite, loss.device)
        if not finite:
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
    from phiml import math as pmath
    return float(pmath.mean(per_example, per_example.shape))


def make_method(name: str, net: nn.Module, experiment, overrides: Optional[dict] = None, *,
                validated: Optional[Mapping] = None) -> Method:
    """The method ``name`` with the experiment's default hyperparameters, updated by ``overrides``.

    An experiment may define *variants* of the base methods as data, under any name, with three extra keys:

    * ``base``: the base method (one of `METHODS`; default: the name itself), e.g.
      ``'sip_lbfgs': dict(base='sip', inverse='lbfgs', lr=1e-3, batch_size=128)``;
    * ``inverse``: for SIP, the key of the inverse solver in ``experiment.inverses`` (default: ``'default'``).
      Supervised training is SIP with an inverse that returns ``x_label − z`` (proxy loss ``½‖z − x_label‖²``);
    * ``inverse_options``: for SIP, a dict overriding options of that `Inverse` (validated by `Inverse.resolve`);
    * ``clip``: for first-order methods and SIP, the maximum global norm of the network gradient (clipped
      before each optimizer step).

    ``validated``: hyperparameters `validate_hyperparameters` returned (e.g. a `RunSpec`'s), used as they are
    instead of ``overrides``.

    Raises:
        InvalidInputError: see `validate_hyperparameters`.
    """
    if validated is not None:
        hyper = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in validated.items()}
    else:
        device = next((p.device for p in net.parameters()), 'cpu')
        hyper = validate_hyperparameters(experiment, name, overrides, device=device)
    inverse = inverse_choices(experiment).get(hyper['inverse']) if hyper.get('base', name) == 'sip' else None
    return Method(name, net, experiment.simulate, experiment.loss, hyper, inverse=inverse)
