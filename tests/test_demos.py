"""Every script in demos/ runs end to end at its smallest budget and writes the files its docstring promises.

The demos are scripts, not a package, so each is loaded from its file.
"""
import csv
import importlib.util
import json
import os
import sys

import pytest

DEMOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'demos')
UNTESTED = set()

pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py: one torch thread

# name: (command line without --out, files promised under --out, the methods of the CSV file named first)
CASES = {
    'toy': (['--seconds', '0.2', '--gammas', '1', '--quiet'],
            ['toy_gamma_1_seed0.csv', 'fig1_gamma_1.png', 'table.txt', 'table.json'], {'adam', 'gn', 'hig'}),
    'oscillators': (['--preset', 'test', '--seconds', '0.3', '--quiet'],
                    ['metrics_methods_seed0.csv', 'fig_methods.png', 'table_methods.txt'], {'adam', 'gn', 'hig'}),
    'linear_chain': (['--preset', 'test', '--seconds', '0.3', '--quiet'],
                     ['linear_chain_seed0.csv', 'loss.png', 'table.txt'], {'adam', 'sip', 'hig'}),
    'poisson8': (['--preset', 'test', '--adam-steps', '2', '--hig-steps', '1', '--quiet'],
                 ['poisson8_paper.csv', 'fig_poisson8_paper.png', 'table_paper.txt'],
                 {'adam', 'hig', 'hig after adam', 'adam after adam', 'adam after hig'}),
    'quantum_dipole': (['--preset', 'test', '--seconds', '0.3', '--quiet'],
                       ['quantum_dipole_mlp_seed0.csv', 'fig4_mlp.png', 'table_mlp.txt'], {'adam', 'hig'}),
    'poisson': (['--resolution', '16', '--batch', '4', '--steps', '2', '--solver', 'dst'],
                ['metrics.csv', 'summary.json', 'curves.png', 'x_error.png', 'examples.png'], {'adam', 'sgd', 'sip'}),
    'heat': (['--resolution', '16', '--batch', '4', '--steps', '2'],
             ['metrics.csv', 'summary.json', 'curves.png', 'x_error.png', 'examples.png'],
             {'adam', 'sgd', 'sip', 'sip_lbfgs'}),
    'sine': (['--steps', '2', '--batch', '16'],
             ['seed0/metrics.csv', 'seed0/summary.json', 'seed0/curves.png', 'seed0/sine.png'],
             {'supervised', 'adam', 'sip_newton', 'sip_inverse_gradient', 'sip'}),
    'exp': (['--steps', '2'], ['metrics.csv', 'summary.json', 'curves.png', 'fig2.png'],
            {'sgd', 'adam', 'sip', 'rescaled'}),
    'fluid': (['--preset', 'test', '--steps', '2', '--eval-every', '1', '--table-examples', '1'],
              ['metrics.csv', 'summary.json', 'curves.png', 'v_error.png', 'table1.json'], {'adam', 'sip'}),
    'synthetic2d': (['--steps', '2', '--xis', '1', '--phis', '0'], ['sweep.csv', 'fig5de.png'],
                    {'sgd', 'adam', 'adagrad', 'adadelta', 'rmsprop', 'sip'}),
}


# the library-level scripts a PhiFlow user copies from (no experiment, no --gui): arguments and the CSV's methods
LIBRARY = {
    'hig_fields': (['--steps', '3'], {'hig', 'adam'}),
    'sip_heat': (['--steps', '2', '--resolution', '16'], {'sip', 'adam'}),
    'oscillators_conditions': (['--epochs', '1', '--samples', '64'], {'hig'}),
    'hig_fields_jax': (['--steps', '3'], {'hig', 'adam'}),         # the same on PhiFlow's JAX backend
    'sip_heat_jax': (['--steps', '2', '--resolution', '16'], {'sip', 'adam'}),
}
LINES = {'oscillators_conditions': 50}  # the port of the PBDL book's notebook (issue: at most 50 lines)


FLOW_IMPORTS = ('phi.torch.flow', 'phi.jax.flow')
"""PhiFlow's star-import modules: ``from phi.jax.flow import *`` makes JAX PhiML's default backend only when the
module is first imported, and conftest.py restores the default backend after every test."""


def load(name):
    """The demo script ``demos/<name>.py`` as a module (its ``__main__`` block does not run), imported as a fresh
    ``python demos/<name>.py`` would: PhiFlow's star-import modules are imported again, so that the backend the
    script names becomes the default (else a JAX demo run after another test would train torch networks)."""
    for module in FLOW_IMPORTS:
        sys.modules.pop(module, None)
    spec = importlib.util.spec_from_file_location(f'demo_{name}', os.path.join(DEMOS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_demo_has_a_case():
    scripts = {f[:-3] for f in os.listdir(DEMOS) if f.endswith('.py') and not f.startswith('_')}
    assert scripts - UNTESTED == set(CASES) | set(LIBRARY)


@pytest.mark.parametrize('name', list(LIBRARY))
def test_library_demo_is_short_runs_and_writes_its_losses(name, tmp_path):
    """Each is a plain PhiFlow script of at most 60 lines that prints and writes its loss curve."""
    with open(os.path.join(DEMOS, f'{name}.py')) as f:
        source = f.read()
    assert len(source.splitlines()) <= LINES.get(name, 60)
    argv, methods = LIBRARY[name]
    load(name).main(argv + ['--out', str(tmp_path)])
    from phiml.backend import default_backend
    for library in ('torch', 'jax'):  # it ran on the backend it imports, whatever ran before it
        if f'from phi.{library}.flow import *' in source:
            assert default_backend().name == library
    with open(tmp_path / 'loss.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert {r['method'] for r in rows} == methods
    assert all(float(v) == float(v) for r in rows for k, v in r.items() if k != 'method' and v)  # not NaN
    assert all(r['step'] for r in rows)


@pytest.mark.parametrize('name', list(CASES))
def test_demo_runs_and_writes_its_files(name, tmp_path):
    argv, files, methods = CASES[name]
    out = tmp_path / name
    load(name).main(argv + ['--out', str(out)])
    for file in files:
        path = out / file
        assert path.is_file(), f"{name} did not write {file}"
        assert path.stat().st_size > 0, f"{name} wrote an empty {file}"
        if file.endswith('.csv'):
            with open(path, newline='') as f:
                rows = list(csv.DictReader(f))
            assert rows, f"{file} has a header but no rows"
            if file == files[0]:
                assert {r['method'] for r in rows} == methods
        if file.endswith('.json'):
            with open(path) as f:
                assert json.load(f)


@pytest.mark.parametrize('name', list(CASES))
def test_gui_opens_the_dashboard_on_the_demo_experiment(name, monkeypatch):
    import phi_hig.gui
    opened = []
    monkeypatch.setattr(phi_hig.gui, 'launch', opened.append)
    with pytest.raises(SystemExit) as exit_:
        load(name).main(['--gui'])
    assert exit_.value.code == 0
    assert opened == [name]


def test_fluid_table_from_a_runner_checkpoint(tmp_path):
    """`--table-from` measures table 1 for the network saved by the runner, without training."""
    import phi_hig
    from phi_hig import experiments
    run = tmp_path / 'run'
    phi_hig.train(experiments.get('fluid', preset='test'), 'sip', steps=1, out=str(run), checkpoint_every=1,
                  progress=False)
    out = tmp_path / 'table'
    table = load('fluid').main(['--preset', 'test', '--table-examples', '2', '--out', str(out),
                                '--table-from', str(run / 'checkpoint_sip.pt')])
    with open(out / 'table1.json') as f:
        assert json.load(f) == json.loads(json.dumps(table))
    assert len(table['examples']) == 2 and table['metric'].startswith('MAE of v0')
