"""The one training runner: methods × experiment, fair by construction.

Every method starts from the same initial weights (one network built after seeding, deep-copied per
method) and consumes the same ordered data stream (`DataStream`) at its own batch size. Training time is
measured around the update steps only; evaluation on the held-out set happens before the first update and
then every ``eval_every`` steps, outside the timed region. What to run is a validated `RunSpec`
(`phi_hig.training.spec.run_spec`), refused before anything trains; checkpoints (`phi_hig.training.checkpoint`) are
atomic, carry the spec's identity and resume exactly. Each method steps through its kind's builder
(`phi_hig.training.kinds`), which also says whether several processes train it through DDP.

The loop of one method is `phi_hig.training.loop.MethodRun`. Honest results: the runner warns (`RunWarning`)
and flags a method in ``summary['final'][m]['flags']`` when its training loss grows to 10× its first value
(``'loss_grew'``), when it finishes fewer than 10 steps in its time budget (``'few_steps'``) and when it diverged
(``'diverged'``); reports print no ratios for flagged methods, and a method that diverged or failed has no final
values in ``summary['final']`` (NaN: its last evaluation predates the failure; its records keep every value).
A loss growth the experiment declares as its result (`phi_hig.experiments.base.Experiment.expected`) is
recorded in ``summary['final'][m]['expected']`` instead, with no flag. A time budget is kept (a step that would
overrun it is not started) and checked before training (`phi_hig.training.loop.budget_warnings`).

A run with an output folder claims it (`phi_hig.rundir.claim`, see `run`) and ends early with every checkpoint on
disk when stopped, interrupted (`RunControl.interrupt`, a ``KeyboardInterrupt``) or unable to write a checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .. import checks, processes, rundir
from ..errors import InvalidInputError
from ..experiments.base import Experiment
from .checkpoint import load_for_resume
from .loop import (GROWTH_LIMIT, MIN_CHECKPOINT_INTERVAL, MIN_STEPS, MethodRun, RunControl, RunWarning,
                   budget_warnings, evaluate, has_value)
from .spec import RunSpec, run_spec

__all__ = ['train', 'run', 'train_variants', 'RunResult', 'RunControl', 'RunWarning', 'evaluate',
           'GROWTH_LIMIT', 'MIN_STEPS', 'MIN_CHECKPOINT_INTERVAL']



@dataclass
class RunResult:
    """What `train` returns.

    Attributes:
        records: one dict per step and method: experiment, method, step, wall_time (training seconds so
            far), train_loss, test_loss (NaN between evaluations) and the experiment's metrics.
        summary: settings, versions, device, the source of the initial weights (``init_from``: run, method, step
            and fingerprint, or None) and the final values per method (with its batch size and flags).
        nets: the trained network per method.
        spec: the `RunSpec` that was run.
    """
    records: List[dict]
    summary: dict
    nets: Dict[str, torch.nn.Module] = field(default_factory=dict)
    spec: Optional[RunSpec] = None

    def final(self, method: str, key: str = 'test_loss') -> float:
        """Last evaluated value of ``key`` for ``method``."""
        values = [r[key] for r in self.records if r['method'] == method and has_value(r, key)]
        return values[-1] if values else float('nan')


def _resume(spec: RunSpec) -> dict:
    """Every method's checkpoint, read and checked on rank 0 and sent to the other ranks (`load_for_resume`);
    a refusal is raised on every rank."""
    payload = None
    if processes.is_root():
        try:
            payload = ('ok', {m: load_for_resume(spec.out, m, spec.identity, renamed=spec.kind(m).renamed)
                              for m in spec.methods})
        except InvalidInputError as err:
            payload = ('refused', str(err))
    status, value = processes.broadcast_object(payload)
    if status != 'ok':
        raise InvalidInputError(value)
    return value


@contextlib.contextmanager
def _claimed(spec: RunSpec):
    """``spec.out`` claimed for the run by rank 0 (`phi_hig.rundir.claim`: locked, no other run's files unless resumed
    or overwritten) while inside; a refusal is raised on every rank before anything is written."""
    if spec.out is None:
        yield
        return
    folder, refusal = None, None
    if processes.is_root():
        try:
            folder = rundir.claim(spec.out, resume=spec.resume, overwrite=spec.overwrite)
        except (InvalidInputError, OSError) as err:
            refusal = err
    refused = processes.broadcast_object(None if refusal is None else str(refusal))
    if refusal is not None:
        raise refusal
    if refused is not None:
        raise InvalidInputError(refused)
    try:
        yield
    finally:
        if folder is not None:
            folder.release()


def run(spec: RunSpec, *, progress: bool = True, on_record: Optional[Callable] = None,
        control: Optional[RunControl] = None, initial_state: Optional[dict] = None, label: Optional[str] = None,
        write: Optional[Callable] = None) -> RunResult:
    """Run a validated `RunSpec`: each method from the same initial weights on the same data stream.

    With ``spec.out``, the run claims the folder while it runs (`phi_hig.rundir.claim`): a kernel lock that a second
    run is refused by (naming this one's PID and command), and no other run's files in it unless ``spec.resume`` or
    ``spec.overwrite``. With ``spec.resume``, every method's checkpoint is read and checked against the spec's identity
    before any training (`phi_hig.training.checkpoint.load_for_resume`), so a mismatch refuses the whole run.

    Ends early, with every checkpoint on disk: ``control`` stops or interrupts it (statuses ``stopped at step N`` /
    ``interrupted at step N``; the methods after the current one are skipped); a ``KeyboardInterrupt`` (no signal
    handler is installed here) checkpoints the last complete step when the interrupt came between steps (else the
    last checkpoint written stays the latest), calls ``write`` with the records so far and is re-raised; a
    checkpoint that cannot be written (a full disk) stops the run at once with `phi_hig.errors.RunFileError`.

    Args:
        spec: from `phi_hig.training.spec.run_spec`.
        progress: print a progress line to stderr every few seconds.
        on_record: called as ``on_record(record, method)`` after every record (live views; ``method.net``
            and ``method.last_info`` give the network and the last HIG diagnostics).
        control: a `RunControl` to pause, stop or interrupt the run from another thread or a signal handler.
        initial_state: a ``state_dict`` to start every method from instead of the seeded initialization (not with
            ``spec.init_from``, which names the weights to start from in the spec and its identity).
        label: names the run in its progress lines (``[toy/hig lr=0.1]``; a sweep's point).
        write: called as ``write(result)`` on rank 0 with the `RunResult` once training ended (also when it was
            stopped, interrupted or hit by a ``KeyboardInterrupt``), while ``spec.out`` is still claimed: the command
            line writes ``metrics.csv``, ``summary.json`` and the figures there (`phi_hig.report.write_run`).

    Raises:
        InvalidInputError: ``spec`` is not a `RunSpec`, ``progress`` not a bool, ``on_record`` / ``write`` not
            callable, ``control`` not a `RunControl`, ``label`` not a str, ``initial_state`` not a state dict of the
            experiment's network or given with ``spec.init_from``, ``spec.out`` claimed by another run or holding
            another run's files, or a checkpoint to resume from does not match or cannot be used (nothing trained,
            nothing written).
        RunFileError: a checkpoint could not be written (the run stopped at once).
    """
    if not isinstance(spec, RunSpec):
        raise InvalidInputError(f"spec must be a RunSpec (phi_hig.run_spec), got {type(spec).__name__}")
    progress = checks.flag('progress', progress)
    for name, function in (('on_record', on_record), ('write', write)):
        if function is not None and not callable(function):
            raise InvalidInputError(f"{name} must be a function or None, got {function!r}")
    if control is not None and not isinstance(control, RunControl):
        raise InvalidInputError(f"control must be a phi_hig.RunControl or None, got {control!r} "
                                f"({type(control).__name__})")
    if label is not None and not isinstance(label, str):
        raise InvalidInputError(f"label must be a str or None, got {label!r}")
    if initial_state is not None and not isinstance(initial_state, Mapping):
        raise InvalidInputError(f"initial_state must be a state_dict of the experiment's network (a dict of "
                                f"tensors) or None, got {type(initial_state).__name__}")
    if spec.init_from is not None:
        if initial_state is not None:
            raise InvalidInputError("initial_state and spec.init_from both name initial weights: give one")
        initial_state = spec.init_from.state
    experiment = spec.experiment
    if spec.world_size != processes.world_size():
        raise InvalidInputError(f"the spec is for {spec.world_size} process(es), but {processes.world_size()} run")
    torch.manual_seed(spec.seed)
    net0 = experiment.make_net()
    if initial_state is not None:  # strict: every key of the network, of its shape, and no other
        try:
            net0.load_state_dict(initial_state)
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as err:
            raise InvalidInputError(f"initial_state does not fit the network of {experiment.name!r}: "
                                    f"{' '.join(str(err).split())}") from None
    with _claimed(spec):
        resumed = _resume(spec) if spec.resume else {}
        return _train(spec, net0, resumed, progress, on_record, control, label, write)


def _train(spec: RunSpec, net0, resumed: dict, progress, on_record, control, label, write) -> RunResult:
    """The methods of `run`, one after the other, each from a copy of ``net0``."""
    device = torch.device(spec.device)
    runs: List[MethodRun] = []
    writers: list = []
    previous_threads = torch.get_num_threads()
    threads = spec.threads or spec.experiment.threads or previous_threads
    torch.set_num_threads(threads)
    warned = budget_warnings(spec)  # before anything trains
    try:
        for name in spec.methods:
            if control is not None and (control.stopped or control.interrupted):
                break  # a stopped or interrupted run skips the methods after the current one
            runs.append(MethodRun(spec, name, copy.deepcopy(net0).to(device), resumed.get(name), device, writers,
                                  label, warned=name in warned))
            runs[-1].train(control, progress, on_record)
    except KeyboardInterrupt:
        if runs:
            runs[-1].interrupted()
        _close(writers, raising=False)
        _write(write, _result(spec, runs, threads))
        raise
    except BaseException:
        _close(writers, raising=False)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    _close(writers, raising=True)  # every checkpoint on disk before the run returns
    result = _result(spec, runs, threads)
    _write(write, result)
    return result


def _close(writers: list, raising: bool) -> None:
    """Close every checkpoint writer (waiting for its last write); re-raise the first failure if ``raising``."""
    errors = []
    for writer in writers:
        try:
            writer.close()
        except Exception as err:
            errors.append(err)
    if errors and raising:
        raise errors[0]


def _result(spec: RunSpec, runs: list, threads: int) -> RunResult:
    records = [r for one in runs for r in one.records]
    summary = _summary(spec, [one.name for one in runs], records, {one.name: one.status for one in runs},
                       {one.name: one.watch for one in runs}, threads)
    return RunResult(records, summary, {one.name: one.net for one in runs}, spec)


def _write(write: Optional[Callable], result: RunResult) -> None:
    """``write(result)`` on rank 0, when some method has records."""
    if write is not None and processes.is_root() and result.records:
        write(result)


def train(experiment: Union[Experiment, str], methods: Union[str, Sequence[str]] = ('adam', 'hig'), *,
          steps: Optional[int] = None, seconds: Optional[float] = None, seed: int = 0,
          eval_every: Optional[int] = None, overrides: Optional[Dict[str, dict]] = None,
          device: Union[str, torch.device] = 'cpu', progress: bool = True, out: Optional[str] = None,
          checkpoint_every: Optional[int] = None, resume: bool = False, overwrite: bool = False,
          threads: Optional[int] = None, on_record: Optional[Callable] = None,
          control: Optional[RunControl] = None, initial_state: Optional[dict] = None,
          preset: Optional[str] = None, settings: Optional[dict] = None, init_from=None,
          backend: str = 'torch') -> RunResult:
    """Train each method on ``experiment`` from the same initial weights and the same data stream.

    Builds the `RunSpec` with `phi_hig.training.spec.run_spec` (which refuses any bad argument before training) and
    runs it with `run`.

    Args:
        experiment: an `Experiment` (see `phi_hig.experiments`), or a registered name (then ``preset`` and
            ``settings`` build it).
        methods: method names (comma-separated string or sequence); each must be defined by the experiment.
        steps: step budget per method.
        seconds: training wall-clock budget per method (evaluation excluded).
        seed: seeds the initial weights, the data stream and the methods' randomness.
        eval_every: evaluation cadence in steps (default: the experiment's).
        overrides: per method, hyperparameters replacing the experiment's defaults.
        device: where networks and data live.
        progress: print a progress line to stderr every few seconds.
        out: if given, write checkpoints there (with ``checkpoint_every``) and read them with ``resume``. The
            run claims the folder (`run`): locked while it runs; another run's files in it are refused unless
            ``resume`` or ``overwrite``.
        checkpoint_every: checkpoint cadence in steps (at most every `MIN_CHECKPOINT_INTERVAL` s; a method's
            last state is always written).
        resume: continue from checkpoints in ``out`` where they exist.
        overwrite: delete the files of another run in ``out`` first (only files phi_hig writes).
        threads: torch intra-op threads while training (default: the experiment's recommendation, else
            torch's current setting); restored afterwards.
        on_record, control, initial_state: see `run`.
        preset, settings: for an experiment given by name.
        init_from: ``'RUN_DIR:METHOD'``: every method starts from the final weights of ``METHOD`` in the run folder
            ``RUN_DIR`` (written with ``checkpoint_every``), e.g. HIG continuing from Adam-pre-trained weights
            (Schnell, Holl & Thuerey 2022, §3.2); refused before anything trains when that method did not finish or
            its network does not fit (`phi_hig.training.initfrom`). Recorded in the checkpoints' identity (a resume
            with other weights is refused) and in ``summary['init_from']``.
        backend: 'torch' or 'jax' (`run_spec`).

    Installs no signal handler: a ``KeyboardInterrupt`` (Ctrl-C) ends the run with its checkpoints on disk (the
    last complete step when the interrupt came between steps) and is re-raised (`run`).

    Raises:
        InvalidInputError: any bad argument, named by its Python name, before anything trains (`run_spec`, `run`);
            ``out`` in use by another run or holding another run's files.
        RunFileError: a checkpoint could not be written (the run stopped at once).

    Example:
        >>> import phi_hig
        >>> result = phi_hig.train('toy', ['adam', 'hig'], preset='test', steps=2, progress=False)
        >>> [(m, f['steps'], f['status']) for m, f in result.summary['final'].items()]
        [('adam', 2, 'ok'), ('hig', 2, 'ok')]
        >>> sorted(result.nets)
        ['adam', 'hig']

        Pre-train Adam with checkpoints (its final state is kept), then continue with HIG from its weights:

        >>> import os, tempfile, torch
        >>> folder = os.path.join(tempfile.mkdtemp(), 'pre')
        >>> pre = phi_hig.train('toy', ['adam'], preset='test', steps=3, progress=False, out=folder,
        ...                     checkpoint_every=10)
        >>> more = phi_hig.train('toy', ['hig'], preset='test', steps=0, progress=False, init_from=folder + ':adam')
        >>> torch.equal(more.nets['hig'][0].weight, pre.nets['adam'][0].weight)
        True
        >>> more.summary['init_from']['method'], more.summary['init_from']['step']
        ('adam', 3)
    """
    spec = run_spec(experiment, methods, preset=preset, settings=settings, overrides=overrides, steps=steps,
                    seconds=seconds, seed=seed, eval_every=eval_every, device=str(device), threads=threads,
                    out=out, checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite,
                    init_from=init_from, backend=backend)
    return run(spec, progress=progress, on_record=on_record, control=control, initial_state=initial_state)


def _summary(spec: RunSpec, methods, records, statuses, watches, threads) -> dict:
    import phiml
    import phi
    from .._version import __version__
    identity = spec.identity
    final = {}
    for m in methods:
        mine = [r for r in records if r['method'] == m]
        evaluated = [r for r in mine if has_value(r)]
        last = evaluated[-1] if evaluated else {}
        if statuses[m].startswith(('diverged', 'failed')):  # its last evaluation predates the failure: no final value
            last = {k: (float('nan') if checks.is_number(v) and k not in ('step', 'wall_time') else v)
                    for k, v in last.items()}
        steps_done = mine[-1]['step'] if mine else 0
        t = mine[-1]['wall_time'] if mine else 0.0
        final[m] = dict(status=statuses[m], steps=steps_done, train_seconds=t,
                        seconds_per_step=t / steps_done if steps_done else float('nan'),
                        batch_size=spec.hyperparameters[m]['batch_size'], flags=list(watches[m].flags),
                        warnings=list(watches[m].notes), expected=list(watches[m].observed),
                        **{k: v for k, v in last.items() if k not in ('experiment', 'method')})
    return dict(experiment=spec.name, preset=spec.preset, settings=identity['settings'], methods=list(methods),
                hyperparameters={m: identity['hyperparameters'][m] for m in methods}, seed=spec.seed,
                budget=dict(steps=spec.steps, seconds=spec.seconds), device=spec.device, torch_threads=threads,
                world_size=spec.world_size, init_from=None if spec.init_from is None else spec.init_from.record,
                backend=spec.backend,
                versions=dict(phi_hig=__version__, torch=torch.__version__, phiml=phiml.__version__,
                              phiflow=phi.__version__, numpy=np.__version__, python=sys.version.split()[0]),
                final=final)


def train_variants(experiment: Experiment, variants: Sequence[tuple], **train_args) -> Dict[str, RunResult]:
    """Train labelled variants ``[(label, method, overrides), ...]`` (a batch-size study, a κ–β sweep, …).

    Each variant is one `train` of ``method`` with its ``overrides`` and the same other arguments, so all start
    from the same initial weights and consume the same data stream. Every variant's `RunSpec` is built (and so
    validated) before the first one trains. In each result the records carry the label as their ``method``;
    ``summary['final']`` stays keyed by the method name. With ``out``, each variant runs in its own folder in it
    (`phi_hig.rundir.point_folder`).
    """
    run_args = {k: train_args.pop(k) for k in ('progress', 'on_record', 'control', 'initial_state') if k in train_args}
    out = train_args.pop('out', None)
    specs = [(label, run_spec(experiment, [method], overrides={method: overrides} if overrides else None,
                              out=None if out is None else os.path.join(out, rundir.point_folder(i, label)),
                              **train_args))
             for i, (label, method, overrides) in enumerate(variants)]
    results = {}
    for label, spec in specs:
        result = run(spec, **run_args)
        result.records = [dict(r, method=label) for r in result.records]
        results[label] = result
    return results
