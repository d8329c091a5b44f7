"""The one training runner: methods × experiment, fair by construction.

Every method starts from the same initial weights (one network built after seeding, deep-copied per
method) and consumes the same ordered data stream (`DataStream`) at its own batch size. Training time is
measured around the update steps only; evaluation on the held-out set happens before the first update and
then every ``eval_every`` steps, outside the timed region. Runs checkpoint and resume exactly.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .errors import InvalidInputError, NonFiniteStepError
from .experiments.base import DataStream, Experiment
from .methods import make_method

__all__ = ['train', 'train_variants', 'RunResult', 'RunControl', 'evaluate']


class RunControl:
    """Pause, resume and stop a running `train` from another thread (e.g. a GUI). Thread-safe."""

    def __init__(self):
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()

    def pause(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    @property
    def stopped(self) -> bool:
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
        summary: settings, versions, device and the final values per method.
        nets: the trained network per method.
    """
    records: List[dict]
    summary: dict
    nets: Dict[str, torch.nn.Module] = field(default_factory=dict)

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
    total, n = 0.0, 0
    was_training = net.training
    net.eval()  # batch norm: use the running statistics and leave them untouched
    try:
        return _evaluate(experiment, net, inputs, targets, device, chunk)
    finally:
        net.train(was_training)


def _evaluate(experiment, net, inputs, targets, device, chunk) -> dict:
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


def _checkpoint_path(out: str, method: str) -> str:
    return os.path.join(out, f'checkpoint_{method}.pt')


def _run_method(experiment, name, net, seed, steps, seconds, eval_every, overrides, device, progress, out,
                checkpoint_every, resume, on_record=None, control=None) -> tuple:
    method = make_method(name, net, experiment, overrides)
    batch_size = int(method.hyper['batch_size'])
    stream = DataStream(experiment, seed)
    torch.manual_seed(seed + 1)
    records, step, train_time, status = [], 0, 0.0, 'ok'
    ckpt = _checkpoint_path(out, name) if out else None
    if resume and ckpt and os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state['net'])
        method.optimizer.load_state_dict(state['optimizer'])
        stream.position, step, train_time = state['position'], state['step'], state['train_time']
        records = state['records']
        torch.set_rng_state(state['torch_rng'])
    else:
        records.append(dict(experiment=experiment.name, method=name, step=0, wall_time=0.0,
                            train_loss=float('nan'), **evaluate(experiment, net)))
        if on_record:
            on_record(records[-1], method)
    last_print = time.perf_counter()

    def done():
        return (steps is not None and step >= steps) or (seconds is not None and train_time >= seconds)

    while not done():
        if control is not None and not control.proceed():
            status = f'stopped at step {step}'
            break
        x, t = stream.next(batch_size)
        x, t = x.to(device), t.to(device)
        t0 = time.perf_counter()
        try:
            loss = method.step(x, t)
        except NonFiniteStepError as err:
            status = f'diverged at step {step + 1}: {err}'
            break
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        step += 1
        record = dict(experiment=experiment.name, method=name, step=step, wall_time=train_time, train_loss=loss,
                      test_loss=float('nan'))
        if method.last_info is not None:
            record['rank'] = method.last_info.rank
        if step % eval_every == 0 or done():
            record.update(evaluate(experiment, net))
        records.append(record)
        if on_record:
            on_record(record, method)
        if ckpt and checkpoint_every and step % checkpoint_every == 0:
            save_checkpoint(ckpt, net, method, stream, step, train_time, records)
        if progress and (time.perf_counter() - last_print > 2.0 or done()):
            last_print = time.perf_counter()
            test = [r['test_loss'] for r in records if not _isnan(r.get('test_loss'))][-1]
            print(f"[{experiment.name}/{name}] step {step:6d}  train {train_time:7.1f}s  "
                  f"loss {loss:.3e}  test {test:.3e}", file=sys.stderr, flush=True)
    if records and _isnan(records[-1].get('test_loss')) and not status.startswith('diverged'):
        records[-1].update(evaluate(experiment, net))
    return records, status, method


def save_checkpoint(path, net, method, stream, step, train_time, records) -> None:
    """Write everything a resumed run needs to continue exactly: weights, optimizer, stream, RNG, history."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    torch.save(dict(net=net.state_dict(), optimizer=method.optimizer.state_dict(), position=stream.position,
                    step=step, train_time=train_time, records=records, torch_rng=torch.get_rng_state()), path)


def train(experiment: Experiment, methods: Union[str, Sequence[str]] = ('adam', 'hig'), *,
          steps: Optional[int] = None, seconds: Optional[float] = None, seed: int = 0,
          eval_every: Optional[int] = None, overrides: Optional[Dict[str, dict]] = None,
          device: Union[str, torch.device] = 'cpu', progress: bool = True, out: Optional[str] = None,
          checkpoint_every: Optional[int] = None, resume: bool = False,
          threads: Optional[int] = None, on_record: Optional[Callable] = None,
          control: Optional[RunControl] = None, initial_state: Optional[dict] = None) -> RunResult:
    """Train each method on ``experiment`` from the same initial weights and the same data stream.

    Args:
        experiment: an `Experiment` (see `phi_hig.experiments`).
        methods: method names (comma-separated string or sequence); each must be defined by the experiment.
        steps: step budget per method.
        seconds: training wall-clock budget per method (evaluation excluded).
        seed: seeds the initial weights, the data stream and the methods' randomness.
        eval_every: evaluation cadence in steps (default: the experiment's).
        overrides: per method, hyperparameters replacing the experiment's defaults.
        device: where networks and data live.
        progress: print a progress line to stderr every few seconds.
        out: if given, write checkpoints there (with ``checkpoint_every``) and read them with ``resume``.
        checkpoint_every: checkpoint cadence in steps.
        resume: continue from checkpoints in ``out`` where they exist.
        threads: torch intra-op threads while training (default: the experiment's recommendation, else
            torch's current setting); restored afterwards.
        on_record: called as ``on_record(record, method)`` after every record (live views; ``method.net``
            and ``method.last_info`` give the network and the last HIG diagnostics).
        control: a `RunControl` to pause or stop the run from another thread.
        initial_state: a ``state_dict`` to start every method from (e.g. a network pre-trained by another
            method) instead of the seeded initialization.
    """
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(',') if m.strip()]
    if steps is None and seconds is None:
        raise InvalidInputError("give a budget: steps or seconds")
    if steps is not None and (not isinstance(steps, int) or steps < 0):
        raise InvalidInputError(f"steps must be an integer >= 0, got {steps!r}")
    if seconds is not None and not (seconds >= 0):
        raise InvalidInputError(f"seconds must be >= 0, got {seconds!r}")
    overrides = overrides or {}
    unknown = set(overrides) - set(methods)
    if unknown:
        raise InvalidInputError(f"overrides given for methods not run: {sorted(unknown)}")
    for m in methods:
        if m not in experiment.methods:
            raise InvalidInputError(f"experiment {experiment.name!r} does not define method {m!r}; "
                                    f"it supports {', '.join(experiment.methods)}")
    device = torch.device(device)
    eval_every = int(eval_every or experiment.eval_every)
    torch.manual_seed(seed)
    net0 = experiment.make_net()
    if initial_state is not None:
        net0.load_state_dict(initial_state)
    records, statuses, nets, hypers = [], {}, {}, {}
    previous_threads = torch.get_num_threads()
    threads = threads or experiment.threads or previous_threads
    torch.set_num_threads(threads)
    try:
        for name in methods:
            net = copy.deepcopy(net0).to(device)
            recs, status, method = _run_method(experiment, name, net, seed, steps, seconds, eval_every,
                                               overrides.get(name), device, progress, out, checkpoint_every,
                                               resume, on_record, control)
            records += recs
            statuses[name], nets[name] = status, net
            hypers[name] = {k: v for k, v in method.hyper.items()}
            if control is not None and control.stopped:
                break
    finally:
        torch.set_num_threads(previous_threads)
    methods = [m for m in methods if m in statuses]  # a stopped run skips the methods after it
    summary = _summary(experiment, methods, records, statuses, hypers, seed, steps, seconds, device)
    summary['torch_threads'] = threads
    return RunResult(records, summary, nets)


def _summary(experiment, methods, records, statuses, hypers, seed, steps, seconds, device) -> dict:
    import phiml
    import phi
    from . import __version__
    final = {}
    for m in methods:
        mine = [r for r in records if r['method'] == m]
        evaluated = [r for r in mine if not _isnan(r.get('test_loss'))]
        last = evaluated[-1] if evaluated else {}
        steps_done = mine[-1]['step'] if mine else 0
        t = mine[-1]['wall_time'] if mine else 0.0
        final[m] = dict(status=statuses[m], steps=steps_done, train_seconds=t,
                        seconds_per_step=t / steps_done if steps_done else float('nan'),
                        **{k: v for k, v in last.items() if k not in ('experiment', 'method')})
    return dict(experiment=experiment.name, settings=experiment.settings, methods=list(methods),
                hyperparameters=hypers, seed=seed, budget=dict(steps=steps, seconds=seconds),
                device=str(device), torch_threads=torch.get_num_threads(),
                versions=dict(phi_hig=__version__, torch=torch.__version__, phiml=phiml.__version__,
                              phiflow=phi.__version__, numpy=np.__version__, python=sys.version.split()[0]),
                final=final)


def train_variants(experiment: Experiment, variants: Sequence[tuple], **train_args) -> Dict[str, RunResult]:
    """Train labelled variants ``[(label, method, overrides), ...]`` (a batch-size study, a κ–β sweep, …).

    Each variant is one `train` of ``method`` with its ``overrides`` and the same other arguments, so all start
    from the same initial weights and consume the same data stream. In each result the records carry the
    label as their ``method``; ``summary['final']`` stays keyed by the method name.
    """
    results = {}
    for label, method, overrides in variants:
        result = train(experiment, [method], overrides={method: overrides} if overrides else None, **train_args)
        result.records = [dict(r, method=label) for r in result.records]
        results[label] = result
    return results
