"""Plotly figures of a `LiveRun` snapshot: loss curves, the example view, the HIG spectrum. Needs plotly."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List

import numpy as np

__all__ = ['loss_figure', 'example_figure', 'spectrum_figure', 'COLORS']

COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf']
_FONT = dict(size=11)


def _color(methods: List[str], m: str) -> str:
    return COLORS[methods.index(m) % len(COLORS)] if m in methods else '#555'


@lru_cache(maxsize=None)
def _colorscale(name: str):
    """PhiFlow's look: its ORANGE_WHITE_BLUE map (the old dash GUI's diverging map) for signed data, viridis
    (PhiFlow's matplotlib default) otherwise. Falls back to plotly's RdBu when PhiFlow's table cannot be loaded."""
    if name != 'signed':
        return 'Viridis'
    try:
        from ..report import pyplot
        pyplot()  # phi.vis._dash.colormaps imports pyplot: make sure it is headless first
        from phi.vis._dash.colormaps import ORANGE_WHITE_BLUE
        return [[float(p), f'rgb({int(r)},{int(g)},{int(b)})'] for p, r, g, b in ORANGE_WHITE_BLUE]
    except Exception:
        return 'RdBu_r'


def _empty(message: str, height: int = 320):
    import plotly.graph_objects as go
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref='paper', yref='paper',
                       font=dict(size=13, color='#777'))
    fig.update_layout(height=height, xaxis=dict(visible=False), yaxis=dict(visible=False),
                      margin=dict(l=20, r=20, t=30, b=20), plot_bgcolor='white')
    return fig


def _revision(snapshot) -> str:
    """Zoom and pan survive redraws of the same run only (a new run resets the axes)."""
    c = (snapshot or {}).get('config', {})
    return f"{c.get('experiment')}|{','.join(c.get('methods', []))}|{(snapshot or {}).get('started', '')}"


def _list(a) -> list:
    """Plain (nested) lists with None for non-finite values: plotly would otherwise ship NumPy arrays as
    binary blobs, which older plotly.js builds and page scripts cannot read as numbers."""
    a = np.asarray(a, dtype=float)
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def _positive(values) -> list:
    return [v if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None for v in values]


def loss_figure(snapshot: dict, max_points: int = 1500):
    """Train loss (thin) and held-out loss (markers) of every method, against step and training wall time,
    log scale."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go
    history = snapshot.get('history', {}) if snapshot else {}
    if not any(h['step'] or h['test_step'] for h in history.values()):
        return _empty('no data yet — start a run', 340)
    methods = list(history)
    fig = make_subplots(rows=1, cols=2, subplot_titles=('loss vs step', 'loss vs training wall time [s]'),
                        horizontal_spacing=0.08)
    for m, h in history.items():
        c = _color(methods, m)
        stride = max(1, len(h['step']) // max_points)
        for col, xs, txs in ((1, h['step'], h['test_step']), (2, h['wall_time'], h['test_wall_time'])):
            if h['step']:
                fig.add_trace(go.Scatter(x=xs[::stride], y=_positive(h['train_loss'][::stride]), mode='lines',
                                         line=dict(color=c, width=1), opacity=0.35, name=f'{m} train',
                                         legendgroup=m, showlegend=col == 1), row=1, col=col)
            if h['test_step']:
                fig.add_trace(go.Scatter(x=txs, y=_positive(h['test_loss']), mode='lines+markers',
                                         line=dict(color=c, width=2), marker=dict(size=5), name=f'{m} test',
                                         legendgroup=m, showlegend=col == 1), row=1, col=col)
    fig.update_yaxes(type='log', exponentformat='power', title_text='loss', row=1, col=1)
    fig.update_yaxes(type='log', exponentformat='power', row=1, col=2)
    fig.update_xaxes(title_text='step', row=1, col=1)
    fig.update_xaxes(title_text='seconds', row=1, col=2)
    fig.update_layout(height=340, margin=dict(l=60, r=20, t=40, b=40), font=_FONT, uirevision=_revision(snapshot),
                      legend=dict(orientation='h', y=-0.22), plot_bgcolor='white')
    fig.update_xaxes(gridcolor='#eee')
    fig.update_yaxes(gridcolor='#eee')
    return fig


def spectrum_figure(snapshot: dict):
    """Kept singular values of the last HIG / Gauss–Newton step per method (log scale) and the kept rank
    over the steps."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go
    spectra = snapshot.get('spectra', {}) if snapshot else {}
    if not spectra:
        return _empty('singular-value spectrum: appears while a HIG / GN method trains', 300)
    methods = list(snapshot.get('history', {})) or list(spectra)
    fig = make_subplots(rows=1, cols=2, subplot_titles=('kept σ of J, last step', 'kept rank'), column_widths=[0.55, 0.45],
                        horizontal_spacing=0.1)
    for m, s in spectra.items():
        c = _color(methods, m)
        fig.add_trace(go.Scatter(x=list(range(1, len(s) + 1)), y=_positive(list(map(float, s))),
                                 mode='lines+markers', marker=dict(size=4), line=dict(color=c), name=m), row=1, col=1)
        ranks = snapshot.get('ranks', {}).get(m, [])
        stride = max(1, len(ranks) // 1500)
        if ranks:
            fig.add_trace(go.Scatter(x=[r[0] for r in ranks[::stride]], y=[r[1] for r in ranks[::stride]],
                                     mode='lines', line=dict(color=c), name=f'{m} rank', showlegend=False),
                          row=1, col=2)
    fig.update_yaxes(type='log', exponentformat='power', title_text='σ', row=1, col=1)
    fig.update_xaxes(title_text='index', row=1, col=1)
    fig.update_xaxes(title_text='step', row=1, col=2)
    fig.update_layout(height=300, margin=dict(l=60, r=20, t=40, b=40), font=_FONT, uirevision=_revision(snapshot),
                      plot_bgcolor='white')
    return fig


def _quiver(u: np.ndarray, v: np.ndarray, max_arrows: int = 10):
    """Line segments (x, y with None separators) of a subsampled vector field given as (y, x) arrays."""
    h, w = u.shape
    step = max(1, int(math.ceil(max(h, w) / max_arrows)))
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    uu, vv = u[ys, xs], v[ys, xs]
    scale = 0.9 * step / (np.sqrt(uu ** 2 + vv ** 2).max() + 1e-30)
    px, py = [], []
    for x0, y0, du, dv in zip(xs.ravel(), ys.ravel(), uu.ravel(), vv.ravel()):
        px += [x0, x0 + du * scale, None]
        py += [y0, y0 + dv * scale, None]
    return px, py


def example_figure(snapshot: dict):
    """The ground truth of one held-out example next to each method's current prediction: PhiFlow-style
    field images for grids (and vector fields), lines for vectors, curves over the input for the toy."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go
    views = snapshot.get('views', {}) if snapshot else {}
    errors = [f"{m}: {v['error']}" for m, v in views.items() if 'error' in v]
    views = {m: v for m, v in views.items() if 'error' not in v}
    if not views:
        return _empty(('example view failed — ' + '; '.join(errors)) if errors else
                      'prediction vs ground truth: appears once a run starts', 320)
    methods = list(snapshot.get('history', {})) or list(views)
    first = next(iter(views.values()))
    if first['mode'] == 'curve':
        fig = go.Figure()
        x = first['x']
        for i, (title, t) in enumerate(first['truth']):
            fig.add_trace(go.Scatter(x=_list(x), y=_list(t), mode='lines', name=title,
                                     line=dict(color='black' if i == 0 else '#888', dash='dash', width=1.5)))
        for m, v in views.items():
            for i, (title, y) in enumerate(v['prediction']):
                fig.add_trace(go.Scatter(x=_list(v['x']), y=_list(y), mode='lines', line=dict(color=_color(methods, m), width=2,
                                                                               dash=None if i == 0 else 'dot'),
                                         name=f'{m}: {title}'))
        fig.update_layout(height=320, margin=dict(l=50, r=20, t=30, b=40), font=_FONT, uirevision=_revision(snapshot),
                          title=dict(text='held-out set: prediction (solid: y1, dotted: y2) vs target (dashed)', font=_FONT),
                          xaxis_title='input x', plot_bgcolor='white')
        return fig
    rows = [('ground truth', first['truth'])] + [(m, v['prediction']) for m, v in views.items()]
    ncols = max(len(p) for _, p in rows)
    if ncols == 1:  # one panel each: ground truth and the methods side by side
        rows = [(label, items[0]) for label, items in rows]
        rows, ncols = [('', [(f'{label}: {t}' if label != 'ground truth' else t, a) for label, (t, a) in rows])], len(rows)
    titles = []
    for label, items in rows:
        titles += [f'{label}: {t}' if label not in ('ground truth', '') else t for t, _ in items] + \
            [''] * (ncols - len(items))
    # one colour scale per column (the same quantity in every row), from the ground truth where there is one
    scale = {}
    for c in range(ncols):
        column = [items[c][1] for _, items in rows if c < len(items) and items[c][1].ndim == 2]
        ref = [column[0]] if rows[0][1] and c < len(rows[0][1]) and rows[0][1][c][1].ndim == 2 else column
        if ref:
            low, high = min(float(np.nanmin(a)) for a in ref), max(float(np.nanmax(a)) for a in ref)
            lim = max(abs(low), abs(high)) or 1.
            scale[c + 1] = dict(zmin=-lim, zmax=lim, colorscale=_colorscale('signed')) if low < 0 < high else \
                dict(zmin=low, zmax=high if high > low else low + 1, colorscale=_colorscale('positive'))
    bars = set()
    fig = make_subplots(rows=len(rows), cols=ncols, subplot_titles=titles, horizontal_spacing=0.12,
                        vertical_spacing=0.12 if len(rows) > 1 else 0.1)
    for r, (label, items) in enumerate(rows, start=1):
        for c, (title, a) in enumerate(items, start=1):
            if a.ndim == 3 and a.shape[0] == 2:  # vector field: magnitude image and arrows
                mag = np.sqrt(a[0] ** 2 + a[1] ** 2)
                fig.add_trace(go.Heatmap(z=_list(mag), colorscale=_colorscale('positive'), showscale=False,
                                         name=f'{label} |{title}|'.strip()), row=r, col=c)
                px, py = _quiver(a[0], a[1])
                fig.add_trace(go.Scatter(x=px, y=py, mode='lines', line=dict(color='white', width=1),
                                         showlegend=False, hoverinfo='skip'), row=r, col=c)
                k = (r - 1) * ncols + c
                fig.update_yaxes(scaleanchor='x' if k == 1 else f'x{k}', constrain='domain',
                                 row=r, col=c)
            elif a.ndim == 2:
                kw = scale.get(c, dict(colorscale=_colorscale('positive')))
                k = (r - 1) * ncols + c
                domain = fig.layout['xaxis' if k == 1 else f'xaxis{k}'].domain
                fig.add_trace(go.Heatmap(z=_list(a), showscale=c not in bars, name=f'{label} {title}'.strip(),
                                         colorbar=dict(thickness=8, len=0.9, x=domain[1] + 0.005, xanchor='left',
                                                       tickfont=dict(size=9)), **kw), row=r, col=c)
                bars.add(c)
                fig.update_yaxes(scaleanchor='x' if k == 1 else f'x{k}', constrain='domain',
                                 row=r, col=c)
                fig.update_xaxes(constrain='domain', row=r, col=c)
            else:
                owner = label or title.split(':')[0]
                color = _color(methods, owner) if owner in methods else 'black'
                fig.add_trace(go.Scatter(y=_list(a.reshape(-1)), mode='lines+markers', marker=dict(size=3),
                                         line=dict(color=color), name=f'{label} {title}'.strip(), showlegend=False),
                              row=r, col=c)
    fig.update_layout(height=max(300, 230 * len(rows)), margin=dict(l=40, r=20, t=40, b=30), font=_FONT,
                      uirevision=_revision(snapshot), plot_bgcolor='white')
    fig.update_annotations(font_size=11)
    return fig
