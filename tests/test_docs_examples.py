"""The documentation rules of the house, checked on the source: every public name of phi_hig carries a docstring,
every function and class of ``phi_hig.__all__`` a runnable example, and every module's examples (doctests) pass.

*Public* is the rule of Python's own tools: a module, function, class or method whose name has no leading
underscore, in a module whose path has none (``__init__`` and ``__main__`` aside); a module-level name counts when
it is defined in that module (re-exports are documented where they are defined) and, where the module declares
``__all__``, listed there. The source is read with `ast` (scripts/import_graph.py walks it), so that the command
lines' ``__main__`` modules are checked without running them.
"""
import ast
import doctest
import importlib
import importlib.util
import inspect
import io
import os
import warnings

import pytest

import phi_hig

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location('import_graph', os.path.join(HERE, '..', 'scripts', 'import_graph.py'))
graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph)
ROOT = graph.default_root()
MODULES = list(graph.modules(ROOT))  # (dotted name, is a package __init__, parsed tree)


def _is_public(name: str) -> bool:
    return not any(part.startswith('_') and part != '__main__' for part in name.split('.'))


def _all_of(name: str, tree: ast.Module):
    """The module's ``__all__`` (None without one): read from the source when it is a literal list, else from the
    imported module (never for a ``__main__`` module, which would run)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '__all__' for t in node.targets):
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:
                assert not name.endswith('__main__'), f"{name}: a computed __all__ in a __main__ module"
                return set(importlib.import_module(name).__all__)
    return None


def _definitions(body):
    return [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def _undocumented(prefix: str, node) -> list:
    """``prefix.name`` of ``node`` when it has no docstring, and of its public methods and nested classes."""
    missing = [] if ast.get_docstring(node) else [f'{prefix}.{node.name}']
    if isinstance(node, ast.ClassDef):
        for member in _definitions(node.body):
            if not member.name.startswith('_'):
                missing += _undocumented(f'{prefix}.{node.name}', member)
    return missing


def undocumented_names(modules=MODULES) -> list:
    """Every public module, function, class and method of phi_hig without a docstring, by dotted name."""
    missing = []
    for name, _, tree in modules:
        if not _is_public(name):
            continue
        if not ast.get_docstring(tree):
            missing.append(name)
        listed = _all_of(name, tree)
        for node in _definitions(tree.body):
            if not node.name.startswith('_') and (listed is None or node.name in listed):
                missing += _undocumented(name, node)
    return missing


def test_every_public_name_has_a_docstring():
    missing = undocumented_names()
    assert not missing, f"{len(missing)} public names without a docstring:\n" + '\n'.join(missing)


def test_the_docstring_rule_catches_what_it_must():
    """The rule can fail: a bare public function, method and module are found; private names, re-exports and names
    left out of ``__all__`` are not public."""
    source = '''
"""A module."""
from os import path
__all__ = ['Public', 'bare']
def bare(): pass
def hidden(): pass
def _private(): pass
class Public:
    """Documented."""
    def method(self): pass
    def _helper(self): pass
    @property
    def value(self): return 1
'''
    found = undocumented_names([('phi_hig.example', False, ast.parse(source)),
                                ('phi_hig.bare', False, ast.parse('x = 1')),
                                ('phi_hig._private', False, ast.parse('def f(): pass'))])
    assert found == ['phi_hig.example.bare', 'phi_hig.example.Public.method', 'phi_hig.example.Public.value',
                     'phi_hig.bare']


def _top_level_api() -> dict:
    """The functions and classes of ``phi_hig.__all__`` (modules and the version string aside)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        values = {name: getattr(phi_hig, name) for name in phi_hig.__all__}
    return {name: v for name, v in values.items() if inspect.isclass(v) or inspect.isfunction(v)}


def test_every_function_and_class_of_the_package_carries_an_example():
    api = _top_level_api()
    assert {'HIG', 'hig_step', 'half_inverse', 'sip_step', 'InvalidInputError'} <= set(api)
    without = sorted(name for name, value in api.items() if '>>>' not in (value.__doc__ or ''))
    assert not without, f"functions and classes of phi_hig.__all__ without a doctest example: {without}"


DOCTEST_MODULES = [name for name, _, _ in MODULES if not name.endswith('__main__')]  # importing one would run it


@pytest.mark.parametrize('name', DOCTEST_MODULES)
def test_the_examples_in_the_docstrings_run(name, one_thread):
    """Every doctest of the module passes (outputs are printed so that they do not depend on floating-point
    details: rounded, formatted or compared)."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, report.getvalue()
