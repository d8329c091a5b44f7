"""The half-inverse of a Jacobian applied to a gradient: the linear algebra of HIG, Gauss–Newton and GD.

For ``J = U Λ Vᵀ`` (thin SVD, ``J`` of shape ``(m, n)``) and a vector ``g`` of length ``m``,
``half_inverse`` computes ``d = max(σ)^β · V Λ^κ Uᵀ g`` over the kept singular values, so that a
training step is ``θ ← θ − η·d``. κ = −1/2 is HIG, κ = −1 Gauss–Newton (the truncated pseudo-inverse),
κ = +1 gradient descent (``Jᵀg``).

Two exact paths compute it:

* **SVD path** (``method='svd'``): a thin SVD of ``J`` in float64. Accurate to about
  ``1e-15·σ_max/σ_min,kept`` relative; it resolves singular values down to the round-off floor
  ``max(m, n)·ε₆₄·σ_max``. Cost ``O(m·n·min(m, n))``.
* **Gram path** (``method='gram'``): ``eigh(J Jᵀ)`` (or ``eigh(JᵀJ)`` when ``n < m``) in float64, and
  ``d = Jᵀ U Λ^(κ−1) Uᵀ g`` (dual: ``V Λ^(κ−1) Vᵀ Jᵀg``). The Gram matrix, its eigendecomposition and the
  coefficient vector are float64 whatever the input dtype. Squaring the singular values squares the
  condition number: the error is about ``2e-17·(σ_max/σ_min,kept)²`` relative, and eigenvalues below the
  Gram round-off floor ``max(m, n)·ε₆₄·μ_max`` (that is σ ≲ ``√(max(m, n)·ε₆₄)·σ_max``) are discarded.
  Much cheaper when ``min(m, n)`` is small against ``max(m, n)``, and the only path that works from a
  Gram matrix assembled without forming ``J`` (see ``phi_hig.jacobian``).
* ``method='auto'`` takes the Gram path whenever every kept eigenvalue satisfies ``μ ≥ 1e-12·μ_max``
  (kept σ ≥ 1e-6·σ_max, which covers relative truncations τ ≥ 1e-6) and the SVD path otherwise.
"""
from __future__ import annotations

import math as _pymath
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .errors import InvalidInputError

__all__ = ['half_inverse', 'SpectralInfo', 'spectral_apply', 'validate_hig_settings']

EPS64 = float(np.finfo(np.float64).eps)
AUTO_GRAM_MIN_RATIO = 1e-12
"""'auto' uses the Gram path when every kept Gram eigenvalue is at least this fraction of the largest."""


@dataclass
class SpectralInfo:
    """What a half-inverse kept: diagnostics for plots and logs.

    Attributes:
        singular_values: kept singular values σ, descending, float64 NumPy array.
        sigma_max: the largest singular value of J (kept or not).
        rank: number of kept singular values.
        path: 'svd', 'gram' or 'gram-dual'.
    """
    singular_values: np.ndarray
    sigma_max: float
    rank: int
    path: str


def validate_hig_settings(kappa: float, beta: float, truncation: float, relative: bool = True,
                          method: str = 'auto') -> None:
    """Raise `InvalidInputError` naming the problem if a HIG hyperparameter is invalid."""
    if not isinstance(kappa, (int, float)) or not (-1.0 <= float(kappa) <= 1.0):
        raise InvalidInputError(f"kappa must be a number in [-1, 1] (-0.5 HIG, -1 Gauss-Newton, 1 GD), got {kappa!r}")
    if not isinstance(beta, (int, float)) or not _pymath.isfinite(beta):
        raise InvalidInputError(f"beta must be a finite number, got {beta!r}")
    if not isinstance(truncation, (int, float)) or _pymath.isnan(truncation) or truncation < 0 or _pymath.isinf(truncation):
        raise InvalidInputError(f"truncation must be a finite number >= 0, got {truncation!r}")
    if not isinstance(relative, bool):
        raise InvalidInputError(f"relative must be True or False, got {relative!r}")
    if method not in ('auto', 'svd', 'gram'):
        raise InvalidInputError(f"method must be 'auto', 'svd' or 'gram', got {method!r}")


def _keep_threshold(scale_max: float, truncation: float, relative: bool, floor_ratio: float) -> float:
    """Threshold on the singular values σ of the SVD path: values ≤ it are discarded."""
    user = truncation * scale_max if relative else truncation
    return max(user, floor_ratio * scale_max)


def _gram_keep(mu: torch.Tensor, truncation: float, relative: bool, floor_dim: int) -> torch.Tensor:
    """Mask of the Gram eigenvalues μ = σ² that are kept: ``μ > max((τ·σ_max)², max(m, n)·ε₆₄·μ_max)``
    (τ² instead of (τ·σ_max)² when not relative). Call only with μ_max > 0."""
    mu_max = float(mu[-1])
    user = (truncation * _pymath.sqrt(mu_max)) ** 2 if relative else truncation ** 2
    return mu > max(user, floor_dim * EPS64 * mu_max)


def spectral_apply(gram: torch.Tensor, rhs: torch.Tensor, kappa: float, beta: float, truncation: float,
                   relative: bool, floor_dim: int, eig: Optional[tuple] = None) -> tuple[torch.Tensor, SpectralInfo]:
    """``max(σ)^β · W diag(μ^((κ−1)/2)) Wᵀ rhs`` over the kept eigenpairs (μ, W) of a float64 Gram matrix.

    With ``gram = J Jᵀ`` and ``rhs = g`` this is the coefficient vector ``c`` with ``d = Jᵀc``; with
    ``gram = JᵀJ`` and ``rhs = Jᵀg`` it is ``d`` itself. Eigenvalues μ = σ² are kept when
    ``μ > max((τ·σ_max)², max(m, n)·ε₆₄·μ_max)`` (τ² instead of (τ·σ_max)² when not relative).
    Discarded eigenvalues contribute zero. Invariant: the result is finite for any finite input.

    Args:
        gram: symmetric positive semi-definite float64 matrix (k, k).
        rhs: float64 vector (k,).
        floor_dim: ``max(m, n)`` of J, for the round-off floor.
        eig: optionally a precomputed ``torch.linalg.eigh(gram)``.
    """
    mu, w = torch.linalg.eigh(gram) if eig is None else eig
    mu_max = float(mu[-1]) if mu.numel() else 0.0
    if mu_max <= 0.0:
        return torch.zeros_like(rhs), SpectralInfo(np.zeros(0), 0.0, 0, 'gram')
    sigma_max = _pymath.sqrt(mu_max)
    keep = _gram_keep(mu, truncation, relative, floor_dim)
    mu_k, w_k = mu[keep], w[:, keep]
    scale = sigma_max ** beta if beta != 0 else 1.0
    coefficients = mu_k ** ((kappa - 1.0) / 2.0)
    out = w_k @ (coefficients * (w_k.T @ rhs))
    if scale != 1.0:
        out = out * scale
    sv = torch.sqrt(mu_k).flip(0).cpu().numpy()
    return out, SpectralInfo(sv, sigma_max, int(keep.sum()), 'gram')


def _gram_keeps_resolved(mu: torch.Tensor, truncation: float, relative: bool, floor_dim: int) -> bool:
    """True when every eigenvalue the Gram path would keep is ≥ 1e-12·μ_max ('auto' rule)."""
    mu_max = float(mu[-1]) if mu.numel() else 0.0
    if mu_max <= 0:
        return True
    kept = mu[_gram_keep(mu, truncation, relative, floor_dim)]
    return kept.numel() == 0 or float(kept[0]) >= AUTO_GRAM_MIN_RATIO * mu_max


def _svd_apply(J64: torch.Tensor, g64: torch.Tensor, kappa: float, beta: float, truncation: float,
               relative: bool) -> tuple[torch.Tensor, SpectralInfo]:
    m, n = J64.shape
    u, s, vh = torch.linalg.svd(J64, full_matrices=False)
    sigma_max = float(s[0]) if s.numel() else 0.0
    if sigma_max <= 0:
        return torch.zeros(n, dtype=J64.dtype, device=J64.device), SpectralInfo(np.zeros(0), 0.0, 0, 'svd')
    threshold = _keep_threshold(sigma_max, truncation, relative, max(m, n) * EPS64)
    keep = s > threshold
    s_k = s[keep]
    d = vh[keep].T @ (s_k ** kappa * (u[:, keep].T @ g64))
    if beta != 0:
        d = d * sigma_max ** beta
    return d, SpectralInfo(s_k.cpu().numpy(), sigma_max, int(keep.sum()), 'svd')


def _half_inverse_torch(J: torch.Tensor, g: torch.Tensor, kappa: float, beta: float, truncation: float,
                        relative: bool, method: str) -> tuple[torch.Tensor, SpectralInfo]:
    """Core on torch tensors (validated). Returns the direction in float64 and the spectrum."""
    m, n = J.shape
    J64 = J.to(torch.float64)
    g64 = g.to(device=J.device, dtype=torch.float64)
    if method == 'svd':
        return _svd_apply(J64, g64, kappa, beta, truncation, relative)
    dual = n < m
    gram = J64.T @ J64 if dual else J64 @ J64.T
    eig = torch.linalg.eigh(gram)
    if method == 'auto' and not _gram_keeps_resolved(eig[0], truncation, relative, max(m, n)):
        return _svd_apply(J64, g64, kappa, beta, truncation, relative)
    if dual:
        d, info = spectral_apply(gram, J64.T @ g64, kappa, beta, truncation, relative, max(m, n), eig)
        info.path = 'gram-dual'
    else:
        c, info = spectral_apply(gram, g64, kappa, beta, truncation, relative, max(m, n), eig)
        d = J64.T @ c
    return d, info


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise InvalidInputError(f"{name} contains {bad} non-finite value(s) (NaN or Inf)")


def _to_torch(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, np.ndarray):
        t = torch.from_numpy(value)
    else:
        raise InvalidInputError(f"{name} must be a NumPy array, a torch tensor or a PhiML tensor, got {type(value).__name__}")
    if not (t.dtype.is_floating_point):
        raise InvalidInputError(f"{name} must have a real floating-point dtype, got {t.dtype}")
    return t


def half_inverse(J, g, kappa: float = -0.5, beta: float = 0.0, truncation: float = 1e-6, relative: bool = True,
                 method: str = 'auto', *, return_info: bool = False):
    """Apply the truncated, exponentiated pseudo-inverse ``max(σ)^β · V Λ^κ Uᵀ`` of ``J`` to ``g``.

    A step ``θ ← θ − η·d`` with the returned ``d`` is HIG for κ = −1/2, Gauss–Newton for κ = −1 and gradient
    descent for κ = +1 (HIG paper eq. 21/22). See the module docstring for the accuracy of each path.

    Invariants: singular values ``σ ≤ truncation·σ_max`` (``σ ≤ truncation`` when ``relative=False``) and
    round-off values ``σ ≤ max(m, n)·ε₆₄·σ_max`` contribute exactly zero (truncation, never clamping), so
    ``truncation=0`` gives the pseudo-inverse and a zero or rank-deficient J gives a finite result that is
    zero in its null directions.

    Args:
        J: the stacked Jacobian, shape ``(m, n)``: a NumPy array, a torch tensor (CPU or CUDA) or a PhiML
            tensor. For a PhiML tensor, the rows are the dims of ``g`` (flattened in ``g``'s order) and the
            columns are all other dims of ``J``; the result carries those column dims.
        g: the gradient of the loss with respect to the stacked outputs, shape ``(m,)``, same kind as J.
        kappa: exponent κ ∈ [−1, 1] of the singular values.
        beta: exponent β of the largest singular value (β = −1−κ rescales σ_max to 1).
        truncation: τ ≥ 0, the truncation threshold.
        relative: threshold relative to σ_max (the authors' code) or absolute.
        method: 'auto', 'svd' or 'gram'.
        return_info: also return a `SpectralInfo` with the kept singular values.

    Returns:
        ``d`` of shape ``(n,)`` with J's kind, device and dtype (and the `SpectralInfo` if asked).

    Raises:
        InvalidInputError: (a ValueError) on non-finite entries, mismatched shapes or invalid hyperparameters.
    """
    validate_hig_settings(kappa, beta, truncation, relative, method)
    phiml_cols = None
    from phiml import math as _m
    from phiml.math import Tensor as _PhiTensor
    if isinstance(J, _PhiTensor) or isinstance(g, _PhiTensor):
        if not (isinstance(J, _PhiTensor) and isinstance(g, _PhiTensor)):
            raise InvalidInputError("J and g must both be PhiML tensors when one of them is")
        missing = g.shape.without(J.shape)
        if missing:
            raise InvalidInputError(f"g has dims {missing} that J lacks; J's rows must be the dims of g")
        if J.shape.only(g.shape).sizes != g.shape.sizes:
            raise InvalidInputError(f"J's row dims {J.shape.only(g.shape)} do not match g's shape {g.shape}")
        phiml_cols = J.shape.without(g.shape)
        if not phiml_cols:
            raise InvalidInputError(f"J {J.shape} has no column dims besides g's dims {g.shape}")
        # PhiML's native() converts to the context precision: read J and g at their own precision
        with _m.precision(J.dtype.precision):
            J, g = J.native([g.shape, phiml_cols]), g.native([g.shape])
    is_numpy = isinstance(J, np.ndarray)
    Jt, gt = _to_torch('J', J), _to_torch('g', g)
    if Jt.ndim != 2:
        raise InvalidInputError(f"J must be 2-D (m, n), got shape {tuple(Jt.shape)}")
    if gt.ndim != 1 or gt.shape[0] != Jt.shape[0]:
        raise InvalidInputError(f"g must have shape ({Jt.shape[0]},) to match J {tuple(Jt.shape)}, got {tuple(gt.shape)}")
    _check_finite('J', Jt)
    _check_finite('g', gt)
    d, info = _half_inverse_torch(Jt, gt, float(kappa), float(beta), float(truncation), relative, method)
    d = d.to(Jt.dtype)
    if is_numpy:
        d = d.numpy()
    if phiml_cols is not None:
        with _m.precision(8 * d.dtype.itemsize if is_numpy else 8 * d.element_size()):
            d = _m.reshaped_tensor(d, [phiml_cols], convert=False)
    return (d, info) if return_info else d
