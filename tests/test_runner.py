"""The runner's fairness guarantees, checkpoint/resume, and the command line."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import phi_hig
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
    assert recs[-1]['wall_time'] >= 0.3
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
    assert 'not in --methods' in capsys.readouterr().err


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
    from phi_hig.runner import evaluate
    out = evaluate(ex, net)
    assert torch.equal(net[1].running_mean, before) and net.training
    assert out['test_loss'] > 0
