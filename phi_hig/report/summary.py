"""Reports of run folders: the summary table (`summary_rows`), paper-style figures and a Markdown page
(`write_report`, the command ``python -m phi_hig report DIR``), and writing a run (`write_run`: ``metrics.csv``,
``summary.json``, ``curves.png``).

Methods the runner flagged (``summary['final'][m]['flags']``: the training loss grew 10×, fewer than 10 steps
in the time budget, diverged) get no ratios: their row says why instead.
"""
from __future__ import annotations

import math
import os
import sys
from typing import List

from ..checks import is_finite as finite, is_number
from ..errors import InvalidInputError
from ..files import atomic_write, remove_stale_temporaries
from ..rundir import INDEX_FILE, REPORT_FILES, RESULT_FILES
from . import figures as rf
from .figures import plot_curves
from .runs import read_run, write_metrics_csv, write_summary

__all__ = ['write_run', 'summary_rows', 'write_report', 'settings_line', 'main', 'REPORT_FILES']


def write_run(result, out: str, curves: bool = True) -> None:
    """Write ``out/metrics.csv``, ``out/summary.json`` and (with ``curves``) ``out/curves.png``
    (`phi_hig.rundir.RESULT_FILES`) for a `RunResult`. No lock: `phi_hig.training.runner.run` calls it through its
    ``write`` argument while it holds the run folder."""
    metrics, summary, figure = (os.path.join(out, name) for name in RESULT_FILES)
    os.makedirs(out, exist_ok=True)
    for path in (metrics, summary):
        remove_stale_temporaries(path)  # of a write a kill interrupted
    write_metrics_csv(result.records, metrics)
    write_summary(result.summary, summary)
    if curves:
        plot_curves(result.records, figure, title=result.summary.get('experiment', ''))


def _methods(records, summary) -> list:
    return list(summary.get('methods') or dict.fromkeys(r['method'] for r in records))


_NOTES = {'loss_grew': 'training loss grew 10×', 'few_steps': 'fewer than 10 steps', 'diverged': 'diverged',
          'failed': 'failed'}


def summary_rows(records: List[dict], summary: dict, baseline: str = None, key: str = 'test_loss') -> List[dict]:
    """One row per method: status, batch size, steps, training seconds, seconds per step, final and best
    ``key``, the runner's flags with a ``note``, and the ratios of the final value and of the time per step to
    the baseline method (``adam`` if present, else the first). A flagged method's ratios, and every ratio to a
    flagged baseline, are NaN: its numbers are not comparable as they stand."""
    methods = _methods(records, summary)
    if not methods:
        return []
    if baseline is None:
        baseline = 'adam' if 'adam' in methods else methods[0]
    final = summary.get('final', {})
    rows = []
    for m in methods:
        mine = [r for r in records if r['method'] == m]
        values = [r[key] for r in mine if finite(r.get(key))]
        evaluated = [r[key] for r in mine if is_number(r.get(key)) and not math.isnan(r[key])]  # ±Inf is a value
        f = final.get(m, {})
        steps = f.get('steps', mine[-1]['step'] if mine else 0)
        seconds = f.get('train_seconds', mine[-1]['wall_time'] if mine else float('nan'))
        per_step = f.get('seconds_per_step', seconds / steps if steps else float('nan'))
        last = evaluated[-1] if evaluated else float('nan')
        if key in f:  # the runner's final value (NaN for a method that diverged or failed)
            last = f[key]
        flags = list(f.get('flags') or [])
        rows.append(dict(method=m, status=f.get('status', ''), batch_size=f.get('batch_size', float('nan')),
                         steps=steps, train_seconds=seconds, seconds_per_step=per_step, final=last,
                         best=min(values) if values else float('nan'), flags=flags,
                         note='; '.join(_NOTES.get(c, c) for c in flags)))
    base = next((r for r in rows if r['method'] == baseline), None)
    if base is not None and base['flags']:
        base = None
    for r in rows:
        if r['flags']:
            r['ratio'] = r['time_ratio'] = float('nan')
            r['baseline'] = baseline
            continue
        ok = base is not None and finite(base['final']) and base['final'] != 0 and finite(r['final'])
        r['ratio'] = r['final'] / base['final'] if ok else float('nan')
        ok = base is not None and finite(base['seconds_per_step']) and base['seconds_per_step'] > 0 and \
            finite(r['seconds_per_step'])
        r['time_ratio'] = r['seconds_per_step'] / base['seconds_per_step'] if ok else float('nan')
        r['baseline'] = baseline
    return rows


def settings_line(settings: dict, hyperparameters: dict) -> str:
    """The experiment's settings as ``key=value, …``; a setting that is also a hyperparameter (``batch_size``, a
    default ``lr``) and that a method ran with another value of says what was used: ``batch_size=128 (the
    experiment's default; used: adam 32, sip 32)``.

    >>> settings_line({'gamma': 1, 'batch_size': 128}, {'adam': {'batch_size': 32}, 'hig': {'batch_size': 128}})
    "gamma=1, batch_size=128 (the experiment's default; used: adam 32, hig 128)"
    """
    out = []
    for k, v in settings.items():
        used = {m: h[k] for m, h in (hyperparameters or {}).items() if isinstance(h, dict) and k in h}
        if used and any(u != v for u in used.values()):
            out.append(f"{k}={v} (the experiment's default; used: {', '.join(f'{m} {u}' for m, u in used.items())})")
        else:
            out.append(f'{k}={v}')
    return ', '.join(out)


def _fmt(v, spec: str = '.3e') -> str:
    """A table cell: ``v`` formatted; ±Inf as ``inf`` / ``-inf`` (a value, not a missing one); NaN and None as –."""
    if isinstance(v, str):
        return v
    if is_number(v) and math.isinf(v):
        return 'inf' if v > 0 else '-inf'
    return format(v, spec) if finite(v) else '–'


def write_report(path: str, out: str = None, baseline: str = None, key: str = 'test_loss') -> str:
    """Paper-style figures (PNG) and a Markdown summary of the run directory ``path``.

    Writes into ``out`` (default: ``path``) ``report.md`` with the table of final values, ratios to the
    baseline and time per step, ``report_loss.png`` (held-out loss against step and training wall time, log
    scale, smoothed training loss behind), ``report_final.png`` (final values with ratios), and, when the
    run recorded them, ``report_metrics.png`` (the experiment's metrics against step) and
    ``report_trajectory.png`` (the toy's y-space path of one sample).

    Args:
        path: a directory written by `write_run` (``metrics.csv``, optionally ``summary.json``).
        out: output directory.
        baseline: method the ratios refer to (default ``adam`` if present, else the first method).
        key: the loss column to report (default ``test_loss``).

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: no such run directory / no metrics.csv.
        InvalidInputError: unknown baseline method or loss column.
    """
    records, summary = read_run(path)
    return _write_report(path, records, summary, out, baseline, key)


def _write_report(path: str, records: List[dict], summary: dict, out, baseline, key) -> str:
    """`write_report` of a run already read (``read_run(path)``)."""
    out = out or path
    os.makedirs(out, exist_ok=True)
    methods = _methods(records, summary)
    if baseline is not None and baseline not in methods:
        raise InvalidInputError(f"baseline {baseline!r} is not a method of this run ({', '.join(methods)})")
    if records and not any(key in r for r in records):
        raise InvalidInputError(f"no column {key!r} in {path}/metrics.csv")
    rows = summary_rows(records, summary, baseline, key)
    name = summary.get('experiment') or (records[0].get('experiment') if records else '') or os.path.basename(
        os.path.abspath(path))
    rf.plot_loss(records, methods, os.path.join(out, 'report_loss.png'), key, name)
    figures = ['report_loss.png']
    if rf.plot_final(rows, os.path.join(out, 'report_final.png'), key, name):
        figures.append('report_final.png')
    cols = rf.metric_columns(records)
    shown = rf.plot_metrics(records, methods, cols, os.path.join(out, 'report_metrics.png'), name)
    if shown:
        figures.append('report_metrics.png')
    if 'sample_y1' in cols and 'sample_y2' in cols and \
            rf.plot_trajectory(records, methods, os.path.join(out, 'report_trajectory.png'), name):
        figures.append('report_trajectory.png')

    base = rows[0]['baseline'] if rows else ''
    lines = [f"# {name}: {', '.join(methods)}", '',
             f"Run directory `{os.path.abspath(path)}`."]
    budget = summary.get('budget') or {}
    facts = []
    if budget:
        facts.append('budget ' + ', '.join(f'{k} {v}' for k, v in budget.items() if v is not None) + ' per method')
    for k in ('seed', 'device', 'torch_threads'):
        if k in summary:
            facts.append(f"{k.replace('_', ' ')} {summary[k]}")
    if facts:
        lines.append('; '.join(facts) + '.')
    lines += ['', f"## Final values (ratios to `{base}`)", '',
              f"| method | status | batch | steps | train time [s] | time / step [ms] | time / step ratio | "
              f"final {key} | ratio | best {key} |",
              '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        ratio = f"not compared: {r['note']}" if r['flags'] else _fmt(r['ratio'], '.3g')
        per_step = r['seconds_per_step'] * 1e3 if finite(r['seconds_per_step']) else r['seconds_per_step']
        lines.append(f"| {r['method']} | {r['status'] or '–'} | {_fmt(r['batch_size'], 'd')} | {r['steps']} | "
                     f"{_fmt(r['train_seconds'], '.2f')} | {_fmt(per_step, '.3g')} | "
                     f"{'–' if r['flags'] else _fmt(r['time_ratio'], '.2f')} | {_fmt(r['final'])} | {ratio} | "
                     f"{_fmt(r['best'])} |")
    notes = [w for m in methods for w in (summary.get('final', {}).get(m, {}).get('warnings') or [])]
    if notes:
        lines += ['', '## Warnings', ''] + [f'- {w}' for w in notes]
    expected = [f'- **{m}**: {w}' for m in methods for w in (summary.get('final', {}).get(m, {}).get('expected') or [])]
    if expected:
        lines += ['', '## Results the experiment expects', ''] + expected
    hyper = summary.get('hyperparameters') or {}
    if hyper:
        lines += ['', '## Hyperparameters', '']
        for m, h in hyper.items():
            lines.append(f"- **{m}**: " + ', '.join(f'{k}={v}' for k, v in h.items()))
    if summary.get('settings'):
        lines += ['', '## Experiment settings', '', settings_line(summary['settings'], hyper)]
    lines += ['', '## Figures', '']
    captions = {'report_loss.png': f"{key.replace('_', ' ')} against step and training wall time (log scale)",
                'report_final.png': f"final {key.replace('_', ' ')} per method, ratio to {base}",
                'report_metrics.png': 'the experiment\'s metrics against step' + (
                    f" (first {len(shown)} of {len(cols)}: {', '.join(shown)})" if len(cols) > len(shown) else ''),
                'report_trajectory.png': 'the first held-out sample in y space during training'}
    for f in figures:
        lines.append(f"![{captions[f]}]({f})  ")
        lines.append(f"*{captions[f]}*")
        lines.append('')
    versions = summary.get('versions') or {}
    if versions:
        lines += ['## Versions', '', ', '.join(f'{k} {v}' for k, v in versions.items()), '']
    md = os.path.join(out, 'report.md')
    atomic_write(md, '\n'.join(lines).rstrip() + '\n')
    return md


def _run_dirs(path: str) -> list:
    if os.path.exists(os.path.join(path, 'metrics.csv')):
        return [path]
    if not os.path.isdir(path):
        return []
    return sorted(os.path.join(path, d) for d in os.listdir(path)
                  if os.path.exists(os.path.join(path, d, 'metrics.csv')))


def main(argv=None) -> int:
    """``python -m phi_hig report DIR [--out OUT] [--baseline METHOD] [--key COLUMN]``.

    DIR is a run directory (``metrics.csv`` + ``summary.json``) or a folder of them (each gets its report,
    and DIR an ``index.md``). Every run is read before any report is written: an unreadable or malformed file
    is exit code 2 with one line ``phi_hig: error: …`` naming it, and nothing written; a file that cannot be
    written (a full disk, no permission) is exit code 1 with one such line.
    """
    from ..cli import Parser, report_error
    p = Parser(prog='python -m phi_hig report',
               description='Paper-style figures (PNG) and a Markdown summary table of a run directory written '
                           'by `python -m phi_hig run ... --out DIR`.')
    p.add_argument('dir', help='run directory, or a folder of run directories')
    p.add_argument('--out', help='where to write (default: the run directory itself)')
    p.add_argument('--baseline', help='method the ratios refer to (default adam if present, else the first)')
    p.add_argument('--key', default='test_loss', help='loss column to report (default test_loss)')
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    runs = _run_dirs(args.dir)
    if not runs:
        return report_error(f"{args.dir!r} is not a run directory (no metrics.csv in it or in its subfolders)")
    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        return report_error(f"--out {args.out!r} is an existing file, not a folder")
    written = []
    try:
        tables = {run: read_run(run) for run in runs}  # refuse before writing anything
        for run, (records, summary) in tables.items():
            out = args.out if len(runs) == 1 else (os.path.join(args.out, os.path.basename(run)) if args.out else None)
            md = _write_report(run, records, summary, out, args.baseline, args.key)
            written.append(md)
            print(f"{md}")
            for r in summary_rows(records, summary, args.baseline, args.key):
                ratio = f"not compared: {r['note']}" if r['flags'] else f"ratio {_fmt(r['ratio'], '.3g')}"
                print(f"  {r['method']:<10} batch {_fmt(r['batch_size'], 'd'):>6}  steps {r['steps']:>7}  "
                      f"{_fmt(r['seconds_per_step'], '.2e')} s/step  final {_fmt(r['final'])}  {ratio}")
        if len(runs) > 1:
            index = os.path.join(args.out or args.dir, INDEX_FILE)
            atomic_write(index, '# Reports\n\n' + ''.join(f"- [{os.path.basename(os.path.dirname(m))}]"
                                                          f"({os.path.relpath(m, os.path.dirname(index))})\n"
                                                          for m in written))
            print(index)
    except (InvalidInputError, FileNotFoundError) as err:
        return report_error(err)
    except OSError as err:  # a full disk, no permission: one line naming the file
        return report_error(f"cannot write {err.filename}: {err.strerror or err}", code=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
