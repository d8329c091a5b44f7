"""Run outputs: metrics CSV, summary JSON and loss-curve figures (matplotlib, headless), and reports.

`write_run` writes a run directory (``metrics.csv``, ``summary.json``, ``curves.png``; the first two
atomically, `phi_hig.files.atomic_write`); `write_report` (the command ``python -m phi_hig report DIR``) turns
one into paper-style figures and a Markdown summary table; `sweep_figure` draws a hyperparameter sweep.
`pyplot` is matplotlib's pyplot on a headless backend, for every figure phi_hig draws.

Methods the runner flagged (``summary['final'][m]['flags']``: the training loss grew 10×, fewer than 10 steps
in the time budget, diverged) get no ratios: their row says why instead.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
import sys
from typing import Dict, List

from . import checks
from .errors import InvalidInputError
from .files import atomic_write, remove_stale_temporaries

__all__ = ['print_table', 'seed_table', 'finite', 'value_label', 'write_run', 'write_metrics_csv', 'pyplot', 'plot_curves', 'sweep_figure', 'read_run',
           'summary_rows', 'write_report', 'main', 'REPORT_FILES']

BASE_COLUMNS = ['experiment', 'method', 'step', 'wall_time', 'train_loss', 'test_loss']
NUMBER_COLUMNS = ('wall_time', 'train_loss', 'test_loss')
"""Columns of ``metrics.csv`` that hold a number or nothing (NaN) in every row; ``step`` holds an integer >= 0."""


def write_metrics_csv(records: List[dict], path: str) -> None:
    """One row per record; the base columns first, then every metric any record has."""
    extra = []
    for r in records:
        extra += [k for k in r if k not in BASE_COLUMNS and k not in extra]
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, fieldnames=BASE_COLUMNS + extra, restval='')
    writer.writeheader()
    for r in records:
        writer.writerow({k: ('' if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    atomic_write(path, text.getvalue())


def pyplot():
    """``matplotlib.pyplot``, switched to the headless Agg backend unless a file backend is active."""
    import matplotlib
    if matplotlib.get_backend().lower() not in ('agg', 'pdf', 'svg'):
        matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_curves(records: List[dict], path: str, key: str = 'test_loss', title: str = '') -> None:
    """Loss against training wall time and against step, log scale, one line per method."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    methods = list(dict.fromkeys(r['method'] for r in records))
    for m in methods:
        pts = [(r['wall_time'], r['step'], r[key]) for r in records
               if r['method'] == m and isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
        if not pts:
            continue
        t, s, v = zip(*pts)
        axes[0].plot(t, v, label=m)
        axes[1].plot(s, v, label=m)
    for ax, xlabel in zip(axes, ['training wall time [s]', 'step']):
        ax.set_yscale('log')
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key.replace('_', ' '))
        ax.grid(True, which='both', alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def value_label(v) -> str:
    """A swept value as text: floats in ``%g`` form (``1e-06``, ``0.5``), anything else as ``str``."""
    return f'{v:g}' if isinstance(v, float) else str(v)


def sweep_figure(rows: List[dict], grid: dict, path: str, title: str = '', key: str = 'test_loss') -> None:
    """The final ``key`` of a hyperparameter sweep: a line over the one swept key with several values, or a
    heat map over the first two such keys (log10 colour) with one panel per value of a third (first 12).

    Args:
        rows: one dict per grid point with the swept keys and ``key`` (a flagged point: NaN, drawn empty).
        grid: swept key -> its values, in sweep order.
        path: PNG file.
        title: figure title.
    """
    import itertools
    import numpy as np
    plt = pyplot()
    varied = [k for k, values in grid.items() if len(values) > 1] or list(grid)[:1]
    value = {tuple(r[k] for k in varied): r.get(key, float('nan')) for r in rows}
    if len(varied) == 1:
        xs = grid[varied[0]]
        ys = [value.get((x,), float('nan')) for x in xs]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in xs)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(xs if numeric else range(len(xs)), ys, 'o-')
        if numeric and max(xs) > 10 * min(xs):
            ax.set_xscale('log')
        if not numeric:
            ax.set_xticks(range(len(xs)), [value_label(x) for x in xs])
        if all(finite(y) and y > 0 for y in ys):
            ax.set_yscale('log')
        ax.set(xlabel=varied[0], ylabel=f"final {key.replace('_', ' ')}", title=title)
    else:
        kx, ky, rest = varied[0], varied[1], varied[2:]
        panels = list(itertools.product(*(grid[k] for k in rest)))[:12]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        for ax, fixed in zip(axes[0], panels):
            image = np.full((len(grid[ky]), len(grid[kx])), np.nan)
            for i, y in enumerate(grid[ky]):
                for j, x in enumerate(grid[kx]):
                    v = value.get((x, y) + tuple(fixed), float('nan'))
                    image[i, j] = math.log10(v) if finite(v) and v > 0 else np.nan
            im = ax.imshow(image, origin='lower', aspect='auto', cmap='viridis')
            ax.set_xticks(range(len(grid[kx])), [value_label(x) for x in grid[kx]])
            ax.set_yticks(range(len(grid[ky])), [value_label(y) for y in grid[ky]])
            where = ', '.join(f'{k} = {value_label(v)}' for k, v in zip(rest, fixed))
            ax.set(xlabel=kx, ylabel=ky, title=f'{title}' + (f', {where}' if where else ''))
            fig.colorbar(im, ax=ax, label=f"log10 final {key.replace('_', ' ')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_run(result, out: str) -> None:
    """Write ``out/metrics.csv``, ``out/summary.json`` and ``out/curves.png`` for a `RunResult`."""
    os.makedirs(out, exist_ok=True)
    for name in ('metrics.csv', 'summary.json'):
        remove_stale_temporaries(os.path.join(out, name))  # of a write a kill interrupted
    write_metrics_csv(result.records, os.path.join(out, 'metrics.csv'))
    atomic_write(os.path.join(out, 'summary.json'), json.dumps(result.summary, indent=2, default=float))
    plot_curves(result.records, os.path.join(out, 'curves.png'), title=result.summary.get('experiment', ''))


# --- reports of run directories ---------------------------------------------------------------------------------
REPORT_FILES = ('report.md', 'report_loss.png', 'report_final.png', 'report_metrics.png', 'report_trajectory.png')
"""Files `write_report` may write (the last three only when there is something to show)."""


def _number(text: str):
    if text is None or text == '':
        return float('nan')
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and re.fullmatch(r'[+-]?\d+', text.strip()) else v


def read_run(path: str) -> tuple:
    """Read a run directory written by `write_run`.

    A folder with ``metrics.csv`` but no ``summary.json`` (e.g. written by hand or by another tool) is accepted:
    the report then derives what it can (methods, steps, times, losses) from the rows.

    Returns:
        ``(records, summary)``: the metrics rows as dicts (numbers parsed, empty cells NaN) and the summary
        dict (``{}`` when ``summary.json`` is missing).

    Raises:
        FileNotFoundError: when ``path`` is not a directory or has no ``metrics.csv``.
        InvalidInputError: naming the file, when ``metrics.csv`` or ``summary.json`` is unreadable or malformed:
            columns ``method`` or ``step`` missing, a row with more or fewer cells than the header, or, naming
            the row and the column, a ``step`` that is not an integer >= 0 or a ``wall_time`` / ``train_loss`` /
            ``test_loss`` that is neither a number nor empty.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"run directory {path!r} does not exist")
    csv_path = os.path.join(path, 'metrics.csv')
    if not os.path.exists(csv_path):
        raise FileNotFoundError(f"{path!r} has no metrics.csv (write one with `python -m phi_hig run ... --out DIR`)")
    try:
        with open(csv_path, newline='') as f:
            reader = csv.DictReader(f)
            missing = [c for c in ('method', 'step') if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidInputError(f"{csv_path}: missing columns {missing}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InvalidInputError(f"{csv_path} is unreadable ({type(err).__name__}: {err})") from None
    for i, row in enumerate(rows):
        if None in row or any(v is None for v in row.values()):
            raise InvalidInputError(f"{csv_path} is malformed: row {i + 2} has more or fewer cells than the header")
    records = [{k: (v if k in ('experiment', 'method', 'status', 'flags') else _number(v)) for k, v in row.items()}
               for row in rows]
    for i, record in enumerate(records):
        where = f"{csv_path} is malformed: row {i + 2}, column"
        checks.integer(f"{where} 'step'", record['step'], low=0)
        for column in NUMBER_COLUMNS:
            if column in record and not checks.is_number(record[column]):  # empty: NaN, a number
                raise InvalidInputError(f"{where} {column!r} must be a number or empty, got {record[column]!r}")
    summary = {}
    summary_path = os.path.join(path, 'summary.json')
    if os.path.exists(summary_path):
        try:
            with open(summary_path) as f:
                summary = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise InvalidInputError(f"{summary_path} is unreadable ({type(err).__name__}: {err})") from None
        if not isinstance(summary, dict) or not isinstance(summary.get('final', {}), dict):
            raise InvalidInputError(f"{summary_path} is malformed: not a phi_hig run summary")
    return records, summary


def finite(v) -> bool:
    """A real number (not a bool) that is finite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
        f = final.get(m, {})
        steps = f.get('steps', mine[-1]['step'] if mine else 0)
        seconds = f.get('train_seconds', mine[-1]['wall_time'] if mine else float('nan'))
        per_step = f.get('seconds_per_step', seconds / steps if steps else float('nan'))
        last = f.get(key, values[-1] if values else float('nan')) if key == 'test_loss' else \
            (values[-1] if values else float('nan'))
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


def _fmt(v, spec: str = '.3e') -> str:
    if isinstance(v, str):
        return v
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
    from . import report_figures as rf
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
    hyper = summary.get('hyperparameters') or {}
    if hyper:
        lines += ['', '## Hyperparameters', '']
        for m, h in hyper.items():
            lines.append(f"- **{m}**: " + ', '.join(f'{k}={v}' for k, v in h.items()))
    if summary.get('settings'):
        lines += ['', '## Experiment settings', '', ', '.join(f'{k}={v}' for k, v in summary['settings'].items())]
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


def print_table(lines: List[str], path: str) -> None:
    """Print the lines of a plain-text results table and write them to ``path``."""
    text = '\n'.join(lines)
    print(text)
    with open(path, 'w') as f:
        f.write(text + '\n')


def seed_table(title: str, finals: Dict[str, List[dict]], path: str) -> None:
    """Print and write (`print_table`) the spread over seeds of each run: median, min and max held-out loss, the
    median step count and the first seed's status.

    Args:
        title: the table's first line.
        finals: per run label, one ``summary['final'][method]`` dict per seed (``test_loss``, ``steps``,
            ``status``).
        path: the text file written.
    """
    lines = [title, f"{'run':>16} {'median test':>12} {'min':>10} {'max':>10} {'steps':>7}  status"]
    for label, rows in finals.items():
        losses = [r['test_loss'] for r in rows]
        lines.append(f"{label:>16} {statistics.median(losses):12.3e} {min(losses):10.3e} {max(losses):10.3e} "
                     f"{int(statistics.median(r['steps'] for r in rows)):7d}  {rows[0].get('status', '')}")
    print_table(lines, path)


def main(argv=None) -> int:
    """``python -m phi_hig report DIR [--out OUT] [--baseline METHOD] [--key COLUMN]``.

    DIR is a run directory (``metrics.csv`` + ``summary.json``) or a folder of them (each gets its report,
    and DIR an ``index.md``). Every run is read before any report is written: an unreadable or malformed file
    is exit code 2 with one line ``phi_hig: error: …`` naming it, and nothing written.
    """
    from .cli import Parser, report_error
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
    except (InvalidInputError, FileNotFoundError) as err:
        return report_error(err)
    if len(runs) > 1:
        index = os.path.join(args.out or args.dir, 'index.md')
        atomic_write(index, '# Reports\n\n' + ''.join(f"- [{os.path.basename(os.path.dirname(m))}]"
                                                      f"({os.path.relpath(m, os.path.dirname(index))})\n"
                                                      for m in written))
        print(index)
    return 0


if __name__ == '__main__':
    sys.exit(main())
