"""Scale-invariant physics (SIP) training: the proxy loss, the training step and generic inverse updates.

* `step`: `sip_loss` (½‖NN(y*) − stop_gradient(x̃)‖²), `l2_loss` and `sip_step` (Holl, Koltun & Thuerey 2022, §3.2);
* `inverses`: an experiment's inverse solver with its options (`Inverse`) and factories of generic inverse updates
  for batched torch functions (gradient descent, Newton, saddle-free Newton, Gauss–Newton, iterative).

The PDE-specific inverse solvers live with their physics in `phi_hig.physics`.
"""
from .loss import sip_loss, l2_loss, require_same_shape
from .step import sip_step, SIPStepResult
from . import inverses
from .inverses import Inverse

__all__ = ['sip_loss', 'l2_loss', 'sip_step', 'SIPStepResult', 'require_same_shape', 'inverses', 'Inverse']
