"""The documentation: the site builds strictly with executed tutorials, names every public name, and stays in sync.

One full build (tutorials at the tiny size, ``PHI_HIG_TUTORIAL_SIZE=tiny``) checks that nothing drifted: a renamed
function, a docstring that no longer parses, a tutorial that no longer runs. Three builds of a one-page site inject
the faults the build must refuse — an unresolved reference to a phi_hig name, a public name without a docstring, a
notebook cell that raises — and a test checks the README's copy of the reproduction table. Skipped (saying why)
only without the docs extra, which scripts/setup.sh installs.
"""
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs')
TUTORIALS = os.path.join(DOCS, 'tutorials')

_spec = importlib.util.spec_from_file_location('reproduction', os.path.join(ROOT, 'scripts', 'reproduction.py'))
reproduction = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduction)


def _require_docs_extra():
    for module in ('sphinx', 'myst_nb', 'pydata_sphinx_theme', 'ipykernel'):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' (scripts/setup.sh does)")


def build(source: str, out: str, tiny: bool = True) -> subprocess.CompletedProcess:
    """``sphinx-build`` as scripts/docs.sh runs it (fresh environment, warnings are errors), in a subprocess."""
    env = dict(os.environ, PHI_HIG_TUTORIAL_SIZE='tiny' if tiny else 'full',
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, '-m', 'sphinx', '-E', '-W', '--keep-going', '-q', '-b', 'html',
                           '-d', os.path.join(out, 'doctrees'), source, os.path.join(out, 'html')],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_tutorials_are_stored_without_outputs():
    names = sorted(f for f in os.listdir(TUTORIALS) if f.endswith('.ipynb'))
    assert names == ['hig_phiflow.ipynb', 'sip_inverse.ipynb']
    for name in names:
        with open(os.path.join(TUTORIALS, name), encoding='utf-8') as f:
            cells = json.load(f)['cells']
        code = [c for c in cells if c['cell_type'] == 'code']
        assert code, name
        for cell in code:
            assert cell['outputs'] == [] and cell['execution_count'] is None, f"{name}: a cell is stored with output"


def test_readme_table_is_the_rendered_one():
    """README.md's paper-vs-here table is rendered from docs/reproduction.json and the committed results
    (`python scripts/reproduction.py readme` rewrites it)."""
    assert reproduction.update_readme(check=True), "README.md's table differs: python scripts/reproduction.py readme"


def test_reproduction_values_come_from_the_result_files(tmp_path):
    """A row's numbers are read from its result file: the last evaluation, a step's, a ratio, a reduction."""
    (tmp_path / 'r.csv').write_text('method,step,wall_time,test_loss\nadam,0,0,4\nadam,10,1,2\nsip,0,0,4\nsip,10,1,0.5\n')
    row = dict(id='r', here='{a} {b} {c} {d}', values=dict(
        a=dict(method='adam', column='test_loss', fmt='.2g'),
        b=dict(method='sip', column='test_loss', step=0, fmt='.2g'),
        c=dict(ratio=[dict(method='adam', column='test_loss'), dict(method='sip', column='test_loss')], fmt='.2g'),
        d=dict(reduction=[dict(method='sip', column='test_loss'), dict(method='adam', column='test_loss')],
               fmt='.0%')))
    assert reproduction.here(row, str(tmp_path)) == '2 4 4 75%'


def _public_names(module_name):
    sys.path.insert(0, DOCS)
    try:
        import phi_hig_sphinx
    finally:
        sys.path.pop(0)
    return [f'{module_name}.{n}' for n in phi_hig_sphinx.public_names(importlib.import_module(module_name))]


def test_the_site_builds(tmp_path):
    """The whole site, strictly, with both tutorials executed (tiny size): every public name of phi_hig, of
    phi_hig.physics.poisson / heat / fluid and of phi_hig.inverses is on its API page, both tutorial pages show a
    figure and printed losses, and the command-line page holds the help of every subcommand."""
    _require_docs_extra()
    result = build(DOCS, str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    html = os.path.join(str(tmp_path), 'html')

    def page(name):
        with open(os.path.join(html, name), encoding='utf-8') as f:
            return f.read()

    for name, modules in {'api/phi_hig.html': ['phi_hig'], 'api/inverses.html': ['phi_hig.inverses'],
                          'api/physics.html': ['phi_hig.physics.poisson', 'phi_hig.physics.heat',
                                               'phi_hig.physics.fluid']}.items():
        ids = set(re.findall(r'id="([\w.]+)"', page(name)))
        names = [n for m in modules for n in _public_names(m)]
        assert names and not [n for n in names if n not in ids and n.split('.')[-1] not in
                              ('physics', 'sip', 'inverses', 'experiments', 'report', 'training')], name
    for name, printed in {'tutorials/hig_phiflow.html': 'final held-out loss',
                          'tutorials/sip_inverse.html': 'final held-out'}.items():
        text = page(name)
        assert printed in text and '<img' in text and 'Traceback' not in text, name
    cli = page('cli.html')
    for command in ('list', 'run', 'sweep', 'report', 'gui', 'bench'):
        assert f'python -m phi_hig {command}' in cli
    assert '--checkpoint-every' in cli and '--baseline' in cli


ONE_PAGE_CONF = '''
import sys
sys.path.insert(0, {docs!r})
from conf import *          # the site's own settings: extensions, strictness, notebook execution
sys.path.insert(0, {here!r})
phi_hig_api = {api}
phi_hig_cli = None
phi_hig_reproduction = None
exclude_patterns = ['_build']
'''


def one_page_site(tmp_path, page: str, api: dict = None, files: dict = None) -> str:
    source = tmp_path / 'src'
    source.mkdir()
    (source / 'conf.py').write_text(ONE_PAGE_CONF.format(docs=DOCS, here=str(source), api=api or {}))
    (source / 'index.md').write_text(textwrap.dedent(page))
    for name, text in (files or {}).items():
        (source / name).write_text(textwrap.dedent(text))
    return str(source)


def test_an_unresolved_reference_stops_the_build(tmp_path):
    _require_docs_extra()
    source = one_page_site(tmp_path, '# Page\n\nSee {py:func}`phi_hig.no_such_function`.\n')
    result = build(source, str(tmp_path))
    assert result.returncode != 0
    assert "unresolved reference to 'phi_hig.no_such_function'" in result.stderr


def test_a_public_name_without_docstring_stops_the_build(tmp_path):
    _require_docs_extra()
    module = '''
        """A module of the injected fault."""
        __all__ = ['documented', 'Documented', 'undocumented']

        def documented():
            """Has one."""

        class Documented:
            """Has one."""
            def method(self):
                pass

        def undocumented():
            pass
        '''
    source = one_page_site(tmp_path, '# Page\n\n```{toctree}\napi\n```\n',
                           api={'api': ('fake', ['fake_api_module'], '')},
                           files={'api.md': '<!-- api -->\n', 'fake_api_module.py': module})
    result = build(source, str(tmp_path))
    assert result.returncode != 0
    named = re.findall(r'public name without a docstring: ([\w.]+)', result.stderr)
    assert sorted(named) == ['fake_api_module.Documented.method', 'fake_api_module.undocumented'], result.stderr


def test_a_failing_notebook_cell_stops_the_build(tmp_path):
    _require_docs_extra()
    import nbformat
    notebook = nbformat.v4.new_notebook()
    notebook.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    notebook.cells = [nbformat.v4.new_markdown_cell('# Notebook'),
                      nbformat.v4.new_code_cell("raise RuntimeError('the injected failure')")]
    source = one_page_site(tmp_path, '# Page\n\n```{toctree}\nnotebook\n```\n')
    nbformat.write(notebook, os.path.join(source, 'notebook.ipynb'))
    result = build(source, str(tmp_path))
    assert result.returncode != 0
    assert 'the injected failure' in result.stdout + result.stderr
