"""Run outputs: metrics CSV, summary JSON and loss-curve figures (matplotlib, headless)."""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Iterable, List

__all__ = ['write_run', 'write_metrics_csv', 'plot_curves']

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


def _pyplot():
    import matplotlib
    if matplotlib.get_backend().lower() not in ('agg', 'pdf', 'svg'):
        matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_curves(records: List[dict], path: str, key: str = 'test_loss', title: str = '') -> None:
    """Loss against training wall time and against step, log scale, one line per method."""
    plt = _pyplot()
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
