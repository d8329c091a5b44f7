"""The paper-vs-here table: one data file, its result files, and what is rendered from them.

`docs/reproduction.json` holds one row per experiment (the paper's claim, the command, a template of what was
measured here); `benchmarks/results/reproduction/<id>.csv` holds the evaluation records of the run behind a row's
numbers, so the README's table, the docs' table and the docs' figures all come from the same run.

    python scripts/reproduction.py run toy heat      # run the rows' commands, keep their evaluations (small CSV)
    python scripts/reproduction.py keep fluid DIR    # keep those of a row's command run apart with --out DIR
    python scripts/reproduction.py readme            # write the table into README.md
    python scripts/reproduction.py readme --check    # exit 1 if README.md's table is not the rendered one
    python scripts/reproduction.py figures DIR       # one PNG per row with a result file

The documentation build calls `markdown_table` and `draw_figure` (docs/hooks.py); tests/test_docs.py checks
that README.md's copy of the table is in sync.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'docs', 'reproduction.json')
RESULTS = os.path.join(ROOT, 'benchmarks', 'results', 'reproduction')
README = os.path.join(ROOT, 'README.md')
START, END = '<!-- reproduction table: start (python scripts/reproduction.py readme) -->', \
    '<!-- reproduction table: end -->'
MAX_POINTS = 120
"""Evaluations kept per method in a result file (evenly spaced, the last one always)."""


def rows(path: str = DATA) -> list:
    """The rows of the data file, in order."""
    with open(path, encoding='utf-8') as f:
        return json.load(f)['rows']


def result_path(row: dict, results: str = RESULTS) -> str | None:
    """The result file of ``row`` (None for a row that quotes a measurement without a committed run)."""
    return None if row.get('result') is False else os.path.join(results, f"{row['id']}.csv")


def read_result(path: str) -> dict:
    """``{method: [record, ...]}`` of a result file, records in step order, numbers as floats (NaN if empty)."""
    out = {}
    with open(path, newline='', encoding='utf-8') as f:
        for record in csv.DictReader(f):
            method = record.pop('method')
            out.setdefault(method, []).append({k: float(v) if v not in ('', None) else math.nan
                                               for k, v in record.items()})
    for records in out.values():
        records.sort(key=lambda r: r['step'])
    return out


def _value(spec: dict, result: dict) -> float:
    """One number of a row's template: a method's column at a step (default: its last evaluation), the ratio
    of two such numbers, or the reduction ``1 − a/b``."""
    if 'ratio' in spec:
        a, b = (_value(s, result) for s in spec['ratio'])
        return a / b
    if 'reduction' in spec:
        a, b = (_value(s, result) for s in spec['reduction'])
        return 1 - a / b
    records = [r for r in result[spec['method']] if not math.isnan(r.get(spec['column'], math.nan))]
    if not records:
        raise ValueError(f"no value of {spec['column']!r} for method {spec['method']!r}")
    if 'step' not in spec:
        return records[-1][spec['column']]
    at = [r for r in records if r['step'] == spec['step']]
    if not at:
        raise ValueError(f"method {spec['method']!r} has no evaluation at step {spec['step']}")
    return at[0][spec['column']]


def here(row: dict, results: str = RESULTS) -> str:
    """The row's 'here' text with its values read from its result file (the text itself when it has none)."""
    path = result_path(row, results)
    if path is None:
        return row['here']
    if not os.path.exists(path):
        raise FileNotFoundError(f"row {row['id']!r}: no result file {os.path.relpath(path, ROOT)}; "
                                f"run: python scripts/reproduction.py run {row['id']}")
    result = read_result(path)
    values = {name: format(_value(spec, result), spec.get('fmt', '.3g')) for name, spec in row['values'].items()}
    return row['here'].format(**values)


def markdown_table(table: list = None, results: str = RESULTS) -> str:
    """The paper-vs-here table as Markdown (experiment, paper, here, command)."""
    lines = ['| experiment | paper | here | command |', '|---|---|---|---|']
    table = table if table is not None else rows()
    for row in table:
        mark = ' †' if result_path(row, results) is None else ''
        lines.append(f"| {row['experiment']} | {row['paper']} | {here(row, results)}{mark} | `{row['command']}` |")
    if any(result_path(row, results) is None for row in table):
        lines += ['', '† quoted from an earlier measurement (or not measured); its run is not committed, so it has no '
                      'figure.']
    return '\n'.join(lines) + '\n'


def readme_block() -> str:
    """The README's table between its markers."""
    return f"{START}\n{markdown_table()}{END}"


def update_readme(check: bool = False, path: str = README) -> bool:
    """Write the table into README.md between the markers; with ``check``, only say whether it is in sync."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if START not in text or END not in text:
        raise ValueError(f"{path} has no reproduction-table markers ({START} … {END})")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + readme_block() + tail
    if check:
        return new == text
    if new != text:
        with open(path, 'w', encoding='utf-8') as f:
            f.write(new)
    return True


def draw_figure(row: dict, out: str, results: str = RESULTS) -> str:
    """The row's figure (its 'figure' spec: x and y columns, log-scale y) from its result file, as a PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    spec = row['figure']
    result = read_result(result_path(row, results))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for method, records in result.items():
        pts = [(r[spec['x']], r[spec['y']]) for r in records if not math.isnan(r.get(spec['y'], math.nan))]
        if pts:
            ax.plot(*zip(*pts), label=method, marker='.' if len(pts) < 30 else None)
    ax.set_yscale('log' if spec.get('logy', True) else 'linear')
    ax.set_xlabel(spec['xlabel'])
    ax.set_ylabel(spec['ylabel'])
    ax.set_title(f"{row['experiment']}: {row['command'].split(' run ')[-1]}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _columns(specs) -> list:
    """The result-file columns that the value specs ``specs`` read."""
    out = []
    for spec in specs:
        for key in ('ratio', 'reduction'):
            if key in spec:
                out += _columns(spec[key])
        if 'column' in spec:
            out.append(spec['column'])
    return out


def _thin(records: list, keep: int = MAX_POINTS) -> list:
    if len(records) <= keep:
        return records
    idx = sorted({round(i * (len(records) - 1) / (keep - 1)) for i in range(keep)})
    return [records[i] for i in idx]


def run_row(row: dict, results: str = RESULTS) -> str:
    """Run the row's command (``python -m phi_hig run ...``) into a temporary folder and keep its evaluations
    (`keep_run`)."""
    argv = shlex.split(row['command'])
    if argv[:4] != ['python', '-m', 'phi_hig', 'run']:
        raise ValueError(f"row {row['id']!r}: only 'python -m phi_hig run ...' commands are run here, "
                         f"got {row['command']!r}")
    with tempfile.TemporaryDirectory() as tmp:
        load_before, t0 = os.getloadavg(), time.time()
        subprocess.run([sys.executable, *argv[1:], '--out', tmp, '--quiet'], check=True, cwd=ROOT)
        return keep_run(row, tmp, results, seconds=time.time() - t0, load_before=load_before)


def keep_run(row: dict, folder: str, results: str = RESULTS, seconds: float = None, load_before=None) -> str:
    """Keep the evaluations of the finished run in ``folder`` (the row's command run with ``--out folder``, e.g. a
    run of hours made apart): ``<id>.csv`` (method, step, wall_time and the columns the row reads, at most
    `MAX_POINTS` per method) and ``<id>.json`` (the command, when, where, the machine's load, the methods' finals;
    ``seconds`` and ``load_before`` when known)."""
    from phi_hig.bench.machine import cpu_name
    with open(os.path.join(folder, 'metrics.csv'), newline='', encoding='utf-8') as f:
        records = [r for r in csv.DictReader(f) if r.get('test_loss')]
    with open(os.path.join(folder, 'summary.json'), encoding='utf-8') as f:
        summary = json.load(f)
    used = {'test_loss'} | {row['figure'][k] for k in ('x', 'y')} | set(_columns(row['values'].values()))
    columns = ['method', 'step', 'wall_time'] + [c for c in records[0] if c in used - {'step', 'wall_time'}]
    by_method = {}
    for r in records:
        by_method.setdefault(r['method'], []).append(r)
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, f"{row['id']}.csv")
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, columns, extrasaction='ignore', lineterminator='\n')
        writer.writeheader()
        for method_records in by_method.values():
            writer.writerows(_thin(method_records))
    meta = dict(command=row['command'], date=time.strftime('%Y-%m-%d %H:%M'),
                seconds=None if seconds is None else round(seconds),
                machine=f"{platform.machine()} {cpu_name()}, {os.cpu_count()} cores",
                load_average_before=None if load_before is None else [round(x, 2) for x in load_before],
                load_average_after=[round(x, 2) for x in os.getloadavg()],
                final={m: {k: v for k, v in f.items() if k in ('steps', 'batch_size', 'seconds_per_step',
                                                                'test_loss', 'status', 'flags')}
                       for m, f in summary['final'].items()})
    with open(os.path.join(results, f"{row['id']}.json"), 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write('\n')
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)
    run = sub.add_parser('run', help="run rows' commands and keep their evaluations")
    run.add_argument('ids', nargs='+')
    readme = sub.add_parser('readme', help='write (or --check) the table in README.md')
    readme.add_argument('--check', action='store_true')
    keep = sub.add_parser('keep', help="keep the evaluations of a row's command run apart with --out RUN_DIR")
    keep.add_argument('id')
    keep.add_argument('run_dir')
    keep.add_argument('--seconds', type=float, help="the run's wall time, when it was measured (e.g. by /usr/bin/time)")
    figures = sub.add_parser('figures', help='one PNG per row with a result file')
    figures.add_argument('out')
    args = p.parse_args(argv)
    table = {row['id']: row for row in rows()}
    if args.command == 'run':
        unknown = [i for i in args.ids if i not in table]
        if unknown:
            p.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(table)}")
        for i in args.ids:
            print(f"{i}: {table[i]['command']}", flush=True)
            print(f"  wrote {os.path.relpath(run_row(table[i]), ROOT)}: {here(table[i])}", flush=True)
        return 0
    if args.command == 'keep':
        if args.id not in table:
            p.error(f"unknown row {args.id}; rows: {', '.join(table)}")
        path = keep_run(table[args.id], args.run_dir, seconds=args.seconds)
        print(f"  wrote {os.path.relpath(path, ROOT)}: {here(table[args.id])}")
        return 0
    if args.command == 'readme':
        if args.check:
            ok = update_readme(check=True)
            print('README.md table in sync' if ok else 'README.md table differs: python scripts/reproduction.py readme')
            return 0 if ok else 1
        update_readme()
        return 0
    os.makedirs(args.out, exist_ok=True)
    for row in table.values():
        if result_path(row) and os.path.exists(result_path(row)):
            print(draw_figure(row, os.path.join(args.out, f"{row['id']}.png")))
    return 0


if __name__ == '__main__':
    sys.exit(main())
