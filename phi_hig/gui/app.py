"""The Dash application: page layout and callbacks over a `Dashboard` (server-side state).

Every browser tab polls the same `Dashboard` with a `dcc.Interval`; a tab redraws only when the run's
``version`` changed since its last draw.
"""
from __future__ import annotations

import json

from ..errors import InvalidInputError
from ..experiments.settings import PRESETS
from .state import DEFAULT_STEPS, Dashboard, HYPER_KEYS

__all__ = ['create_app']

_LABEL = {'lr': 'learning rate lr', 'batch_size': 'batch size', 'truncation': 'truncation'}
_MORE_HINT = 'KEY=VALUE, ... e.g. eps=1e-7, inverse_options.NAME=...'
_CSS = {
    'page': dict(fontFamily='Helvetica, Arial, sans-serif', margin='0 auto', maxWidth='1250px', padding='10px 18px',
                 color='#222'),
    'panel': dict(border='1px solid #ddd', borderRadius='6px', padding='8px 12px', marginBottom='10px',
                  background='#fafafa'),
    'label': dict(fontWeight='bold', marginRight='6px', fontSize='13px'),
    'input': dict(width='90px', marginRight='10px'),
    'button': dict(marginRight='8px', padding='5px 14px', fontSize='14px'),
    'error': dict(color='#b00020', fontWeight='bold', minHeight='1.2em', margin='4px 0', whiteSpace='pre-wrap'),
}


def _hyper_table(html, dcc, defaults: dict, methods):
    rows = [html.Tr([html.Th('method')] + [html.Th(_LABEL[k]) for k in HYPER_KEYS] + [html.Th('more')])]
    for m in methods:
        cells = [html.Td(m, style=dict(fontWeight='bold', paddingRight='10px'))]
        for k in HYPER_KEYS:
            if k in defaults.get(m, {}):
                cells.append(html.Td(dcc.Input(id={'type': 'hp', 'method': m, 'key': k}, type='text',
                                               value=str(defaults[m][k]), debounce=False, style=_CSS['input'])))
            else:
                cells.append(html.Td('—', style=dict(color='#aaa', textAlign='center')))
        cells.append(html.Td(dcc.Input(id={'type': 'more', 'method': m}, type='text', placeholder=_MORE_HINT,
                                       value=defaults.get(m, {}).get('more', ''), debounce=False,
                                       style=dict(_CSS['input'], width='330px'))))
        rows.append(html.Tr(cells))
    return html.Table(rows, style=dict(fontSize='13px'))


def _settings_row(html, dcc, defaults: dict, chosen: dict):
    if not defaults:
        return html.Div()
    cells = [html.Span('settings', style=_CSS['label'])]
    for k, v in defaults.items():
        cells += [html.Span(k, style=dict(fontSize='12px', marginRight='3px')),
                  dcc.Input(id={'type': 'setting', 'key': k}, type='text', value=str(chosen.get(k, v)),
                            debounce=False, style=dict(_CSS['input'], width='80px'))]
    return html.Div(cells, style=dict(display='flex', flexWrap='wrap', alignItems='center', gap='3px',
                                      margin='4px 0'))


def create_app(dashboard: Dashboard, interval_ms: int = 600):
    """The Dash app (``app.server`` is the Flask WSGI app) drawing and driving ``dashboard``.

    Raises:
        ImportError: with an install hint when dash is not installed (``pip install phi_hig[gui]``).
    """
    try:
        import dash
        from dash import dcc, html, Input, Output, State, ALL, ctx, no_update
    except ImportError as err:
        raise ImportError("the phi_hig dashboard needs dash: pip install 'phi_hig[gui]'") from err
    from . import figures

    app = dash.Dash(__name__, title='phi_hig dashboard', update_title=None, serve_locally=True)
    app.config.suppress_callback_exceptions = True
    d = dashboard

    def layout():
        run = d.run if d.run is not None and d.run.active else None  # a new tab shows the run in progress
        exp = run.config['experiment'] if run is not None else d.default
        preset = run.config['preset'] if run is not None else d.defaults.get('preset', 'paper')
        steps = run.config['steps'] if run is not None else d.defaults.get('steps', DEFAULT_STEPS)
        seconds = run.config['seconds'] if run is not None else d.defaults.get('seconds')
        return html.Div(style=_CSS['page'], children=[
            html.H2('phi_hig — live training', style=dict(margin='4px 0 8px 0')),
            html.Div(style=_CSS['panel'], children=[
                html.Div(style=dict(display='flex', flexWrap='wrap', alignItems='center', gap='6px'), children=[
                    html.Span('experiment', style=_CSS['label']),
                    dcc.Dropdown(id='experiment', options=[dict(label=n, value=n) for n in d.names], value=exp,
                                 clearable=False, style=dict(width='190px')),
                    html.Span('preset', style=dict(_CSS['label'], marginLeft='14px')),
                    dcc.RadioItems(id='preset', options=list(PRESETS), value=preset, inline=True,
                                   inputStyle=dict(marginRight='3px', marginLeft='8px')),
                    html.Span('methods', style=dict(_CSS['label'], marginLeft='14px')),
                    dcc.Checklist(id='methods', options=[], value=[], inline=True,
                                  inputStyle=dict(marginRight='3px', marginLeft='8px')),
                ]),
                html.Div(id='settings-row'),
                html.Div(id='hyper-table', style=dict(margin='8px 0')),
                html.Div(style=dict(display='flex', flexWrap='wrap', alignItems='center'), children=[
                    html.Span('steps / method', style=_CSS['label']),
                    dcc.Input(id='steps', type='text', value='' if steps is None else str(steps), style=_CSS['input']),
                    html.Span('seconds / method', style=_CSS['label']),
                    dcc.Input(id='seconds', type='text', value='' if seconds is None else str(seconds),
                              style=_CSS['input']),
                    html.Span('seed', style=_CSS['label']),
                    dcc.Input(id='seed', type='text', value='0', style=dict(_CSS['input'], width='50px')),
                    html.Button('Start', id='start', n_clicks=0, style=dict(_CSS['button'], background='#d8f0d8')),
                    html.Button('Pause', id='pause', n_clicks=0, style=_CSS['button']),
                    html.Button('Resume', id='resume', n_clicks=0, style=_CSS['button']),
                    html.Button('Stop', id='stop', n_clicks=0, style=dict(_CSS['button'], background='#f4d6d6')),
                ]),
                html.Div(id='error', style=_CSS['error']),
                html.Div(id='status', style=dict(fontSize='13px', fontFamily='monospace')),
            ]),
            dcc.Graph(id='loss-graph', figure=figures.loss_figure(None), config=dict(displaylogo=False)),
            html.Div(style=dict(display='flex', gap='10px'), children=[
                html.Div(dcc.Graph(id='example-graph', figure=figures.example_figure(None),
                                   config=dict(displaylogo=False)), style=dict(flex='3', minWidth='0')),
                html.Div(dcc.Graph(id='spectrum-graph', figure=figures.spectrum_figure(None),
                                   config=dict(displaylogo=False)), style=dict(flex='2', minWidth='0')),
            ]),
            html.Div('Runs live in the server: closing this page does not stop them; every tab shows the same run. '
                     'Methods train one after the other, from the same initial weights and data stream.',
                     style=dict(fontSize='12px', color='#777', marginTop='6px')),
            dcc.Interval(id='tick', interval=interval_ms),
            dcc.Store(id='drawn', data=-1),
            dcc.Store(id='control-count', data=0),
        ])

    app.layout = layout

    @app.callback(Output('methods', 'options'), Output('methods', 'value'),
                  Input('experiment', 'value'), Input('preset', 'value'))
    def _methods(name, preset):
        if not name:
            return [], []
        try:
            available = d.methods(name, preset or 'paper')
        except Exception as err:  # e.g. an experiment that fails to build: show it, keep the page alive
            return [dict(label=f'({type(err).__name__}: {err})', value='', disabled=True)], []
        run = d.run
        if run is not None and run.config['experiment'] == name:
            chosen = [m for m in run.config['methods'] if m in available]
        else:
            chosen = d.preselected(available, name)
        return available, chosen

    @app.callback(Output('settings-row', 'children'), Input('experiment', 'value'))
    def _settings(name):
        if not name:
            return html.Div()
        try:
            defaults = d.page_settings(name)
        except Exception as err:
            return html.Div(f'{type(err).__name__}: {err}', style=_CSS['error'])
        run = d.run
        chosen = run.config.get('settings', {}) if run is not None and run.config['experiment'] == name else {}
        return _settings_row(html, dcc, defaults, chosen)

    @app.callback(Output('hyper-table', 'children'),
                  Input('methods', 'value'), State('experiment', 'value'), State('preset', 'value'))
    def _hyper(methods, name, preset):
        if not name or not methods:
            return html.Div('select methods to compare', style=dict(color='#777', fontSize='13px'))
        try:
            defaults = d.method_defaults(name, preset or 'paper')
        except Exception as err:
            return html.Div(f'{type(err).__name__}: {err}', style=_CSS['error'])
        run = d.run
        if run is not None and run.config['experiment'] == name:
            for m, o in run.config['overrides'].items():
                defaults.setdefault(m, {}).update({k: v for k, v in o.items() if k in defaults.get(m, {})})
                more = ', '.join(f'{k}={v!r}' for k, v in o.items() if k not in HYPER_KEYS)
                if more:
                    defaults[m]['more'] = more
        return _hyper_table(html, dcc, defaults, [m for m in methods if m in defaults])

    @app.callback(Output('error', 'children'), Output('control-count', 'data'),
                  Input('start', 'n_clicks'), Input('pause', 'n_clicks'), Input('resume', 'n_clicks'),
                  Input('stop', 'n_clicks'),
                  State('experiment', 'value'), State('preset', 'value'), State('methods', 'value'),
                  State({'type': 'hp', 'method': ALL, 'key': ALL}, 'value'),
                  State({'type': 'hp', 'method': ALL, 'key': ALL}, 'id'),
                  State({'type': 'more', 'method': ALL}, 'value'), State({'type': 'more', 'method': ALL}, 'id'),
                  State({'type': 'setting', 'key': ALL}, 'value'), State({'type': 'setting', 'key': ALL}, 'id'),
                  State('steps', 'value'), State('seconds', 'value'), State('seed', 'value'),
                  State('control-count', 'data'), prevent_initial_call=True)
    def _control(_s, _p, _r, _x, name, preset, methods, values, ids, more_values, more_ids, setting_values,
                 setting_ids, steps, seconds, seed, count):
        button = ctx.triggered_id
        count = (count or 0) + 1
        try:
            if button == 'start':
                hyper = {}
                for i, v in zip(ids, values):
                    hyper.setdefault(i['method'], {})[i['key']] = v
                more = {i['method']: v for i, v in zip(more_ids, more_values) if v}
                defaults = d.setting_defaults(name) if name else {}  # the factory's: a showcase value is passed on
                settings = {i['key']: v for i, v in zip(setting_ids, setting_values)
                            if i['key'] in defaults and str(v).strip() != str(defaults[i['key']])}
                d.start(name, methods, hyper, steps=steps, seconds=seconds, preset=preset or 'paper', seed=seed,
                        settings=settings, more=more)
            elif d.run is None:
                raise InvalidInputError('no run yet: press Start')
            elif button == 'pause':
                d.run.pause()
            elif button == 'resume':
                d.run.resume()
            elif button == 'stop':
                d.run.stop()
        except InvalidInputError as err:
            return f'Error: {err}', count
        except Exception as err:
            return f'Error: {type(err).__name__}: {err}', count
        return '', count

    @app.callback(Output('loss-graph', 'figure'), Output('example-graph', 'figure'),
                  Output('spectrum-graph', 'figure'), Output('status', 'children'), Output('drawn', 'data'),
                  Input('tick', 'n_intervals'), Input('control-count', 'data'), State('drawn', 'data'))
    def _draw(_n, _count, drawn):
        run = d.run
        if run is None:
            if drawn == 'idle':
                return no_update, no_update, no_update, no_update, no_update
            return no_update, no_update, no_update, 'status: idle — no run yet', 'idle'
        key = f'{id(run)}:{run.version}'
        if key == drawn:
            return no_update, no_update, no_update, no_update, no_update
        snap = run.snapshot()
        done = {m: (h['step'][-1] if h['step'] else 0) for m, h in snap['history'].items()}
        c = snap['config']
        budget = f"{c['steps']} steps" if c['steps'] is not None else ''
        if c['seconds'] is not None:
            budget += (' / ' if budget else '') + f"{c['seconds']} s"
        status = (f"status: {snap['status']}  |  {c['experiment']} ({c['preset']})  |  budget {budget} per method  |  "
                  + '  '.join(f"{m}: step {s}" for m, s in done.items())
                  + (f"  |  training {snap['current']}" if snap['status'] in ('running', 'paused') and snap['current']
                     else ''))
        if snap['error']:
            status += f"  |  {snap['error']}"
        if snap.get('saved'):
            status += f"  |  saved to {snap['saved']}"
        return (figures.loss_figure(snap), figures.example_figure(snap), figures.spectrum_figure(snap),
                html.Span(status, id='status-text', **{'data-status': snap['status'],
                                                      'data-steps': json.dumps(done)}), key)

    return app
