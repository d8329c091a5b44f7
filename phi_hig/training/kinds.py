"""The table of method kinds: each kind of training method, and everything about it, in one place.

A *kind* is what a method name, or a variant's ``base``, names: 'adam', 'sgd', 'adagrad', 'adadelta', 'rmsprop' (the
torch first-order optimizers), 'hig' and 'gn' (`phi_hig.HIG` with κ = −1/2 and κ = −1; Schnell, Holl & Thuerey
2022, eq. 5) and 'sip' (an inverse-solver step, then Adam on the proxy loss; Holl, Koltun & Thuerey 2022, §3.2).
A `MethodKind` owns:

* its hyperparameter spec (`MethodKind.hyperparameters`; the runner's ``batch_size`` is added for every kind), how
  a parsed set is completed (`MethodKind.complete`) and checked beyond its types (`MethodKind.check`);
* per backend a `Builder`, which builds its optimizer and makes one step (``'torch'`` for every kind; ``'jax'`` for
  'adam', 'sgd', 'hig' and 'gn', added with `add_builder` from `phi_hig.training.jax_steps`; a kind lists what it
  supports in `MethodKind.backends`);
* whether several processes train it through ``DistributedDataParallel`` (`MethodKind.needs_ddp`; HIG and GN
  distribute their own step);
* its memory estimate beyond the batch itself (`MethodKind.memory`; HIG / GN: the float64 Gram matrix,
  `phi_hig.hig.spectral.gram_bytes`);
* its renamed hyperparameters (`MethodKind.renamed`: HIG's ``method`` is now ``path``), accepted for one release
  with a `RenamedHyperparameterWarning`.

The runner, the run specification, the command line and the dashboard ask this table; adding a kind is one call of
`register` (`unregister` removes it again).

**Which methods an experiment offers** (`offered`): the methods its ``methods`` dict lists, in that order (each a
kind's name, or a variant that names its kind under ``base``), then every registered kind that has ``defaults`` and
`MethodKind.applies_to` the experiment, with those defaults. The built-in kinds have no defaults (their
hyperparameters are tuned per experiment), so an experiment offers them only where it lists them; a kind registered
with defaults is offered by every experiment it applies to, and no experiment needs editing.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Dict, List, Mapping, Optional

import torch

from .. import checks, nets
from ..errors import InvalidInputError
from ..hig.optimizer import HIG
from ..hig.spectral import DEFAULT_MAX_BYTES, PATHS, gram_bytes, gram_path
from .hyperparameters import CLIP, Hyperparameter, signature_spec, value_spec
from .steps import STEP_KEYS, Builder, first_order_step, half_inverse_step, optimizer_args, sip_torch_step

__all__ = ['MethodKind', 'FirstOrderKind', 'HalfInverseKind', 'SIPKind', 'Builder', 'MemoryNeed', 'ProblemSizes',
           'RenamedHyperparameterWarning', 'register', 'unregister', 'add_builder', 'get_kind', 'kind_of', 'names',
           'offered', 'inverse_choices', 'optimizer_args', 'FIRST_ORDER', 'SECOND_ORDER', 'METHODS', 'STEP_KEYS']

FIRST_ORDER = MappingProxyType({'adam': torch.optim.Adam, 'sgd': torch.optim.SGD, 'adagrad': torch.optim.Adagrad,
                                'adadelta': torch.optim.Adadelta, 'rmsprop': torch.optim.RMSprop})
"""The built-in first-order kinds and their torch optimizers."""
SECOND_ORDER = MappingProxyType({'hig': -0.5, 'gn': -1.0})
"""The built-in HIG-family kinds and their κ (Schnell, Holl & Thuerey 2022, eq. 5: κ = −1/2 HIG, κ = −1 GN)."""
METHODS = tuple(FIRST_ORDER) + tuple(SECOND_ORDER) + ('sip',)
"""The built-in kinds (`names` also lists the registered ones)."""


class RenamedHyperparameterWarning(DeprecationWarning):
    """A hyperparameter was given by its old name (e.g. HIG's ``method``, now ``path``); it still works for one
    release."""


@dataclass(frozen=True)
class MemoryNeed:
    """One allocation of a step that a kind estimates before any batch exists (`MethodKind.memory`); the run
    specification refuses a batch size whose ``nbytes`` exceed ``limit``.

    Attributes:
        what: what it is, e.g. 'a float64 Gram matrix'.
        nbytes: its estimated size in bytes.
        key: the hyperparameter that sets the limit, e.g. 'max_bytes'.
        limit: that hyperparameter's value in bytes (None: no limit).
    """
    what: str
    nbytes: int
    key: str
    limit: Optional[float]


def _per_example(value, size) -> int:
    if isinstance(value, torch.Tensor):
        return size(value[0]) if value.ndim else size(value)
    if isinstance(value, (tuple, list)):
        return sum(_per_example(v, size) for v in value)
    return 0


class ProblemSizes:
    """The sizes of an experiment that a memory estimate needs, read off its held-out set (no batch is allocated).

    Attributes:
        example_bytes: bytes of one example's inputs and targets.
        target_values: values of one example's targets (the estimate of |y|).
    """

    def __init__(self, experiment, n_params: Optional[int] = None):
        inputs, targets = experiment.test_set
        self.example_bytes = _per_example(inputs, lambda t: t.numel() * t.element_size()) + \
            _per_example(targets, lambda t: t.numel() * t.element_size())
        self.target_values = _per_example(targets, lambda t: t.numel())
        self._experiment, self._params = experiment, n_params

    @property
    def params(self) -> int:
        """|θ| of the experiment's network, built once on first use without touching torch's global random
        state."""
        if self._params is None:
            with torch.random.fork_rng(devices=[]):
                self._params = nets.parameter_count(self._experiment.make_net())
        return self._params


def inverse_choices(experiment) -> Dict[str, object]:
    """The experiment's SIP inverses by key ('default' first): `phi_hig.sip.inverses.Inverse` objects."""
    return dict(getattr(experiment, 'inverses', None) or {})





class MethodKind:
    """A kind of training method: what the module docstring lists, in one object. Subclass it, override what
    differs and `register` an instance; the default implementations fit a kind whose optimizer takes every key but
    `STEP_KEYS`.

    Args:
        name: the kind's name, used as a method name or a variant's ``base``: letters, digits and '_' (it appears in
            ``--methods a,b`` and ``--hp NAME.KEY=VALUE``).
        builders: per backend (e.g. ``'torch'``), a `Builder`.
        needs_ddp: with several processes, the runner wraps the network in ``DistributedDataParallel`` (gradients
            averaged over the ranks); False for a kind whose step distributes itself (HIG, GN).
        defaults: hyperparameters with which every experiment it `applies_to` offers it; None: only the
            experiments that list it offer it.
        renamed: old key -> current key, accepted with a `RenamedHyperparameterWarning`.
        description: one line saying what it is.
    """

    def __init__(self, name: str, builders: Mapping[str, Builder], *, needs_ddp: bool = True,
                 defaults: Optional[Mapping] = None, renamed: Optional[Mapping[str, str]] = None,
                 description: str = ''):
        if not isinstance(name, str) or not re.fullmatch(r'[A-Za-z]\w*', name):
            raise InvalidInputError(f"a method kind's name must be letters, digits and '_' (starting with a letter), "
                                    f"got {name!r}")
        self.name, self.needs_ddp, self.description = name, checks.flag('needs_ddp', needs_ddp), description
        self.builders = dict(builders)
        if not self.builders or not all(isinstance(b, Builder) for b in self.builders.values()):
            raise InvalidInputError(f"kind {name!r}: builders must map each backend to a Builder, got {builders!r}")
        self.defaults = None if defaults is None else MappingProxyType(dict(defaults))
        self.renamed = MappingProxyType(dict(renamed or {}))

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, backends={self.backends})"

    @property
    def backends(self) -> tuple:
        """The backends this kind trains on (those it has a `Builder` for)."""
        return tuple(self.builders)

    def applies_to(self, experiment) -> bool:
        """Whether an experiment that does not list this kind offers it (with `defaults`); only asked when
        `defaults` is set. Default: every experiment."""
        return True

    def hyperparameters(self, experiment, chosen: Mapping) -> Dict[str, Hyperparameter]:
        """Every key this kind accepts on ``experiment`` besides ``batch_size`` (the runner's, added for every
        kind). ``chosen``: the hyperparameters set so far (a key may depend on another, e.g. SIP's inverse
        options on its inverse)."""
        raise NotImplementedError(f"kind {self.name!r} does not say which hyperparameters it accepts")

    def check_experiment(self, experiment, method: str) -> None:
        """Refuse (`InvalidInputError`) an experiment this kind cannot train. Default: none is refused."""

    def complete(self, experiment, method: str, hyper: dict) -> dict:
        """The parsed hyperparameters completed (e.g. HIG's κ, SIP's inverse options), checked beyond their
        types; refusals name ``method``. Default: as they are."""
        return hyper

    def check(self, method: str, hyper: Mapping, device='cpu', named=()) -> None:
        """Value checks beyond the types, nothing trained: the torch optimizer is built on a throw-away parameter
        on ``device`` (``named``: the keys a refusal names, those the user gave first)."""
        self._probe(method, hyper, device)

    def _probe(self, method: str, hyper: Mapping, device):
        """``(optimizer, parameter)``: the torch optimizer built on one throw-away parameter on ``device``, its
        refusal as `InvalidInputError` naming ``method``."""
        dummy = torch.zeros(1, device=device, requires_grad=True)
        if 'torch' not in self.builders:
            return None, dummy
        try:
            return self.builders['torch'].build([dummy], hyper), dummy
        except InvalidInputError as err:
            raise InvalidInputError(f"{method}: {err}") from None
        except (ValueError, TypeError, RuntimeError) as err:
            raise InvalidInputError(f"{method}: {type(err).__name__} from the optimizer: {err}") from None

    def memory(self, hyper: Mapping, sizes: ProblemSizes) -> List[MemoryNeed]:
        """The allocations of one step beyond the batch's inputs and targets, estimated before any batch exists.
        Default: none."""
        return []

    def current_names(self, method: str, values: Mapping) -> dict:
        """``values`` with every renamed key under its current name, each with a `RenamedHyperparameterWarning`.

        Raises:
            InvalidInputError: both a key and its old name are given.
        """
        out = dict(values)
        for old, new in self.renamed.items():
            if old in out:
                if new in out:
                    raise InvalidInputError(f"{method}: give {new!r} only ({old!r} is its old name)")
                warnings.warn(f"{method}: the hyperparameter {old!r} is now called {new!r}; {old!r} is deprecated and "
                              f"will be removed in the next release", RenamedHyperparameterWarning, stacklevel=3)
                out[new] = out.pop(old)
        return out

    def builder(self, backend: str = 'torch') -> Builder:
        """The `Builder` of ``backend``.

        Raises:
            InvalidInputError: this kind has none for ``backend`` (the message lists `backends`).
        """
        if backend not in self.builders:
            raise InvalidInputError(f"method kind {self.name!r} has no {backend!r} backend; it supports "
                                    f"{', '.join(self.backends)}")
        return self.builders[backend]


# --- the built-in kinds -----------------------------------------------------------------------------------------
class FirstOrderKind(MethodKind):
    """A torch first-order optimizer: exactly the keyword arguments of its class (defaults and types read from its
    signature) plus ``clip``, the maximum global gradient norm."""

    def __init__(self, name: str, optimizer_class, *, step: Optional[Callable] = None, description: str = ''):
        self.optimizer_class = optimizer_class
        super().__init__(name, {'torch': Builder(self._build, step or first_order_step)}, needs_ddp=True,
                         description=description or f"torch.optim.{optimizer_class.__name__}")

    def hyperparameters(self, experiment, chosen):
        """The optimizer class's keyword arguments (read from its signature) and ``clip``."""
        return dict(signature_spec(self.optimizer_class.__init__), clip=CLIP)

    def _build(self, params, hyper):
        return self.optimizer_class(params, **optimizer_args(hyper))

    def check(self, method, hyper, device='cpu', named=()):
        """Besides building it, one step with a zero gradient: options such as Adam's ``capturable`` or
        ``differentiable`` fail only when stepping."""
        if hyper.get('clip') is not None and hyper['clip'] <= 0:
            raise InvalidInputError(f"{method}: clip (the maximum gradient norm) must be > 0, got {hyper['clip']!r}")
        optimizer, dummy = self._probe(method, hyper, device)
        dummy.grad = torch.zeros_like(dummy)
        try:
            optimizer.step()
        except Exception as err:  # e.g. Adam's capturable=True off an accelerator, differentiable=True on a leaf
            args = optimizer_args(hyper)
            what = ', '.join(f'{k}={args[k]!r}' for k in named if k in args) or 'its hyperparameters'
            raise InvalidInputError(f"{method}: {what} cannot step on {torch.device(device)}: {type(err).__name__}: "
                                    f"{' '.join(str(err).split())}") from None


class HalfInverseKind(MethodKind):
    """`phi_hig.HIG` with its κ: the constructor's keys (``lr`` for its ``learning_rate``; ``path``, not the deprecated
    ``method``). Several processes share one step (`phi_hig.hig_step` distributes it), so no DDP; its memory need is
    the float64 Gram matrix of its path (the Jacobian J itself on the 'svd' path)."""

    def __init__(self, name: str, kappa: float, description: str = ''):
        self.kappa = kappa
        super().__init__(name, {'torch': Builder(self._build, half_inverse_step)}, needs_ddp=False,
                         renamed={'method': 'path'}, description=description or f"phi_hig.HIG, kappa={kappa:g}")

    def hyperparameters(self, experiment, chosen):
        """HIG's constructor keys (``lr`` for ``learning_rate``), κ defaulting to this kind's, ``path`` one of
        `phi_hig.hig.spectral.PATHS`."""
        spec = signature_spec(HIG.__init__, skip=('self', 'net', 'lr', *self.renamed), rename={'learning_rate': 'lr'})
        spec['kappa'] = Hyperparameter('kappa', self.kappa, 'float')
        spec['path'] = Hyperparameter('path', spec['path'].default, 'choice', choices=PATHS)
        return spec

    def complete(self, experiment, method, hyper):
        """κ is always recorded (this kind's unless set): it is what distinguishes HIG from GN."""
        hyper.setdefault('kappa', self.kappa)
        return hyper

    def check(self, method, hyper, device='cpu', named=()):
        """Built only: its ``step()`` always refuses (a HIG update is made by `phi_hig.hig_step`)."""
        self._probe(method, hyper, device)

    def _build(self, params, hyper):
        args = optimizer_args(hyper)
        return HIG(params, learning_rate=args.pop('lr', 1.0), **args)

    def memory(self, hyper, sizes):
        """The float64 Gram matrix of the path a batch takes first (`gram_path`, `gram_bytes`: J Jᵀ or the dual
        JᵀJ), or on the 'svd' path the float64 J, against ``max_bytes``."""
        rows, limit = hyper['batch_size'] * sizes.target_values, hyper.get('max_bytes', DEFAULT_MAX_BYTES)
        path = gram_path(hyper.get('path', 'auto'), rows, sizes.params, None)
        if path == 'svd':  # the float64 copy of J the SVD decomposes
            return [MemoryNeed('a float64 Jacobian J (the SVD path)', 8 * rows * sizes.params, 'max_bytes', limit)]
        return [MemoryNeed('a float64 Gram matrix', gram_bytes(path, rows, sizes.params), 'max_bytes', limit)]


class SIPKind(FirstOrderKind):
    """SIP: Adam's keys plus ``clip``, ``inverse`` (a key of the experiment's inverses) and
    ``inverse_options.NAME`` for each option of the chosen inverse (`phi_hig.sip.inverses.Inverse`)."""

    def __init__(self, name: str = 'sip'):
        super().__init__(name, torch.optim.Adam, step=sip_torch_step,
                         description='scale-invariant physics: an inverse-solver step, then Adam on the proxy loss')

    def hyperparameters(self, experiment, chosen):
        """Adam's keys and ``clip``, ``inverse`` and the options of the chosen inverse."""
        spec = super().hyperparameters(experiment, chosen)
        choices = inverse_choices(experiment)
        spec['inverse'] = Hyperparameter('inverse', 'default', 'choice', choices=tuple(choices))
        inverse = chosen.get('inverse')
        inverse = choices.get(inverse if isinstance(inverse, str) else 'default')
        for name, value in dict(getattr(inverse, 'options', None) or {}).items():
            spec[f'inverse_options.{name}'] = value_spec(f'inverse_options.{name}', value)
        return spec

    def check_experiment(self, experiment, method):
        """Refuse an experiment without an inverse solver."""
        if not inverse_choices(experiment):
            raise InvalidInputError(f"{method}: SIP needs an inverse solver, and experiment {experiment.name!r} has "
                                    f"none")

    def complete(self, experiment, method, hyper):
        """The chosen inverse (default 'default') completes and checks its options (`Inverse.resolve`)."""
        hyper['inverse'] = hyper.get('inverse') or 'default'
        given = {k.split('.', 1)[1]: hyper.pop(k) for k in list(hyper) if k.startswith('inverse_options.')}
        try:
            hyper['inverse_options'] = inverse_choices(experiment)[hyper['inverse']].resolve(given)
        except InvalidInputError as err:
            raise InvalidInputError(f"{method}: inverse_options: {err}") from None
        return hyper


# --- the table --------------------------------------------------------------------------------------------------
_TABLE: Dict[str, MethodKind] = {}


def register(kind: MethodKind, *, replace: bool = False) -> MethodKind:
    """Add ``kind`` to the table (the one entry a new kind of method needs); returns it.

    Raises:
        InvalidInputError: ``kind`` is not a `MethodKind`, or a kind of its name exists (``replace=True`` replaces a
            registered one; a built-in kind is never replaced).
    """
    if not isinstance(kind, MethodKind):
        raise InvalidInputError(f"kind must be a phi_hig.training.kinds.MethodKind, got {type(kind).__name__}")
    if kind.name in METHODS and kind.name in _TABLE:
        raise InvalidInputError(f"{kind.name!r} is a built-in method kind and cannot be replaced")
    if kind.name in _TABLE and not replace:
        raise InvalidInputError(f"a method kind {kind.name!r} is registered already (replace=True replaces it)")
    _TABLE[kind.name] = kind
    return kind


def unregister(name: str) -> MethodKind:
    """Remove the registered kind ``name`` from the table; returns it.

    Raises:
        InvalidInputError: no kind of that name is registered, or it is built in.
    """
    if name in METHODS:
        raise InvalidInputError(f"{name!r} is a built-in method kind and cannot be removed")
    if name not in _TABLE:
        raise InvalidInputError(f"no method kind {name!r} is registered; registered: {', '.join(_TABLE)}")
    return _TABLE.pop(name)


def add_builder(name: str, backend: str, builder: Builder) -> None:
    """Give kind ``name`` a `Builder` for ``backend`` (how a backend such as JAX adds its builder per kind)."""
    if not isinstance(builder, Builder):
        raise InvalidInputError(f"builder must be a phi_hig.training.kinds.Builder, got {type(builder).__name__}")
    get_kind(name).builders[backend] = builder


def names() -> tuple:
    """Every kind in the table, the built-in ones first."""
    return tuple(_TABLE)


def get_kind(name: str) -> MethodKind:
    """The kind ``name``.

    Raises:
        InvalidInputError: no kind of that name (the message lists the known ones).
    """
    if name not in _TABLE:
        raise InvalidInputError(f"unknown method kind {name!r}; known: {', '.join(_TABLE)}")
    return _TABLE[name]


def kind_of(method: str, hyper: Mapping) -> MethodKind:
    """The kind of ``method`` with hyperparameters ``hyper``: its ``base``, else the method's own name."""
    return get_kind(hyper.get('base', method))


def offered(experiment) -> Dict[str, dict]:
    """The methods ``experiment`` offers, by name, each with the experiment's defaults (the module docstring gives
    the rule): those it lists, then each registered kind with defaults that applies to it."""
    out = {name: dict(defaults) for name, defaults in experiment.methods.items()}
    for kind in _TABLE.values():
        if kind.defaults is not None and kind.name not in out and kind.applies_to(experiment):
            out[kind.name] = dict(kind.defaults)
    return out


for _name, _optimizer in FIRST_ORDER.items():
    register(FirstOrderKind(_name, _optimizer))
for _name, _kappa in SECOND_ORDER.items():
    register(HalfInverseKind(_name, _kappa, description=('half-inverse gradients' if _name == 'hig' else
                                                         'Gauss-Newton (truncated pseudo-inverse)') +
                             f", phi_hig.HIG with kappa={_kappa:g}"))
register(SIPKind())


def _add_jax_builders() -> None:
    """The JAX builders of 'adam', 'sgd', 'hig' and 'gn' (`phi_hig.training.jax_steps`; JAX loads at the first
    step)."""
    from .jax_steps import jax_builders
    for name, builder in jax_builders().items():
        add_builder(name, 'jax', builder)


_add_jax_builders()
