"""One method's training: the loop of steps, its evaluations, its honesty checks and its checkpoints.

`MethodRun` trains one method of a `RunSpec` from given initial weights on the spec's data stream (the runner,
`phi_hig.training.runner.run`, makes one per method, each from the same weights): it steps through the method's
kind (`phi_hig.training.kinds`), measures training time around the steps only, evaluates on the held-out set
(`evaluate`) before the first step and every ``eval_every`` steps, flags what makes a result incomparable
(`RunWarning`: the loss grew to `GROWTH_LIMIT` × its first value, fewer than `MIN_STEPS` steps in a time budget,
divergence) and hands snapshots to a `phi_hig.training.checkpoint.CheckpointWriter` at most every
`MIN_CHECKPOINT_INTERVAL` seconds.

A time budget is kept, not overrun: a step is started only if the last step's time still fits in what is left of
the budget (the first step always runs; when it alone overruns the budget, the method's note says so). Costs are
said up front: `budget_warnings` warns before anything trains when a method's reference cost
(`phi_hig.training.costs`) leaves fewer than `MIN_STEPS` steps in the budget, and a method without a reference is
warned about as soon as its first steps show it.

A loss growth that is the experiment's result (`phi_hig.experiments.base.Experiment.expected`, for a method that
trains with the experiment's own hyperparameters: the toy's Gauss–Newton) is reported as that result — a progress
line and ``summary['final'][m]['expected']`` — not warned about.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
import warnings
from typing import Callable, List, Mapping, Optional

import torch

from .. import checks, processes
from ..convert import all_finite
from ..errors import InvalidInputError, NonFiniteStepError
from ..experiments.base import DataStream, Experiment
from .checkpoint import Checkpoint, CheckpointWriter
from .costs import human_seconds, reference_cost
from .methods import MethodDefinition, make_method
from .spec import RunSpec


__all__ = ['MethodRun', 'RunControl', 'RunWarning', 'evaluate', 'has_value', 'budget_warnings', 'GROWTH_LIMIT',
           'MIN_STEPS', 'MIN_CHECKPOINT_INTERVAL']

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
    """Pause, resume and stop a running `train` from another thread (e.g. a GUI), or interrupt it from a signal
    handler (the command line's Ctrl-C / SIGTERM). Thread-safe; `interrupt` is also safe in a signal handler.

    The runner asks `proceed` before every step: a paused run waits there; a stopped one ends the current method
    (its last state evaluated and checkpointed, status ``stopped at step N``) and skips the methods after it; an
    interrupted one does the same without the extra evaluation (status ``interrupted at step N``), so that
    ``resume`` continues it exactly as if it had not stopped.

    Example:
        >>> control = RunControl()
        >>> control.pause()
        >>> control.paused
        True
        >>> control.stop()  # also releases a paused run
        >>> control.stopped, control.proceed()
        (True, False)
        >>> other = RunControl()
        >>> other.interrupt('SIGTERM')
        >>> other.interrupted, other.stopped, other.proceed()
        ('SIGTERM', False, False)
    """

    def __init__(self):
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()
        self._interrupted: Optional[str] = None

    def pause(self) -> None:
        """Hold the run before its next step (until `resume` or `stop`)."""
        self._go.clear()

    def resume(self) -> None:
        """Let a paused run go on."""
        self._go.set()

    def stop(self) -> None:
        """End the run after its current step (a paused run ends at once)."""
        self._stop.set()
        self._go.set()

    @property
    def paused(self) -> bool:
        """True between `pause` and `resume` / `stop`."""
        return not self._go.is_set()

    def interrupt(self, reason: str = 'interrupt') -> None:
        """End the run after its current step as interrupted (e.g. ``reason='SIGINT'``); takes no lock, so a signal
        handler may call it. A paused run is not released (the command line never pauses)."""
        if self._interrupted is None:
            self._interrupted = str(reason)

    @property
    def stopped(self) -> bool:
        """True once `stop` was called."""
        return self._stop.is_set()

    @property
    def interrupted(self) -> Optional[str]:
        """The reason given to `interrupt` (None before)."""
        return self._interrupted

    def proceed(self) -> bool:
        """Block while paused; False once a stop or an interrupt was requested."""
        if self._interrupted is None:
            self._go.wait()
        return not self._stop.is_set() and self._interrupted is None


def has_value(record: dict, key: str = 'test_loss') -> bool:
    """Whether ``record`` holds a value of ``key``: a number that is not NaN (NaN marks 'not evaluated at this step';
    an infinite loss is a value)."""
    value = record.get(key)
    return checks.is_number(value) and not math.isnan(value)


def evaluate(experiment: Experiment, net: torch.nn.Module, chunk: int = 1024) -> dict:
    """Held-out loss (batch mean over the whole test set, each chunk simulated with its conditions,
    `Experiment.simulate_batch`) and the experiment's metrics, without gradients, with the network in eval mode
    (restored afterwards).

    Raises:
        NonFiniteStepError: the network's output on the test set holds NaN or ±Inf (its weights diverged); the
            physics is not asked to simulate it."""
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
                if not all_finite(z):
                    raise NonFiniteStepError("the network's output on the test set is not finite (NaN or ±Inf): its "
                                             "weights diverged")
                total += float(experiment.loss(experiment.simulate_batch(z, x, t), t).sum())
                n += x.shape[0]
            out = {'test_loss': total / n}
            if experiment.metrics is not None:
                out.update(experiment.metrics(net, inputs.to(device), targets.to(device)))
        return out
    finally:
        net.train(was_training)


def budget_warnings(spec: RunSpec) -> set:
    """Before anything trains: warn (`RunWarning`) for each method of ``spec`` whose reference cost per step
    (`phi_hig.training.costs.reference_cost`: measured at the same settings and batch size) leaves fewer than
    `MIN_STEPS` steps in the time budget ``spec.seconds``; returns the methods warned about (their `MethodRun` does
    not warn again)."""
    warned = set()
    if spec.seconds is None or not processes.is_root():
        return warned
    for name in spec.methods:
        cost = reference_cost(spec.experiment, name, spec.hyperparameters[name]['batch_size'])
        if cost is None or spec.steps is not None and spec.steps < MIN_STEPS:
            continue
        per_step = cost['seconds_per_step']
        if per_step * MIN_STEPS > spec.seconds:
            fit = int(spec.seconds // per_step)
            warnings.warn(f"{name}: a step takes about {human_seconds(per_step)} at this size (measured on the "
                          f"reference CPU, python -m phi_hig list), so its budget of {spec.seconds:g} s fits about "
                          f"{fit} step(s), fewer than the {MIN_STEPS} a comparison needs; give it seconds >= "
                          f"{per_step * MIN_STEPS:.3g} or a step budget", RunWarning, stacklevel=3)
            warned.add(name)
    return warned


def _plain(value):
    """``value`` with mappings as dicts and tuples as lists (hyperparameters compared as they are recorded)."""
    return json.loads(json.dumps(value, sort_keys=True, default=lambda v: dict(v) if isinstance(v, Mapping) else
                                 str(v)))


class Watch:
    """The honesty checks of one method: training-loss growth (warned once, or reported as the experiment's
    ``expected`` result) and too few steps."""

    def __init__(self, name: str, records: List[dict], expected: Optional[str] = None):
        self.name, self.first, self.flags, self.notes, self.expected, self.observed = name, None, [], [], expected, []
        for r in records:
            self.see(r, warn=False)

    def see(self, record: dict, warn: bool = True) -> Optional[str]:
        """Check one record; returns the note of an expected behaviour the moment it is observed (without the
        method's name), else None."""
        loss = record.get('train_loss')
        if not checks.is_finite(loss):
            return None
        if self.first is None:
            self.first = loss
        elif 'loss_grew' not in self.flags and not self.observed and loss > GROWTH_LIMIT * abs(self.first) and \
                loss > 0:
            grew = (f"the training loss grew to {loss / abs(self.first):.3g}× its first value "
                    f"({self.first:.3e} -> {loss:.3e}) at step {record['step']}")
            if self.expected:
                self.observed.append(f"{grew}, as expected: {self.expected}")
                return self.observed[-1]
            self.flag('loss_grew', f"{self.name}: {grew}: η may be too large (docs: HIG guide, 'Choosing η')", warn)
        return None

    def flag(self, code: str, note: str, warn: bool = True) -> None:
        self.flags.append(code)
        self.notes.append(note)
        if warn:
            warnings.warn(note, RunWarning, stacklevel=3)


class MethodRun:
    """One method of a run, trained from the initial weights ``net`` on the spec's data stream.

    With several processes (`phi_hig.processes`) every rank steps on its slice of the same global batch: a kind that
    needs DDP (`MethodKind.needs_ddp`: first-order, SIP) trains a ``DistributedDataParallel`` wrapper of ``net``,
    HIG / GN distribute their step themselves (`phi_hig.hig_step`); rank 0 evaluates, keeps the records and writes
    the checkpoints (``writers`` collects the writer, closed by `run`). ``label`` names the run in progress lines
    (``[toy/hig lr=0.1]``).

    Invariant: outside a step (``stepping`` False) the records end at the step the network is at, so a checkpoint
    taken then resumes exactly.
    """

    def __init__(self, spec: RunSpec, name: str, net, resumed, device, writers: list, label: Optional[str] = None,
                 warned: bool = False):
        self.spec, self.name, self.net, self.device = spec, name, net, device
        self.tag = f"[{spec.experiment.name}/{name}{' ' + label if label else ''}]"
        self.stepping = False
        self.experiment, self.root = spec.experiment, processes.is_root()
        self.stepper = processes.data_parallel(net, device) if spec.kind(name).needs_ddp else net
        self.method = make_method(name, self.stepper, self.experiment, validated=spec.hyperparameters[name],
                                  backend=spec.backend)
        self.batch_size = int(self.method.hyper['batch_size'])
        self.rows = processes.local_rows(self.batch_size)  # this rank's slice of each global batch
        self.stream = DataStream(self.experiment, spec.seed)
        torch.manual_seed(spec.seed + 1)
        self.status, self.step, self.train_time, self.fresh = 'ok', 0, 0.0, resumed is None
        self.final = False  # whether the checkpoint on disk is this method's final state (`checkpoint`)
        self.last_step = None  # seconds of the last step (the same on every rank)
        self.warned_budget = warned  # the budget was found too small already (`budget_warnings`)
        self.overran = None  # the first step's time when it alone overran the time budget
        if resumed is None:
            self.records = [dict(experiment=self.experiment.name, method=name, step=0, wall_time=0.0,
                                 train_loss=float('nan'), **_evaluate_on_root(self.experiment, net))]
        else:
            ck, self.records = resumed
            self._restore(ck)
        self.saved = 0 if resumed is None else len(self.records)  # records[saved:]: not yet handed to the writer
        self.watch = Watch(name, self.records, self._expected())
        # whether the last record holds an evaluation, the same on every rank (resumed records are rank 0's)
        self.evaluated = resumed is None or has_value(self.records[-1])
        self.identity = spec.identity
        self.writer = CheckpointWriter(spec.out, name, fresh=resumed is None) \
            if spec.checkpoint_every and self.root else None
        if self.writer is not None:
            writers.append(self.writer)  # closed (waited for) by `run` at the end: the last write overlaps what follows

    def _expected(self) -> Optional[str]:
        """The experiment's expected behaviour of this method (`Experiment.expected`) if it trains with the
        experiment's own hyperparameters, else None."""
        note = (getattr(self.experiment, 'expected', None) or {}).get(self.name)
        if not note:
            return None
        own = MethodDefinition(self.experiment, self.name).validate(device=self.device)
        return note if _plain(own) == _plain(self.spec.hyperparameters[self.name]) else None

    def done(self) -> bool:
        """Whether the budget (steps or training seconds) is spent: the step budget is reached, or the training
        time plus the last step's time would pass the time budget (a step that would overrun it is not started)."""
        spec = self.spec
        if spec.steps is not None and self.step >= spec.steps:
            return True
        if spec.seconds is None:
            return False
        return self.train_time >= spec.seconds or \
            (self.last_step is not None and self.train_time + self.last_step > spec.seconds)

    def _check_budget(self) -> None:
        """After the first steps of a time budget, warn once (`RunWarning`) when their time leaves fewer than
        `MIN_STEPS` steps: after the first step if it alone spent the budget, else after the second (the first often
        pays for one-time set-up)."""
        spec = self.spec
        if spec.seconds is None or not self.root or self.step > 2 or \
                (spec.steps is not None and spec.steps < MIN_STEPS):
            return
        if self.step == 1 and self.train_time >= spec.seconds:
            self.overran = self.train_time
        if self.warned_budget:
            return
        if self.overran is not None:
            message = (f"{self.name}: its first step took {human_seconds(self.train_time)}, past the whole budget of "
                       f"{spec.seconds:g} s: it stops after this step, and its values are not comparable")
        elif self.step == 2 and 2 + (spec.seconds - self.train_time) / self.last_step < MIN_STEPS:
            fit = 2 + int(max(0.0, spec.seconds - self.train_time) // self.last_step)
            message = (f"{self.name}: a step takes about {human_seconds(self.last_step)}, so its budget of "
                       f"{spec.seconds:g} s fits about {fit} step(s), fewer than the {MIN_STEPS} a comparison needs; "
                       f"give it seconds >= {self.last_step * MIN_STEPS:.3g} or a step budget")
        else:
            return
        self.warned_budget = True
        warnings.warn(message, RunWarning, stacklevel=3)

    def train(self, control: Optional[RunControl], progress: bool, on_record: Optional[Callable]) -> None:
        """Step until the budget is spent, the method fails or ``control`` stops or interrupts it; then evaluate (not
        when interrupted) and checkpoint its last state (`finish`). A checkpoint write that failed stops it at once
        (`phi_hig.errors.RunFileError`)."""
        if self.fresh and on_record and self.root:
            on_record(self.records[0], self.method)
        last_print = time.perf_counter()
        while not self.done():
            if control is not None and not self._proceed(control):
                break
            self.stepping = True
            loss = self.update()
            if loss is None:
                self.stepping = False
                break
            record = self.record(loss)
            self.stepping = False
            if self.status.startswith('diverged'):  # the evaluation found a non-finite output
                if self.root and on_record:
                    on_record(record, self.method)
                break
            if not self.root:
                continue
            if self.writer is not None and self.writer.failed:
                self.writer.check(self.step)
            observed = self.watch.see(record)
            if observed and progress:
                print(f"{self.tag} {observed}", file=sys.stderr, flush=True)
            self._check_budget()
            if on_record:
                on_record(record, self.method)
            if self.writer is not None and self.step % self.spec.checkpoint_every == 0 and self.writer.idle and \
                    time.perf_counter() - self.writer.last_submit >= MIN_CHECKPOINT_INTERVAL and not self.done():
                self.checkpoint()
            if progress and (time.perf_counter() - last_print > 2.0 or self.done()):
                last_print = time.perf_counter()
                print(self.progress_line(loss), file=sys.stderr, flush=True)
        self.finish()

    def progress_line(self, loss: float) -> str:
        """``[experiment/method] step N  train Ts  loss L  test V``; a test value not evaluated at this step says
        at which step it was (``test 1.2e-03 (step 100)``), so a repeated value does not read as no learning."""
        last = next(r for r in reversed(self.records) if has_value(r))
        test = f"{last['test_loss']:.3e}" + (f" (step {last['step']})" if last['step'] != self.step else '')
        return (f"{self.tag} step {self.step:6d}  train {self.train_time:7.1f}s  "
                f"loss {loss:.3e}  test {test}")

    def _proceed(self, control: RunControl) -> bool:
        """Whether to make the next step (every rank alike); if not, the status says why."""
        go = control.proceed()
        interrupted = control.interrupted is not None
        if processes.world_size() > 1:  # a signal may reach the ranks at different steps: stop together
            go = processes.all_true(go)
            interrupted = not go and not processes.all_true(not interrupted)
        if not go:
            self.status = f"{'interrupted' if interrupted else 'stopped'} at step {self.step}"
        return go

    def interrupted(self) -> None:
        """A ``KeyboardInterrupt`` ended the training: the status says so, and the last complete step is
        checkpointed when the interrupt came between steps (else the last checkpoint written stays the latest)."""
        if self.status == 'ok':
            self.status = f"interrupted at step {self.records[-1]['step']}"
        if self.writer is not None and not self.stepping and self.saved < len(self.records):
            self.checkpoint()

    def update(self) -> Optional[float]:
        """One timed step on this rank's slice of the next global batch; the batch-mean loss, or None when the step
        was refused (the status says why: 'diverged' or 'failed', the weights untouched)."""
        x, t = self.stream.next(self.batch_size)
        x, t = x[self.rows].to(self.device), t[self.rows].to(self.device)
        before, t0 = self.train_time, time.perf_counter()
        try:
            loss = self.method.step(x, t)
        except (NonFiniteStepError, InvalidInputError) as err:
            code = 'diverged' if isinstance(err, NonFiniteStepError) or not _finite_output(self.net, x) else 'failed'
            self.status = f'{code} at step {self.step + 1}: {err}'
            self.watch.flag(code, f"{self.name}: {self.status}", warn=False)
            return None
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        self.train_time += time.perf_counter() - t0
        if processes.world_size() > 1:  # the ranks agree on the global batch's loss and on when the time is spent
            loss = loss if self.stepper is self.net else processes.all_mean(loss)
            self.train_time = processes.agree_max(self.train_time) if self.spec.seconds is not None else \
                self.train_time
        self.last_step = self.train_time - before
        self.step += 1
        return loss

    def record(self, loss: float) -> dict:
        """The record of the step just made, evaluated every ``eval_every`` steps and at the last one."""
        record = dict(experiment=self.experiment.name, method=self.name, step=self.step, wall_time=self.train_time,
                      train_loss=loss, test_loss=float('nan'))
        if self.method.last_info is not None:
            record['rank'] = self.method.last_info.rank
        self.evaluated = self.step % self.spec.eval_every == 0 or self.done()  # the same on every rank
        if self.evaluated:
            try:
                record.update(_evaluate_on_root(self.experiment, self.net))
            except NonFiniteStepError as err:  # on every rank: `_evaluate_on_root` agrees on it
                record['test_loss'] = math.inf
                self.status = f'diverged at step {self.step}: {err}'
                self.watch.flag('diverged', f"{self.name}: {self.status}", warn=False)
        self.records.append(record)
        return record

    def finish(self) -> None:
        """Evaluate a stopped method's last state (not an interrupted one's: its records stay those of an
        uninterrupted run), write its last checkpoint (marked final when the method spent its budget: status 'ok'),
        flag too few steps."""
        if not self.evaluated and not self.status.startswith(('diverged', 'failed', 'interrupted')):
            self.records[-1].update(_evaluate_on_root(self.experiment, self.net))
        final = self.status == 'ok'
        if self.writer is not None and (self.saved < len(self.records) or final and not self.final):
            self.checkpoint(final=final)
        spec = self.spec
        if self.status == 'ok' and spec.seconds is not None and self.step < MIN_STEPS and \
                (spec.steps is None or self.step < spec.steps) and self.root:
            overran = f"; its first step took {human_seconds(self.overran)}, past the budget" if self.overran else ''
            self.watch.flag('few_steps', f"{self.name}: only {self.step} step(s) in the time budget of "
                                         f"{spec.seconds:g} s (< {MIN_STEPS}){overran}: its final values are not "
                                         f"comparable", warn=not self.warned_budget)

    def checkpoint(self, final: bool = False) -> None:
        """Hand the current state and the records made since the last checkpoint to the writer; ``final``: the state
        is the method's final one (`Checkpoint.final`)."""
        rng = dict(torch=torch.get_rng_state())
        if self.device.type == 'cuda':
            rng['cuda'] = torch.cuda.get_rng_state_all()
        ck = Checkpoint(method=self.name, identity=self.identity, step=self.step, train_time=self.train_time,
                        position=self.stream.position, records=len(self.records), net=self.net.state_dict(),
                        optimizer=self.method.optimizer.state_dict(), rng=rng, final=final)
        self.writer.submit(ck, self.records[self.saved:])
        self.saved, self.final = len(self.records), final

    def _restore(self, ck: Checkpoint) -> None:
        self.net.load_state_dict(ck.net)
        self.method.load_optimizer_state(ck.optimizer)
        self.stream.position = ck.position
        torch.set_rng_state(ck.rng['torch'])
        if 'cuda' in ck.rng and self.device.type == 'cuda':
            torch.cuda.set_rng_state_all(ck.rng['cuda'])
        self.step, self.train_time, self.final = ck.step, ck.train_time, ck.final


def _evaluate_on_root(experiment, net) -> dict:
    """`evaluate` on rank 0 (the other ranks wait for it and record nothing); a diverged network
    (`phi_hig.errors.NonFiniteStepError`) raises on every rank."""
    values, error = {}, None
    if processes.is_root():
        try:
            values = evaluate(experiment, net)
        except NonFiniteStepError as err:
            error = err
    processes.wait_for_root()
    if processes.world_size() > 1 and not processes.all_true(error is None):
        error = error or NonFiniteStepError("the network's output on the test set is not finite (rank 0)")
    if error is not None:
        raise error
    return values


def _finite_output(net: torch.nn.Module, inputs) -> bool:
    """Whether ``net``'s output on ``inputs`` is finite (a step refused for a non-finite output: it diverged)."""
    with torch.no_grad():
        return all_finite(net(inputs))
