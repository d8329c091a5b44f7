"""One validated run specification (`RunSpec`) that the command line, the dashboard and `phi_hig.train` share.

`run_spec` is the only function that turns what a user asked for (experiment, preset, settings, methods,
hyperparameter overrides, budget, seed, device, threads, output and checkpoint options) into a `RunSpec`;
it refuses every bad value with `InvalidInputError` before anything is trained or allocated. The part of a
`RunSpec` that decides the numbers of a run, `RunSpec.identity`, is what checkpoints record and what
``resume`` compares.

Memory: a method's batch is refused when its tensors would exceed a limit, estimated from the experiment's
per-example tensor sizes before any batch exists (`phi_hig.training.kinds.ProblemSizes`): the inputs and targets of
one batch against ``memory_limit`` (default `DEFAULT_BATCH_BYTES`), and what the method's kind allocates besides
(`MethodKind.memory`: for HIG / Gauss–Newton the float64 Gram matrix of its path, `phi_hig.hig.spectral.gram_bytes`,
against its ``max_bytes``). ``|y|`` is estimated by the number of target values per example.

Errors name the Python arguments (``steps must be …``); the command line shows them with its flags
(`phi_hig.cli.as_flags`).
"""
from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Sequence, Union

import torch

from .. import checks
from ..errors import InvalidInputError
from ..experiments.settings import PRESETS
from .initfrom import InitSource, load_init_source, parse_init_from
from .kinds import MethodKind, ProblemSizes, get_kind, kind_of, offered
from .methods import MethodDefinition

__all__ = ['RunSpec', 'run_spec', 'build_experiment', 'check_settings', 'check_device', 'check_mapping',
           'batch_bytes', 'PRESETS', 'DEFAULT_BATCH_BYTES', 'BACKENDS']


DEFAULT_BATCH_BYTES = 4 * 1024 ** 3
"""Default limit on the inputs and targets of one training batch (4 GiB)."""


@dataclass(frozen=True)
class RunSpec:
    """What to run, validated by `run_spec`. Immutable (mappings are read-only copies).

    Attributes:
        experiment: the built `Experiment` (not part of comparisons).
        name: the experiment's name.
        preset: its preset.
        settings: its settings as it records them (``experiment.settings``).
        methods: method names, trained one after the other.
        hyperparameters: per method, the validated hyperparameters (`phi_hig.training.methods.MethodDefinition`).
        steps: step budget per method (or None).
        seconds: training-time budget per method (or None); at least one of the two is set.
        seed: seeds the initial weights, the data stream and the methods' randomness.
        eval_every: evaluation cadence in steps.
        device: torch device string.
        threads: torch intra-op threads while training (None: the experiment's recommendation).
        out: output folder, or None.
        checkpoint_every: checkpoint cadence in steps (needs ``out``), or None; the runner also keeps
            `phi_hig.training.runner.MIN_CHECKPOINT_INTERVAL` seconds between two and always writes a method's last
            state.
        resume: continue from the checkpoints in ``out``.
        overwrite: replace the files of another run in ``out`` (`phi_hig.rundir.claim`).
        world_size: number of training processes (1: this runner).
        init_from: the final weights of an earlier run's method that every method starts from
            (`phi_hig.training.initfrom.InitSource`), or None: the seeded initialization.
        backend: 'torch' (default) or 'jax' (`phi_hig.training.jax_steps`: a PhiML JAX twin of the network trains
            through the experiment's ``jax_physics``; one process, CPU).

    Example:
        >>> import phi_hig
        >>> spec = phi_hig.run_spec('toy', ['gn'], preset='test', steps=3)
        >>> spec.methods, spec.kind('gn').name, spec.identity['hyperparameters']['gn']['kappa']
        (('gn',), 'gn', -1.0)
    """
    experiment: object = field(compare=False, repr=False)
    name: str
    preset: str
    settings: Mapping
    methods: tuple
    hyperparameters: Mapping
    steps: Optional[int]
    seconds: Optional[float]
    seed: int
    eval_every: int
    device: str = 'cpu'
    threads: Optional[int] = None
    out: Optional[str] = None
    checkpoint_every: Optional[int] = None
    resume: bool = False
    world_size: int = 1
    overwrite: bool = False
    init_from: Optional[InitSource] = None
    backend: str = 'torch'

    def kind(self, method: str) -> MethodKind:
        """The `phi_hig.training.kinds.MethodKind` of ``method`` (one of `methods`)."""
        return kind_of(method, self.hyperparameters[method])

    @property
    def identity(self) -> dict:
        """The settings that decide a run's numbers, as plain JSON data: experiment, preset, settings, seed,
        every method's hyperparameters (batch size included), world_size, with `init_from` its source
        (`InitSource.record`), and a backend other than torch (so that a checkpoint never resumes on another backend,
        and torch runs keep the identity of earlier releases). Not the budget, the device, the threads or the output
        options."""
        source = {} if self.init_from is None else dict(init_from=self.init_from.record)
        backend = {} if self.backend == 'torch' else dict(backend=self.backend)
        return _plain(dict(experiment=self.name, preset=self.preset, settings=dict(self.settings), seed=self.seed,
                           hyperparameters={m: dict(h) for m, h in self.hyperparameters.items()},
                           world_size=self.world_size, **source, **backend))


BACKENDS = ('torch', 'jax')
"""The backends a run trains on (`run_spec`'s ``backend``)."""


def _has_jax_physics(get, name: str) -> bool:
    try:
        return get(name, preset='test').jax_physics is not None
    except Exception:  # an experiment that cannot be built here is not offered on JAX either
        return False


def _plain(value):
    """JSON-normal form (mappings -> dicts with str keys, tuples -> lists, other objects -> their repr; NaN kept)
    for storing and comparing identities."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType({k: (_frozen(v) if isinstance(v, Mapping) else v) for k, v in copy.deepcopy(
        dict(mapping)).items()})


# --- experiment settings ------------------------------------------------------------------------------------
def check_settings(name: str, preset: str, settings: Optional[Mapping] = None, factory=None) -> dict:
    """The parsed settings of experiment ``name`` with ``preset``; `InvalidInputError` naming a bad one.

    Registered experiments and a user's own factory (e.g. offered by the dashboard) go through the experiments'
    one rule (`phi_hig.experiments.settings.validate`: presets, known keys, the annotated types); a user factory
    without annotations is checked for its preset and its keys only.
    """
    from ..experiments import settings as rule, validate_settings
    settings = dict(settings or {})
    if factory is None:
        return validate_settings(name, preset, settings)
    try:
        rule.parameters(factory)
    except TypeError:  # no annotations to check types against: the preset and the keys
        known = [k for k, p in inspect.signature(factory).parameters.items() if k != 'preset'
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if preset not in PRESETS:
            raise InvalidInputError(f"preset of experiment {name!r} must be one of {', '.join(map(repr, PRESETS))}; "
                                    f"got {preset!r}")
        unknown = [k for k in settings if k not in known]
        if unknown:
            raise InvalidInputError(f"experiment {name!r} has no setting {unknown[0]!r}; its settings: "
                                    f"{', '.join(known)}")
        return settings
    return rule.validate(factory, preset, settings)


def build_experiment(name: str, preset: str = 'paper', settings: Optional[Mapping] = None, factory=None):
    """Validate (`check_settings`) and build experiment ``name`` (or ``factory(preset=..., **settings)``)."""
    parsed = check_settings(name, preset, settings, factory)
    try:
        if factory is not None:
            return factory(preset=preset, **parsed)
        from ..experiments import get
        return get(name, preset=preset, **parsed)
    except (ValueError, TypeError) as err:  # a factory's own refusal of a value
        raise InvalidInputError(f"experiment {name!r}: {err}") from None


# --- memory --------------------------------------------------------------------------------------------------
def batch_bytes(experiment, hyper: Mapping, n_params: Optional[int] = None) -> dict:
    """Estimated bytes of one batch of a method: ``data`` (inputs + targets) and, with ``n_params`` given, ``gram``:
    what a HIG / GN step with ``hyper`` allocates besides (the float64 Gram matrix of its path; J on the 'svd' path).
    Pure arithmetic on the held-out set's per-example sizes: nothing is allocated."""
    sizes = ProblemSizes(experiment, n_params)
    out = dict(data=int(hyper['batch_size']) * sizes.example_bytes)
    if n_params is not None:
        out['gram'] = get_kind('hig').memory(hyper, sizes)[0].nbytes
    return out


def _check_memory(definitions: Mapping[str, MethodDefinition], hyper: Mapping, memory_limit) -> None:
    """Refuse a method whose batch, or an allocation its kind estimates (`MethodKind.memory`), exceeds its limit."""
    sizes = None
    for m, definition in definitions.items():
        sizes = sizes or ProblemSizes(definition.experiment)
        b = hyper[m]['batch_size']
        data = b * sizes.example_bytes
        if memory_limit is not None and data > memory_limit:
            raise InvalidInputError(f"{m}: batch_size {b} needs about {checks.human_bytes(data)} for one batch of "
                                    f"inputs and targets, over the limit of {checks.human_bytes(memory_limit)}")
        for need in definition.kind.memory(hyper[m], sizes):
            if need.limit is not None and need.nbytes > need.limit:
                raise InvalidInputError(f"{m}: batch_size {b} needs {need.what} of about "
                                        f"{checks.human_bytes(need.nbytes)}, over {need.key} = "
                                        f"{checks.human_bytes(need.limit)}; lower the batch size or raise "
                                        f"{m}.{need.key}")


# --- run options ---------------------------------------------------------------------------------------------
def _integer(value, what: str, minimum: int):
    return None if value is None else checks.integer(what, value, low=minimum)


def check_device(device) -> str:
    """``device`` as a torch device string, if phi_hig can train there: 'cpu', an available CUDA device or MPS.
    The one rule of a run's device (`run_spec`, the benchmark ``python -m phi_hig bench``).

    Raises:
        InvalidInputError: not a torch device, or not available in this torch build / on this machine.
    """
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInputError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if d.type == 'cuda':
        if not torch.cuda.is_available():
            why = 'this torch build has no CUDA' if torch.version.cuda is None else 'no CUDA device is visible'
            raise InvalidInputError(f"device {device!r}: {why} (torch {torch.__version__})")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise InvalidInputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif d.type == 'mps':
        if not (hasattr(torch.backends, 'mps') and torch.backends.mps.is_available()):
            raise InvalidInputError(f"device {device!r}: MPS is not available in this torch build")
    elif d.type != 'cpu':
        raise InvalidInputError(f"device {device!r}: phi_hig trains on 'cpu', 'cuda' or 'mps'")
    return str(d)


def _writable_folder(out) -> str:
    if not isinstance(out, (str, os.PathLike)):
        raise InvalidInputError(f"out must be a folder path (a str or os.PathLike), got {out!r}")
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InvalidInputError(f"out {out!r} is an existing file, not a folder")
    probe = os.path.abspath(out)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidInputError(f"out {out!r}: {probe!r} is not a writable folder")
    return out


def _definitions(methods, experiment) -> Dict[str, MethodDefinition]:
    """The methods to run, in order, each as the experiment defines it (default: every method it offers)."""
    if methods is None:
        names = list(offered(experiment))
    elif isinstance(methods, str):
        names = [m.strip() for m in methods.split(',') if m.strip()]
    elif isinstance(methods, (list, tuple)) and all(isinstance(m, str) for m in methods):
        names = [m.strip() for m in methods if m.strip()]
    else:
        raise InvalidInputError(f"methods must be method names (a comma-separated string or a list of strings), "
                                f"got {methods!r}")
    if not names:
        raise InvalidInputError(f"methods is empty; {experiment.name} has {', '.join(offered(experiment))}")
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise InvalidInputError(f"methods names {', '.join(twice)} more than once")
    return {m: MethodDefinition(experiment, m) for m in names}


def check_mapping(value, what: str, allowed: str = 'a dict') -> dict:
    """``value`` (None: empty) as a new dict; `InvalidInputError` naming ``what`` and saying ``allowed`` unless it
    is a mapping (the rule of every dict-valued argument: `run_spec`'s, the dashboard's)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be {allowed}, got {value!r} ({type(value).__name__})")
    return dict(value)


def _overrides(overrides) -> dict:
    """``overrides``: a mapping of method name -> mapping of hyperparameters (each checked)."""
    allowed = "a dict of method name -> dict of hyperparameters, e.g. {'adam': {'lr': 0.01}}"
    out = check_mapping(overrides, 'overrides', allowed)
    for method, values in out.items():
        if not isinstance(method, str):
            raise InvalidInputError(f"overrides must be {allowed}; got the key {method!r}")
        out[method] = check_mapping(values, f"overrides[{method!r}]",
                                    f"a dict of hyperparameters (overrides must be {allowed})")
    return out


def _experiment_of(experiment, preset, settings):
    """A registered name (built with ``preset`` and ``settings``) or an `Experiment` as it is."""
    from ..experiments.base import Experiment
    if isinstance(experiment, str):
        return build_experiment(experiment, 'paper' if preset is None else preset, settings)
    if not isinstance(experiment, Experiment):
        from ..experiments import NAMES
        raise InvalidInputError(f"experiment must be a registered experiment's name ({', '.join(NAMES)}) or an "
                                f"Experiment, got {experiment!r} ({type(experiment).__name__})")
    if preset is not None or settings:
        raise InvalidInputError("preset and settings apply to an experiment name, not to a built Experiment")
    return experiment


def _hyperparameters(definitions: Mapping[str, MethodDefinition], overrides: dict, common: dict, device,
                     world_size: int) -> dict:
    """Per method, its validated hyperparameters: the experiment's, then ``common`` where the method accepts the
    key, then its ``overrides``; each global batch divisible by the number of processes."""
    names = tuple(definitions)
    unknown = [m for m in overrides if m not in definitions]
    if unknown:
        raise InvalidInputError(f"overrides given for {', '.join(unknown)}, which is not among the methods run "
                                f"({', '.join(names)})")
    given = {m: {} for m in names}
    for key, value in common.items():
        takers = [m for m, definition in definitions.items() if definition.accepts(key)]
        if not takers:
            raise InvalidInputError(f"common[{key!r}]: none of the methods run ({', '.join(names)}) has a "
                                    f"hyperparameter {key!r}")
        for m in takers:
            given[m].update(definitions[m].canonical({key: value}))
    for m, values in overrides.items():
        given[m].update(definitions[m].canonical(values))  # learning_rate given for a method replaces a common lr
    hyper = {m: definition.validate(given[m], device=device) for m, definition in definitions.items()}
    for m in names:  # each rank takes an equal contiguous slice of the global batch
        if hyper[m]['batch_size'] % world_size:
            raise InvalidInputError(f"{m}: the global batch size {hyper[m]['batch_size']} is not divisible by the "
                                    f"{world_size} processes; choose a multiple of {world_size} for its batch_size")
    return hyper


def run_spec(experiment, methods: Union[None, str, Sequence[str]] = None, *, preset: Optional[str] = None,
             settings: Optional[Mapping] = None, overrides: Optional[Mapping[str, Mapping]] = None,
             common: Optional[Mapping] = None, steps: Optional[int] = None, seconds: Optional[float] = None,
             seed: int = 0, eval_every: Optional[int] = None, device='cpu', threads: Optional[int] = None, out=None,
             checkpoint_every: Optional[int] = None, resume: bool = False, overwrite: bool = False,
             memory_limit: Optional[float] = DEFAULT_BATCH_BYTES, world_size: int = 1, init_from=None,
             backend: str = 'torch') -> RunSpec:
    """Validate everything about a run and return its `RunSpec`. Nothing is trained, written or allocated.

    The arguments fall in groups, checked in this order: the budget (``steps``, ``seconds``, ``seed``,
    ``eval_every``), the machine (``device``, ``threads``, ``world_size``), the output (``out``,
    ``checkpoint_every``, ``resume``, ``overwrite``, the form of ``init_from``), then the experiment (``experiment``,
    ``preset``, ``settings``), its methods and their hyperparameters (``methods``, ``common``, ``overrides``), their
    memory (``memory_limit``) and the weights ``init_from`` names (read, never written).

    Args:
        experiment: a registered experiment's name (built here with ``preset`` and ``settings``) or a built
            `Experiment` (then ``preset`` and ``settings`` must be None: they are its own).
        methods: method names (a comma-separated string or a sequence; default: all the experiment offers,
            `phi_hig.training.kinds.offered`).
        preset: 'paper' (default) or 'test'.
        settings: experiment settings, e.g. ``{'gamma': 1}``.
        overrides: per method, hyperparameters replacing the experiment's defaults.
        common: hyperparameters for every method that accepts the key (the command line's ``--lr``,
            ``--batch-size``, ``--truncation``); a key no method accepts is refused. ``overrides`` win.
        steps, seconds: the budget per method; at least one.
        seed: integer >= 0.
        eval_every: evaluation cadence in steps (default: the experiment's).
        device: torch device.
        threads: torch threads (>= 1).
        out: output folder (created when the run writes; must not be an existing file). A run claims it
            (`phi_hig.rundir.claim`): locked while the run writes, and refused when it holds another run's files
            unless ``resume`` or ``overwrite``.
        checkpoint_every: checkpoint cadence in steps (>= 1; needs ``out``).
        resume: True to continue from the checkpoints in ``out`` (needs ``out``).
        overwrite: True to delete the files of another run in ``out`` first (only files phi_hig writes; a folder
            holding anything else is refused when the run starts). Needs ``out``; not with ``resume``.
        memory_limit: bytes one batch's inputs and targets may take (a number > 0; None: no limit).
        world_size: number of training processes.
        init_from: ``'RUN_DIR:METHOD'`` (or ``(RUN_DIR, METHOD)``): every method starts from the final weights of
            ``METHOD`` in the run folder ``RUN_DIR`` instead of the seeded initialization
            (`phi_hig.training.initfrom.load_init_source`: refused when the folder is no run folder, the method is not
            in it or did not finish, or the weights do not fit this run's network). Recorded in the identity: a
            resume with other initial weights is refused.
        backend: 'torch' or 'jax' (JAX: an experiment with ``jax_physics``, methods whose kind has a JAX builder,
            one process, device 'cpu').

    Raises:
        InvalidInputError: with one line naming the bad argument by its Python name (``steps must be …``).

    Example:
        >>> import phi_hig
        >>> spec = phi_hig.run_spec('toy', 'adam,hig', preset='test', steps=5, overrides={'hig': {'kappa': -1}})
        >>> spec.methods, spec.hyperparameters['hig']['kappa'], spec.steps
        (('adam', 'hig'), -1.0, 5)
        >>> phi_hig.run_spec('toy', 'adam', preset='test', steps=-1)
        Traceback (most recent call last):
        phi_hig.errors.InvalidInputError: steps must be an integer >= 0, got -1
    """
    steps = _integer(steps, 'steps', 0)
    if seconds is not None:
        seconds = checks.number('seconds', seconds, low=0)
    if steps is None and seconds is None:
        raise InvalidInputError("give a budget per method: steps, seconds or both")
    seed = checks.integer('seed', seed, low=0)
    eval_every = _integer(eval_every, 'eval_every', 1)
    threads = _integer(threads, 'threads', 1)
    world_size = _integer(world_size, 'world_size', 1)
    device = check_device(device)
    checkpoint_every = _integer(checkpoint_every, 'checkpoint_every', 1)
    if out is not None:
        out = _writable_folder(out)
    resume = checks.flag('resume', resume)
    overwrite = checks.flag('overwrite', overwrite)
    if memory_limit is not None:
        memory_limit = checks.number('memory_limit', memory_limit, low=0, low_open=True,
                                     hint='bytes of one batch of inputs and targets; None: no limit')
    settings = check_mapping(settings, 'settings', "a dict of experiment settings, e.g. {'gamma': 1}")
    overrides = _overrides(overrides)
    common = check_mapping(common, 'common', "a dict of hyperparameters for every method, e.g. {'lr': 0.01}")
    if checkpoint_every is not None and out is None:
        raise InvalidInputError("checkpoint_every needs out (the folder the checkpoints go to)")
    if resume and out is None:
        raise InvalidInputError("resume needs out (the folder holding the checkpoints)")
    if overwrite and out is None:
        raise InvalidInputError("overwrite needs out (the folder whose files it replaces)")
    if overwrite and resume:
        raise InvalidInputError("give resume or overwrite, not both: a run either continues the one in its folder "
                                "or replaces it")
    backend = checks.choice('backend', backend, BACKENDS)
    if backend == 'jax' and world_size > 1:
        raise InvalidInputError(f"backend 'jax' trains in one process; distributed runs (torchrun, world_size="
                                f"{world_size}) are torch only")
    if backend == 'jax' and device != 'cpu':
        raise InvalidInputError(f"backend 'jax' trains on JAX's default device (here the CPU); device must be 'cpu', "
                                f"got {device!r}")
    if init_from is not None:
        parse_init_from(init_from)  # its form, before the experiment is built
    experiment = _experiment_of(experiment, preset, settings)
    if backend == 'jax' and experiment.jax_physics is None:
        from ..experiments import NAMES, get
        ready = [n for n in NAMES if _has_jax_physics(get, n)]
        raise InvalidInputError(f"backend 'jax': experiment {experiment.name!r} has no JAX physics; the experiments "
                                f"that train on JAX: {', '.join(ready)}")
    definitions = _definitions(methods, experiment)
    if backend != 'torch':
        for name, definition in definitions.items():
            try:
                definition.kind.builder(backend)
            except InvalidInputError as err:
                raise InvalidInputError(f"methods: {name}: {err}") from None
    hyper = _hyperparameters(definitions, overrides, common, device, world_size)
    _check_memory(definitions, hyper, memory_limit)
    source = None if init_from is None else load_init_source(init_from, experiment, out)
    return RunSpec(experiment=experiment, name=experiment.name,
                   preset=str(experiment.settings.get('preset', preset or 'paper')),
                   settings=_frozen(experiment.settings), methods=tuple(definitions), hyperparameters=_frozen(hyper),
                   steps=steps, seconds=float(seconds) if seconds is not None else None, seed=seed,
                   eval_every=int(eval_every or experiment.eval_every), device=device, threads=threads, out=out,
                   checkpoint_every=checkpoint_every, resume=bool(resume), world_size=world_size,
                   overwrite=bool(overwrite), init_from=source, backend=backend)
