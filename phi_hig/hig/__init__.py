"""The HIG engine: half-inverse gradients, Gauss–Newton and GD steps through network + physics.

* `spectral`: the spectral core — frozen `HalfInverse` settings and `apply_half_inverse`, the one function that
  applies them to a Jacobian operator (path choice, cut-off, fallbacks); `half_inverse` for a given J.
* `jacobian` / `factors`: the stacked per-sample Jacobian of network + physics from one replicated pass, held as
  per-layer factors (`JacobianFactors`) so that J is never formed; `layers`: which layers are held as factors
  (parameters used elsewhere, e.g. tied weights, are not) and the refusal of batch norm, dropout and other random
  draws in training mode.
* `distributed`: the same operator across ``torch.distributed`` ranks (`DistributedJacobian`).
* `optimizer`: the `HIG` optimizer and `hig_step`, the training step users call.
* `arrays`: the array operations of the spectral core per backend (torch, jax.numpy).
* On JAX (loaded on first use, so that torch users need no JAX): `stax_layers` (the Dense / Conv layers of a PhiML
  JAX network found in its traced program), `jax_jacobian` (the Jacobian operator of network + physics on JAX) and
  `jax_optimizer` (`JaxHIG`, what ``HIG(net)`` returns for a JAX network, the compiled `jax_hig_step`, and
  `cast_parameters`, the StaxNet float64 workaround).

Schnell, Holl & Thuerey 2022 (eqs. 5–7) define the update; this package's public names are re-exported by
`phi_hig`.
"""
from .spectral import (HalfInverse, JacobianOperator, DenseJacobian, SpectralInfo, apply_half_inverse, gram_path,
                       batched_half_inverse, half_inverse, eigh64, PATHS, DEFAULT_MAX_BYTES)
from .factors import JacobianFactors, LayerFactor
from .jacobian import per_sample_jacobian, gram, physics_jacobian, jacobian_factors
from .distributed import DistributedJacobian
from .optimizer import HIG, hig_step
from .options import HIGStepInfo

__all__ = ['HIG', 'hig_step', 'HIGStepInfo', 'half_inverse', 'HalfInverse', 'apply_half_inverse', 'JacobianOperator',
           'DenseJacobian', 'SpectralInfo', 'gram_path', 'batched_half_inverse', 'JacobianFactors', 'LayerFactor',
           'per_sample_jacobian', 'gram', 'physics_jacobian', 'jacobian_factors', 'DistributedJacobian', 'PATHS',
           'DEFAULT_MAX_BYTES', 'eigh64', 'JaxHIG', 'jax_hig_step', 'cast_parameters', 'JaxJacobian']

_ON_JAX = {'JaxHIG': 'jax_optimizer', 'jax_hig_step': 'jax_optimizer', 'cast_parameters': 'jax_optimizer',
           'JaxJacobian': 'jax_jacobian'}


def __getattr__(name):
    if name in _ON_JAX:
        import importlib
        value = getattr(importlib.import_module(f'.{_ON_JAX[name]}', __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'phi_hig.hig' has no attribute {name!r}")
