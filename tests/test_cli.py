"""The command line refuses before it trains: exit code 2, one line ``phi_hig: error: …`` naming the problem, no
output written; ``--resume`` refuses a checkpoint of another run; the sweep takes any hyperparameter; ``list`` shows
costs before anything trains; warnings are one line each."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from phi_hig.__main__ import main as cli
from helpers import one_error_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def a_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('f') / 'not_a_folder'
    path.write_text('x')
    return str(path)


RUN = ['run', 'toy', '--preset', 'test', '--quiet']
CASES = {
    # --hp / --set: wrong types and unknown keys, for every kind of method
    'hp type adam': (['--steps', '5', '--hp', 'adam.lr=fast'], ['adam: lr must be a finite number']),
    'hp type hig': (['--steps', '5', '--hp', 'hig.truncation=abc'], ['hig: truncation must be a finite number']),
    'hp type bool': (['--steps', '5', '--hp', 'sgd.momentum=True'], ['sgd: momentum must be a finite number']),
    'hp unknown adam': (['--steps', '5', '--hp', 'adam.optimizer=sgd'], ["adam: unknown hyperparameter 'optimizer'"]),
    'hp unknown hig': (['--steps', '5', '--hp', 'hig.clip=1'], ["hig: unknown hyperparameter 'clip'"]),
    'hp unknown gn': (['--steps', '5', '--hp', 'gn.momentum=0.9'], ["gn: unknown hyperparameter 'momentum'"]),
    'hp not run': (['--steps', '5', '--methods', 'adam', '--hp', 'hig.lr=1'], ['hig', 'not among the methods run']),
    'hp syntax': (['--steps', '5', '--hp', 'lr=1'], ['METHOD.KEY=VALUE']),
    'hp capturable': (['--steps', '5', '--hp', 'adam.capturable=True'], ['adam: capturable=True cannot step on cpu']),
    'hp differentiable': (['--steps', '5', '--hp', 'adam.differentiable=True'],
                          ['adam: differentiable=True cannot step on cpu']),
    'set type': (['--steps', '5', '--set', 'gamma=abc'], ['gamma']),
    'set unknown': (['--steps', '5', '--set', 'gama=1'], ['gama']),
    'preset': (['--steps', '5', '--preset', 'tset'], ['preset', 'tset']),
    # batch sizes
    'batch 0': (['--steps', '5', '--batch-size', '0'], ['batch_size must be an integer >= 1']),
    'batch negative': (['--steps', '5', '--hp', 'adam.batch_size=-3'], ['adam: batch_size must be an integer >= 1']),
    'batch memory': (['--steps', '5', '--batch-size', str(10 ** 12)], ['batch_size 1000000000000', 'over the limit']),
    'batch float': (['--steps', '5', '--hp', 'adam.batch_size=1e12'], ['adam: batch_size must be an integer']),
    # learning rates, truncation
    'lr nan': (['--steps', '5', '--lr', 'nan'], ['lr must be a finite number, got nan']),
    'lr negative': (['--steps', '5', '--lr', '-1'], ['the learning rate lr must be >= 0']),
    'truncation nobody': (['--steps', '5', '--methods', 'adam,sgd', '--truncation', '1e-3'],
                          ['--truncation', 'truncation']),
    # budget, output, checkpoints
    'no budget': ([], ['give a budget']),
    'steps negative': (['--steps', '-1'], ['--steps must be an integer >= 0']),
    'seconds nan': (['--seconds', 'nan'], ['--seconds must be a finite number']),
    'checkpoint 0': (['--steps', '5', '--checkpoint-every', '0', '--out', '{out}'], ['--checkpoint-every']),
    'checkpoint no out': (['--steps', '5', '--checkpoint-every', '3'], ['--checkpoint-every needs --out']),
    'resume no out': (['--steps', '5', '--resume'], ['--resume needs --out']),
    'out is a file': (['--steps', '5', '--out', '{file}'], ['--out', 'is an existing file']),
    # methods, device, threads
    'methods empty': (['--steps', '5', '--methods', ','], ['--methods is empty']),
    'methods unknown': (['--steps', '5', '--methods', 'adam,rmsprop'], ["does not define method 'rmsprop'"]),
    'methods twice': (['--steps', '5', '--methods', 'adam,adam'], ['more than once']),
    'device bogus': (['--steps', '5', '--device', 'bogus'], ["--device 'bogus'"]),
    'threads 0': (['--steps', '5', '--threads', '0'], ['--threads must be an integer >= 1']),
    'threads negative': (['--steps', '5', '--threads', '-1'], ['--threads must be an integer >= 1']),
    # argparse's own errors follow the same rule
    'argparse type': (['--steps', 'x'], ['--steps', "'x'"]),
    'argparse unknown': (['--steps', '5', '--bogus'], ['--bogus']),
}


@pytest.mark.parametrize('name', list(CASES))
def test_run_refuses_before_training(name, tmp_path, a_file, capsys):
    argv, words = CASES[name]
    out = str(tmp_path / 'out')
    argv = [a.format(out=out, file=a_file) for a in argv]
    if '--out' not in argv:
        argv += ['--out', out] if name not in ('checkpoint no out', 'resume no out') else []
    t0 = time.perf_counter()
    assert cli(RUN + argv) == 2
    assert time.perf_counter() - t0 < 10  # refused at once (a 10^12 batch is never built)
    one_error_line(capsys.readouterr().err, *words)
    assert not os.path.exists(out)  # nothing trained, nothing written


def test_cuda_on_a_build_without_it(capsys):
    if torch.cuda.is_available():
        pytest.skip('this torch has CUDA')
    assert cli(RUN + ['--steps', '1', '--device', 'cuda']) == 2
    one_error_line(capsys.readouterr().err, "--device 'cuda'", 'CUDA')


def test_gram_of_a_too_large_hig_batch_is_refused(capsys):
    assert cli(['run', 'poisson8', '--preset', 'test', '--methods', 'hig', '--steps', '1',
                '--hp', 'hig.batch_size=100000']) == 2
    one_error_line(capsys.readouterr().err, 'hig: batch_size 100000', 'Gram', 'max_bytes')


@pytest.mark.parametrize('argv, words', [
    (['sweep', 'toy', '--preset', 'test', '--method', 'adam', '--kappa', '-1,0', '--steps', '2'],
     ["adam: unknown hyperparameter 'kappa'"]),
    (['sweep', 'toy', '--preset', 'test', '--method', 'adam', '--hp', 'momentum=0.1,0.9', '--steps', '2'],
     ["adam: unknown hyperparameter 'momentum'"]),
    (['sweep', 'toy', '--preset', 'test', '--method', 'hig', '--truncation', '1e-6,-1', '--steps', '2'],
     ['truncation']),
    (['sweep', 'toy', '--preset', 'test', '--method', 'hig', '--steps', '2'], ['nothing to sweep']),
    (['sweep', 'toy', '--preset', 'tset', '--method', 'hig', '--kappa', '-1', '--steps', '2'], ['tset']),
])
def test_sweep_refuses_before_training(argv, words, tmp_path, capsys):
    out = str(tmp_path / 'sweep')
    assert cli(argv + ['--out', out, '--quiet']) == 2
    one_error_line(capsys.readouterr().err, *words)
    assert not os.path.exists(out)


def test_subprocess_exit_code_and_single_line():
    """The real process: exit code 2 and one stderr line, no traceback (argparse and validation alike)."""
    for argv, word in ((['run', 'toy', '--steps', 'x'], "'x'"), (['run', 'toy', '--steps', '1', '--threads', '-1'],
                                                                 '--threads'), ([], 'required')):
        result = subprocess.run([sys.executable, '-m', 'phi_hig', *argv], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2, result.stderr
        one_error_line(result.stderr, word)
        assert 'Traceback' not in result.stderr


def test_help_lists_every_subcommand():
    result = subprocess.run([sys.executable, '-m', 'phi_hig', '--help'], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    for command in ('list', 'run', 'sweep', 'report', 'gui', 'bench'):
        assert f'    {command} ' in result.stdout, command


@pytest.fixture(scope='module')
def checkpointed(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('resume') / 'run')
    assert cli(RUN + ['--methods', 'adam', '--steps', '14', '--checkpoint-every', '7', '--out', out]) == 0
    return out


@pytest.mark.parametrize('argv, words', [
    (['--seed', '1'], ['was made with seed 0, this run has seed 1']),
    (['--set', 'gamma=1'], ['was made with gamma=0.01, this run has gamma=1']),
    (['--hp', 'adam.lr=0.1'], ['was made with adam.lr=0.3, this run has adam.lr=0.1']),
    (['--batch-size', '8'], ['was made with adam.batch_size=16, this run has adam.batch_size=8']),
    (['--hp', 'adam.eps=1e-7'], ['was made with no adam.eps, this run has adam.eps=1e-07']),
    (['--preset', 'paper'], ['was made with preset test, this run has preset paper']),
])
def test_resume_refuses_a_checkpoint_of_another_run(checkpointed, argv, words, capsys):
    stamps = {f: os.path.getmtime(os.path.join(checkpointed, f)) for f in os.listdir(checkpointed)}
    argv = ['run', 'toy', '--quiet', '--methods', 'adam', '--steps', '21', '--out', checkpointed, '--resume'] + \
        (['--preset', 'test'] if '--preset' not in argv else []) + argv
    assert cli(argv) == 2
    line = one_error_line(capsys.readouterr().err, '--resume: the checkpoint', 'checkpoint_adam.pt', *words)
    assert 'Traceback' not in line
    assert {f: os.path.getmtime(os.path.join(checkpointed, f)) for f in os.listdir(checkpointed)} == stamps


def test_resume_with_the_same_identity_continues(checkpointed, capsys):
    assert cli(RUN + ['--methods', 'adam', '--steps', '21', '--out', checkpointed, '--resume']) == 0
    with open(os.path.join(checkpointed, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['final']['adam']['steps'] == 21 and summary['seed'] == 0
    assert summary['final']['adam']['batch_size'] == 16


def test_sweep_over_any_hyperparameter(tmp_path, capsys):
    out = str(tmp_path / 'sweep')
    assert cli(['sweep', 'toy', '--preset', 'test', '--method', 'adam', '--hp', 'lr=0.01,0.1',
                '--hp', 'betas=(0.9,0.999),(0.5,0.9)', '--steps', '3', '--out', out, '--quiet']) == 0
    with open(os.path.join(out, 'sweep.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [(r['lr'], r['betas']) for r in rows] == [('0.01', '(0.9, 0.999)'), ('0.01', '(0.5, 0.9)'),
                                                     ('0.1', '(0.9, 0.999)'), ('0.1', '(0.5, 0.9)')]
    assert os.path.getsize(os.path.join(out, 'sweep.png')) > 1000
    assert cli(['sweep', 'toy', '--preset', 'test', '--method', 'hig', '--truncation', '1e-6,1e-4', '--steps', '2',
                '--out', str(tmp_path / 'line'), '--quiet']) == 0
    assert os.path.getsize(tmp_path / 'line' / 'sweep.png') > 1000


def test_report_through_the_command_line_refuses_a_malformed_file(tmp_path, capsys):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'metrics.csv').write_text('experiment,method,step\ntoy,adam\n')
    assert cli(['report', str(run)]) == 2
    one_error_line(capsys.readouterr().err, 'metrics.csv')
    assert cli(['report', str(run), '--bogus']) == 2
    one_error_line(capsys.readouterr().err, '--bogus')


@pytest.mark.parametrize('experiment', __import__('phi_hig.experiments', fromlist=['NAMES']).NAMES)
def test_every_experiment_refuses_unknown_settings_and_presets(experiment, tmp_path, capsys):
    out = str(tmp_path / 'out')
    assert cli(['run', experiment, '--preset', 'test', '--steps', '1', '--set', 'bogus_setting=1', '--out', out]) == 2
    one_error_line(capsys.readouterr().err, 'bogus_setting')
    assert cli(['run', experiment, '--preset', 'tset', '--steps', '1', '--out', out]) == 2
    one_error_line(capsys.readouterr().err, 'tset')
    assert not os.path.exists(out)


@pytest.mark.parametrize('argv, words', [
    (['--bogus'], ['--bogus']),
    (['--cases', 'foo'], ['--cases', "'foo'", "'toy'", "'qdipole'"]),
    (['--cases', 'toy', 'foo'], ['--cases', "'foo'"]),
    (['--device', 'bogus'], ["--device 'bogus'"]),  # the rule of `run` (phi_hig.training.spec.check_device)
    (['--reps', '0'], ['--reps must be an integer >= 1']),
    (['--reps', 'x'], ['--reps', "'x'"]),
    (['--threads', '-1'], ['--threads must be an integer >= 0']),
    (['--output', '{tmp}'], ['--output', 'is a folder']),
    (['--output', '{tmp}/no/such/folder/x.md'], ['--output', 'not a writable folder']),
])
def test_bench_refuses_before_running_anything(argv, words, tmp_path, capsys, monkeypatch):
    from phi_hig.bench import hig_step
    monkeypatch.setattr(hig_step, 'driver', lambda args: pytest.fail('the benchmark ran'))
    monkeypatch.chdir(tmp_path)
    assert cli(['bench', '--cases', 'toy'] + [a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err, *words)
    assert captured.out == '' and os.listdir(tmp_path) == []


def test_bench_cuda_on_a_build_without_it(tmp_path, capsys, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip('this torch has CUDA')
    from phi_hig.bench import hig_step
    monkeypatch.setattr(hig_step, 'driver', lambda args: pytest.fail('the benchmark ran'))
    monkeypatch.chdir(tmp_path)
    assert cli(['bench', '--device', 'cuda']) == 2
    one_error_line(capsys.readouterr().err, "--device 'cuda'", 'CUDA')


def test_sweep_flags_diverged_points_names_each_point_and_reports_what_it_used(tmp_path, capsys, monkeypatch):
    """A diverged point has no final value in sweep.csv (not its step-0 loss, which beat the good point) and is
    drawn flagged; progress lines name the point; sweep.csv has no empty column; each point has its run folder; the
    report of the sweep shows each point's batch size and status."""
    import phi_hig.report as report
    drawn, draw = [], report.sweep_figure
    monkeypatch.setattr(report, 'sweep_figure', lambda *args, **kw: drawn.append(draw(*args, **kw)))
    out = str(tmp_path / 'sweep')
    assert cli(['sweep', 'toy', '--preset', 'test', '--method', 'hig', '--hp', 'lr=0.1,1e8,1e30', '--steps', '30',
                '--out', out]) == 0
    assert '[toy/hig lr=0.1] step     30' in capsys.readouterr().err
    with open(os.path.join(out, 'sweep.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['lr'] for r in rows] == ['0.1', '100000000.0', '1e+30']
    assert rows[0]['status'] == 'ok' and float(rows[0]['test_loss']) > 0 and float(rows[0]['train_loss']) > 0
    for r in rows[1:]:
        assert r['status'].startswith('diverged at step') and r['test_loss'] == '' and 'diverged' in r['flags']
    assert all(any(r[column] for r in rows) for column in rows[0]), rows  # no empty column
    assert [r['batch_size'] for r in rows] == ['16'] * 3
    assert drawn == [[((1e8,), 'diverged'), ((1e30,), 'diverged')]]
    for folder in ('000_lr=0.1', '001_lr=1e+08', '002_lr=1e+30'):
        assert sorted(os.listdir(os.path.join(out, folder))) == ['metrics.csv', 'summary.json']
    assert cli(['report', out]) == 0
    printed = capsys.readouterr().out
    assert printed.count('batch     16') == 3 and 'lr=1e+30   batch     16  steps       1' in printed
    table = open(os.path.join(out, 'report.md')).read()
    assert '| lr=0.1 | ok | 16 | 30 |' in table and '| lr=1e+08 | diverged at step 4' in table


def test_an_interrupted_sweep_keeps_every_point_that_ended(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second of three points: the first point's row and files are kept, the second is recorded
    as interrupted, the third never starts; exit status 130 after one line."""
    import phi_hig.training.runner as runner
    run = runner.run

    def ctrl_c_in_the_second_point(spec, **kw):
        if kw.get('label') == 'lr=0.1':
            kw['on_record'] = lambda record, method: record['step'] == 3 and os.kill(os.getpid(), signal.SIGINT)
        return run(spec, **kw)
    monkeypatch.setattr(runner, 'run', ctrl_c_in_the_second_point)
    out = str(tmp_path / 'sweep')
    assert cli(['sweep', 'toy', '--preset', 'test', '--method', 'adam', '--hp', 'lr=0.01,0.1,1', '--steps', '20',
                '--out', out, '--quiet']) == 130
    one = [line for line in capsys.readouterr().err.splitlines() if 'interrupted by' in line]
    assert one == [f"phi_hig: interrupted by SIGINT at lr=0.1 (interrupted at step 3): wrote {out}/sweep.csv, "
                   f"metrics.csv, summary.json, sweep.png (1 point(s) ended, 1 interrupted); 2 point(s) not done: "
                   f"sweep them again into another --out, or this one with --overwrite"]
    with open(os.path.join(out, 'sweep.csv'), newline='') as f:
        assert [(r['lr'], r['status']) for r in csv.DictReader(f)] == [('0.01', 'ok'),
                                                                        ('0.1', 'interrupted at step 3')]
    assert sorted(os.listdir(out)) == ['000_lr=0.01', '001_lr=0.1', 'metrics.csv', 'summary.json', 'sweep.csv',
                                       'sweep.png']


# --- what a new user meets first: the listing, the learning rate's names, warnings --------------------------------
def test_list_shows_description_settings_and_measured_cost_per_method(capsys):
    """``list toy heat``: each experiment's description and paper-preset settings (the factory's defaults), its
    methods with the batch size and seconds per step of the reference measurement (phi_hig/training/step_costs.json),
    and for HIG / GN the size of the float64 matrix its step forms, here from a hand count: the toy's b·|y| = 256·2
    rows exceed |θ| = 30 (1 → 7 → 2: 7·1 + 7 + 2·7 + 2), so the dual 30² float64 matrix, 7200 bytes."""
    from phi_hig.training.costs import human_seconds, reference_costs
    assert cli(['list', 'toy', 'heat']) == 0
    out = capsys.readouterr().out
    toy_part, heat_part = out.split('\nheat: ')[0], out.split('\nheat: ')[1]
    assert toy_part.startswith('toy: HIG paper toy') and 'gamma=0.01' in toy_part and 'n_points=1024' in toy_part
    reference = reference_costs()['experiments']
    for name, part in (('toy', toy_part), ('heat', heat_part)):
        for method, cost in reference[name]['methods'].items():
            row = next(line for line in part.splitlines() if line.split()[:1] == [method])
            assert row.split()[1] == str(cost['batch_size']), row
            assert human_seconds(cost['seconds_per_step']) in row, row
    hig = next(line for line in toy_part.splitlines() if line.split()[:1] == ['hig'])
    assert 'b·|y| = 512 rows > |θ| = 30' in hig and '7.03 KiB' in hig, hig
    assert 's/step: training seconds per step at the paper preset' in out
    assert cli(['list', 'toys']) == 2
    one_error_line(capsys.readouterr().err, "unknown experiment 'toys'")


def test_the_learning_rate_is_lr_or_learning_rate_everywhere(capsys):
    """``lr`` (torch.optim's name, recorded) and ``learning_rate`` (HIG's and PhiML's) are one key: in ``--hp`` for
    every kind, in `phi_hig.HIG`, in ``overrides``; both at once is refused naming both."""
    import phi_hig
    from phi_hig import run_spec
    from phi_hig.errors import InvalidInputError
    spec = run_spec('toy', 'adam,hig', preset='test', steps=1, common={'lr': 0.5},
                    overrides={'hig': {'learning_rate': 0.3}})
    assert spec.hyperparameters['hig']['lr'] == 0.3 and 'learning_rate' not in spec.hyperparameters['hig']
    assert spec.hyperparameters['adam']['lr'] == 0.5  # --lr for every method, learning_rate for one replaces it
    with pytest.raises(InvalidInputError, match="give 'lr' or 'learning_rate'"):
        run_spec('toy', 'hig', preset='test', steps=1, overrides={'hig': {'learning_rate': 0.3, 'lr': 0.2}})
    net = torch.nn.Linear(2, 1)
    assert phi_hig.HIG(net, lr=0.3).param_groups[0]['lr'] == phi_hig.HIG(net, learning_rate=0.3).param_groups[0]['lr']
    with pytest.raises(InvalidInputError, match='learning_rate or as lr'):
        phi_hig.HIG(net, learning_rate=0.2, lr=0.3)
    assert cli(RUN + ['--steps', '1', '--methods', 'hig,sgd', '--hp', 'hig.learning_rate=0.3',
                      '--hp', 'sgd.learning_rate=0.01']) == 0
    capsys.readouterr()


def test_warnings_are_one_line_without_source(capsys):
    """The command line's and the demos' warnings: one line ``phi_hig: warning: …`` each, no file, line number or
    source line (a demo's parser switches them on for its process); other warnings are left alone."""
    import warnings
    from phi_hig.cli import plain_warnings
    from phi_hig.demo import demo_parser
    from phi_hig.training import RunWarning
    with plain_warnings(RunWarning):
        warnings.warn('adam: only 3 step(s)\n  in the time budget', RunWarning)
    assert capsys.readouterr().err == 'phi_hig: warning: adam: only 3 step(s) in the time budget\n'
    original = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('always')
            warnings.showwarning = lambda message, *args, **kwargs: sys.stderr.write(f'other: {message}\n')
            demo_parser('doc', 'toy', seconds=1.0)
            warnings.warn('gn: the training loss grew', RunWarning)
            warnings.warn('something else', UserWarning)
        assert capsys.readouterr().err.splitlines() == ['phi_hig: warning: gn: the training loss grew',
                                                        'other: something else']
    finally:
        warnings.showwarning = original
