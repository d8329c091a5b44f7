"""phi_hig: physics-aware training for PhiFlow.

Half-inverse gradients (HIG) update a network with a truncated, half-inverted per-sample Jacobian of
network and physics; scale-invariant physics (SIP) training replaces the physics gradient with the update
of an inverse solver. Importing this package has no side effects: it switches no backend and prints
nothing (it registers the finder that serves the module paths of earlier releases, `phi_hig._moved`).
Submodules that need PhiFlow (``physics``, ``sip``, ``inverses``, ``experiments``, ``training``) and ``report``
(results files and figures) load on first use.

The packages, grouped by who they serve: `phi_hig.hig` (the HIG engine), `phi_hig.sip` (SIP training and generic
inverses), `phi_hig.physics` (forward and inverse solvers per PDE), `phi_hig.experiments` (the papers'
experiments as data), `phi_hig.training` (methods, run specification, runner, checkpoints), `phi_hig.report`
(metrics files, figures, reports), `phi_hig.gui` (the dashboard) and `phi_hig.bench` (the HIG step benchmark),
over a shared base of typed errors, argument checks, backend and file helpers and the papers' networks.
"""

from ._version import __version__

from .errors import (PhiHigError, InvalidInputError, JacobianTooLargeError, NonFiniteStepError,
                     HIGUsageError, RunFileError)
from .hig import HIG, hig_step, half_inverse, per_sample_jacobian, gram, physics_jacobian
from . import _moved

_moved.install()

_LAZY = {
    'physics': ('.physics', None),
    'sip': ('.sip', None),
    'inverses': ('.sip.inverses', None),
    'training': ('.training', None),
    'experiments': ('.experiments', None),
    'report': ('.report', None),
    'train': ('.training.runner', 'train'),
    'RunControl': ('.training.runner', 'RunControl'),
    'RunSpec': ('.training.spec', 'RunSpec'),
    'run_spec': ('.training.spec', 'run_spec'),
    'sip_loss': ('.sip.step', 'sip_loss'),
    'sip_step': ('.sip.step', 'sip_step'),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name, __name__)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phi_hig' has no attribute {name!r}")


__all__ = ['__version__', 'half_inverse', 'HIG', 'hig_step', 'per_sample_jacobian', 'gram',
           'physics_jacobian', 'PhiHigError', 'InvalidInputError', 'JacobianTooLargeError',
           'NonFiniteStepError', 'HIGUsageError', 'RunFileError', 'physics', 'sip', 'inverses', 'sip_loss', 'sip_step',
           'experiments', 'report', 'training', 'train', 'RunControl', 'RunSpec', 'run_spec']
