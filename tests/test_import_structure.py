"""The import structure of phi_hig, read from the source with `ast`: no experiment module imports another
experiment, and no phi_hig module imports an underscore (private) name of another phi_hig module."""
import ast
import os

from phi_hig.experiments import NAMES

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'phi_hig')



def _modules():
    """(module name, is package, parsed tree) of every source file of phi_hig."""
    for folder, _, files in os.walk(ROOT):
        for file in sorted(files):
            if file.endswith('.py'):
                path = os.path.join(folder, file)
                parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
                package = parts[-1] == '__init__'
                name = '.'.join(parts[:-1] if package else parts)
                with open(path, encoding='utf-8') as f:
                    yield name, package, ast.parse(f.read(), path)


def _imports(name, package, tree):
    """(imported module, imported name or None) for every import statement, relative ones resolved."""
    base = name.split('.') if package else name.split('.')[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[:len(base) - node.level + 1]
                module = '.'.join(stem + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                yield module, alias.name


def test_the_walk_finds_the_package():
    names = {name for name, _, _ in _modules()}
    assert {'phi_hig', 'phi_hig.sip', 'phi_hig.experiments.heat', 'phi_hig.physics.grids'} <= names


def test_no_experiment_imports_another_experiment():
    experiment_modules = {f'phi_hig.experiments.{n}' for n in NAMES}
    found = []
    for name, package, tree in _modules():
        if name not in experiment_modules:
            continue
        for module, imported in _imports(name, package, tree):
            targets = {module} | ({f'{module}.{imported}'} if imported else set())
            for target in targets & experiment_modules - {name}:
                found.append(f'{name} imports {target}')
    assert not found, found


def test_no_module_imports_a_private_name_of_another_phi_hig_module():
    found = set()
    for name, package, tree in _modules():
        for module, imported in _imports(name, package, tree):
            if not module or not module.startswith('phi_hig') or module == name:
                continue
            parts = module.split('.')
            private_module = next((i for i, p in enumerate(parts) if p.startswith('_') and not p.startswith('__')), None)
            if private_module is not None:  # a private module may be used by its own package only
                owner = '.'.join(parts[:private_module])
                if not (name == owner or name.startswith(owner + '.')):
                    found.add((name, module, imported))
            if imported and imported.startswith('_') and not imported.startswith('__'):
                found.add((name, module, imported))
    assert not found, sorted(found)
