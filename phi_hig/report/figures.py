"""Every figure phi_hig draws from run records, with matplotlib on a headless backend (`pyplot`): loss curves of a
run (`plot_curves`), a hyperparameter sweep (`sweep_figure`) and the paper-style figures of a report
(`plot_loss`, `plot_final`, `plot_metrics`, `plot_trajectory`; `phi_hig.report.write_report`)."""
from __future__ import annotations

import math
import re
from typing import List

from ..checks import is_finite as finite
from .runs import BASE_COLUMNS

__all__ = ['pyplot', 'plot_curves', 'value_label', 'sweep_figure', 'plot_loss', 'plot_final', 'metric_columns',
           'plot_metrics', 'plot_trajectory', 'method_colors', 'method_styles']


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


def sweep_figure(rows: List[dict], grid: dict, path: str, title: str = '', key: str = 'test_loss') -> list:
    """The final ``key`` of a hyperparameter sweep: a line over the one swept key with several values, or a
    heat map over the first two such keys (log10 colour) with one panel per value of a third (first 12). A point
    without a final value (it diverged or failed: ``key`` NaN) is drawn flagged: a red × with its status's first
    word, at the top of the line plot or in its cell of the heat map.

    Args:
        rows: one dict per grid point with the swept keys, ``key`` and ``status``.
        grid: swept key -> its values, in sweep order.
        path: PNG file.
        title: figure title.

    Returns:
        The points drawn flagged, as ``(values of the varied keys, status word)``, in row order.
    """
    import itertools
    import numpy as np
    plt = pyplot()
    varied = [k for k, values in grid.items() if len(values) > 1] or list(grid)[:1]
    value = {tuple(r[k] for k in varied): r.get(key, float('nan')) for r in rows}
    flagged = [(tuple(r[k] for k in varied), (str(r.get('status') or 'no value').split() or ['no value'])[0])
               for r in rows if not finite(r.get(key))]
    words = dict(flagged)
    if len(varied) == 1:
        xs = grid[varied[0]]
        ys = [value.get((x,), float('nan')) for x in xs]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in xs)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(xs if numeric else range(len(xs)), ys, 'o-')
        for i, x in enumerate(xs):
            if (x,) in words:  # no final value: marked at the top, in axes coordinates
                at = x if numeric else i
                ax.plot([at], [0.95], 'x', color='red', ms=10, mew=2, transform=ax.get_xaxis_transform())
                ax.annotate(words[(x,)], (at, 0.95), xycoords=ax.get_xaxis_transform(), xytext=(0, -14),
                            textcoords='offset points', ha='center', fontsize=8, color='red')
        if numeric and max(xs) > 10 * min(xs):
            ax.set_xscale('log')
        if not numeric:
            ax.set_xticks(range(len(xs)), [value_label(x) for x in xs])
        if any(finite(y) for y in ys) and all(y > 0 for y in ys if finite(y)):
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
            for i, y in enumerate(grid[ky]):
                for j, x in enumerate(grid[kx]):
                    if (x, y) + tuple(fixed) in words:
                        ax.text(j, i, f"×\n{words[(x, y) + tuple(fixed)]}", ha='center', va='center', color='red',
                                fontsize=8)
            ax.set_xticks(range(len(grid[kx])), [value_label(x) for x in grid[kx]])
            ax.set_yticks(range(len(grid[ky])), [value_label(y) for y in grid[ky]])
            where = ', '.join(f'{k} = {value_label(v)}' for k, v in zip(rest, fixed))
            ax.set(xlabel=kx, ylabel=ky, title=f'{title}' + (f', {where}' if where else ''))
            fig.colorbar(im, ax=ax, label=f"log10 final {key.replace('_', ' ')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return flagged


def _smooth(values, window: int):
    import numpy as np
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size < 2 * window:
        return v
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, v[0]), v])
    return np.convolve(padded, kernel, mode='valid')


def method_colors(methods):
    """One colour per method, in order, from a fixed palette of eight (repeating beyond eight): a method keeps its
    colour in every figure of a report.

    >>> method_colors(['adam', 'hig'])
    {'adam': '#1f77b4', 'hig': '#d62728'}
    """
    palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def method_styles(methods, points: int = 0):
    """Per method, the keyword arguments of its line besides the colour (`method_colors`): a dash pattern and a marker
    of its own, and an earlier method drawn wider and below a later one, so that identical curves (e.g. two methods
    whose diagnostic is the same) stay visible as two lines. ``points``: the points of a line (markers at about 8 of
    them).

    >>> s = method_styles(['adam', 'sip'], points=80)
    >>> s['adam']['linestyle'], s['sip']['linestyle'], s['adam']['lw'] > s['sip']['lw'], s['sip']['markevery']
    ('-', '--', True, 10)
    """
    dashes, markers = ['-', '--', '-.', ':'], ['o', 's', '^', 'D', 'v', 'P', 'X', '*']
    n = len(methods)
    return {m: dict(linestyle=dashes[i % len(dashes)], marker=markers[i % len(markers)], ms=4,
                    markevery=max(1, points // 8), lw=1.2 + 1.2 * (n - 1 - i) / max(1, n - 1), zorder=2 + i)
            for i, m in enumerate(methods)}


def plot_loss(records, methods, path, key, title):
    """The report's loss figure: ``key`` against step (left) and training wall time (right), log scale, one colour
    per method; for ``key='test_loss'`` the training loss too, smoothed, as thin lines. Non-finite and
    non-positive values are left out.

    Args:
        records: the run's metric rows (``method``, ``step``, ``wall_time``, ``train_loss``, ``key``, …).
        methods: the methods to draw, in legend order.
        path: PNG file.
        key: the record column to draw.
        title: figure title.
    """
    plt = pyplot()
    colors = method_colors(methods)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    drawn = False
    for m in methods:
        mine = [r for r in records if r['method'] == m]
        train = [(r['step'], r['wall_time'], r['train_loss']) for r in mine
                 if finite(r.get('train_loss')) and r['train_loss'] > 0]
        test = [(r['step'], r['wall_time'], r[key]) for r in mine if finite(r.get(key)) and r[key] > 0]
        if train and key == 'test_loss':
            s, t, v = zip(*train)
            sm = _smooth(v, max(1, len(v) // 50))
            axes[0].plot(s, sm, color=colors[m], alpha=0.3, lw=1)
            axes[1].plot(t, sm, color=colors[m], alpha=0.3, lw=1)
        if test:
            s, t, v = zip(*test)
            style = method_styles(methods, len(v))[m]
            axes[0].plot(s, v, color=colors[m], label=m, **style)
            axes[1].plot(t, v, color=colors[m], label=m, **style)
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


def plot_final(rows, path, key, title):
    """The final ``key`` of each method as log-scale bars, labelled with the ratio to the baseline (or the note of a
    flagged method).

    Args:
        rows: `phi_hig.report.summary.summary_rows` (``method``, ``final``, ``ratio``, ``note``, ``baseline``).
        path: PNG file.
        key: the column the rows' ``final`` values are of (for the axis label).
        title: figure title.

    Returns:
        Whether a figure was written (not when no method has a finite positive final value).
    """
    plt = pyplot()
    rows = [r for r in rows if finite(r['final']) and r['final'] > 0]
    if not rows:
        return False
    colors = method_colors([r['method'] for r in rows])
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.4))
    bars = ax.bar([r['method'] for r in rows], [r['final'] for r in rows],
                  color=[colors[r['method']] for r in rows])
    ax.set_yscale('log')
    ax.set_ylabel(f'final {key.replace("_", " ")}')
    for b, r in zip(bars, rows):
        label = f"×{r['ratio']:.2g}" if finite(r['ratio']) else (r['note'] or '')
        ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), ha='center', va='bottom', fontsize=8)
    for side in ('top', 'right'):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{title}: ratio to {rows[0]['baseline']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return True


def metric_columns(records) -> list:
    """The diagnostic columns of the records worth a panel: every column besides the base ones and ``status``
    with a finite value in some record, in first-seen order, per-unit diagnostics (names with ``<digits>_``)
    last.

    >>> metric_columns([dict(method='hig', step=1, sigma_max=2.0, h3_mean=0.1, rank=4, note='x')])
    ['sigma_max', 'rank', 'h3_mean']
    """
    skip = set(BASE_COLUMNS) | {'status'}
    cols = []
    for r in records:
        cols += [k for k, v in r.items() if k not in skip and k not in cols and finite(v)]
    # per-unit diagnostics (h3_mean, …) are many and say little one by one: list them last
    return sorted(cols, key=lambda c: (bool(re.search(r'\d+_', c)), cols.index(c)))


def plot_metrics(records, methods, cols, path, title, max_panels=9):
    """One panel per diagnostic column (against step, one colour, dash pattern and marker per method,
    `method_styles`), at most ``max_panels``.

    Args:
        records: the run's metric rows.
        methods: the methods to draw.
        cols: the columns (`metric_columns`), in panel order.
        path: PNG file.
        title: figure title.
        max_panels: draw the first this many columns.

    Returns:
        The columns drawn ([] and no file when there are none).
    """
    plt = pyplot()
    cols = cols[:max_panels]
    if not cols:
        return []
    colors = method_colors(methods)
    n = len(cols)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.7 * nrows), squeeze=False)
    for ax, c in zip(axes.ravel(), cols):
        for m in methods:
            pts = [(r['step'], r[c]) for r in records if r['method'] == m and finite(r.get(c))]
            if pts:
                s, v = zip(*pts)
                ax.plot(s, v, color=colors[m], label=m, **method_styles(methods, len(v))[m])
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


def plot_trajectory(records, methods, path, title):
    """The y-space path of the first held-out sample (Schnell, Holl & Thuerey 2022, Fig. 1 right), when the run
    recorded it (columns ``sample_y1``, ``sample_y2``); returns whether a figure was written."""
    plt = pyplot()
    colors = method_colors(methods)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    drawn = False
    for m in methods:
        pts = [(r['sample_y1'], r['sample_y2']) for r in records
               if r['method'] == m and finite(r.get('sample_y1')) and finite(r.get('sample_y2'))]
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
