"""The one training runner: methods × experiment, fair by construction.

Every method starts from the same initial weights (one network built after seeding, deep-copied per
method) and consumes the same ordered data stream (`DataStream`) at its own batch size. Training time is
measured around the update steps only; evaluation on the held-out set happens before the first update and
then every ``eval_every`` steps, outside the timed region. What to run is a validated `RunSpec`
(`phi_hig.training.spec.run_spec`), refused before anything trains; checkpoints (`phi_hig.training.checkpoint`) are atomic,
carry the spec's identity and resume exactly.

Honest results: the runner warns (`RunWarning`) and flags a method in ``summary['final'][m]['flags']`` when
its training loss grows to 10× its first value (``'loss_grew'``), when it finishes fewer than 10 steps in
its time budget (``'few_steps'``) and when it diverged (``'diverged'``); reports print no ratios for flagged
methods.
"""
from __future__ import annotations

import copy
import math
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .. import checks
from .checkpoint import Checkpoint, CheckpointWriter, load_for_resume
from ..errors import InvalidInputError, NonFiniteStepError
from ..experiments.base import DataStream, Experiment
from .. import processes
from .methods import SECOND_ORDER, make_method
from .spec import RunSpec, run_spec

__all__ = ['train', 'run', 'train_variants', 'RunResult', 'RunControl', 'RunWarning', 'evaluate',
           'GROWTH_LIMIT', 'MIN_STEPS']

GROWTH_LIMIT = 10.0
"""A training loss this many times its first value flags the method ('loss_grew')."""
MIN_STEPS = 10
"""A method with fewer steps than this in its time budget is flagged ('few_steps')."""
MIN_CHECKPOINT_INTERVAL = 0.25
"""Seconds at least between two checkpoints of a method (besides ``checkpoint_every`` steps): each write
costs fsyncs and, in its background thread, hands the GIL back and forth with the training thread."""


class RunWarning(UserWarning):
    """A run's result should not be compared as it stands (divergence, too few steps)."""


class RunControl:
    """Pause, resume and stop a running `train` from another thread (e.g. a GUI). Thread-safe."""

    def __init__(self):
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()

    def pause(self) -> None:
        """Hold the run before its next step (`proceed` blocks) until `resume` or `stop`."""
        self._go.clear()

    def resume(self) -> None:
        """Let a paused run take its next step."""
        self._go.set()

    def stop(self) -> None:
        """End the run before its next step (a paused run wakes up to end)."""
        self._stop.set()
        self._go.set()

    @property
    def paused(self) -> bool:
        """Whether the run is held by `pause`."""
        return not self._go.is_set()

    @property
    def stopped(self) -> bool:
        """Whether `stop` was called."""
        return self._stop.is_set()

    def proceed(self) -> bool:
        """Block while paused; False once a stop was requested."""
        self._go.wait()
        return not self._stop.is_set()


@dataclass
class RunResult:
    """What `train` returns.

    Attributes:
        records: one dict per step and method: experiment, method, step, wall_time (training seconds so
            far), train_loss, test_loss (NaN between evaluations) and the experiment's metrics.
        summary: settings, versions, device and the final values per method (with its batch size and flags).
        nets: the trained network per method.
        spec: the `RunSpec` that was run.
    """
    records: List[dict]
    summary: dict
    nets: Dict[str, torch.nn.Module] = field(default_factory=dict)
    spec: Optional[RunSpec] = None

    def final(self, method: str, key: str = 'test_loss') -> float:
        """Last evaluated value of ``key`` for ``method``."""
        values = [r[key] for r in self.records if r['method'] == method and not _isnan(r.get(key))]
        return values[-1] if values else float('nan')


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def evaluate(experiment: Experiment, net: torch.nn.Module, chunk: int = 1024) -> dict:
    """Held-out loss (batch mean over the whole test set) and the experiment's metrics, without gradients,
    with the network in eval mode (restored afterwards)."""
    inputs, targets = experiment.test_set
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()  # batch norm: use the running statistics and leave them untouched
    try:
        total, n = 0.0, 0
        with torch.no_grad():
            for start in range(0, inputs.shape[0], chunk):
                x, t = inputs[start:start + chunk].to(device), targets[start:start + chunk].to(device)
                z = net(x)
                y = experiment.simulate(z) if experiment.simulate is not None else z
                total += float(experiment.loss(y, t).sum())
                n += x.shape[0]
            out = {'test_loss': total / n}
            if experiment.metrics is not None:
                out.update(experiment.metrics(net, inputs.to(device), targets.to(device)))
        return out
    finally:
        net.train(was_training)


class _Watch:
    """The honesty checks of one method: training-loss growth (warned once) and too few steps."""

    def __init__(self, name: str, records: List[dict]):
        self.name, self.first, self.flags, self.notes = name, None, [], []
        for r in records:
            self.see(r, warn=False)

    def see(self, record: dict, warn: bool = True) -> None:
        loss = record.get('train_loss')
        if not isinstance(loss, (int, float)) or not math.isfinite(loss):
            return
        if self.first is None:
            self.first = loss
        elif 'loss_grew' not in self.flags and loss > GROWTH_LIMIT * abs(self.first) and loss > 0:
            self.flag('loss_grew', f"{self.name}: the training loss grew to {loss / abs(self.first):.3g}× its first "
                                   f"value ({self.first:.3e} -> {loss:.3e}) at step {record['step']}: η may be too "
                                   f"large (README, 'Choosing η')", warn)

    def flag(self, code: str, note: str, warn: bool = True) -> None:
        self.flags.append(code)
        self.notes.append(note)
        if warn:
            warnings.warn(note, RunWarning, stacklevel=3)


def _snapshot(spec: RunSpec, identity: dict, name: str, net, method, stream, step, train_time, records) -> Checkpoint:
    rng = dict(torch=torch.get_rng_state())
    if torch.device(spec.device).type == 'cuda':
        rng['cuda'] = torch.cuda.get_rng_state_all()
    return Checkpoint(method=name, identity=identity, step=step, train_time=train_time,
                      position=stream.position, records=len(records), net=net.state_dict(),
                      optimizer=method.optimizer.state_dict(), rng=rng)


def _restore(ck: Checkpoint, net, method, stream, device) -> None:
    net.load_state_dict(ck.net)
    method.optimizer.load_state_dict(ck.optimizer)
    stream.position = ck.position
    torch.set_rng_state(ck.rng['torch'])
    if 'cuda' in ck.rng and device.type == 'cuda':
        torch.cuda.set_rng_state_all(ck.rng['cuda'])


def _run_method(spec: RunSpec, name: str, net, resumed, device, progress, on_record, control, writers) -> tuple:
    """Train one method. With several processes (`phi_hig.processes`), every rank steps on its slice of the same
    global batch; HIG / GN steps are distributed by `phi_hig.hig_step` itself, first-order and SIP methods train a
    ``DistributedDataParallel`` wrapper of ``net``; rank 0 evaluates, keeps the records and writes checkpoints."""
    experiment = spec.experiment
    world, root = processes.world_size(), processes.is_root()
    hyper = spec.hyperparameters[name]
    stepper = net
    if world > 1 and hyper.get('base', name) not in SECOND_ORDER:
        from torch.nn.parallel import DistributedDataParallel
        stepper = DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None)
    method = make_method(name, stepper, experiment, validated=hyper)
    batch_size = int(method.hyper['batch_size'])
    rows = processes.local_rows(batch_size)
    stream = DataStream(experiment, spec.seed)
    torch.manual_seed(spec.seed + 1)
    status, step, train_time = 'ok', 0, 0.0
    if resumed is not None:
        ck, records = resumed
        _restore(ck, net, method, stream, device)
        step, train_time = ck.step, ck.train_time
    else:
        records = [dict(experiment=experiment.name, method=name, step=0, wall_time=0.0, train_loss=float('nan'),
                        **_evaluate_on_root(experiment, net))]
        if on_record and root:
            on_record(records[-1], method)
    saved = len(records) if resumed is not None else 0  # records[saved:]: not yet handed to the checkpoint writer
    watch = _Watch(name, records)
    # whether the last record holds an evaluation, the same on every rank (resumed records are rank 0's)
    evaluated = resumed is None or not _isnan(records[-1].get('test_loss'))
    every, identity = spec.checkpoint_every, spec.identity
    writer = CheckpointWriter(spec.out, name, fresh=resumed is None) if every and root else None
    if writer is not None:
        writers.append(writer)  # closed (waited for) by `run` at the end: the last write overlaps what follows
    last_print = time.perf_counter()

    def done():
        return (spec.steps is not None and step >= spec.steps) or (spec.seconds is not None and
                                                                   train_time >= spec.seconds)
    while not done():
        if control is not None and not control.proceed():
            status = f'stopped at step {step}'
            break
        x, t = stream.next(batch_size)
        x, t = x[rows].to(device), t[rows].to(device)
        t0 = time.perf_counter()
        try:
            loss = method.step(x, t)
        except NonFiniteStepError as err:
            status = f'diverged at step {step + 1}: {err}'
            watch.flag('diverged', f"{name}: {status}", warn=False)
            break
        except InvalidInputError as err:
            status = f'failed at step {step + 1}: {err}'
            watch.flag('failed', f"{name}: {status}", warn=False)
            break
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        if world > 1:  # the ranks agree on the loss of the global batch and on when the time budget is spent
            loss = loss if stepper is net else processes.all_mean(loss)
            train_time = processes.agree_max(train_time) if spec.seconds is not None else train_time
        step += 1
        record = dict(experiment=experiment.name, method=name, step=step, wall_time=train_time, train_loss=loss,
                      test_loss=float('nan'))
        if method.last_info is not None:
            record['rank'] = method.last_info.rank
        evaluated = step % spec.eval_every == 0 or done()  # the same on every rank
        if evaluated:
            record.update(_evaluate_on_root(experiment, net))
        records.append(record)
        if not root:
            continue
        watch.see(record)
        if on_record:
            on_record(record, method)
        if writer is not None and step % every == 0 and writer.idle and \
                time.perf_counter() - writer.last_submit >= MIN_CHECKPOINT_INTERVAL:
            writer.submit(_snapshot(spec, identity, name, net, method, stream, step, train_time, records),
                          records[saved:])
            saved = len(records)
        if progress and (time.perf_counter() - last_print > 2.0 or done()):
            last_print = time.perf_counter()
            test = [r['test_loss'] for r in records if not _isnan(r.get('test_loss'))][-1]
            print(f"[{experiment.name}/{name}] step {step:6d}  train {train_time:7.1f}s  "
                  f"loss {loss:.3e}  test {test:.3e}", file=sys.stderr, flush=True)
    if not evaluated and not status.startswith(('diverged', 'failed')):
        records[-1].update(_evaluate_on_root(experiment, net))  # a stopped method's last state
    if writer is not None and saved < len(records):
        writer.submit(_snapshot(spec, identity, name, net, method, stream, step, train_time, records),
                      records[saved:])
    if status == 'ok' and spec.seconds is not None and step < MIN_STEPS and \
            (spec.steps is None or step < spec.steps) and root:
        watch.flag('few_steps', f"{name}: only {step} step(s) in the time budget of {spec.seconds:g} s "
                                f"(< {MIN_STEPS}): its final values are not comparable")
    return records, status, method, watch


def _evaluate_on_root(experiment, net) -> dict:
    """`evaluate` on rank 0 (the other ranks wait for it and record nothing)."""
    values = evaluate(experiment, net) if processes.is_root() else {}
    processes.wait_for_root()
    return values


def _resume(spec: RunSpec) -> dict:
    """Every method's checkpoint, read and checked on rank 0 and sent to the other ranks (`load_for_resume`);
    a refusal is raised on every rank."""
    payload = None
    if processes.is_root():
        try:
            payload = ('ok', {m: load_for_resume(spec.out, m, spec.identity) for m in spec.methods})
        except InvalidInputError as err:
            payload = ('refused', str(err))
    status, value = processes.broadcast_object(payload)
    if status != 'ok':
        raise InvalidInputError(value)
    return value


def run(spec: RunSpec, *, progress: bool = True, on_record: Optional[Callable] = None,
        control: Optional[RunControl] = None, initial_state: Optional[dict] = None) -> RunResult:
    """Run a validated `RunSpec`: each method from the same initial weights on the same data stream.

    With ``spec.resume``, every method's checkpoint is read and checked against the spec's identity before
    any training (`phi_hig.training.checkpoint.load_for_resume`), so a mismatch refuses the whole run.

    Args:
        spec: from `phi_hig.training.spec.run_spec`.
        progress: print a progress line to stderr every few seconds.
        on_record: called as ``on_record(record, method)`` after every record (live views; ``method.net``
            and ``method.last_info`` give the network and the last HIG diagnostics).
        control: a `RunControl` to pause or stop the run from another thread.
        initial_state: a ``state_dict`` to start every method from instead of the seeded initialization.

    Raises:
        InvalidInputError: ``spec`` is not a `RunSpec`, ``progress`` not a bool, ``on_record`` not callable,
            ``control`` not a `RunControl`, ``initial_state`` not a state dict of the experiment's network, or a
            checkpoint to resume from does not match or cannot be used (nothing trained).
    """
    if not isinstance(spec, RunSpec):
        raise InvalidInputError(f"spec must be a RunSpec (phi_hig.run_spec), got {type(spec).__name__}")
    progress = checks.flag('progress', progress)
    if on_record is not None and not callable(on_record):
        raise InvalidInputError(f"on_record must be a function on_record(record, method) or None, got {on_record!r}")
    if control is not None and not isinstance(control, RunControl):
        raise InvalidInputError(f"control must be a phi_hig.RunControl or None, got {control!r} "
                                f"({type(control).__name__})")
    if initial_state is not None and not isinstance(initial_state, Mapping):
        raise InvalidInputError(f"initial_state must be a state_dict of the experiment's network (a dict of "
                                f"tensors) or None, got {type(initial_state).__name__}")
    experiment = spec.experiment
    if spec.world_size != processes.world_size():
        raise InvalidInputError(f"the spec is for {spec.world_size} process(es), but {processes.world_size()} run")
    resumed = _resume(spec) if spec.resume else {}
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    net0 = experiment.make_net()
    if initial_state is not None:  # strict: every key of the network, of its shape, and no other
        try:
            net0.load_state_dict(initial_state)
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as err:
            raise InvalidInputError(f"initial_state does not fit the network of {experiment.name!r}: "
                                    f"{' '.join(str(err).split())}") from None
    records, statuses, nets, watches, writers = [], {}, {}, {}, []
    previous_threads = torch.get_num_threads()
    threads = spec.threads or experiment.threads or previous_threads
    torch.set_num_threads(threads)
    try:
        for name in spec.methods:
            net = copy.deepcopy(net0).to(device)
            recs, status, method, watch = _run_method(spec, name, net, resumed.get(name), device, progress,
                                                      on_record, control, writers)
            records += recs
            statuses[name], nets[name], watches[name] = status, net, watch
            if control is not None and control.stopped:
                break
    finally:
        torch.set_num_threads(previous_threads)
        errors = []
        for writer in writers:  # every checkpoint on disk before the run returns
            try:
                writer.close()
            except Exception as err:
                errors.append(err)
        if errors and sys.exc_info()[0] is None:
            raise errors[0]
    methods = [m for m in spec.methods if m in statuses]  # a stopped run skips the methods after it
    summary = _summary(spec, methods, records, statuses, watches, threads)
    return RunResult(records, summary, nets, spec)


def train(experiment: Union[Experiment, str], methods: Union[str, Sequence[str]] = ('adam', 'hig'), *,
          steps: Optional[int] = None, seconds: Optional[float] = None, seed: int = 0,
          eval_every: Optional[int] = None, overrides: Optional[Dict[str, dict]] = None,
          device: Union[str, torch.device] = 'cpu', progress: bool = True, out: Optional[str] = None,
          checkpoint_every: Optional[int] = None, resume: bool = False,
          threads: Optional[int] = None, on_record: Optional[Callable] = None,
          control: Optional[RunControl] = None, initial_state: Optional[dict] = None,
          preset: Optional[str] = None, settings: Optional[dict] = None) -> RunResult:
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
        out: if given, write checkpoints there (with ``checkpoint_every``) and read them with ``resume``.
        checkpoint_every: checkpoint cadence in steps (at most every `MIN_CHECKPOINT_INTERVAL` s; a method's
            last state is always written).
        resume: continue from checkpoints in ``out`` where they exist.
        threads: torch intra-op threads while training (default: the experiment's recommendation, else
            torch's current setting); restored afterwards.
        on_record, control, initial_state: see `run`.
        preset, settings: for an experiment given by name.
    """
    spec = run_spec(experiment, methods, preset=preset, settings=settings, overrides=overrides, steps=steps,
                    seconds=seconds, seed=seed, eval_every=eval_every, device=str(device), threads=threads,
                    out=out, checkpoint_every=checkpoint_every, resume=resume)
    return run(spec, progress=progress, on_record=on_record, control=control, initial_state=initial_state)


def _summary(spec: RunSpec, methods, records, statuses, watches, threads) -> dict:
    import phiml
    import phi
    from .._version import __version__
    identity = spec.identity
    final = {}
    for m in methods:
        mine = [r for r in records if r['method'] == m]
        evaluated = [r for r in mine if not _isnan(r.get('test_loss'))]
        last = evaluated[-1] if evaluated else {}
        steps_done = mine[-1]['step'] if mine else 0
        t = mine[-1]['wall_time'] if mine else 0.0
        final[m] = dict(status=statuses[m], steps=steps_done, train_seconds=t,
                        seconds_per_step=t / steps_done if steps_done else float('nan'),
                        batch_size=spec.hyperparameters[m]['batch_size'], flags=list(watches[m].flags),
                        warnings=list(watches[m].notes),
                        **{k: v for k, v in last.items() if k not in ('experiment', 'method')})
    return dict(experiment=spec.name, preset=spec.preset, settings=identity['settings'], methods=list(methods),
                hyperparameters={m: identity['hyperparameters'][m] for m in methods}, seed=spec.seed,
                budget=dict(steps=spec.steps, seconds=spec.seconds), device=spec.device, torch_threads=threads,
                world_size=spec.world_size,
                versions=dict(phi_hig=__version__, torch=torch.__version__, phiml=phiml.__version__,
                              phiflow=phi.__version__, numpy=np.__version__, python=sys.version.split()[0]),
                final=final)


def train_variants(experiment: Experiment, variants: Sequence[tuple], **train_args) -> Dict[str, RunResult]:
    """Train labelled variants ``[(label, method, overrides), ...]`` (a batch-size study, a κ–β sweep, …).

    Each variant is one `train` of ``method`` with its ``overrides`` and the same other arguments, so all start
    from the same initial weights and consume the same data stream. Every variant's `RunSpec` is built (and so
    validated) before the first one trains. In each result the records carry the label as their ``method``;
    ``summary['final']`` stays keyed by the method name.
    """
    run_args = {k: train_args.pop(k) for k in ('progress', 'on_record', 'control', 'initial_state') if k in train_args}
    specs = [(label, run_spec(experiment, [method], overrides={method: overrides} if overrides else None, **train_args))
             for label, method, overrides in variants]
    results = {}
    for label, spec in specs:
        result = run(spec, **run_args)
        result.records = [dict(r, method=label) for r in result.records]
        results[label] = result
    return results
