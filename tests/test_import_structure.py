"""The import structure of phi_hig, read from the source with `ast` (scripts/import_graph.py, the project's tool
that draws the house): the layering rule of the packages, no import circle, no experiment module importing another
experiment, and no phi_hig module importing an underscore (private) name of another phi_hig module."""
import importlib.util
import os

from phi_hig.experiments import NAMES

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location('import_graph', os.path.join(HERE, '..', 'scripts', 'import_graph.py'))
graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph)
ROOT = graph.default_root()


def _modules():
    return graph.modules(ROOT)


def _imports(name, package, tree):
    for module, imported, _ in graph.imports(name, package, tree):
        yield module, imported


def test_the_packages_keep_the_layering_rule_and_form_no_circle():
    """Each part imports only the parts below it (`graph.LAYERS`: hig and physics on the base, sip on hig, the
    experiments on physics and sip, training on the experiments, …), nothing imports the dashboard but the command
    line (lazily), and no rooms import each other round."""
    house = graph.describe(ROOT)
    assert house['violations'] == []
    assert house['circles'] == []
    assert house['upward'] == []
    assert {'hig', 'sip', 'training', 'report', 'physics', 'experiments', 'gui', 'bench'} <= set(house['rooms'])


def test_the_rule_catches_an_arrow_that_breaks_it():
    """The check itself can fail: an import of training from hig, and an eager import of the dashboard."""
    found = {'hig': {'training': [('phi_hig.hig.optimizer', True)]},
             'training': {'gui': [('phi_hig.training.runner', True)]},
             '__main__': {'gui': [('phi_hig.__main__', False)]}}
    assert len(graph.violations(found)) == 3
    assert graph.circles({'a': {'b'}, 'b': {'a'}, 'c': {'a'}}) == [['a', 'b']]
    assert graph.floors({'a': {'b'}, 'b': set(), 'c': {'a'}}) == {'a': 1, 'b': 0, 'c': 2}


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
