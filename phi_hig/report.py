"""Run outputs: metrics CSV, summary JSON and loss-curve figures (matplotlib, headless), and reports.

`write_run` writes a run directory (``metrics.csv``, ``summary.json``, ``curves.png``); `write_report` (the
command ``python -m phi_hig report DIR``) turns one into paper-style figures and a Markdown summary table.
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Iterable, List

__all__ = ['print_table', 'write_run', 'write_metrics_csv', 'plot_curves', 'read_run', 'summary_rows', 'write_report', 'main',
           'pyplot']

BASE_COLUMNS = ['experiment', 'method', 'step', 'wall_time', 'train_loss', 'test_loss']


def write_metrics_csv(records: List[dict], path: str) -> None:
    """One row per record; the base columns first, then every metric any record has."""
    extra = []
    for r in records:
        extra += [k for k in r if k not in BASE_COLUMNS and k not in extra]
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=BASE_COLUMNS + extra, restval='')
        writer.writeheader()
        for r in records:
            writer.writerow({k: ('' if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})


def pyplot():
    """`matplotlib.pyplot`, switched to the headless Agg backend unless a file backend is active (no window opens)."""
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


def write_run(result, out: str) -> None:
    """Write ``out/metrics.csv``, ``out/summary.json`` and ``out/curves.png`` for a `RunResult`."""
    os.makedirs(out, exist_ok=True)
    write_metrics_csv(result.records, os.path.join(out, 'metrics.csv'))
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump(result.summary, f, indent=2, default=float)
    plot_curves(result.records, os.path.join(out, 'curves.png'), title=result.summary.get('experiment', ''))


# --- reports of run directories ---------------------------------------------------------------------------------
import re
import sys

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

    Returns:
        ``(records, summary)``: the metrics rows as dicts (numbers parsed, empty cells NaN) and the summary
        dict (``{}`` when ``summary.json`` is missing: the report then derives what it can from the rows).

    Raises:
        FileNotFoundError: when ``path`` is not a directory or has no ``metrics.csv``.
    """
    from .errors import InvalidInputError
    if not os.path.isdir(path):
        raise FileNotFoundError(f"run directory {path!r} does not exist")
    csv_path = os.path.join(path, 'metrics.csv')
    if not os.path.exists(csv_path):
        raise FileNotFoundError(f"{path!r} has no metrics.csv (write one with `python -m phi_hig run ... --out DIR`)")
    with open(csv_path, newline='') as f:
        reader = csv.DictReader(f)
        missing = [c for c in ('method', 'step') if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(f"{csv_path}: missing columns {missing}")
        records = [{k: (v if k in ('experiment', 'method', 'status') else _number(v)) for k, v in row.items()}
                   for row in reader]
    summary = {}
    summary_path = os.path.join(path, 'summary.json')
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    return records, summary


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _methods(records, summary) -> list:
    return list(summary.get('methods') or dict.fromkeys(r['method'] for r in records))


def summary_rows(records: List[dict], summary: dict, baseline: str = None, key: str = 'test_loss') -> List[dict]:
    """One row per method: status, steps, training seconds, seconds per step, final and best ``key``, and the
    ratios of the final value and of the time per step to the baseline method (``adam`` if present, else the
    first)."""
    methods = _methods(records, summary)
    if not methods:
        return []
    if baseline is None:
        baseline = 'adam' if 'adam' in methods else methods[0]
    final = summary.get('final', {})
    rows = []
    for m in methods:
        mine = [r for r in records if r['method'] == m]
        values = [r[key] for r in mine if _finite(r.get(key))]
        f = final.get(m, {})
        steps = f.get('steps', mine[-1]['step'] if mine else 0)
        seconds = f.get('train_seconds', mine[-1]['wall_time'] if mine else float('nan'))
        per_step = f.get('seconds_per_step', seconds / steps if steps else float('nan'))
        last = f.get(key, values[-1] if values else float('nan')) if key == 'test_loss' else \
            (values[-1] if values else float('nan'))
        rows.append(dict(method=m, status=f.get('status', ''), steps=steps, train_seconds=seconds,
                         seconds_per_step=per_step, final=last, best=min(values) if values else float('nan')))
    base = next((r for r in rows if r['method'] == baseline), None)
    for r in rows:
        ok = base is not None and _finite(base['final']) and base['final'] != 0 and _finite(r['final'])
        r['ratio'] = r['final'] / base['final'] if ok else float('nan')
        ok = base is not None and _finite(base['seconds_per_step']) and base['seconds_per_step'] > 0 and \
            _finite(r['seconds_per_step'])
        r['time_ratio'] = r['seconds_per_step'] / base['seconds_per_step'] if ok else float('nan')
        r['baseline'] = baseline
    return rows


def _fmt(v, spec: str = '.3e') -> str:
    if isinstance(v, str):
        return v
    return format(v, spec) if _finite(v) else '–'


def _smooth(values, window: int):
    import numpy as np
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size < 2 * window:
        return v
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, v[0]), v])
    return np.convolve(padded, kernel, mode='valid')


def _method_colors(methods):
    palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _plot_loss(records, methods, path, key, title):
    plt = pyplot()
    colors = _method_colors(methods)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    drawn = False
    for m in methods:
        mine = [r for r in records if r['method'] == m]
        train = [(r['step'], r['wall_time'], r['train_loss']) for r in mine
                 if _finite(r.get('train_loss')) and r['train_loss'] > 0]
        test = [(r['step'], r['wall_time'], r[key]) for r in mine if _finite(r.get(key)) and r[key] > 0]
        if train and key == 'test_loss':
            s, t, v = zip(*train)
            sm = _smooth(v, max(1, len(v) // 50))
            axes[0].plot(s, sm, color=colors[m], alpha=0.3, lw=1)
            axes[1].plot(t, sm, color=colors[m], alpha=0.3, lw=1)
        if test:
            s, t, v = zip(*test)
            axes[0].plot(s, v, color=colors[m], lw=2, label=m)
            axes[1].plot(t, v, color=colors[m], lw=2, label=m)
            drawn = True
    for ax, xlabel in zip(axes, ['step', 'training wall time [s]']):
        ax.set_yscale('log')
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key.replace('_', ' '))
        ax.grid(True, which='both', alpha=0.25)
        for side in ('top', 'right'):
            ax.spines[side].set_visible(False)
    if drawn:
        axes[0].legend(frameon=False)
    fig.suptitle(title + ('  (thin: smoothed training loss)' if key == 'test_loss' else ''), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _plot_final(rows, path, key, title):
    plt = pyplot()
    rows = [r for r in rows if _finite(r['final']) and r['final'] > 0]
    if not rows:
        return False
    colors = _method_colors([r['method'] for r in rows])
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.4))
    bars = ax.bar([r['method'] for r in rows], [r['final'] for r in rows],
                  color=[colors[r['method']] for r in rows])
    ax.set_yscale('log')
    ax.set_ylabel(f'final {key.replace("_", " ")}')
    for b, r in zip(bars, rows):
        label = f"×{r['ratio']:.2g}" if _finite(r['ratio']) else ''
        ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha='center', va='bottom', fontsize=8)
    for side in ('top', 'right'):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{title}: ratio to {rows[0]['baseline']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def _metric_columns(records) -> list:
    skip = set(BASE_COLUMNS) | {'status'}
    cols = []
    for r in records:
        cols += [k for k, v in r.items() if k not in skip and k not in cols and _finite(v)]
    # per-unit diagnostics (h3_mean, …) are many and say little one by one: list them last
    return sorted(cols, key=lambda c: (bool(re.search(r'\d+_', c)), cols.index(c)))


def _plot_metrics(records, methods, cols, path, title, max_panels=9):
    plt = pyplot()
    cols = cols[:max_panels]
    if not cols:
        return []
    colors = _method_colors(methods)
    n = len(cols)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.7 * nrows), squeeze=False)
    for ax, c in zip(axes.ravel(), cols):
        for m in methods:
            pts = [(r['step'], r[c]) for r in records if r['method'] == m and _finite(r.get(c))]
            if pts:
                s, v = zip(*pts)
                ax.plot(s, v, color=colors[m], lw=1.5, label=m)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel('step', fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.25)
    for ax in axes.ravel()[n:]:
        ax.axis('off')
    axes.ravel()[0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return cols


def _plot_trajectory(records, methods, path, title):
    """The y-space path of the first held-out sample (HIG paper, Figure 1 right), when the run recorded it."""
    plt = pyplot()
    colors = _method_colors(methods)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    drawn = False
    for m in methods:
        pts = [(r['sample_y1'], r['sample_y2']) for r in records
               if r['method'] == m and _finite(r.get('sample_y1')) and _finite(r.get('sample_y2'))]
        if len(pts) > 1:
            y1, y2 = zip(*pts)
            ax.plot(y1, y2, '.-', color=colors[m], lw=1, ms=3, label=m)
            ax.plot(y1[-1:], y2[-1:], 'o', color=colors[m])
            drawn = True
    ax.set_xlabel('$y_1$')
    ax.set_ylabel('$y_2$')
    ax.set_title(f'{title}: first held-out sample in y space', fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return drawn


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
    from .errors import InvalidInputError
    records, summary = read_run(path)
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
    _plot_loss(records, methods, os.path.join(out, 'report_loss.png'), key, name)
    figures = ['report_loss.png']
    if _plot_final(rows, os.path.join(out, 'report_final.png'), key, name):
        figures.append('report_final.png')
    cols = _metric_columns(records)
    shown = _plot_metrics(records, methods, cols, os.path.join(out, 'report_metrics.png'), name)
    if shown:
        figures.append('report_metrics.png')
    if 'sample_y1' in cols and 'sample_y2' in cols and \
            _plot_trajectory(records, methods, os.path.join(out, 'report_trajectory.png'), name):
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
              f"| method | status | steps | train time [s] | time / step [ms] | time / step ratio | final {key} | "
              f"ratio | best {key} |",
              '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['method']} | {r['status'] or '–'} | {r['steps']} | {_fmt(r['train_seconds'], '.2f')} | "
                     f"{_fmt(r['seconds_per_step'] * 1e3 if _finite(r['seconds_per_step']) else r['seconds_per_step'], '.3g')} | "
                     f"{_fmt(r['time_ratio'], '.2f')} | {_fmt(r['final'])} | {_fmt(r['ratio'], '.3g')} | {_fmt(r['best'])} |")
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
    with open(md, 'w') as f:
        f.write('\n'.join(lines).rstrip() + '\n')
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
    and DIR an ``index.md``).
    """
    import argparse
    from .errors import InvalidInputError
    p = argparse.ArgumentParser(prog='python -m phi_hig report',
                                description='Paper-style figures (PNG) and a Markdown summary table of a run '
                                            'directory written by `python -m phi_hig run ... --out DIR`.')
    p.add_argument('dir', help='run directory, or a folder of run directories')
    p.add_argument('--out', help='where to write (default: the run directory itself)')
    p.add_argument('--baseline', help='method the ratios refer to (default adam if present, else the first)')
    p.add_argument('--key', default='test_loss', help='loss column to report (default test_loss)')
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    runs = _run_dirs(args.dir)
    if not runs:
        print(f"error: {args.dir!r} is not a run directory (no metrics.csv in it or in its subfolders)",
              file=sys.stderr)
        return 2
    written = []
    try:
        for run in runs:
            out = args.out if len(runs) == 1 else (os.path.join(args.out, os.path.basename(run)) if args.out else None)
            md = write_report(run, out, args.baseline, args.key)
            written.append(md)
            records, summary = read_run(run)
            print(f"{md}")
            for r in summary_rows(records, summary, args.baseline, args.key):
                print(f"  {r['method']:<10} steps {r['steps']:>7}  {_fmt(r['seconds_per_step'], '.2e')} s/step  "
                      f"final {_fmt(r['final'])}  ratio {_fmt(r['ratio'], '.3g')}")
    except (InvalidInputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(runs) > 1:
        index = os.path.join(args.out or args.dir, 'index.md')
        with open(index, 'w') as f:
            f.write('# Reports\n\n' + ''.join(f"- [{os.path.basename(os.path.dirname(m))}]"
                                              f"({os.path.relpath(m, os.path.dirname(index))})\n" for m in written))
        print(index)
    return 0


if __name__ == '__main__':
    sys.exit(main())


def print_table(lines: List[str], path: str) -> None:
    """Print the lines of a plain-text results table and write them to ``path``."""
    text = '\n'.join(lines)
    print(text)
    with open(path, 'w') as f:
        f.write(text + '\n')
