"""The runner's fairness guarantees, checkpoint/resume, and the command line."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import phi_hig
from phi_hig import rundir
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import toy, DataStream
from phi_hig.__main__ import main as cli


def test_same_initial_weights_and_first_examples():
    ex = toy(preset='test')
    seen = {}

    def record_first_batch(record, method):
        if record['step'] == 0:
            seen[method.name] = [p.detach().clone() for p in method.net.parameters()]
    result = phi_hig.train(ex, ['adam', 'sgd', 'hig'], steps=2, seed=3, progress=False, on_record=record_first_batch)
    initial = [r['test_loss'] for r in result.records if r['step'] == 0]
    assert len(initial) == 3 and initial[0] == initial[1] == initial[2]
    for a, b in zip(seen['adam'], seen['hig']):
        assert torch.equal(a, b)
    other = phi_hig.train(ex, ['adam'], steps=0, seed=4, progress=False)
    assert other.records[0]['test_loss'] != initial[0]  # the seed matters


def test_stream_is_the_same_sequence_at_any_batch_size():
    ex = toy(preset='test')  # 64 training points: several epochs below
    a, b = DataStream(ex, seed=1), DataStream(ex, seed=1)
    xa = torch.cat([a.next(48)[0] for _ in range(8)])       # 384 examples in batches of 48
    xb = torch.cat([b.next(128)[0] for _ in range(3)])      # the same 384 in batches of 128
    assert torch.equal(xa, xb)
    assert not torch.equal(xa[:64], xa[64:128])              # epochs are reshuffled
    assert torch.equal(torch.sort(xa[:64].flatten())[0], torch.sort(ex.train_set[0].flatten())[0])
    c = DataStream(ex, seed=1, position=100)
    assert torch.equal(c.next(50)[0], xa[100:150])          # resuming at a position continues the sequence
    assert not torch.equal(DataStream(ex, seed=2).next(48)[0], xa[:48])


def test_methods_with_different_batch_sizes_consume_the_same_examples():
    ex = toy(preset='test')
    consumed = {}
    original = ex.loss

    def spy(y, targets):
        consumed.setdefault(len(targets), []).append(targets.detach().clone())
        return original(y, targets)
    ex.loss = spy
    phi_hig.train(ex, ['adam', 'sgd'], steps=4, seed=0, progress=False, eval_every=1000,
                  overrides={'adam': {'batch_size': 8}, 'sgd': {'batch_size': 16}})
    small = torch.cat(consumed[8])      # 4 steps x 8 = 32 examples
    large = torch.cat(consumed[16])     # 4 steps x 16 = 64 examples
    assert small.shape[0] == 32 and torch.equal(small, large[:32])


@pytest.mark.parametrize('method', ['adam', 'hig'])
def test_resumed_run_equals_uninterrupted(tmp_path, method):
    ex = toy(preset='test')
    full = phi_hig.train(ex, [method], steps=12, seed=5, progress=False, eval_every=4)
    out = str(tmp_path)
    phi_hig.train(ex, [method], steps=6, seed=5, progress=False, eval_every=4, out=out, checkpoint_every=6)
    resumed = phi_hig.train(ex, [method], steps=12, seed=5, progress=False, eval_every=4, out=out, resume=True)
    for p, q in zip(full.nets[method].parameters(), resumed.nets[method].parameters()):
        assert torch.equal(p, q)
    assert [repr(r['train_loss']) for r in full.records] == [repr(r['train_loss']) for r in resumed.records]
    assert full.final(method) == resumed.final(method)


def test_budget_by_seconds_and_eval_cadence():
    result = phi_hig.train(toy(preset='test'), ['adam'], seconds=0.3, progress=False, eval_every=10)
    recs = result.records
    # a step starts only while the time so far plus the last step's time fits in 0.3 s: the last one did, the next
    # would not have
    t = [r['wall_time'] for r in recs]
    assert t[-2] + (t[-2] - t[-3]) <= 0.3 < max(t[-1] + (t[-1] - t[-2]), t[-1] + 1e-12)
    evaluated = [r['step'] for r in recs if r['test_loss'] == r['test_loss']]
    assert evaluated[0] == 0 and all(s % 10 == 0 for s in evaluated[1:-1]) and evaluated[-1] == recs[-1]['step']
    assert all(r['wall_time'] <= s['wall_time'] for r, s in zip(recs, recs[1:]))


def test_invalid_arguments():
    ex = toy(preset='test')
    with pytest.raises(InvalidInputError, match='budget'):
        phi_hig.train(ex, ['adam'])
    with pytest.raises(InvalidInputError, match="does not define method 'rmsprop'"):
        phi_hig.train(ex, ['rmsprop'], steps=1)
    with pytest.raises(InvalidInputError, match='overrides'):
        phi_hig.train(ex, ['adam'], steps=1, overrides={'hig': {'lr': 1}})
    with pytest.raises(InvalidInputError, match='learning rate'):
        phi_hig.train(ex, ['adam'], steps=1, overrides={'adam': {'lr': -1}}, progress=False)



@pytest.mark.parametrize('kwargs, words', [
    (dict(initial_state={'foo': torch.zeros(1)}), ['initial_state does not fit the network', 'Unexpected key', 'foo']),
    (dict(initial_state={'0.weight': torch.zeros(3, 3)}), ['initial_state does not fit', 'Missing key']),
    (dict(initial_state=[1, 2]), ['initial_state must be a state_dict', 'list']),
    (dict(on_record=3), ['on_record must be a function', '3']),
    (dict(control='x'), ['control must be a phi_hig.RunControl or None', "'x'"]),
    (dict(progress='yes'), ['progress must be True or False']),
])
def test_train_refuses_bad_run_arguments_before_training(kwargs, words, tmp_path):
    ex = toy(preset='test')
    with pytest.raises(InvalidInputError) as err:
        phi_hig.train(ex, ['adam'], steps=3, out=str(tmp_path / 'out'), checkpoint_every=1,
                      **dict(dict(progress=False), **kwargs))
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert not os.path.exists(tmp_path / 'out')  # nothing trained, nothing written


def test_a_fitting_initial_state_is_used():
    ex = toy(preset='test')
    state = {k: torch.full_like(v, 0.1) for k, v in ex.make_net().state_dict().items()}
    result = phi_hig.train(ex, ['adam'], steps=0, progress=False, initial_state=state)
    assert all(torch.equal(v, state[k]) for k, v in result.nets['adam'].state_dict().items())


def test_divergence_is_recorded_not_raised():
    ex = toy(preset='test')
    result = phi_hig.train(ex, ['sgd', 'adam'], steps=30, progress=False, overrides={'sgd': {'lr': 1e30}})
    assert result.summary['final']['sgd']['status'].startswith('diverged')
    assert result.summary['final']['adam']['status'] == 'ok'


def test_cli_run_writes_outputs(tmp_path, capsys):
    out = str(tmp_path / 'run')
    assert cli(['run', 'toy', '--preset', 'test', '--methods', 'hig,adam', '--steps', '20', '--out', out,
                '--quiet', '--hp', 'hig.truncation=1e-5']) == 0
    with open(os.path.join(out, 'metrics.csv')) as f:
        rows = list(csv.DictReader(f))
    for column in ['experiment', 'method', 'step', 'wall_time', 'train_loss', 'test_loss', 'saturation']:
        assert column in rows[0]
    assert {r['method'] for r in rows} == {'hig', 'adam'}
    summary = json.load(open(os.path.join(out, 'summary.json')))
    assert summary['hyperparameters']['hig']['truncation'] == 1e-5
    assert summary['versions']['torch'] == torch.__version__
    assert os.path.getsize(os.path.join(out, 'curves.png')) > 1000
    assert cli(['run', 'toy', '--methods', 'hig', '--steps', '1', '--hp', 'adam.lr=1']) == 2
    assert 'not among the methods run' in capsys.readouterr().err


def test_cli_sweep_and_list(tmp_path, capsys):
    out = str(tmp_path / 'sweep')
    assert cli(['sweep', 'toy', '--preset', 'test', '--kappa', '-1,-0.5', '--beta', '-0.5,0', '--steps', '3',
                '--out', out, '--quiet']) == 0
    with open(os.path.join(out, 'sweep.csv')) as f:
        rows = list(csv.DictReader(f))
    assert {(float(r['kappa']), float(r['beta'])) for r in rows} == {(-1, -0.5), (-1, 0), (-0.5, -0.5), (-0.5, 0)}
    assert os.path.getsize(os.path.join(out, 'sweep.png')) > 1000
    assert cli(['list']) == 0
    assert 'toy' in capsys.readouterr().out


def test_import_has_no_side_effects():
    code = ("import sys, io; out = io.StringIO(); sys.stdout = out; import phi_hig; sys.stdout = sys.__stdout__; "
            "from phiml.backend import default_backend; "
            "print(repr(out.getvalue()), default_backend().name, 'phi.torch.flow' in sys.modules, 'dash' in sys.modules)")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["''", 'numpy', 'False', 'False']


def test_evaluation_leaves_batch_norm_statistics_alone():
    ex = toy(preset='test')
    ex.make_net = lambda: torch.nn.Sequential(torch.nn.Linear(1, 7), torch.nn.BatchNorm1d(7), torch.nn.Tanh(),
                                              torch.nn.Linear(7, 2))
    net = ex.make_net()
    before = net[1].running_mean.clone()
    from phi_hig.training.runner import evaluate
    out = evaluate(ex, net)
    assert torch.equal(net[1].running_mean, before) and net.training
    assert out['test_loss'] > 0


# --- checkpoints ------------------------------------------------------------------------------------------
def _files(out):
    return sorted(os.listdir(out))


def test_checkpoint_is_plain_data_of_constant_size_with_the_run_identity(tmp_path):
    from phi_hig.training.checkpoint import checkpoint_path, history_path, read_checkpoint
    ex = toy(preset='test')
    sizes = {}
    for steps in (7, 70):
        out = str(tmp_path / str(steps))
        phi_hig.train(ex, ['adam'], steps=steps, seed=2, progress=False, out=out, checkpoint_every=7,
                      overrides={'adam': {'lr': 0.1}})
        sizes[steps] = os.path.getsize(checkpoint_path(out, 'adam'))
        raw = torch.load(checkpoint_path(out, 'adam'), weights_only=True)  # no code runs: plain data and tensors
        assert raw['step'] == steps and raw['records'] == steps + 1
        with open(history_path(out, 'adam')) as f:
            assert len(f.readlines()) == steps + 1
    assert sizes[70] == sizes[7]  # the history is not in the checkpoint
    ck = read_checkpoint(checkpoint_path(str(tmp_path / '70'), 'adam'))
    assert ck.identity == dict(experiment='toy', preset='test', settings=json.loads(json.dumps(ex.settings)), seed=2,
                               hyperparameters={'adam': {'lr': 0.1, 'batch_size': 16}}, world_size=1)


def _resume_setup(tmp_path):
    ex = toy(preset='test')
    out = str(tmp_path / 'run')
    args = dict(steps=21, seed=5, progress=False, eval_every=4, out=out)
    full = phi_hig.train(ex, ['adam'], **args)
    phi_hig.train(ex, ['adam'], checkpoint_every=7, **dict(args, steps=14))
    return ex, out, args, full


def test_torn_latest_checkpoint_resumes_from_the_previous_with_a_warning(tmp_path):
    from phi_hig.training.checkpoint import CheckpointWarning, checkpoint_path, history_path, previous_path
    ex, out, args, full = _resume_setup(tmp_path)
    assert os.path.exists(previous_path(out, 'adam'))
    with open(checkpoint_path(out, 'adam'), 'r+b') as f:  # torn: the second half is gone
        f.truncate(os.path.getsize(checkpoint_path(out, 'adam')) // 2)
    with open(history_path(out, 'adam'), 'a') as f:
        f.write('{"experiment": "toy", "method": "adam", "st')  # and a torn last line
    with pytest.warns(CheckpointWarning, match='checkpoint_adam.pt'):
        resumed = phi_hig.train(ex, ['adam'], resume=True, **args)
    assert [repr(r['train_loss']) for r in resumed.records] == [repr(r['train_loss']) for r in full.records]
    with open(history_path(out, 'adam')) as f:
        assert len(f.readlines()) == 8  # cut back to the previous checkpoint (step 7; none written now)


def test_a_checkpoint_whose_tensor_bytes_changed_is_not_resumed_from(tmp_path):
    """A file that still loads but whose weights changed after writing (a flipped bit) fails its checksum: the run
    resumes from the previous checkpoint with a warning and matches the uninterrupted run."""
    from phi_hig.training.checkpoint import CheckpointWarning, checkpoint_path
    ex, out, args, full = _resume_setup(tmp_path)
    raw = torch.load(checkpoint_path(out, 'adam'), weights_only=True)
    buffer = raw['state']['buffers']['float32']
    buffer[3] = buffer[3] + 1.0  # the checksum field is left as it was
    torch.save(raw, checkpoint_path(out, 'adam'))
    with pytest.warns(CheckpointWarning, match='checksum'):
        resumed = phi_hig.train(ex, ['adam'], resume=True, **args)
    assert [repr(r['train_loss']) for r in resumed.records] == [repr(r['train_loss']) for r in full.records]


def test_unusable_checkpoints_refuse_naming_the_file(tmp_path, capsys):
    from phi_hig.training.checkpoint import checkpoint_path, previous_path
    ex, out, args, full = _resume_setup(tmp_path)
    for path in (checkpoint_path(out, 'adam'), previous_path(out, 'adam')):
        with open(path, 'wb') as f:
            f.write(b'not a checkpoint')
    with pytest.raises(InvalidInputError, match='checkpoint_adam.prev.pt'):
        phi_hig.train(ex, ['adam'], resume=True, **args)
    assert cli(['run', 'toy', '--preset', 'test', '--methods', 'adam', '--steps', '21', '--seed', '5',
                '--eval-every', '4', '--out', out, '--resume', '--quiet']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('phi_hig: error: --resume: no usable checkpoint') and \
        'checkpoint_adam.pt' in err[0]


def test_the_writer_never_leaves_a_checkpoint_behind_its_history(tmp_path):
    """Every checkpoint written covers records that are on disk (history appended and fsynced first)."""
    from phi_hig.training.checkpoint import checkpoint_path, history_path, read_checkpoint
    seen = []

    def check(record, method):
        path = checkpoint_path(str(tmp_path), 'adam')
        if os.path.exists(path):
            try:
                ck = read_checkpoint(path)
            except InvalidInputError:
                return  # being replaced right now: the rename is atomic, so this is a read of the old inode
            with open(history_path(str(tmp_path), 'adam')) as f:
                assert len(f.readlines()) >= ck.records
            seen.append(ck.step)
    phi_hig.train(toy(preset='test'), ['adam'], steps=300, progress=False, out=str(tmp_path), checkpoint_every=1,
                  on_record=check)
    assert seen and not [f for f in _files(tmp_path) if f.endswith('.tmp')]


# --- honest results ---------------------------------------------------------------------------------------
def test_growing_loss_and_too_few_steps_are_warned_and_flagged():
    from phi_hig.training.runner import RunWarning
    ex = toy(preset='test')
    with pytest.warns(RunWarning, match='grew to'):
        result = phi_hig.train(ex, ['sgd', 'adam'], steps=30, progress=False, overrides={'sgd': {'lr': 20.0}})
    final = result.summary['final']
    assert 'loss_grew' in final['sgd']['flags'] and final['adam']['flags'] == []
    assert final['sgd']['batch_size'] == 16 and final['sgd']['warnings']
    slow = dict(ex.methods)
    ex.methods = dict(slow, adam=dict(slow['adam']))
    original = ex.loss

    def slow_loss(y, t):
        import time
        time.sleep(0.02)
        return original(y, t)
    ex.loss = slow_loss
    with pytest.warns(RunWarning, match='fits about|only .* step|past the whole') as caught:  # said once
        result = phi_hig.train(ex, ['adam'], seconds=0.1, progress=False, eval_every=1000)
    assert result.summary['final']['adam']['flags'] == ['few_steps'] and len(caught) == 1  # and not again
    # a step budget below 10 is what was asked for: no flag
    assert phi_hig.train(ex, ['adam'], steps=3, progress=False).summary['final']['adam']['flags'] == []


# --- SIGKILL at random moments ----------------------------------------------------------------------------
def _cli_run(out, *extra, env=None):
    args = [sys.executable, '-m', 'phi_hig', 'run', 'toy', '--preset', 'test', '--methods', 'adam,hig',
            '--steps', '1500', '--seed', '3', '--threads', '1', '--checkpoint-every', '7', '--out', out, '--quiet',
            *extra]
    return subprocess.Popen(args, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _metrics_without_wall_time(out):
    with open(os.path.join(out, 'metrics.csv'), newline='') as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, [{k: v for k, v in row.items() if k != 'wall_time'} for row in reader]


def _temporaries(out):
    return [f for f in os.listdir(out) if f.endswith('.tmp')] if os.path.isdir(out) else []


def _history_sizes(out):
    return sorted((f, os.path.getsize(os.path.join(out, f))) for f in os.listdir(out)
                  if f.startswith('history_')) if os.path.isdir(out) else []


def _wait_until(predicate, proc, timeout=60):
    import time
    deadline = time.perf_counter() + timeout
    while not predicate() and proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.002)


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A checkpointing CLI run (1500 steps each of Adam and HIG: long enough that no kill comes too late) is
    SIGKILLed at 5 seeded moments and resumed each time (the lock a killed run leaves behind stops no one); its
    metrics.csv then equals
    that of an uninterrupted run of the same seed in every column but wall_time. The moments: one during start-up,
    two anywhere in the training, two inside a checkpoint write (a test hook pauses every atomic write halfway)."""
    import random
    import signal
    import time
    rng = random.Random(2024)
    reference = str(tmp_path / 'reference')
    t0 = time.perf_counter()
    proc = _cli_run(reference)
    _wait_until(lambda: _history_sizes(reference), proc)
    startup = time.perf_counter() - t0
    assert proc.wait(120) == 0, proc.stderr.read()
    proc.stderr.close()
    training = time.perf_counter() - t0 - startup
    out = str(tmp_path / 'killed')
    kills = []
    slow_writes = dict(os.environ, PHI_HIG_TEST_WRITE_PAUSE='0.15')
    for kind in ('start-up', 'training', 'write', 'training', 'write'):
        before = _history_sizes(out)
        proc = _cli_run(out, '--resume', env=slow_writes if kind == 'write' else None)
        if kind == 'start-up':
            time.sleep(rng.uniform(0.2, 0.9) * startup)
        else:
            _wait_until(lambda: _history_sizes(out) != before, proc)  # training (and checkpointing) goes on
            time.sleep(rng.uniform(0.0, training / 6))
            if kind == 'write':
                _wait_until(lambda: _temporaries(out), proc)
                time.sleep(rng.uniform(0.0, 0.12))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills.append(kind if kind != 'write' or _temporaries(out) else 'training')
            if kind != 'start-up':  # its lock is left behind, and the kernel released it: the next run proceeds
                assert rundir.holder(out).startswith(f'PID {proc.pid} on '), rundir.holder(out)
        proc.stderr.close()
    assert len(kills) == 5 and 'write' in kills, kills
    proc = _cli_run(out, '--resume')
    assert proc.wait(120) == 0, proc.stderr.read()
    proc.stderr.close()
    assert _metrics_without_wall_time(out) == _metrics_without_wall_time(reference)
    assert not _temporaries(out)
    print(f"killed during: {kills}")


def _slow(ex, seconds):
    """``ex`` with a loss that sleeps ``seconds`` per call (a step of known least cost)."""
    import time
    original = ex.loss

    def slow_loss(y, t):
        time.sleep(seconds)
        return original(y, t)
    ex.loss = slow_loss
    return ex


def test_a_time_budget_is_checked_before_training_and_never_overrun(tmp_path, monkeypatch):
    """Before anything trains, a method whose reference cost (`phi_hig.training.costs`) leaves fewer than 10 steps in
    its budget is warned about; a step that would pass the budget is not started; a first step that alone overruns
    it is said plainly (warning and flag note)."""
    import json
    from phi_hig.training import costs
    from phi_hig.training.runner import RunWarning
    ex = toy(preset='test')
    reference = tmp_path / 'step_costs.json'
    reference.write_text(json.dumps(dict(date='d', machine={}, experiments={'toy': dict(
        settings=ex.settings, parameters=30, outputs=2, methods={'adam': dict(batch_size=16, seconds_per_step=0.5)})})))
    monkeypatch.setattr(costs, 'REFERENCE_FILE', str(reference))
    costs.reference_costs.cache_clear()
    try:
        order = []
        with pytest.warns(RunWarning, match=r'adam: a step takes about 500 ms .* fits about 2 step') as caught:
            phi_hig.train(ex, ['adam'], seconds=1.0, progress=False, eval_every=1000,
                          on_record=lambda record, method: order.append(len(caught)))
        assert order[0] == 1  # warned before the first record
        assert costs.reference_cost(toy(preset='test', gamma=1), 'adam') is None  # other settings: no reference
    finally:
        monkeypatch.undo()
        costs.reference_costs.cache_clear()
    with pytest.warns(RunWarning, match='fits about|only'):
        result = phi_hig.train(_slow(toy(preset='test'), 0.02), ['adam'], seconds=0.15, progress=False,
                               eval_every=1000)
    t = [0.0] + [r['wall_time'] for r in result.records if r['step'] > 0]
    assert len(t) >= 2 and all(t[i] + (t[i] - t[i - 1]) <= 0.15 for i in range(1, len(t) - 1))  # each step fitted
    with pytest.warns(RunWarning, match=r'its first step took .*, past the whole budget of 0.1 s') as caught:
        result = phi_hig.train(_slow(toy(preset='test'), 0.25), ['adam'], seconds=0.1, progress=False)
    final = result.summary['final']['adam']
    assert final['steps'] == 1 and final['flags'] == ['few_steps'] and 'past the budget' in final['warnings'][0]
    assert len(caught) == 1


def test_an_expected_growth_is_a_result_not_a_warning(capsys):
    """The toy's Gauss–Newton with the experiment's own hyperparameters: its loss grows 80×–4e5× its first value in
    the first steps (seeds 0–4 on the test preset, 8× above the 10× limit at the least), which is the paper's result
    (Schnell, Holl & Thuerey 2022, §2.1): a progress line and ``summary['final']['gn']['expected']``, no warning, no
    flag. With another η the same growth is warned about and flagged."""
    import warnings
    from phi_hig.training.runner import RunWarning
    with warnings.catch_warnings():
        warnings.simplefilter('error', RunWarning)
        result = phi_hig.train(toy(preset='test'), ['gn'], steps=5, progress=True)
    final = result.summary['final']['gn']
    assert final['flags'] == [] and final['expected'] and 'as expected' in final['expected'][0]
    assert '[toy/gn] the training loss grew to' in capsys.readouterr().err
    with pytest.warns(RunWarning, match='η may be too large'):
        result = phi_hig.train(toy(preset='test'), ['gn'], steps=5, progress=False, overrides={'gn': {'lr': 8.0}})
    assert result.summary['final']['gn']['flags'] == ['loss_grew'] and result.summary['final']['gn']['expected'] == []


def test_progress_lines_mark_a_repeated_evaluation():
    """Between evaluations a progress line names the step its test value comes from, so a repeated value does not
    read as no learning; at an evaluated step it does not."""
    from phi_hig.training.loop import MethodRun
    spec = phi_hig.run_spec('toy', ['adam'], preset='test', steps=10, eval_every=4)
    one = MethodRun(spec, 'adam', spec.experiment.make_net(), None, torch.device('cpu'), [])
    for step in range(1, 10):
        one.step = step
        one.record(0.5)
        line = one.progress_line(0.5)
        test = one.records[4 * (step // 4)]['test_loss']
        assert f"test {test:.3e}" in line and (f"(step {4 * (step // 4)})" in line) == (step % 4 != 0), line
