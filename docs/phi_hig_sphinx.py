"""Sphinx extension of the phi_hig site: the pages generated at build time, the docstring rule, strict references.

Configured in conf.py (each setting optional, so a minimal configuration of one page can use this extension):

* ``phi_hig_api = {docname: (title, [module, ...], intro)}``: the page ``docname`` (its source holds only the
  marker ``<!-- api -->``) becomes the reference of the modules' public names (``__all__``, else every name not
  starting with ``_`` defined in the module), one autodoc entry per name, so it names every public name and
  cannot drift. Before anything is read, every public name of these modules, and every public method of a public
  class, must have a docstring of its own; else the build stops, naming each one.
* ``phi_hig_cli = 'module:function'``: the function returning the command line's argparse parser. The marker
  ``<!-- cli -->`` becomes the help of the command and of each subcommand, captured from the program itself
  (``main([COMMAND, '--help'])``), so the page cannot drift from the parser.
* ``phi_hig_reproduction = 'reproduction.json'``: the data file of the paper-vs-here table. The marker
  ``<!-- reproduction -->`` becomes the table and one section per row with its figure, drawn at build time from
  the row's committed result file (scripts/reproduction.py).

A reference to a ``phi_hig`` name that does not resolve is a warning (and the build is run with ``-W``), while
references to other libraries' names (``torch.Tensor`` in a signature) stay plain text: no inventory of theirs is
fetched.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import os
import re
import sys
import typing

from sphinx.errors import ExtensionError
from sphinx.util import logging

log = logging.getLogger(__name__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELP_COLUMNS = '100'
OWN_PREFIXES = ('phi_hig',)


# ---------------------------------------------------------------------------------------------- public names

def public_names(module) -> list:
    """The public names of ``module``: its ``__all__``, else the names it defines that do not start with ``_``
    (imported names and submodules excluded). Dunder names (``__version__``) are not documented."""
    names = getattr(module, '__all__', None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith('_') and not inspect.ismodule(v)
                 and getattr(v, '__module__', module.__name__) == module.__name__]
    return [n for n in names if not (n.startswith('__') and n.endswith('__'))]


def _own_doc(obj) -> str:
    doc = obj.__dict__.get('__doc__') if inspect.isclass(obj) else getattr(obj, '__doc__', None)
    return (doc or '').strip()


def _method_doc(value) -> str:
    function = value.fget if isinstance(value, property) else getattr(value, '__func__', value)
    return (function.__doc__ or '').strip()


def missing_docstrings(modules: list) -> list:
    """``['module.name', ...]`` for every public module, function and class of ``modules`` and every public method
    of such a class (properties included) without a docstring of its own. Constants are shown with their value
    and the docstring below their assignment where they have one."""
    missing = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in public_names(module):
            obj, public = getattr(module, name), f'{module_name}.{name}'
            if (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj)) and not _own_doc(obj):
                missing.append(public)
            if inspect.isclass(obj):
                missing += [f'{public}.{member}' for member, value in vars(obj).items()
                            if not member.startswith('_') and (inspect.isfunction(value) or isinstance(
                                value, (property, staticmethod, classmethod))) and not _method_doc(value)]
    return missing


def missing_docstrings_of_types(modules: list) -> list:
    """`missing_docstrings` for the classes of `referenced_types` (they are documented too)."""
    missing = []
    for path in referenced_types(modules):
        module_name, _, name = path.rpartition('.')
        cls = getattr(importlib.import_module(module_name), name)
        if not _own_doc(cls):
            missing.append(path)
        missing += [f'{path}.{member}' for member, value in vars(cls).items()
                    if not member.startswith('_') and (inspect.isfunction(value) or isinstance(
                        value, (property, staticmethod, classmethod))) and not _method_doc(value)]
    return missing


def _directive(module, name: str) -> str:
    obj = getattr(module, name)
    if inspect.ismodule(obj):
        return 'automodule'
    if inspect.isclass(obj):
        return 'autoexception' if issubclass(obj, BaseException) else 'autoclass'
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return 'autofunction'
    return 'autodata'


def referenced_types(modules: list) -> list:
    """The phi_hig classes that the signatures of the public names of ``modules`` name (a returned
    ``HIGStepInfo``, a parameter's ``Experiment``) without being public names there themselves, and in turn the
    classes their signatures name, by dotted path."""
    documented = [getattr(importlib.import_module(m), n) for m in modules
                  for n in public_names(importlib.import_module(m))]
    found, queue = {}, list(documented)
    while queue:
        obj = queue.pop(0)
        for function in _signatures(obj):
            try:
                hints = typing.get_type_hints(function)
            except Exception:  # an annotation naming what the module imports only for type checking
                continue
            for cls in (c for hint in hints.values() for c in _classes_in(hint)):
                if cls.__module__.split('.')[0] in OWN_PREFIXES and cls not in found and cls not in documented:
                    found[cls] = f'{cls.__module__}.{cls.__qualname__}'
                    queue.append(cls)
    return list(found.values())


def _signatures(obj) -> list:
    """The functions whose annotations document ``obj``: itself, or a class's constructor, public methods and
    properties."""
    if inspect.isfunction(obj):
        return [obj]
    if not inspect.isclass(obj):
        return []
    return [obj.__init__] + [v.fget if isinstance(v, property) else v for k, v in vars(obj).items()
                             if (inspect.isfunction(v) or isinstance(v, property)) and not k.startswith('_')]


def _classes_in(hint) -> list:
    if inspect.isclass(hint):
        return [hint]
    return [c for arg in typing.get_args(hint) for c in _classes_in(arg)]


def api_markdown(title: str, modules: list, intro: str = '', own_pages: set = frozenset()) -> str:
    """One API page (MyST): per module its docstring, then one autodoc entry per public name. A public name that is
    a module shows its docstring; its members are documented where it has a page of its own (``own_pages``)."""
    out = [f'# {title}', '', intro, '']
    for module_name in modules:
        module = importlib.import_module(module_name)
        if len(modules) > 1:
            out += [f'## `{module_name}`', '']
        rst = [f'.. automodule:: {module_name}', '   :no-members:', '']
        for name in public_names(module):
            kind, path = _directive(module, name), f'{module_name}.{name}'
            if kind == 'automodule' and path in own_pages:
                rst += [f'.. automodule:: {path}', '   :no-members:', '   :no-index:', '',
                        f'   Reference: :py:mod:`{path}`.', '']
            elif kind == 'automodule':
                rst += [f'.. automodule:: {path}', '   :no-members:', '']
            else:
                rst += [f'.. {kind}:: {path}', '']
        out += ['```{eval-rst}', *rst, '```', '']
    extra = referenced_types(modules)
    if extra:
        out += ['## Types named in these signatures', '', '```{eval-rst}',
                *[line for path in extra for line in (f'.. autoclass:: {path}', '   :members:', '')], '```', '']
    return '\n'.join(out)


# ---------------------------------------------------------------------------------------------- command line

def cli_markdown(spec: str) -> str:
    """The help of the command line and of each subcommand, as the program prints it."""
    module_name, function = spec.split(':')
    module = importlib.import_module(module_name)
    parser = getattr(module, function)()
    commands = [c for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                for c in action.choices]
    old = os.environ.get('COLUMNS')
    os.environ['COLUMNS'] = HELP_COLUMNS  # argparse wraps at the terminal's width: the page's is fixed
    try:
        parts = [('', _help(module, []))] + [(c, _help(module, [c])) for c in commands]
    finally:
        if old is None:
            del os.environ['COLUMNS']
        else:
            os.environ['COLUMNS'] = old
    out = []
    for command, text in parts:
        if command:
            out += [f'## python -m phi_hig {command}', '']
        out += ['```text', text.rstrip(), '```', '']
    return '\n'.join(out)


def _help(module, argv: list) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main(argv + ['--help'])
    if code != 0 or not out.getvalue().strip():
        raise ExtensionError(f"`python -m phi_hig {' '.join(argv + ['--help'])}` exited {code} without help text: "
                             f"{err.getvalue().strip()}")
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- reproduction

def _reproduction_module():
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    try:
        return importlib.import_module('reproduction')
    finally:
        sys.path.pop(0)


def reproduction_markdown(data: str, figures: str, figure_ref: str) -> str:
    """The table and one section per row (claim, measurement, command, figure, when and where it ran); the figures
    are drawn into ``figures`` and referenced as ``figure_ref/<id>.png``."""
    rep = _reproduction_module()
    rows = []
    for row in rep.rows(data):
        try:
            rep.here(row)
            rows.append(row)
        except (FileNotFoundError, KeyError, ValueError) as err:
            log.warning(f'reproduction table: {err}', type='phi_hig', subtype='reproduction')
    out = [rep.markdown_table(rows), '']
    os.makedirs(figures, exist_ok=True)
    for row in rows:
        out += [f"## {row['experiment']}", '', f"**Paper** ({row['source']}): {row['paper']}.", '',
                f"**Here:** {rep.here(row)}.", '', '```bash', row['command'], '```', '']
        if row.get('demo'):
            out += [f"The demo with the paper's own figure: `{row['demo']}`.", '']
        path = rep.result_path(row)
        if path is None:
            out += [f"*{row['note'][0].upper() + row['note'][1:]}.*", '']
            continue
        rep.draw_figure(row, os.path.join(figures, f"{row['id']}.png"))
        with open(path[:-len('.csv')] + '.json', encoding='utf-8') as f:
            meta = json.load(f)
        steps = ', '.join(f"{m} {f['steps']} steps at batch {f['batch_size']}" for m, f in meta['final'].items())
        known = [f"load average {meta['load_average_before'][0]:g} when it started"] \
            if meta.get('load_average_before') else []  # a run made apart (reproduction.py keep) may not say
        known += [f"{meta['seconds']} s in all"] if meta.get('seconds') is not None else []
        out += [f"![{row['experiment']}]({figure_ref}/{row['id']}.png)", '',
                f"*Run on {meta['date']} ({', '.join([meta['machine']] + known)}): {steps}. The figure and the "
                f"numbers above come from `benchmarks/results/reproduction/{row['id']}.csv`.*", '']
    return '\n'.join(out)


# ---------------------------------------------------------------------------------------------- docstrings

_CODE = re.compile(r'(``.+?``|`[^`]+`)')


def plain_bars(lines: list) -> list:
    """The docstring with every ``|`` of its prose escaped: the docstrings write sizes as ``|θ|`` (Markdown
    reading), which reStructuredText would take for substitutions. Code spans, doctest lines and literal blocks
    (after a line ending in ``::``) keep theirs."""
    out, literal_indent = [], None
    for line in lines:
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        if literal_indent is not None and stripped and indent <= literal_indent:
            literal_indent = None
        if literal_indent is None and not stripped.startswith(('>>>', '...')):
            line = ''.join(part if i % 2 else part.replace('|', r'\|') for i, part in enumerate(_CODE.split(line)))
        if stripped.endswith('::') and literal_indent is None:
            literal_indent = indent
        out.append(line)
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = plain_bars(lines)


# ---------------------------------------------------------------------------------------------- events

def _check_docstrings(app):
    modules = [m for _, mods, _ in app.config.phi_hig_api.values() for m in mods]
    for name in missing_docstrings(modules) + missing_docstrings_of_types(modules):
        log.warning(f'public name without a docstring: {name} (every public name must have one)',
                    type='phi_hig', subtype='docstring')


def _source_read(app, docname, source):
    text = source[0]
    if '<!-- api -->' in text and docname in app.config.phi_hig_api:
        title, modules, intro = app.config.phi_hig_api[docname]
        own_pages = {m for _, mods, _ in app.config.phi_hig_api.values() for m in mods}
        text = text.replace('<!-- api -->', api_markdown(title, modules, intro, own_pages))
    if '<!-- cli -->' in text:
        text = text.replace('<!-- cli -->', cli_markdown(app.config.phi_hig_cli))
    if '<!-- reproduction -->' in text:
        folder = os.path.dirname(docname)
        figures = os.path.join(app.srcdir, '_generated', 'figures')
        ref = os.path.relpath(figures, os.path.join(app.srcdir, folder)).replace(os.sep, '/')
        text = text.replace('<!-- reproduction -->', reproduction_markdown(
            os.path.join(app.srcdir, app.config.phi_hig_reproduction), figures, ref))
    source[0] = text


def _missing_reference(app, env, node, contnode):
    """A reference to one of our names that did not resolve is an error; others' names stay plain text."""
    target = node.get('reftarget', '')
    if node.get('refdomain') == 'py' and target.lstrip('~.').startswith(OWN_PREFIXES):
        log.warning(f"unresolved reference to {target!r} (py:{node.get('reftype')})", location=node,
                    type='ref', subtype='phi_hig')
    return None


def setup(app):
    app.add_config_value('phi_hig_api', {}, 'env')
    app.add_config_value('phi_hig_cli', None, 'env')
    app.add_config_value('phi_hig_reproduction', None, 'env')
    app.connect('builder-inited', _check_docstrings)
    app.connect('source-read', _source_read)
    app.connect('missing-reference', _missing_reference)
    app.connect('autodoc-process-docstring', _process_docstring, priority=400)  # before napoleon's
    return dict(parallel_read_safe=True, parallel_write_safe=True)
