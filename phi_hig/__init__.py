"""phi_hig: physics-aware training for PhiFlow.

Half-inverse gradients (HIG) update a network with a truncated, half-inverted per-sample Jacobian of
network and physics; scale-invariant physics (SIP) training replaces the physics gradient with the update
of an inverse solver. Importing this package has no side effects: it switches no backend and prints
nothing. Submodules that need PhiFlow (``physics``, ``sip``, ``inverses``, ``experiments``, ``train``) and
``report`` (results files and figures) load on first use.
"""

__version__ = "0.1.0"

from .errors import (PhiHigError, InvalidInputError, JacobianTooLargeError, NonFiniteStepError,
                     HIGUsageError)
from .hig import half_inverse
from .optimizer import HIG, hig_step
from .jacobian import per_sample_jacobian, gram, physics_jacobian

_LAZY = {
    'physics': ('.physics', None),
    'sip': ('.sip', None),
    'inverses': ('.inverses', None),
    'experiments': ('.experiments', None),
    'report': ('.report', None),
    'train': ('.runner', 'train'),
    'RunControl': ('.runner', 'RunControl'),
    'RunSpec': ('.spec', 'RunSpec'),
    'run_spec': ('.spec', 'run_spec'),
    'sip_loss': ('.sip', 'sip_loss'),
    'sip_step': ('.sip', 'sip_step'),
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
           'NonFiniteStepError', 'HIGUsageError', 'physics', 'sip', 'inverses', 'sip_loss', 'sip_step',
           'experiments', 'report', 'train', 'RunControl', 'RunSpec', 'run_spec']
