"""Module paths of phi_hig before it was grouped into the packages `hig`, `sip`, `training` and `report`.

``import phi_hig.optimizer`` and ``from phi_hig.spec import run_spec`` keep working for one release: the finder
below answers each old path with the module that now holds its code, after a `DeprecationWarning` naming the new
path. It answers only the names in `MOVED` (nothing else under ``phi_hig`` and nothing outside it) and is
installed by ``import phi_hig``. `ALIASES` are permanent public paths (``phi_hig.inverses``), without a warning.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    'phi_hig.optimizer': 'phi_hig.hig.optimizer',
    'phi_hig.jacobian': 'phi_hig.hig.jacobian',
    'phi_hig.factors': 'phi_hig.hig.factors',
    'phi_hig.distributed': 'phi_hig.hig.distributed',
    'phi_hig.native': 'phi_hig.convert',
    'phi_hig.parallel': 'phi_hig.processes',
    'phi_hig.methods': 'phi_hig.training.methods',
    'phi_hig.spec': 'phi_hig.training.spec',
    'phi_hig.runner': 'phi_hig.training.runner',
    'phi_hig.checkpoint': 'phi_hig.training.checkpoint',
    'phi_hig.report_figures': 'phi_hig.report.figures',
    'phi_hig.tables': 'phi_hig.report.tables',
}
"""Old module path -> the module that holds its code now (deprecated paths, removed in the next release)."""
ALIASES = {'phi_hig.inverses': 'phi_hig.sip.inverses'}
"""Public module paths that name a module living elsewhere (kept, no warning)."""


class _Loader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        if self.old in MOVED:
            warnings.warn(f"{self.old} moved to {self.new}; the old path is deprecated and will be removed in the next "
                          f"release", DeprecationWarning, stacklevel=2)  # warnings skips the import machinery's frames
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the import system set the old path's spec on it: the module keeps its own


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of `MOVED` and the aliases of `ALIASES` (and nothing else)."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        new = MOVED.get(fullname) or ALIASES.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Loader(fullname, new))

    @classmethod
    def invalidate_caches(cls):
        """Nothing to invalidate (`importlib.invalidate_caches` calls it on the class, which sits on the path)."""


def install() -> None:
    """Put `MovedFinder` first on ``sys.meta_path`` (once): it answers only its own names, and before any other
    finder, so that a stale file of an old path (e.g. left in an editable checkout) is never imported instead."""
    if MovedFinder not in sys.meta_path:
        sys.meta_path.insert(0, MovedFinder)
