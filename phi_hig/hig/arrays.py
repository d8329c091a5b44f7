"""The array operations of the spectral core, per backend: torch and jax.numpy behind one small interface.

`phi_hig.hig.spectral.apply_half_inverse` decides the path, the cut-off and the fallbacks once for every backend;
what differs is only how a float64 array is made, decomposed and multiplied. `array_ops(g)` returns the operations
for the backend of ``g`` (a torch tensor or a JAX array): `TorchOps` (the torch path exactly as it always ran) or
`JaxOps`. Both keep arrays on their backend (no torch tensor is created for a JAX array, and the reverse); they agree
on:

* ``scope()``: the context the float64 work runs in (JAX: ``jax.enable_x64(True)``, so that float64 is honoured
  under JAX's default configuration; torch: nothing);
* ``float64(x)``, ``host(x)`` (a NumPy copy, for decisions), ``eigh(G)`` (ascending), ``svd(J)`` (thin),
  ``diagonal_max(G)``, ``abs_max(x)`` (NaN when x has a NaN), ``all_finite(x)``, ``zeros(n, like)``,
  ``ldexp(x, k)``, ``cast(x, like)``, ``on_device_of(x, like)``, ``mask(keep, like)`` (a host boolean mask on
  the backend), ``is_real_floating(x)``, ``itemsize(x)``;
* ``kept_product(w, mu, rhs, first, exponent)``: ``W_k diag(μ_k^e) W_kᵀ rhs`` over the eigenpairs from ``first``
  on (JAX: one compiled function whatever ``first`` is, so a changing rank never re-traces);
* ``xp``: the array namespace (``torch`` or ``jax.numpy``) for elementwise formulas written once.

Importing this module imports no JAX; `JaxOps` imports it when first built.
"""
from __future__ import annotations

import collections
import contextlib
import math as _pymath

import numpy as np
import torch

from ..backend import is_jax_array, x64
from ..errors import InvalidInputError

__all__ = ['TorchOps', 'JaxOps', 'array_ops', 'TORCH_OPS', 'TRACES']

TRACES = collections.Counter()
"""How many times each compiled function of the JAX path was traced, by name (a test hook: a step of known shapes
traces nothing)."""


class TorchOps:
    """`array_ops` for torch tensors (CPU or CUDA): LAPACK / cuSOLVER through ``torch.linalg``."""
    name = 'torch'
    xp = torch

    @staticmethod
    def scope():
        """The context the float64 work runs in."""
        return contextlib.nullcontext()

    @staticmethod
    def float64(x: torch.Tensor) -> torch.Tensor:
        """``x`` as a float64 array on its device."""
        return x.to(torch.float64)

    @staticmethod
    def host(x: torch.Tensor) -> np.ndarray:
        """A NumPy copy of ``x`` (for the decisions, which run on the host)."""
        return x.detach().cpu().numpy()

    @staticmethod
    def eigh(G: torch.Tensor) -> tuple:
        """``torch.linalg.eigh``: LAPACK ``syevd`` through torch's BLAS on the CPU (it follows
        ``torch.set_num_threads``; SciPy's OpenBLAS does not, and with its own threads on shared cores it was 2–3×
        slower here), cuSOLVER on CUDA."""
        return torch.linalg.eigh(G)

    @staticmethod
    def svd(J: torch.Tensor) -> tuple:
        """The thin SVD ``(U, σ descending, Vᵀ)`` of ``J`` (batched over leading dims)."""
        return torch.linalg.svd(J, full_matrices=False)

    @staticmethod
    def diagonal_max(G: torch.Tensor) -> float:
        """The largest diagonal entry of ``G`` as a float (NaN when G has a NaN on its diagonal)."""
        return float(torch.diagonal(G).max()) if G.numel() else 0.0

    @staticmethod
    def abs_max(x: torch.Tensor) -> float:
        """The largest ``|x|`` as a float (NaN when x has a NaN; 0 for an empty x)."""
        return float(x.abs().max()) if x.numel() else 0.0

    @staticmethod
    def all_finite(x: torch.Tensor) -> bool:
        """Whether ``x`` holds no NaN and no ±Inf."""
        return bool(torch.isfinite(x).all())

    @staticmethod
    def zeros(n: int, like: torch.Tensor) -> torch.Tensor:
        """A float64 zero vector of length ``n`` on the device of ``like``."""
        return torch.zeros(n, dtype=torch.float64, device=like.device)

    @staticmethod
    def ldexp(x: torch.Tensor, k: int) -> torch.Tensor:
        """``x · 2^k`` exactly (a power of two)."""
        return torch.ldexp(x, torch.tensor(k, device=x.device))

    @staticmethod
    def cast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``x`` in the dtype of ``like``."""
        return x.to(like.dtype)

    @staticmethod
    def on_device_of(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``x`` on the device of ``like``."""
        return x.to(like.device)

    @staticmethod
    def kept_product(w: torch.Tensor, mu: torch.Tensor, rhs: torch.Tensor, first: int, exponent: float):
        """``W_k diag(μ_k^e) W_kᵀ rhs`` over the eigenpairs from ``first`` on."""
        w_k = w[:, first:]  # the kept eigenvalues (ascending) are a suffix: a view, never a copy
        return w_k @ (mu[first:] ** exponent * (w_k.T @ rhs))

    @staticmethod
    def mask(keep: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """A host boolean mask ``keep`` as an array of the backend, for indexing ``like``."""
        return torch.from_numpy(keep).to(like.device)

    @staticmethod
    def is_real_floating(x: torch.Tensor) -> bool:
        """Whether ``x`` has a real floating-point dtype."""
        return x.dtype.is_floating_point

    @staticmethod
    def itemsize(x: torch.Tensor) -> int:
        """Bytes per element of ``x``."""
        return x.element_size()


TORCH_OPS = TorchOps()


class JaxOps:
    """`array_ops` for JAX arrays: ``jnp.linalg`` (LAPACK on the CPU), compiled once per shape, in float64 inside
    ``scope()``."""
    name = 'jax'

    def __init__(self):
        import jax
        import jax.numpy as jnp
        self.jax, self.xp = jax, jnp

        def eigh(G):
            TRACES['eigh'] += 1
            return jnp.linalg.eigh(G)

        def eigh_unsorted(G):
            TRACES['eigh'] += 1
            w, mu = jax.lax.linalg.eigh(G, lower=True, symmetrize_input=False, sort_eigenvalues=False)
            return mu, w

        def diagonal_max(G):
            TRACES['diagonal_max'] += 1
            return jnp.max(jnp.diagonal(G))

        def abs_max(x):
            TRACES['abs_max'] += 1
            return jnp.max(jnp.abs(x))
        self._eigh, self._diagonal_max, self._abs_max = jax.jit(eigh), jax.jit(diagonal_max), jax.jit(abs_max)
        self._eigh_unsorted = jax.jit(eigh_unsorted)

        def kept_product(w, mu, rhs, first, exponent):
            TRACES['kept_product'] += 1
            return self.masked_product(w, mu, rhs, jnp.arange(mu.shape[0]) >= first, exponent)
        self._kept_product = jax.jit(kept_product)

    @staticmethod
    def scope():
        """The context the float64 work runs in."""
        return x64()

    def float64(self, x):
        """``x`` as a float64 array on its device."""
        return self.xp.asarray(x, dtype=self.xp.float64)

    def host(self, x) -> np.ndarray:
        """A NumPy copy of ``x`` (for the decisions, which run on the host)."""
        return np.asarray(x)

    def eigh(self, G, sort: bool = True) -> tuple:
        """``jnp.linalg.eigh`` (LAPACK ``syevd`` on the CPU), compiled once per size; ``sort=False``: the eigenpairs
        in LAPACK's order and only the lower triangle read (no symmetrizing copy, no sort: for a compiled caller
        that masks instead of slicing, `masked_product`)."""
        return self._eigh(G) if sort else self._eigh_unsorted(G)

    def svd(self, J) -> tuple:
        """The thin SVD ``(U, σ descending, Vᵀ)`` of ``J`` (batched over leading dims)."""
        return self.xp.linalg.svd(J, full_matrices=False)

    def diagonal_max(self, G) -> float:
        """The largest diagonal entry of ``G`` as a float (NaN when G has a NaN on its diagonal)."""
        return float(self._diagonal_max(G)) if G.size else 0.0

    def abs_max(self, x) -> float:
        """The largest ``|x|`` as a float (NaN when x has a NaN; 0 for an empty x)."""
        return float(self._abs_max(x)) if x.size else 0.0

    def all_finite(self, x) -> bool:
        """Whether ``x`` holds no NaN and no ±Inf."""
        return bool(self.xp.isfinite(x).all())

    def zeros(self, n: int, like):
        """A float64 zero vector of length ``n`` on the device of ``like``."""
        return self.xp.zeros(n, dtype=self.xp.float64)

    def ldexp(self, x, k: int):
        """``x · 2^k`` exactly (a power of two)."""
        half = k // 2  # two exact powers of two, each representable for any k of a finite float64 x
        return x * _pymath.ldexp(1.0, half) * _pymath.ldexp(1.0, k - half)

    def cast(self, x, like):
        """``x`` in the dtype of ``like``."""
        return x.astype(like.dtype)

    @staticmethod
    def on_device_of(x, like):
        """``x`` on the device of ``like``."""
        return x

    def kept_product(self, w, mu, rhs, first: int, exponent: float):
        """``W_k diag(μ_k^e) W_kᵀ rhs`` over the eigenpairs from ``first`` on (masked: one compiled function for every
        ``first``)."""
        return self._kept_product(w, mu, rhs, first, exponent)

    def masked_product(self, w, mu, rhs, keep, exponent):
        """``W diag(μ^e) Wᵀ rhs`` over the eigenpairs where ``keep`` (a boolean array, any order) is True; traceable
        (the discarded μ never enter the power, so a zero or negative one gives no NaN)."""
        xp = self.xp
        safe = xp.where(keep, mu, 1.0)
        return w @ (xp.where(keep, safe ** exponent, 0.0) * (w.T @ rhs))

    def mask(self, keep: np.ndarray, like):
        """A host boolean mask ``keep`` as an array of the backend, for indexing ``like``."""
        return self.xp.asarray(keep)

    def is_real_floating(self, x) -> bool:
        """Whether ``x`` has a real floating-point dtype."""
        return bool(self.xp.issubdtype(x.dtype, self.xp.floating))

    @staticmethod
    def itemsize(x) -> int:
        """Bytes per element of ``x``."""
        return np.dtype(x.dtype).itemsize


_JAX_OPS = []


def array_ops(value):
    """The operations for ``value``'s backend: `TORCH_OPS` for a torch tensor, the one `JaxOps` for a JAX array.

    Raises:
        InvalidInputError: anything else (naming the two supported kinds).
    """
    if isinstance(value, torch.Tensor):
        return TORCH_OPS
    if is_jax_array(value):
        if not _JAX_OPS:
            _JAX_OPS.append(JaxOps())
        return _JAX_OPS[0]
    raise InvalidInputError(f"the spectral core works on torch tensors and JAX arrays, got "
                            f"{type(value).__module__}.{type(value).__name__}")
