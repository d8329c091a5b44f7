"""The module paths of the release before the packages (`phi_hig._moved`): each still imports, warns once with a
DeprecationWarning naming the new path, and gives the very module that holds the code now."""
import importlib
import subprocess
import sys
import warnings

import pytest

from phi_hig import _moved


@pytest.mark.parametrize('old, new', sorted(_moved.MOVED.items()))
def test_an_old_module_path_imports_the_new_module_with_a_deprecation_warning(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new and module.__spec__.name == new  # the module keeps its own identity
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning) and old in str(w.message)]
    assert messages == [f"{old} moved to {new}; the old path is deprecated and will be removed in the next release"]


def test_the_old_paths_the_readme_named_work_from_a_fresh_interpreter():
    """`from phi_hig.spec import run_spec` and friends in a new process (nothing imported before), warning at the
    line of the user's import."""
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    from phi_hig.spec import run_spec\nexcept DeprecationWarning as w:\n    print('warned', w)\n"
            "warnings.simplefilter('ignore')\n"
            "from phi_hig.optimizer import HIG, hig_step\nfrom phi_hig.methods import hyperparameter_spec\n"
            "from phi_hig.distributed import DistributedJacobian\nimport phi_hig.runner, phi_hig.hig, phi_hig.inverses\n"
            "print(HIG.__module__, phi_hig.runner.__name__, phi_hig.inverses.__name__)\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'warned phi_hig.spec moved to phi_hig.training.spec' in out.stdout
    assert 'phi_hig.hig.optimizer phi_hig.training.runner phi_hig.sip.inverses' in out.stdout


def test_public_aliases_do_not_warn_and_other_names_are_not_invented():
    with warnings.catch_warnings():
        warnings.simplefilter('error', DeprecationWarning)
        import phi_hig.inverses
        assert phi_hig.inverses is importlib.import_module('phi_hig.sip.inverses')
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module('phi_hig.no_such_module')


def test_importlib_invalidate_caches_works_with_the_finder_installed():
    """The finder sits on ``sys.meta_path`` as a class: ``importlib.invalidate_caches()`` (pytest's
    ``monkeypatch.syspath_prepend`` calls it) must not fail on it."""
    import sys
    import phi_hig._moved
    assert phi_hig._moved.MovedFinder in sys.meta_path
    importlib.invalidate_caches()
