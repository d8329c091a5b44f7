"""The live dashboard: input validation, server-side run state, example views, figures, and an end-to-end
browser test in headless Chromium (selenium + /usr/bin/chromedriver).

The browser test saves screenshots under $PHI_HIG_SCREENSHOT_DIR (default /tmp/phi_hig_gui). It is skipped,
with the reason, only where dash / selenium / Chromium are not installed (scripts/test.sh installs them and
exports PHI_HIG_CHROMIUM_REASON when it could not).
"""
import json
import os
import shutil
import tempfile
import time

import numpy as np
import pytest
import torch
from torch import nn

from phi_hig.errors import InvalidInputError
from phi_hig.experiments.base import Experiment
from phi_hig.gui.state import Dashboard
from phi_hig.gui.views import example_view, panels


# --- a tiny experiment whose outputs are 8x8 fields (flattened to 64 values: shown as images) -------------------
def grid8(preset='paper'):
    """Network: 4 coefficients -> 64 values; physics: identity; targets: smooth 8x8 fields."""
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 8), torch.linspace(0, 1, 8), indexing='ij')
    basis = torch.stack([torch.sin(np.pi * xx), torch.cos(np.pi * yy), xx * yy - 0.25,
                         torch.sin(2 * np.pi * (xx + yy))]).reshape(4, 64)

    def data(n):
        c = torch.randn(n, 4, generator=g)
        return c, c @ basis

    n = 64 if preset == 'test' else 512
    return Experiment(name='grid8', make_net=lambda: nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 64)),
                      simulate=None, loss=lambda y, t: 0.5 * ((y - t) ** 2).sum(-1),
                      methods={'adam': dict(lr=1e-2, batch_size=16), 'hig': dict(lr=1.0, batch_size=8,
                                                                                  truncation=1e-6)},
                      train_set=data(n), test_set=data(32), eval_every=10, threads=1,
                      settings=dict(preset=preset))


# --- validation ---------------------------------------------------------------------------------------------
def test_dashboard_bad_input_starts_nothing():
    """The page's values go through phi_hig.training.spec.run_spec, the command line's rule: same refusals."""
    d = Dashboard(experiments={'grid8': grid8})
    for kwargs, message in [
        (dict(hyper={'adam': {'lr': '-0.1'}}, steps='5'), 'adam: the learning rate lr must be >= 0'),
        (dict(hyper={'adam': {'lr': 'fast'}}, steps='5'), 'adam: lr must be a finite number'),
        (dict(hyper={'adam': {'lr': 'nan'}}, steps='5'), 'adam: lr must be a finite number, got nan'),
        (dict(hyper={'hig': {'batch_size': 'abc'}}, steps='5'), 'hig: batch_size must be an integer'),
        (dict(hyper={'hig': {'batch_size': '2.5'}}, steps='5'), 'hig: batch_size must be an integer'),
        (dict(hyper={'hig': {'batch_size': '0'}}, steps='5'), 'hig: batch_size must be an integer >= 1'),
        (dict(hyper={'hig': {'batch_size': '1e30'}}, steps='5'), 'hig: batch_size must be an integer'),
        (dict(hyper={'adam': {'batch_size': str(10 ** 30)}}, steps='5'), 'over the limit'),
        (dict(hyper={'hig': {'truncation': '-1'}}, steps='5'), 'truncation'),
        (dict(hyper={'adam': {'lr': '  '}}, steps='5'), 'adam: lr is empty'),
        (dict(more={'adam': 'optimizer=sgd'}, steps='5'), "unknown hyperparameter 'optimizer'"),
        (dict(more={'hig': 'clip=1'}, steps='5'), "unknown hyperparameter 'clip'"),
        (dict(more={'adam': 'amsgrad=1'}, steps='5'), 'amsgrad must be True or False'),
        (dict(more={'adam': 'capturable=True'}, steps='5'), 'adam: capturable=True cannot step on cpu'),
        (dict(more={'adam': 'differentiable=True'}, steps='5'), 'adam: differentiable=True cannot step on cpu'),
        (dict(steps='ten'), 'steps must be an integer'),  # the page's fields: Python names
        (dict(steps='', seconds=''), 'give a budget'),
        (dict(steps='5', seconds='-2'), 'seconds must be a finite number >= 0'),
        (dict(steps='5', seed='-1'), 'seed must be an integer >= 0'),
    ]:
        t0 = time.perf_counter()
        with pytest.raises(InvalidInputError, match=message.replace('[', r'\[').replace('(', r'\(')):
            d.start('grid8', ['adam', 'hig'], preset='test', **kwargs)
        assert time.perf_counter() - t0 < 5.0, kwargs  # refused at once (1e30: nothing allocated)
    with pytest.raises(InvalidInputError, match='select at least one method'):
        d.start('grid8', [], steps=5)
    with pytest.raises(InvalidInputError, match='does not define method'):
        d.start('grid8', ['gn'], steps=5)
    with pytest.raises(InvalidInputError, match='unknown experiment'):
        d.start('nope', ['adam'], steps=5)
    assert d.run is None
    with pytest.raises(InvalidInputError, match='unknown experiment'):
        Dashboard(default='nope')
    toy = Dashboard()
    with pytest.raises(InvalidInputError, match='gamma'):
        toy.start('toy', ['adam'], steps='5', preset='test', settings={'gamma': 'abc'})
    with pytest.raises(InvalidInputError, match="no setting 'gama'"):
        toy.start('toy', ['adam'], steps='5', preset='test', settings={'gama': '1'})
    assert toy.run is None


def test_dashboard_sets_settings_and_any_hyperparameter():
    """The page can set an experiment setting (the toy's γ) and any hyperparameter of the one rule."""
    d = Dashboard()
    assert d.setting_defaults('toy')['gamma'] == 0.01
    defaults = d.method_defaults('toy', 'test')
    assert set(defaults['hig']) == {'lr', 'batch_size', 'truncation', 'more'} and 'truncation' not in defaults['adam']
    run = d.start('toy', ['adam'], {'adam': {'lr': '0.05'}}, steps='3', preset='test', settings={'gamma': '1'},
                  more={'adam': 'eps=1e-7, betas=(0.8, 0.9)'})
    assert run.wait(60) and run.status == 'finished', run.error
    summary = run.result.summary
    assert summary['settings']['gamma'] == 1
    assert summary['hyperparameters']['adam'] == dict(lr=0.05, batch_size=16, eps=1e-7, betas=[0.8, 0.9])
    assert run.snapshot()['config']['settings'] == {'gamma': 1}


def test_the_page_starts_from_the_demos_setting():
    """Opened on the toy, the page shows the demo's first setting (γ = 1, Adam, Gauss–Newton and HIG; `SHOWCASE`),
    in which HIG ends ahead of Adam, not the factory's γ = 0.01; given methods still win, and other experiments
    keep their defaults."""
    from phi_hig.gui.state import SHOWCASE
    d = Dashboard()
    assert d.page_settings('toy')['gamma'] == 1.0 and d.setting_defaults('toy')['gamma'] == 0.01
    assert d.preselected(d.methods('toy'), 'toy') == ['adam', 'gn', 'hig'] == list(SHOWCASE['toy']['methods'])
    assert d.page_settings('heat') == d.setting_defaults('heat')
    assert Dashboard(defaults=dict(methods=['adam', 'hig'])).preselected(d.methods('toy'), 'toy') == ['adam', 'hig']
    # the learning rate's other spelling in a method's "more" field replaces the "learning rate lr" column
    run = d.start('toy', ['adam'], {'adam': {'lr': '0.3'}}, steps='1', preset='test',
                  more={'adam': 'learning_rate=0.05'})
    assert run.wait(60) and run.result.summary['hyperparameters']['adam']['lr'] == 0.05


def test_dashboard_sets_sip_inverse_options():
    from test_methods import _options_experiment
    calls = []
    d = Dashboard(experiments={'options': _options_experiment(calls)})
    assert d.method_defaults('options')['sip']['more'] == 'inverse_options.damping=1.0, inverse_options.steps=1, ' \
                                                         'inverse_options.exact=False'
    with pytest.raises(InvalidInputError, match='inverse_options: damping must be > 0'):
        d.start('options', ['sip'], steps='2', more={'sip': 'inverse_options.damping=-1'})
    run = d.start('options', ['sip'], steps='2', more={'sip': 'inverse_options.damping=0.5, inverse_options.steps=2'})
    assert run.wait(30) and run.status == 'finished', run.error
    assert calls and all(c == dict(damping=0.5, steps=2, exact=False) for c in calls)


def test_stop_always_ends_in_a_final_status():
    """Stop ends a run whatever it is doing: paused, mid-step, or failing in its thread."""
    d = Dashboard(experiments={'grid8': grid8})
    run = d.start('grid8', ['adam'], steps='100000', preset='test')
    run.pause()
    run.stop()
    assert run.wait(20) and run.status == 'stopped'
    broken = grid8('test')

    def loss(y, t):
        raise RuntimeError('the physics broke')
    broken.loss = loss
    d = Dashboard(experiments={'broken': broken})
    run = d.start('broken', ['adam'], steps='10')
    run.stop()
    assert run.wait(20) and run.status in ('failed', 'stopped') and not run.active


# --- server-side run --------------------------------------------------------------------------------------
def test_live_run_records_views_spectra_and_stops():
    d = Dashboard(experiments={'grid8': grid8})
    run = d.start('grid8', ['adam', 'hig'], {'adam': {'lr': '0.02', 'batch_size': '8'}}, steps='30', preset='test')
    assert run.wait(60), 'run did not finish'
    snap = run.snapshot()
    assert snap['status'] == 'finished', snap['error']
    assert snap['config']['overrides'] == {'adam': {'lr': 0.02, 'batch_size': 8}}
    for m in ('adam', 'hig'):
        h = snap['history'][m]
        assert h['step'][-1] == 30 and len(h['train_loss']) == 30
        assert h['test_step'][0] == 0 and h['test_step'][-1] == 30
        assert snap['views'][m]['mode'] == 'field'
    assert snap['history']['hig']['test_loss'][-1] < snap['history']['hig']['test_loss'][0]
    assert set(snap['spectra']) == {'hig'} and np.all(np.diff(snap['spectra']['hig']) <= 0)
    # a second run while none is active is fine; pause / resume / stop from "another tab"
    run2 = d.start('grid8', ['adam', 'hig'], steps='100000', preset='test')
    deadline = time.time() + 20
    while run2.steps_done()['adam'] < 3 and time.time() < deadline:
        time.sleep(0.02)
    run2.pause()
    time.sleep(0.1)
    before = run2.steps_done()['adam']
    time.sleep(0.4)
    assert run2.steps_done()['adam'] - before <= 1 and run2.status == 'paused'
    with pytest.raises(InvalidInputError, match='in progress'):
        d.start('grid8', ['adam'], steps='5', preset='test')
    run2.resume()
    run2.stop()
    assert run2.wait(20)
    assert run2.status == 'stopped' and run2.steps_done()['hig'] == 0


def test_dashboard_writes_finished_runs(tmp_path, monkeypatch):
    """Each run gets its own folder, even when two start within the same second (the clock is pinned here), and
    releases its lock when it ends."""
    import phi_hig.gui.state
    from phi_hig.report import read_run
    monkeypatch.setattr(phi_hig.gui.state.time, 'strftime', lambda *args: '20250101-120000')
    d = Dashboard(experiments={'grid8': grid8}, out=str(tmp_path))
    run = d.start('grid8', ['adam'], steps='5', preset='test')
    assert run.wait(60) and run.status == 'finished'
    records, summary = read_run(run.saved)
    assert run.saved.startswith(str(tmp_path)) and summary['final']['adam']['steps'] == 5
    assert run.snapshot()['saved'] == run.saved
    again = d.start('grid8', ['adam'], steps='3', preset='test')
    assert again.wait(60) and again.status == 'finished' and again.saved != run.saved
    assert read_run(run.saved)[1]['final']['adam']['steps'] == 5 and read_run(again.saved)[1]['final']['adam'][
        'steps'] == 3
    assert not [f for f in os.listdir(run.saved) + os.listdir(again.saved) if f.startswith('.')]  # lock released


# --- example views ------------------------------------------------------------------------------------------
def test_example_view_modes():
    from phi_hig.experiments import get
    toy = get('toy', preset='test')
    torch.manual_seed(0)
    v = example_view(toy, toy.make_net())
    assert v['mode'] == 'curve' and len(v['truth']) == 2 and len(v['prediction']) == 2
    assert np.all(np.diff(v['x']) >= 0) and v['prediction'][0][1].shape == v['x'].shape
    g = grid8('test')
    v = example_view(g, g.make_net())
    assert v['mode'] == 'field'
    assert [a.shape for _, a in v['truth']] == [(8, 8)] and [a.shape for _, a in v['prediction']] == [(8, 8)]
    # (C, H, W) channels, (n,) non-square vectors, (n, 2) trajectories, velocity fields
    assert [t for t, _ in panels('p', np.zeros((2, 8, 8)))] == ['p [0]', 'p [1]']
    assert panels('velocity', np.zeros((2, 8, 8)))[0][1].shape == (2, 8, 8)
    assert panels('p', np.zeros(10))[0][1].shape == (10,)
    assert panels('p', np.zeros(16))[0][1].shape == (16,)  # too small to be a grid
    assert [a.shape for _, a in panels('p', np.zeros((2, 64)))] == [(8, 8), (8, 8)]
    img = panels('p', np.arange(20.).reshape(5, 4))[0][1]  # (x, y) -> image indexed (y, x), drawn y up
    assert img.shape == (4, 5) and img[0].tolist() == [0, 4, 8, 12, 16] and img[-1].tolist() == [3, 7, 11, 15, 19]
    assert [a.shape for _, a in panels('p', np.zeros((20, 2)))] == [(20,), (20,)]


def test_example_view_phiml_grid_and_hook():
    from phiml import math
    from phi_hig.gui.views import to_example_arrays
    t = math.random_normal(math.batch(b=3), math.spatial(x=6, y=5), math.channel(vector='x,y'))
    (suffix, arr), = to_example_arrays(t)
    assert suffix == 'velocity' and arr.shape == (2, 6, 5)
    (title, field), = panels('prediction velocity', arr)
    assert field.shape == (2, 5, 6)  # (component, y, x)
    assert field[0, 4, 0] == pytest.approx(float(t.b[0].vector['x'].y[4].x[0]))
    assert field[1, 0, 5] == pytest.approx(float(t.b[0].vector['y'].y[0].x[5]))

    g = grid8('test')
    g.visualize = lambda net, x, t: {'truth': {'marker': np.ones((5, 4))},
                                     'prediction': [('marker', np.zeros((5, 4))), ('velocity', np.zeros((2, 5, 4)))]}
    v = example_view(g, g.make_net())
    assert v['mode'] == 'field' and v['truth'][0][0] == 'marker' and v['truth'][0][1].shape == (4, 5)
    assert [a.shape for _, a in v['prediction']] == [(4, 5), (2, 4, 5)]


def test_figures_from_snapshot():
    pytest.importorskip('plotly')
    from phi_hig.gui import figures
    assert len(figures.loss_figure(None).data) == 0
    d = Dashboard(experiments={'grid8': grid8})
    run = d.start('grid8', ['adam', 'hig'], steps='12', preset='test')
    assert run.wait(60)
    snap = run.snapshot()
    names = {tr.name for tr in figures.loss_figure(snap).data}
    assert {'adam train', 'adam test', 'hig train', 'hig test'} <= names
    ex = figures.example_figure(snap)
    assert sum(tr.type == 'heatmap' for tr in ex.data) == 3  # ground truth + two methods
    assert figures.spectrum_figure(snap).data[0].name == 'hig'


# --- browser ----------------------------------------------------------------------------------------------
CHROMIUM = os.environ.get('PHI_HIG_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('PHI_HIG_CHROMEDRIVER', '/usr/bin/chromedriver')


def _browser_or_skip():
    try:
        import dash  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as err:
        pytest.skip(f"browser test needs the gui and test extras (pip install -e '.[test,gui]'): {err}")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        reason = os.environ.get('PHI_HIG_CHROMIUM_REASON') or \
            'install them with: apt-get install chromium chromium-driver (scripts/test.sh does this as root)'
        pytest.skip(f"browser test skipped: {', '.join(missing)} not found; {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix='phi_hig_chromium_')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage', '--window-size=1280,1500', f'--user-data-dir={profile}'):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver, profile


def _wait(predicate, timeout, what, every=0.1, last=None):
    """Poll ``predicate`` until it is truthy; on time-out say what ``last()`` (e.g. the run's status) was."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
        except Exception:  # element not there yet / re-rendered
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (then: {last()})" if last else ''))


def _hp_input(driver, method, key):
    from selenium.webdriver.common.by import By
    ident = json.dumps({'key': key, 'method': method, 'type': 'hp'}, separators=(',', ':'))
    return driver.find_element(By.XPATH, f"//input[@id='{ident}']")


def _type(element, text):
    from selenium.webdriver.common.keys import Keys
    element.send_keys(Keys.CONTROL, 'a')
    element.send_keys(Keys.BACKSPACE)
    element.send_keys(text)


def _select_experiment(driver, name):
    """Choose ``name`` in the experiment dropdown (dash 4 option list, or the react-select of dash 2/3)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.find_element(By.ID, 'experiment').click()
    options = _wait(lambda: driver.find_elements(By.XPATH, f"//*[@role='option' and normalize-space(.)='{name}']")
                    or driver.find_elements(By.CSS_SELECTOR, '#experiment input'), 10, 'the experiment options')
    if options[0].tag_name == 'input':
        options[0].send_keys(name, Keys.ENTER)
    else:
        options[0].click()


_TRACE_POINTS = """
const gd = document.querySelector('#%s .js-plotly-plot');
if (!gd || !gd.data) return null;
const out = {};
for (const t of gd.data) { const n = (t.y || t.z || []).filter(v => v !== null).length; out[t.name] = n; }
return out;
"""


def _points(driver, graph):
    return driver.execute_script(_TRACE_POINTS % graph)


def _status(driver):
    from selenium.webdriver.common.by import By
    el = driver.find_element(By.ID, 'status-text')
    return el.get_attribute('data-status'), json.loads(el.get_attribute('data-steps'))


def _image_stats(png: bytes):
    from PIL import Image
    import io
    img = np.asarray(Image.open(io.BytesIO(png)).convert('RGB')).astype(int)
    return img.shape, len(np.unique(img.reshape(-1, 3), axis=0))


STEPS = 10_000
"""The browser test's budget per method: long enough that HIG (about 1000 toy steps/s, Adam twice that) is
still running when the test pauses it, whatever the CPU (at 2000 a fast machine finished both before the page was
reopened)."""


def test_browser_dashboard():
    """Headless Chromium drives the page: bad inputs, a toy run of adam + hig with pause and stop, then a run on
    an 8x8-field experiment whose images must render."""
    driver, profile = _browser_or_skip()
    from selenium.webdriver.common.by import By
    from phi_hig.gui import serve
    out_dir = os.environ.get('PHI_HIG_SCREENSHOT_DIR', os.path.join(tempfile.gettempdir(), 'phi_hig_gui'))
    os.makedirs(out_dir, exist_ok=True)
    server = serve('toy', port=0, background=True, experiments={'grid8': grid8}, preset='test', steps=STEPS,
                   methods=['adam', 'hig'], quiet=True, interval_ms=300)
    try:
        driver.get(server.url)
        lr = _wait(lambda: _hp_input(driver, 'adam', 'lr'), 30, 'the hyperparameter table')
        assert lr.get_attribute('value') == '0.3'
        start = driver.find_element(By.ID, 'start')
        error = driver.find_element(By.ID, 'error')
        # bad input: an error in the page and no run
        _type(lr, '-1')
        start.click()
        _wait(lambda: 'learning rate lr must be >= 0' in error.text, 10, 'the negative-learning-rate error')
        _type(lr, '0.3')
        _type(_hp_input(driver, 'hig', 'batch_size'), 'abc')
        start.click()
        _wait(lambda: 'batch_size must be an integer' in error.text, 10, 'the batch-size error')
        assert server.dashboard.run is None
        _type(_hp_input(driver, 'hig', 'batch_size'), '16')
        # a real run: loss curves of both methods (the runner trains adam, then hig)
        start.click()
        _wait(lambda: error.text == '' and server.dashboard.run is not None, 10, 'the run to start')
        t0 = time.time()
        # the run goes on with no page open; a page opened later shows it
        _wait(lambda: (_points(driver, 'loss-graph') or {}).get('adam train', 0) >= 3, 20, 'the first adam points')
        driver.get('about:blank')
        before = sum(server.dashboard.run.steps_done().values())
        time.sleep(1.0)
        assert sum(server.dashboard.run.steps_done().values()) > before, 'training stopped without a page'
        driver.get(server.url)
        _wait(lambda: _status(driver)[0] == 'running', 20, 'the running status on a reopened page')
        # pause as soon as hig has taken a few steps (hig runs ~1000 steps/s here: waiting for the page's curves
        # first could let it finish before the click); the status says so and the steps stop
        # advancing; the page then shows both methods' curves, the examples and the spectrum
        run = server.dashboard.run
        _wait(lambda: run.steps_done().get('hig', 0) >= 5, 120, 'the first hig steps', every=0.02,
              last=lambda: (run.status, run.steps_done()))
        driver.find_element(By.ID, 'pause').click()
        _wait(lambda: _status(driver)[0] == 'paused', 10, 'status paused', last=lambda: (run.status, run.steps_done()))
        steps = run.steps_done()
        time.sleep(0.5)
        assert run.steps_done() == steps and 0 < steps['hig'] < STEPS, steps
        paused = steps
        _wait(lambda: (_points(driver, 'loss-graph') or {}).get('hig train', 0) >= 3
              and _points(driver, 'loss-graph').get('adam test', 0) >= 2, 20, 'loss points of adam and hig')
        pts = _points(driver, 'loss-graph')
        assert pts['adam train'] > 10 and pts['hig train'] >= 3, pts
        ex = _wait(lambda: _points(driver, 'example-graph'), 10, 'the example view')
        assert any(k.startswith('adam:') for k in ex) and any(k.startswith('hig:') for k in ex), ex
        assert min(ex.values()) > 10, ex
        _wait(lambda: (_points(driver, 'spectrum-graph') or {}).get('hig', 0) > 0, 10, 'the HIG spectrum')
        # a second tab sees the same run: its status, its settings and its curves
        first_tab = driver.current_window_handle
        driver.switch_to.new_window('tab')
        driver.get(server.url)
        _wait(lambda: _status(driver)[0] == 'paused', 20, 'status paused in a second tab')
        assert driver.find_element(By.ID, 'steps').get_attribute('value') == str(STEPS)
        _wait(lambda: (_points(driver, 'loss-graph') or {}).get('hig train', 0) >= 3, 10, 'curves in the second tab')
        driver.close()
        driver.switch_to.window(first_tab)
        driver.find_element(By.ID, 'stop').click()
        _wait(lambda: _status(driver)[0] == 'stopped', 15, 'status stopped')
        status, steps = _status(driver)
        assert 0 < steps['hig'] < STEPS and steps['adam'] == STEPS, steps
        time.sleep(0.4)  # let the last redraw land
        shot = os.path.join(out_dir, 'dashboard_toy.png')
        driver.save_screenshot(shot)
        print(f"toy run: both methods plotted after {time.time() - t0:.1f} s, paused at {paused}; screenshot {shot}")

        # field images: pick the experiment with 8x8 outputs in the page
        _select_experiment(driver, 'grid8')
        _wait(lambda: _hp_input(driver, 'adam', 'lr').get_attribute('value') == '0.01', 15,
              'the grid8 hyperparameter table')
        _type(driver.find_element(By.ID, 'steps'), '200')  # adam trains first, then hig
        driver.find_element(By.ID, 'start').click()
        _wait(lambda: (_points(driver, 'loss-graph') or {}).get('hig train', 0) >= 2, 40, 'grid8 loss points')
        _wait(lambda: sum(1 for k in (_points(driver, 'example-graph') or {}) if k.startswith(('adam', 'hig'))) >= 2,
              15, 'field images of both methods')
        # plotly draws each heatmap as an <image> with a PNG data URL: ground truth + adam + hig
        hrefs = _wait(lambda: (lambda h: h if len(h) >= 3 else None)(driver.execute_script(
            "return Array.from(document.querySelectorAll('#example-graph .heatmaplayer image'))"
            ".map(e => e.getAttribute('href') || e.getAttribute('xlink:href') || '')")), 15, 'three heatmap images')
        assert all(h.startswith('data:image/png') and len(h) > 200 for h in hrefs), [h[:40] for h in hrefs]
        images = hrefs
        shape, colours = _image_stats(driver.find_element(By.ID, 'example-graph').screenshot_as_png)
        assert colours > 50, f"example panel looks empty: {colours} colours in {shape}"
        driver.find_element(By.ID, 'stop').click()  # hig may have finished its 200 steps already
        _wait(lambda: _status(driver)[0] in ('stopped', 'finished'), 15, 'grid8 stopped')
        time.sleep(0.4)
        shot = os.path.join(out_dir, 'dashboard_grid8.png')
        driver.save_screenshot(shot)
        print(f"grid8 run: {len(images)} field images, {colours} colours; screenshot {shot}")
    finally:
        try:
            driver.quit()
        finally:
            server.close()
            shutil.rmtree(profile, ignore_errors=True)


def test_main_reports_bad_arguments(capsys):
    pytest.importorskip('dash')
    from phi_hig.gui import main
    assert main(['nope']) == 2
    assert 'unknown experiment' in capsys.readouterr().err
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        assert main(['toy', '--port', str(s.getsockname()[1])]) == 2
    assert 'in use' in capsys.readouterr().err


def test_gui_refuses_bad_page_defaults_before_serving(capsys):
    """`gui toy --methods foo` and the like are refused at once with one line (before: the server started and the
    page could never run); the refusal is `run`'s rule (`phi_hig.training.spec.run_spec`)."""
    pytest.importorskip('dash')
    from phi_hig.gui import main
    for argv, message in [(['toy', '--methods', 'foo'], "does not define method 'foo'"),
                          (['toy', '--preset', 'tset'], 'preset'),
                          (['toy', '--steps', '-3'], 'steps'),
                          (['toy', '--port', '70000'], 'port')]:
        t0 = time.perf_counter()
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own refusals
            code = exit_.code
        assert code == 2, argv
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert time.perf_counter() - t0 < 30, argv


def test_dashboard_refuses_arguments_of_the_wrong_kind():
    """Arguments that are not the dicts / lists / text `Dashboard.start` documents are named, and start nothing."""
    d = Dashboard(experiments={'grid8': grid8})
    for kwargs, message in [(dict(hyper=[('adam', 1)]), 'hyper must be a dict'),
                            (dict(hyper={'adam': '0.1'}), r"hyper\['adam'\] must be a dict"),
                            (dict(more={'adam': 3}), r"more\['adam'\] must be text"),
                            (dict(more='lr=1'), 'more must be a dict'),
                            (dict(settings=['gamma']), 'settings must be a dict')]:
        with pytest.raises(InvalidInputError, match=message):
            d.start('grid8', ['adam'], steps='5', preset='test', **kwargs)
    with pytest.raises(InvalidInputError, match='methods must be a list'):
        d.start('grid8', 'adam', steps='5', preset='test')
    with pytest.raises(InvalidInputError, match='unknown experiment'):
        d.start(['grid8'], ['adam'], steps='5')
    assert d.run is None
    with pytest.raises(InvalidInputError, match="defaults has no key 'step'"):
        Dashboard(experiments={'grid8': grid8}, default='grid8', defaults={'step': 5})
    with pytest.raises(InvalidInputError, match='view_fn must be a function'):
        Dashboard(view_fn='images')
    from phi_hig.gui import Server
    with pytest.raises(InvalidInputError, match='dashboard must be a phi_hig.gui.Dashboard'):
        Server(object())
    with pytest.raises(InvalidInputError, match='interval_ms'):
        Server(d, interval_ms=0)
