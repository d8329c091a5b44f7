"""Run directories and reports: write_run -> read_run round trip, the summary table, `python -m phi_hig report`."""
import math
import os

import pytest

from phi_hig.errors import InvalidInputError
from phi_hig.report import main, read_run, summary_rows, write_report, write_run
from helpers import one_error_line


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    from phi_hig import train
    from phi_hig.experiments import get
    result = train(get('toy', preset='test'), ['adam', 'hig'], steps=20, eval_every=10, progress=False,
                   overrides={'hig': {'lr': 0.1}})  # η = 1 grows the loss 10× at this size: flagged, no ratio
    out = str(tmp_path_factory.mktemp('runs') / 'toy')
    write_run(result, out)
    return out, result


def test_read_run_round_trip(run_dir):
    path, result = run_dir
    records, summary = read_run(path)
    assert len(records) == len(result.records)
    for r, ref in zip(records, result.records):
        assert r['method'] == ref['method'] and r['step'] == ref['step'] and isinstance(r['step'], int)
        for key in ('wall_time', 'train_loss', 'test_loss'):
            a, b = r[key], ref[key]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12)
    assert summary['methods'] == ['adam', 'hig']


def test_summary_rows_ratios(run_dir):
    path, result = run_dir
    records, summary = read_run(path)
    rows = {r['method']: r for r in summary_rows(records, summary)}
    assert rows['adam']['ratio'] == 1.0 and rows['adam']['baseline'] == 'adam'
    for m in ('adam', 'hig'):
        f = summary['final'][m]
        assert rows[m]['final'] == pytest.approx(f['test_loss'])
        assert rows[m]['steps'] == 20 and rows[m]['seconds_per_step'] == pytest.approx(f['seconds_per_step'])
    assert rows['hig']['ratio'] == pytest.approx(summary['final']['hig']['test_loss'] /
                                                 summary['final']['adam']['test_loss'])
    assert rows['hig']['time_ratio'] == pytest.approx(summary['final']['hig']['seconds_per_step'] /
                                                      summary['final']['adam']['seconds_per_step'])
    rows = {r['method']: r for r in summary_rows(records, summary, baseline='hig')}
    assert rows['hig']['ratio'] == 1.0
    # without summary.json the table comes from the rows alone, baseline = the first method if no adam
    no_adam = [r for r in records if r['method'] == 'hig']
    (row,) = summary_rows(no_adam, {})
    assert row['baseline'] == 'hig' and row['steps'] == 20 and row['final'] == pytest.approx(
        summary['final']['hig']['test_loss'])


def test_write_report_files_and_table(run_dir, tmp_path):
    path, _ = run_dir
    md = write_report(path, out=str(tmp_path))
    text = open(md).read()
    assert '| adam | ok | 16 | 20 |' in text and '| hig | ok | 16 | 20 |' in text  # batch size, steps
    assert 'ratios to `adam`' in text
    for f in ('report_loss.png', 'report_final.png', 'report_metrics.png', 'report_trajectory.png'):
        assert os.path.getsize(tmp_path / f) > 5000, f
        assert f'({f})' in text
    with pytest.raises(InvalidInputError, match='baseline'):
        write_report(path, out=str(tmp_path), baseline='sgd')
    with pytest.raises(FileNotFoundError, match='metrics.csv'):
        write_report(str(tmp_path))


def test_cli(run_dir, tmp_path, capsys):
    path, _ = run_dir
    assert main([path, '--out', str(tmp_path / 'one')]) == 0
    assert 'ratio' in capsys.readouterr().out and (tmp_path / 'one' / 'report.md').exists()
    # a folder of runs: one report each and an index
    parent = tmp_path / 'many'
    for name in ('a', 'b'):
        os.makedirs(parent / name)
        for f in ('metrics.csv', 'summary.json'):
            with open(os.path.join(path, f)) as src, open(parent / name / f, 'w') as dst:
                dst.write(src.read())
    assert main([str(parent)]) == 0
    index = open(parent / 'index.md').read()
    assert '[a](a/report.md)' in index and (parent / 'b' / 'report_loss.png').exists()
    assert main([str(tmp_path / 'missing')]) == 2
    assert 'not a run directory' in capsys.readouterr().err


def _copy_run(path, dst):
    os.makedirs(dst)
    for f in ('metrics.csv', 'summary.json'):
        with open(os.path.join(path, f)) as src, open(os.path.join(dst, f), 'w') as out:
            out.write(src.read())
    return str(dst)


@pytest.mark.parametrize('damage', ['summary_json', 'summary_type', 'csv_binary', 'csv_cells', 'csv_columns'])
def test_malformed_files_exit_2_naming_the_file_and_write_nothing(run_dir, tmp_path, capsys, damage):
    path, _ = run_dir
    run = _copy_run(path, tmp_path / 'run')
    name = 'summary.json' if damage.startswith('summary') else 'metrics.csv'
    content = {'summary_json': '{"final": {', 'summary_type': '[1, 2]', 'csv_binary': b'\xff\xfe\x00\x01garbage',
               'csv_cells': 'experiment,method,step\ntoy,adam,0,1,2\n', 'csv_columns': 'a,b\n1,2\n'}[damage]
    with open(os.path.join(run, name), 'wb' if isinstance(content, bytes) else 'w') as f:
        f.write(content)
    capsys.readouterr()
    assert main([run]) == 2
    one_error_line(capsys.readouterr().err, name)
    assert not os.path.exists(os.path.join(run, 'report.md'))


@pytest.mark.parametrize('column, value, words', [
    ('step', 'abc', ["row 4, column 'step' must be an integer >= 0", "'abc'"]),
    ('step', '1.5', ["row 4, column 'step' must be an integer >= 0", '1.5']),
    ('step', '-1', ["row 4, column 'step' must be an integer >= 0"]),
    ('step', '', ["row 4, column 'step' must be an integer >= 0"]),
    ('test_loss', 'x', ["row 4, column 'test_loss' must be a number or empty", "'x'"]),
    ('train_loss', 'low', ["row 4, column 'train_loss' must be a number or empty"]),
    ('wall_time', '1s', ["row 4, column 'wall_time' must be a number or empty"]),
])
def test_non_numeric_values_in_numeric_columns_exit_2_naming_file_row_and_column(run_dir, tmp_path, capsys,
                                                                                 column, value, words):
    import csv
    path, _ = run_dir
    run = _copy_run(path, tmp_path / 'run')
    with open(os.path.join(run, 'metrics.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    rows[2][column] = value  # the third data row: line 4 of the file
    with open(os.path.join(run, 'metrics.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main([run]) == 2
    one_error_line(capsys.readouterr().err, 'metrics.csv is malformed', *words)
    assert not os.path.exists(os.path.join(run, 'report.md'))
    with pytest.raises(InvalidInputError, match='metrics.csv is malformed'):
        read_run(run)


def test_a_run_without_summary_json_is_reported_from_its_rows(run_dir, tmp_path, capsys):
    path, _ = run_dir
    run = _copy_run(path, tmp_path / 'run')
    os.remove(os.path.join(run, 'summary.json'))
    records, summary = read_run(run)
    assert summary == {} and records
    assert main([run]) == 0
    assert '| adam |' in open(os.path.join(run, 'report.md')).read()


def test_report_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(['somewhere', '--bogus'])
    assert exit_.value.code == 2
    one_error_line(capsys.readouterr().err, '--bogus')


def test_flagged_methods_get_no_ratios(run_dir, tmp_path, capsys):
    """A method the runner flagged (few steps in the budget, loss grown 10x) is marked, not compared."""
    import json
    path, _ = run_dir
    run = _copy_run(path, tmp_path / 'flagged')
    with open(os.path.join(run, 'summary.json')) as f:
        summary = json.load(f)
    summary['final']['hig']['flags'] = ['few_steps']
    with open(os.path.join(run, 'summary.json'), 'w') as f:
        json.dump(summary, f)
    records, summary = read_run(run)
    rows = {r['method']: r for r in summary_rows(records, summary)}
    assert math.isnan(rows['hig']['ratio']) and math.isnan(rows['hig']['time_ratio'])
    assert rows['hig']['note'] == 'fewer than 10 steps' and rows['adam']['ratio'] == 1.0
    text = open(write_report(run)).read()
    assert '| not compared: fewer than 10 steps |' in text
    # a flagged baseline: nothing is compared to it
    rows = {r['method']: r for r in summary_rows(records, summary, baseline='hig')}
    assert math.isnan(rows['adam']['ratio'])
    assert main([run]) == 0
    assert 'not compared: fewer than 10 steps' in capsys.readouterr().out


def test_seed_table_gives_median_min_max_over_seeds(tmp_path, capsys):
    from phi_hig.report import seed_table
    finals = {'hig': [dict(test_loss=3e-3, steps=10, status='ok'), dict(test_loss=1e-3, steps=30, status='ok'),
                      dict(test_loss=2e-3, steps=20, status='ok')],
              'adam': [dict(test_loss=5.0, steps=7, status='diverged')]}
    seed_table('title', finals, str(tmp_path / 't.txt'))
    lines = (tmp_path / 't.txt').read_text().splitlines()
    assert lines[0] == 'title' and capsys.readouterr().out.splitlines() == lines
    assert lines[2].split() == ['hig', '2.000e-03', '1.000e-03', '3.000e-03', '20', 'ok']
    assert lines[3].split() == ['adam', '5.000e+00', '5.000e+00', '5.000e+00', '7', 'diverged']


def test_a_final_infinite_loss_is_reported_as_non_finite(tmp_path, capsys):
    """The last evaluation is the final value, +Inf included (not the last finite one); the best is the least finite
    value."""
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'metrics.csv').write_text('experiment,method,step,wall_time,train_loss,test_loss\n'
                                     'toy,adam,0,0.0,,0.5\ntoy,adam,1,0.1,0.4,0.3\ntoy,adam,2,0.2,0.3,inf\n')
    records, summary = read_run(str(run))
    (row,) = summary_rows(records, summary)
    assert row['final'] == math.inf and row['best'] == 0.3
    assert main([str(run)]) == 0
    assert 'final inf' in capsys.readouterr().out
    assert '| inf | – | 3.000e-01 |' in (run / 'report.md').read_text()


def test_a_metrics_file_without_records_is_refused(tmp_path, capsys):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'metrics.csv').write_text('experiment,method,step,wall_time,train_loss,test_loss\n')
    assert main([str(run)]) == 2
    one_error_line(capsys.readouterr().err, 'metrics.csv holds no records (a header only)')
    assert not (run / 'report.md').exists()


def test_a_byte_that_is_not_utf8_is_located_by_its_row(tmp_path, capsys):
    """The row of the bad byte, not its position in a read buffer (the file is longer than one buffer)."""
    run = tmp_path / 'run'
    run.mkdir()
    lines = [b'experiment,method,step,wall_time,train_loss,test_loss'] + \
        [b'toy,adam,%d,0.0,0.5,0.5' % i for i in range(900)]
    lines[700] = lines[700].replace(b'0.5,0.5', b'0.5,0.\xff5')
    (run / 'metrics.csv').write_bytes(b'\n'.join(lines) + b'\n')
    assert main([str(run)]) == 2
    one_error_line(capsys.readouterr().err, 'metrics.csv is unreadable: row 701, column 24 holds the byte 0xff')


def test_report_says_which_batch_size_was_used(tmp_path):
    """A run whose methods used another batch size than the experiment's setting: the report's settings line says
    what was used (it printed the setting alone before)."""
    import json
    from phi_hig import train
    from phi_hig.report.summary import settings_line
    result = train('toy', ['adam', 'sgd'], preset='test', steps=2, progress=False,
                   overrides={'adam': {'batch_size': 8}})
    summary = json.loads(json.dumps(result.summary, default=float))  # as summary.json holds it
    assert settings_line(summary['settings'], summary['hyperparameters']) == (
        "gamma=0.01, n_points=64, batch_size=16 (the experiment's default; used: adam 8, sgd 16), hidden=7, "
        "preset=test")


def test_overlapping_curves_get_their_own_dashes_markers_and_width():
    """Two methods with the same curve stay two visible lines: a dash pattern and marker each, the earlier wider and
    below."""
    from phi_hig.report.figures import method_styles
    styles = method_styles(['adam', 'sip', 'hig'], points=40)
    assert len({s['linestyle'] for s in styles.values()}) == 3 and len({s['marker'] for s in styles.values()}) == 3
    assert styles['adam']['lw'] > styles['sip']['lw'] > styles['hig']['lw']
    assert styles['adam']['zorder'] < styles['sip']['zorder'] < styles['hig']['zorder']


@pytest.mark.parametrize('mask, mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_follow_the_umask(run_dir, tmp_path, mask, mode):
    """metrics.csv and summary.json (`write_run`'s atomic writes) get the mode of any new file: 0o666 less the umask
    (the temporary file's 0o600 before); a replaced file keeps its mode."""
    import json
    import stat
    from phi_hig.files import atomic_write
    from phi_hig.report import write_metrics_csv
    _, result = run_dir
    old = os.umask(mask)
    try:
        os.makedirs(tmp_path / 'run')
        write_metrics_csv(result.records, str(tmp_path / 'run' / 'metrics.csv'))
        atomic_write(str(tmp_path / 'run' / 'summary.json'), json.dumps(result.summary, default=float))
        atomic_write(str(tmp_path / 'kept'), 'a')
        os.chmod(tmp_path / 'kept', 0o640)
        atomic_write(str(tmp_path / 'kept'), 'b')
    finally:
        os.umask(old)
    for name in ('metrics.csv', 'summary.json'):
        assert stat.S_IMODE(os.stat(tmp_path / 'run' / name).st_mode) == mode, name
    assert stat.S_IMODE(os.stat(tmp_path / 'kept').st_mode) == 0o640 and open(tmp_path / 'kept').read() == 'b'
