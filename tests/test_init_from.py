"""Initial weights from an earlier run (issue 20, point 4): ``--init-from RUN_DIR:METHOD`` / ``train(init_from=)``
starts every method from the final weights of a finished method, refuses every unusable source in one line before
anything trains or is written, and records the source in the run's identity (resume) and in summary.json; the
Poisson pre-training protocol script runs at a tiny size."""
import hashlib
import json
import os

import pytest
import torch

import phi_hig
from phi_hig.__main__ import main as cli
from phi_hig.errors import InvalidInputError
from phi_hig.experiments import toy
from phi_hig.training.checkpoint import checkpoint_path, read_checkpoint
from phi_hig.training.runner import RunControl
from helpers import one_error_line

RUN = ['run', 'toy', '--preset', 'test', '--quiet', '--threads', '1']


def _fingerprint(state) -> str:
    """SHA-256 of a state_dict's names, dtypes, shapes and bytes, in name order (written here from the definition)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous()
        digest.update(f"{name}|{str(t.dtype)[6:]}|{list(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """A finished pre-training (adam and hig, 4 steps, checkpointed) and the networks it ended with."""
    folder = str(tmp_path_factory.mktemp('init') / 'pre')
    result = phi_hig.train(toy(preset='test'), ['adam', 'hig'], steps=4, progress=False, out=folder,
                           checkpoint_every=2, threads=1)
    return folder, result


def test_a_run_starts_exactly_from_the_final_weights_of_the_source(source, tmp_path):
    """The continuation's network at step 0 is the source's trained network (in memory, not read from a file), its
    first held-out loss is the source's last one, and the checkpoint file holds those weights, marked final."""
    folder, pre = source
    trained = {k: v.detach().clone() for k, v in pre.nets['adam'].state_dict().items()}
    raw = torch.load(checkpoint_path(folder, 'adam'), weights_only=True)  # independent of phi_hig's reader
    assert raw['final'] is True and raw['step'] == 4
    start = phi_hig.train(toy(preset='test'), ['hig', 'sgd'], steps=0, progress=False, init_from=f'{folder}:adam',
                          threads=1)
    for method in ('hig', 'sgd'):
        state = start.nets[method].state_dict()
        assert state.keys() == trained.keys() and all(torch.equal(state[k], trained[k]) for k in trained)
        first = start.records[[r['method'] for r in start.records].index(method)]['test_loss']
        assert first == pytest.approx(pre.final('adam'), rel=1e-6)
    assert start.summary['init_from'] == dict(run=os.path.abspath(folder), method='adam', step=4,
                                              fingerprint=_fingerprint(trained))
    more = phi_hig.train(toy(preset='test'), ['hig'], steps=2, progress=False, init_from=(folder, 'adam'), threads=1)
    assert more.records[0]['test_loss'] == pytest.approx(pre.final('adam'), rel=1e-6)
    assert more.summary['final']['hig']['steps'] == 2


def test_the_command_line_records_the_source_in_summary_json_and_resume_compares_it(source, tmp_path, capsys):
    folder, pre = source
    out = str(tmp_path / 'cont')
    assert cli(RUN + ['--methods', 'sgd', '--steps', '2', '--checkpoint-every', '1', '--out', out,
                      '--init-from', f'{folder}:hig']) == 0
    with open(os.path.join(out, 'summary.json')) as f:
        recorded = json.load(f)['init_from']
    assert recorded == dict(run=os.path.abspath(folder), method='hig', step=4,
                            fingerprint=_fingerprint(pre.nets['hig'].state_dict()))
    assert read_checkpoint(checkpoint_path(out, 'sgd')).identity['init_from'] == recorded
    capsys.readouterr()
    for other, words in (([f'{folder}:adam'], ["--resume: the checkpoint", "was made with --init-from",
                                                f"{os.path.abspath(folder)}:hig' (step 4", "this run has --init-from",
                                                ":adam' (step 4"]),
                         ([], ['was made with --init-from', 'this run has the seeded initial weights'])):
        stamp = os.path.getmtime(checkpoint_path(out, 'sgd'))
        assert cli(RUN + ['--methods', 'sgd', '--steps', '3', '--out', out, '--resume'] +
                   (['--init-from'] + other if other else [])) == 2
        one_error_line(capsys.readouterr().err, *words)
        assert os.path.getmtime(checkpoint_path(out, 'sgd')) == stamp
    assert cli(RUN + ['--methods', 'sgd', '--steps', '3', '--out', out, '--resume', '--init-from',
                      f'{folder}:hig']) == 0


def test_only_a_method_that_spent_its_budget_has_final_weights(tmp_path, capsys):
    """An interrupted method's checkpoint is not final and is refused, naming the step; resumed to its end, it is."""
    folder = str(tmp_path / 'pre')
    control = RunControl()
    phi_hig.train(toy(preset='test'), ['adam'], steps=5, progress=False, out=folder, checkpoint_every=1,
                  control=control, on_record=lambda record, method: record['step'] == 2 and control.interrupt())
    assert read_checkpoint(checkpoint_path(folder, 'adam')).final is False
    out = str(tmp_path / 'cont')
    assert cli(RUN + ['--methods', 'hig', '--steps', '1', '--out', out, '--init-from', f'{folder}:adam']) == 2
    one_error_line(capsys.readouterr().err, f"--init-from '{folder}:adam': adam did not finish",
                   'latest checkpoint (step 2)')
    assert not os.path.exists(out)
    phi_hig.train(toy(preset='test'), ['adam'], steps=5, progress=False, out=folder, checkpoint_every=1, resume=True)
    assert read_checkpoint(checkpoint_path(folder, 'adam')).final is True
    assert cli(RUN + ['--methods', 'hig', '--steps', '1', '--init-from', f'{folder}:adam']) == 0


def _not_checkpointed(tmp_path):
    folder = tmp_path / 'plain'  # what a run without --checkpoint-every leaves: its results, no checkpoint
    folder.mkdir()
    (folder / 'summary.json').write_text('{}')
    return str(folder)


def _damaged(tmp_path, folder):
    copy = tmp_path / 'damaged'
    copy.mkdir()
    data = bytearray(open(checkpoint_path(folder, 'adam'), 'rb').read())
    data[len(data) // 2] ^= 0xFF
    (copy / 'checkpoint_adam.pt').write_bytes(bytes(data))
    return str(copy)


@pytest.mark.parametrize('case', ['form', 'empty method', 'no folder', 'a file', 'foreign folder', 'no checkpoints',
                                  'unknown method', 'damaged', 'other network', 'other experiment', 'own out'])
def test_an_unusable_source_is_refused_in_one_line_before_anything_is_written(case, source, tmp_path, capsys):
    folder, _ = source
    out = str(tmp_path / 'out')
    (tmp_path / 'notes').mkdir()
    (tmp_path / 'notes' / 'notes.txt').write_text('mine')
    value, extra, words = {
        'form': (folder, [], ["--init-from must be 'RUN_DIR:METHOD'", f"got '{folder}'"]),
        'empty method': (folder + ':', [], ["--init-from must be 'RUN_DIR:METHOD'"]),
        'no folder': (str(tmp_path / 'nowhere') + ':adam', [], ['nowhere', 'does not exist']),
        'a file': (str(tmp_path / 'notes' / 'notes.txt') + ':adam', [], ['is a file, not a run folder']),
        'foreign folder': (str(tmp_path / 'notes') + ':adam', [], ['is not a phi_hig run folder']),
        'no checkpoints': (None, [], ['wrote no checkpoints', 'with --checkpoint-every,']),
        'unknown method': (folder + ':gn', [], ["has no method 'gn'; it holds adam, hig"]),
        'damaged': (None, [], ['checkpoint_adam.pt is unreadable']),
        'other network': (folder + ':adam', ['--set', 'hidden=5'],
                          ['do not fit the network', 'hidden=7 there, 5 here', 'size mismatch']),
        'other experiment': (folder + ':adam', [], ["trained on experiment 'toy', this run is on 'poisson8'"]),
        'own out': (folder + ':adam', [], ['names the folder the run writes']),
    }[case]
    if case == 'no checkpoints':
        value = _not_checkpointed(tmp_path) + ':adam'
    if case == 'damaged':
        value = _damaged(tmp_path, folder) + ':adam'
    command = RUN + ['--methods', 'hig', '--steps', '1', '--out', folder if case == 'own out' else out,
                     '--init-from', value] + extra
    if case == 'other experiment':
        command[1] = 'poisson8'
    before = sorted(os.listdir(folder))
    assert cli(command) == 2
    one_error_line(capsys.readouterr().err, *words)
    assert not os.path.exists(out) and sorted(os.listdir(folder)) == before
    with pytest.raises(InvalidInputError, match='init_from'):  # the library refuses alike, in its own words
        phi_hig.run_spec('poisson8' if case == 'other experiment' else 'toy', ['hig'], preset='test', steps=1,
                         init_from=value, settings={'hidden': 5} if extra else None,
                         out=folder if case == 'own out' else None)


def test_the_sweep_starts_every_point_from_the_source(source, tmp_path, capsys):
    folder, pre = source
    out = str(tmp_path / 'sweep')
    assert cli(['sweep', 'toy', '--preset', 'test', '--method', 'sgd', '--hp', 'lr=0,0.1', '--steps', '1', '--quiet',
                '--out', out, '--init-from', f'{folder}:adam']) == 0
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['init_from']['fingerprint'] == _fingerprint(pre.nets['adam'].state_dict())
    assert summary['final']['lr=0']['test_loss'] == pytest.approx(pre.final('adam'), rel=1e-6)  # lr 0: unchanged


def test_the_pretraining_protocol_runs_at_a_tiny_size(tmp_path):
    """benchmarks/poisson_pretraining.py: every phase through the runner with init_from; the continuations start
    from the pre-training's final weights (their first held-out loss is its last) and the results are written."""
    from benchmarks.poisson_pretraining import main
    out = str(tmp_path / 'pp')
    assert main(['--out', out, '--preset', 'test', '--set', 'network=code', '--set', 'n_test=4', '--window', '2',
                 '--pretrain-cap', '2', '--sweep', '0.01', '--sweep-steps', '1', '--steps', '1', '--seeds', '0',
                 '--reverse-steps', '1', '--quiet', '--threads', '1']) == 0
    with open(os.path.join(out, 'poisson_pretraining.json')) as f:
        results = json.load(f)
    pre, cont = results['phases']['pretrain'], results['phases']['continue']
    assert pre['steps'] == 2 and set(cont['runs']) == {'adam', 'hig', 'gn'}
    for runs in cont['runs'].values():
        assert runs['0']['curve'][0][0] == 0 and runs['0']['curve'][0][1] == pytest.approx(pre['final'], rel=1e-6)
        assert runs['0']['source']['step'] == 2
    assert results['phases']['reverse']['source']['method'] == 'hig'
    assert all(os.path.getsize(os.path.join(out, f'poisson_pretraining.{ext}')) > 0 for ext in ('md', 'png'))
