"""The HIG engine: half-inverse gradients, Gauss–Newton and GD steps through network + physics.

* `spectral`: the spectral core — frozen `HalfInverse` settings and `apply_half_inverse`, the one function that
  applies them to a Jacobian operator (path choice, cut-off, fallbacks); `half_inverse` for a given J.
* `jacobian` / `factors`: the stacked per-sample Jacobian of network + physics from one replicated pass, held as
  per-layer factors (`JacobianFactors`) so that J is never formed; `layers`: which layers are held as factors
  (parameters used elsewhere, e.g. tied weights, are not) and the refusal of batch norm, dropout and other random
  draws in training mode.
* `distributed`: the same operator across ``torch.distributed`` ranks (`DistributedJacobian`).
* `optimizer`: the `HIG` optimizer and `hig_step`, the training step users call.

Schnell, Holl & Thuerey 2022 (eqs. 5–7) define the update; this package's public names are re-exported by
`phi_hig`.
"""
from .spectral import (HalfInverse, JacobianOperator, DenseJacobian, SpectralInfo, apply_half_inverse, gram_path,
                       batched_half_inverse, half_inverse, eigh64, PATHS, DEFAULT_MAX_BYTES)
from .factors import JacobianFactors, LayerFactor
from .jacobian import per_sample_jacobian, gram, physics_jacobian, jacobian_factors
from .distributed import DistributedJacobian
from .optimizer import HIG, hig_step, HIGStepInfo

__all__ = ['HIG', 'hig_step', 'HIGStepInfo', 'half_inverse', 'HalfInverse', 'apply_half_inverse', 'JacobianOperator',
           'DenseJacobian', 'SpectralInfo', 'gram_path', 'batched_half_inverse', 'JacobianFactors', 'LayerFactor',
           'per_sample_jacobian', 'gram', 'physics_jacobian', 'jacobian_factors', 'DistributedJacobian', 'PATHS',
           'DEFAULT_MAX_BYTES', 'eigh64']
