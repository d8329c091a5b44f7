"""A run folder belongs to one run (issue 18) and nothing is lost silently under faults (issue 24): the lock and who
holds it, no silent overwrite, a clean Ctrl-C / SIGTERM that ``--resume`` continues exactly, ``train(out=)`` under a
``KeyboardInterrupt``, a disk that fills up, damaged histories and checkpoints."""
import csv
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

import phi_hig
from phi_hig import rundir
from phi_hig.__main__ import main as cli
from phi_hig.errors import InvalidInputError, RunFileError
from phi_hig.experiments import toy
from phi_hig.report import write_run
from phi_hig.training.checkpoint import (CheckpointWarning, checkpoint_path, history_path, previous_path,
                                         read_checkpoint)
from helpers import one_error_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ['run', 'toy', '--preset', 'test', '--quiet', '--threads', '1']


def test_the_files_of_a_run_are_named_in_one_place(tmp_path):
    """What the checkpoint writer and `write_run` write is what `phi_hig.rundir` calls phi_hig's files."""
    out = str(tmp_path / 'run')
    result = phi_hig.train(toy(preset='test'), ['adam'], steps=2, progress=False, out=out, checkpoint_every=1)
    write_run(result, out)
    names = sorted(os.listdir(out))
    assert {'checkpoint_adam.pt', 'history_adam.jsonl', 'metrics.csv', 'summary.json', 'curves.png'} <= set(names)
    assert all(rundir.is_run_file(n) for n in names)
    assert rundir.run_files(out) == [os.path.join(out, n) for n in names]
    assert not rundir.is_run_file('notes.txt') and not rundir.is_run_file('.notes.txt.abc123.tmp')


# --- no silent overwrite -------------------------------------------------------------------------------------
def test_a_run_folder_is_replaced_only_with_overwrite_and_a_foreign_file_is_never_removed(tmp_path, capsys):
    out = str(tmp_path / 'run')
    assert cli(RUN + ['--methods', 'adam,sgd', '--steps', '3', '--checkpoint-every', '3', '--out', out]) == 0
    first = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}
    capsys.readouterr()
    assert cli(RUN + ['--methods', 'adam', '--steps', '3', '--out', out]) == 2  # no flag: refused, nothing touched
    one_error_line(capsys.readouterr().err, f"--out '{out}' holds another run's files", 'checkpoint_adam',
                   '--resume or --overwrite')
    assert cli(RUN + ['--methods', 'adam', '--steps', '3', '--out', out, '--overwrite', '--resume']) == 2
    one_error_line(capsys.readouterr().err, '--resume or --overwrite, not both')
    (tmp_path / 'run' / 'notes.txt').write_text('mine')
    assert cli(RUN + ['--methods', 'adam', '--steps', '3', '--out', out, '--overwrite']) == 2
    one_error_line(capsys.readouterr().err, '--overwrite:', "'notes.txt'", 'nothing was deleted')
    os.remove(tmp_path / 'run' / 'notes.txt')
    (tmp_path / 'run' / 'data').mkdir()
    (tmp_path / 'run' / 'data' / 'metrics.csv').write_text('a user folder')  # a name phi_hig uses, in her folder
    assert cli(RUN + ['--methods', 'adam', '--steps', '3', '--out', out, '--overwrite']) == 2
    one_error_line(capsys.readouterr().err, "'data'")
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out) if f != 'data'} == first
    assert (tmp_path / 'run' / 'data' / 'metrics.csv').read_text() == 'a user folder'
    os.remove(tmp_path / 'run' / 'data' / 'metrics.csv')
    os.rmdir(tmp_path / 'run' / 'data')
    assert cli(RUN + ['--methods', 'adam', '--steps', '3', '--out', out, '--overwrite']) == 0
    assert sorted(os.listdir(out)) == ['curves.png', 'metrics.csv', 'summary.json']  # sgd's checkpoints went too
    with open(os.path.join(out, 'summary.json')) as f:
        assert json.load(f)['methods'] == ['adam']
    with pytest.raises(InvalidInputError, match="holds another run's files"):  # the library obeys the same rule
        phi_hig.train('toy', ['adam'], preset='test', steps=1, progress=False, out=out)
    phi_hig.train('toy', ['adam'], preset='test', steps=1, progress=False, out=out, overwrite=True)
    assert os.listdir(out) == []  # train writes no results of its own (no checkpoint_every)


def test_variants_written_to_one_folder_run_in_folders_of_their_own(tmp_path):
    from phi_hig.training.runner import train_variants
    train_variants(toy(preset='test'), [('fast', 'adam', {'lr': 0.1}), ('slow', 'adam', {'lr': 0.01})], steps=2,
                   progress=False, out=str(tmp_path), checkpoint_every=2)
    assert sorted(os.listdir(tmp_path)) == ['000_fast', '001_slow']
    assert [read_checkpoint(checkpoint_path(str(tmp_path / f), 'adam')).identity['hyperparameters']['adam']['lr']
            for f in ('000_fast', '001_slow')] == [0.1, 0.01]


# --- the lock ------------------------------------------------------------------------------------------------
_HOLDER = """
import os, sys, time, types
package = types.ModuleType('phi_hig')
package.__path__ = [sys.argv[1]]  # phi_hig.rundir alone: holding a lock needs no torch
sys.modules['phi_hig'] = package
from phi_hig import rundir
folder = rundir.claim(sys.argv[2])
print('holding', flush=True)
time.sleep(120)
"""


def test_a_lock_left_by_a_killed_process_is_released_by_the_kernel(tmp_path, capsys):
    out = str(tmp_path / 'run')
    holder = subprocess.Popen([sys.executable, '-c', _HOLDER, os.path.join(ROOT, 'phi_hig'), out],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'holding'
        assert cli(RUN + ['--methods', 'adam', '--steps', '2', '--out', out]) == 2
        one_error_line(capsys.readouterr().err, f"--out '{out}' is in use by another run: PID {holder.pid} on ")
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    finally:
        holder.kill()
        holder.stdout.close()
    with open(os.path.join(out, rundir.LOCK)) as f:
        assert json.load(f)['pid'] == holder.pid  # left behind by the dead process, but no longer locked
    assert cli(RUN + ['--methods', 'adam', '--steps', '2', '--out', out]) == 0
    assert not os.path.exists(os.path.join(out, rundir.LOCK))  # released by the run that ended


# --- Ctrl-C and SIGTERM ----------------------------------------------------------------------------------------
STEPS = '600'


def _argv(out):
    return RUN + ['--methods', 'adam,hig', '--steps', STEPS, '--seed', '3', '--checkpoint-every', '7', '--out', out]


def _metrics_without_wall_time(out):
    with open(os.path.join(out, 'metrics.csv'), newline='') as f:
        return [{k: v for k, v in row.items() if k != 'wall_time'} for row in csv.DictReader(f)]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """metrics.csv of an uninterrupted run (in this process), without wall_time."""
    out = str(tmp_path_factory.mktemp('reference') / 'run')
    assert cli(_argv(out)) == 0
    return _metrics_without_wall_time(out)


def _wait_until(predicate, proc, timeout=60):
    deadline = time.perf_counter() + timeout
    while not predicate() and proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.002)


@pytest.mark.parametrize('name, moment, seed', [('SIGINT', 'training', 7), ('SIGTERM', 'write', 11)])
def test_a_signal_ends_a_run_with_its_files_and_resume_continues_exactly(name, moment, seed, reference, tmp_path,
                                                                         capsys):
    """A CLI run gets SIGINT or SIGTERM at a seeded moment (during training, or halfway through a checkpoint write: a
    test hook pauses every atomic write): it exits 130 / 143 by itself, having written metrics.csv, summary.json
    (status 'interrupted at step N') and curves.png for the steps done and one line saying how to resume; meanwhile
    a second run into its folder was refused naming it, and left its files alone. ``--resume`` then ends with the
    metrics of the uninterrupted run (every column but wall_time)."""
    rng = random.Random(seed)
    out = str(tmp_path / 'run')
    env = dict(os.environ, PHI_HIG_TEST_WRITE_PAUSE='0.15') if moment == 'write' else None
    proc = subprocess.Popen([sys.executable, '-m', 'phi_hig', *_argv(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: os.path.exists(history_path(out, 'adam')), proc)
        assert cli(RUN + ['--methods', 'adam', '--steps', '2', '--out', out, '--overwrite']) == 2
        one_error_line(capsys.readouterr().err, f'is in use by another run: PID {proc.pid}', 'python -m phi_hig run')
        if moment == 'write':
            _wait_until(lambda: [f for f in os.listdir(out) if f.endswith('.tmp')], proc)
        time.sleep(rng.uniform(0.0, 0.12))
        assert proc.poll() is None, proc.stderr.read()  # still running: the signal comes in time
        proc.send_signal(getattr(signal, name))
        assert proc.wait(60) == {'SIGINT': 130, 'SIGTERM': 143}[name]
        err = proc.stderr.read()
    finally:
        proc.kill()
        proc.stderr.close()
    assert 'Traceback' not in err, err
    resume = [line for line in err.splitlines() if '--resume' in line]
    assert len(resume) == 1 and resume[0].startswith(f'phi_hig: interrupted by {name} at step '), err
    assert sorted(f for f in os.listdir(out) if not f.startswith(('checkpoint_', 'history_'))) == \
        ['curves.png', 'metrics.csv', 'summary.json']  # no lock, no temporary file left
    with open(os.path.join(out, 'summary.json')) as f:
        final = json.load(f)['final']
    interrupted = [m for m, f in final.items() if f['status'].startswith('interrupted at step ')]
    assert len(interrupted) == 1 and list(final)[-1] == interrupted[0], final
    done = _metrics_without_wall_time(out)  # the steps done, as the uninterrupted run made them (its columns so far)
    assert done and [{k: r[k] for k in d} for d, r in zip(done, reference)] == done
    assert all(v == '' for d, r in zip(done, reference) for k, v in r.items() if k not in d)
    assert cli(_argv(out) + ['--resume']) == 0
    assert _metrics_without_wall_time(out) == reference


def test_train_writes_its_checkpoint_on_keyboard_interrupt_and_reraises(tmp_path, monkeypatch):
    """`phi_hig.train(out=…)` installs no signal handler; a KeyboardInterrupt between steps checkpoints the last
    step, one inside a step (the weights half-changed) leaves the last checkpoint written as the latest; both are
    re-raised, the folder is released, and resuming ends where the uninterrupted run ends."""
    from phi_hig.training.loop import MethodRun
    ex = toy(preset='test')
    args = dict(steps=20, seed=5, eval_every=4, progress=False)
    full = phi_hig.train(ex, ['adam', 'hig'], **args)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def interrupt(record, method):
        if record['method'] == 'hig' and record['step'] == 9:
            raise KeyboardInterrupt
    between = str(tmp_path / 'between')
    with pytest.raises(KeyboardInterrupt):
        phi_hig.train(ex, ['adam', 'hig'], out=between, checkpoint_every=100, on_record=interrupt, **args)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert read_checkpoint(checkpoint_path(between, 'hig')).step == 9  # not a multiple of checkpoint_every
    assert not os.path.exists(os.path.join(between, rundir.LOCK))

    update = MethodRun.update

    def torn(self):
        if self.name == 'hig' and self.step == 13:
            with torch.no_grad():
                next(self.net.parameters()).add_(1.0)  # a step half made
            raise KeyboardInterrupt
        return update(self)
    inside = str(tmp_path / 'inside')
    monkeypatch.setattr(MethodRun, 'update', torn)
    with pytest.raises(KeyboardInterrupt):
        phi_hig.train(ex, ['adam', 'hig'], out=inside, checkpoint_every=4, **args)
    monkeypatch.setattr(MethodRun, 'update', update)
    assert read_checkpoint(checkpoint_path(inside, 'hig')).step in (4, 8, 12)
    for out in (between, inside):
        resumed = phi_hig.train(ex, ['adam', 'hig'], out=out, resume=True, **args)
        assert [repr(r['train_loss']) for r in resumed.records] == [repr(r['train_loss']) for r in full.records]
        assert [repr(r['test_loss']) for r in resumed.records] == [repr(r['test_loss']) for r in full.records]


# --- full disks, no permission ---------------------------------------------------------------------------------
_FSYNC = os.fsync


def _disk_fills_after(monkeypatch, n, when=None):
    """os.fsync fails with ENOSPC from its (n+1)-th call on, as on a disk that filled up; ``when()`` is appended to
    a list on the first failure (which the function returns)."""
    calls, failures = [0], []

    def fsync(fd):
        calls[0] += 1
        if calls[0] > n:
            if not failures and when is not None:
                failures.append(when())
            raise OSError(errno.ENOSPC, 'No space left on device')
        return _FSYNC(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    return failures


def test_a_failed_checkpoint_write_stops_training_at_once(tmp_path, monkeypatch, capsys):
    """With ``--checkpoint-every 1`` on a disk that fills up, the run stops at the first step after the failed write
    (today: at the end of its 1000 steps) with one line naming the file, the step and the last checkpoint written;
    nothing past that checkpoint is kept, and ``--resume`` continues from it once there is room."""
    from phi_hig.training import loop
    monkeypatch.setattr(loop, 'MIN_CHECKPOINT_INTERVAL', 0.0)  # a checkpoint at every step the writer is idle
    ex = toy(preset='test')
    steps = [0]
    out = str(tmp_path / 'library')
    failed_at = _disk_fills_after(monkeypatch, 6, when=lambda: steps[-1])
    with pytest.raises(RunFileError) as info:
        phi_hig.train(ex, ['adam'], steps=1000, progress=False, out=out, checkpoint_every=1,
                      on_record=lambda record, method: steps.append(record['step']))
    message = str(info.value)
    assert 'No space left on device' in message and os.path.join(out, '') in message, message
    stopped = int(re.search(r'adam stopped at step (\d+);', message).group(1))
    assert failed_at[0] <= stopped <= failed_at[0] + 10, (failed_at, message)  # at the next step (threads switch)
    last = read_checkpoint(checkpoint_path(out, 'adam')).step
    assert f'its last checkpoint written is step {last} (with resume,' in message and last <= failed_at[0]
    cli_out = str(tmp_path / 'cli')
    _disk_fills_after(monkeypatch, 6)
    assert cli(RUN + ['--methods', 'adam', '--steps', '1000', '--checkpoint-every', '1', '--out', cli_out]) == 1
    one_error_line(capsys.readouterr().err, 'No space left on device', cli_out, 'adam stopped at step',
                   '(with --resume, the run continues from there)')
    monkeypatch.undo()
    last = read_checkpoint(checkpoint_path(cli_out, 'adam')).step
    assert cli(RUN + ['--methods', 'adam', '--steps', str(last + 5), '--checkpoint-every', '100', '--out', cli_out,
                      '--resume']) == 0
    with open(os.path.join(cli_out, 'summary.json')) as f:
        assert json.load(f)['final']['adam']['steps'] == last + 5


def test_a_result_or_report_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    """PermissionError (an immutable summary.json) and ENOSPC (report.md on a full disk) end the command with one
    line naming the file, exit status 1, no traceback."""
    out = str(tmp_path / 'run')
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith('summary.json'):
            raise PermissionError(errno.EACCES, 'Permission denied')
        return real(src, dst, *args, **kwargs)
    monkeypatch.setattr(os, 'replace', replace)
    assert cli(RUN + ['--methods', 'adam', '--steps', '2', '--out', out]) == 1
    one_error_line(capsys.readouterr().err, f"cannot write {os.path.join(out, 'summary.json')}: Permission denied")
    monkeypatch.undo()
    assert cli(RUN + ['--methods', 'adam', '--steps', '2', '--out', out, '--overwrite']) == 0
    _disk_fills_after(monkeypatch, 0)
    capsys.readouterr()
    assert cli(['report', out]) == 1
    one_error_line(capsys.readouterr().err, f"cannot write {os.path.join(out, 'report.md')}: No space left on device")


# --- damaged run files -----------------------------------------------------------------------------------------
@pytest.fixture
def checkpointed(tmp_path):
    """A run of 14 Adam steps with checkpoints at steps 7 (the previous) and 14 (the latest), and the uninterrupted
    run of 21 steps."""
    ex = toy(preset='test')
    out = str(tmp_path / 'run')
    args = dict(seed=5, progress=False, eval_every=4)
    full = phi_hig.train(ex, ['adam'], steps=21, **args)
    phi_hig.train(ex, ['adam'], steps=14, out=out, checkpoint_every=7, **args)
    assert read_checkpoint(previous_path(out, 'adam')).step == 7
    return ex, out, dict(args, steps=21, out=out, resume=True), full


def _replace_line(path, number, text):
    with open(path) as f:
        lines = f.read().splitlines()
    lines[number - 1] = text
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


@pytest.mark.parametrize('line, text', [(12, 'null'), (15, '[1, 2]')])
def test_a_damaged_history_record_falls_back_to_the_previous_checkpoint(checkpointed, line, text):
    """A record of the latest checkpoint's history that is no record (``null``; its last one ``[1, 2]``) makes the
    run resume from the previous checkpoint, warned, and end as the uninterrupted run."""
    ex, out, args, full = checkpointed
    _replace_line(history_path(out, 'adam'), line, text)
    with pytest.warns(CheckpointWarning, match=f'line {line} is not a record of adam') as caught:
        resumed = phi_hig.train(ex, ['adam'], **args)
    (warning,) = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert 'checkpoint_adam.pt' in warning and 'resuming adam from' in warning and \
        'checkpoint_adam.prev.pt (step 7)' in warning, warning
    assert [repr(r['train_loss']) for r in resumed.records] == [repr(r['train_loss']) for r in full.records]


@pytest.mark.parametrize('damage', ['a record of both', 'zero-filled checkpoints'])
def test_unusable_run_files_are_refused_in_one_line(checkpointed, damage, capsys):
    ex, out, args, full = checkpointed
    if damage == 'a record of both':
        _replace_line(history_path(out, 'adam'), 3, 'null')
        words = ['line 3 is not a record of adam', 'checkpoint_adam.pt', 'checkpoint_adam.prev.pt']
    else:
        for path in (checkpoint_path(out, 'adam'), previous_path(out, 'adam')):
            size = os.path.getsize(path)
            with open(path, 'wb') as f:
                f.write(bytes(size))
        words = ['not a torch zip file (its first bytes are zeros)', 'checkpoint_adam.prev.pt']
    assert cli(RUN + ['--methods', 'adam', '--steps', '21', '--seed', '5', '--eval-every', '4', '--out', out,
                      '--resume']) == 2
    line = one_error_line(capsys.readouterr().err, '--resume: no usable checkpoint of adam', *words)
    assert 'weights_only' not in line and 'Traceback' not in line
