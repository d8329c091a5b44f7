"""The spectral core of HIG, Gauss–Newton and GD: a truncated, exponentiated pseudo-inverse applied to a gradient.

For the stacked per-sample Jacobian ``J = U Λ Vᵀ`` (thin SVD, ``m × n``) and a vector ``g`` of length ``m``, the
core computes ``d = max(σ)^β · V Λ^κ Uᵀ g`` over the kept singular values, so that a training step is
``θ ← θ − η·d`` (Schnell, Holl & Thuerey 2022, eqs. 5–7; β: appendix C, eq. 21). κ = −1/2 is HIG, κ = −1
Gauss–Newton (the truncated pseudo-inverse), κ = +1 gradient descent (``Jᵀg``).

Two objects split the work, in the roles PhiML's ``Solve`` and a linear operator play for ``solve_linear``:

* `HalfInverse`: the frozen, validated settings (κ, β, τ, relative, path);
* a *Jacobian operator* (`JacobianOperator`): anything with ``n_rows``, ``n_params``, ``gram()``,
  ``gram_dual()``, ``vjp(c)`` and ``matrix()``. `DenseJacobian` adapts a given matrix;
  `phi_hig.hig.jacobian.JacobianFactors` holds J as per-layer factors without forming it.

`apply_half_inverse(settings, operator, g)` is the one function that applies the settings to an operator: the
choice of path, the size checks, the cut-off and the fallbacks live there only, for every backend. The operator and
``g`` are torch tensors or JAX arrays; the few operations that differ (float64 arrays, eigh, SVD, products) come
from `phi_hig.hig.arrays.array_ops` of ``g``, so a JAX operator is applied without creating a torch tensor, and
its float64 parts run under ``jax.enable_x64`` whatever JAX's global setting. Paths, all exact and float64:

* **Gram** (``'gram'``): ``eigh(J Jᵀ)`` and ``d = Jᵀ U Λ^(κ−1) Uᵀ g``, or, when ``n < m``, the dual
  ``eigh(JᵀJ)`` and ``d = V Λ^(κ−1) Vᵀ Jᵀg`` (``'dual'`` forces the dual). Squaring σ squares the condition
  number: error ≈ ``2e-17·(σ_max/σ_min,kept)²`` relative; Gram eigenvalues below ``max(m, n)·ε₆₄·μ_max`` are
  discarded.
* **SVD** (``'svd'``): a thin float64 SVD of J: error ≈ ``1e-15·σ_max/σ_min,kept``.
* ``'auto'``: the Gram path; the SVD path instead when a kept Gram eigenvalue lies below ``1e-12·μ_max`` (kept
  σ < 1e-6·σ_max, beyond the Gram path's resolution) or when the float64 Gram matrix under- or overflows (J
  beyond about 2^±400 in scale). The SVD path normalizes J by an exact power of two first, so a finite J of any
  scale gives the same answer as at unit scale.

The truncation always *discards* (never clamps): σ ≤ τ·σ_max (σ ≤ τ when not relative) and the round-off floor
σ ≤ max(m, n)·ε₆₄·σ_max contribute exactly zero. A Gram matrix of exact zeros is J = 0 on a forced Gram path (and
on 'auto' when J is too large to form for the SVD check): the direction is zero.
"""
from __future__ import annotations

import math as _pymath
import warnings
from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import numpy as np
import torch

from .. import checks
from ..backend import is_jax_array
from ..convert import from_native, kind, native_of
from ..errors import InvalidInputError, JacobianTooLargeError, NonFiniteStepError
from .arrays import array_ops

__all__ = ['HalfInverse', 'JacobianOperator', 'DenseJacobian', 'SpectralInfo', 'apply_half_inverse', 'gram_path',
           'gram_bytes', 'kept_gram_eigenvalues', 'gram_in_range', 'batched_half_inverse', 'half_inverse', 'eigh64',
           'choose_path', 'PATHS', 'AUTO', 'DEFAULT_MAX_BYTES']

PATHS = ('auto', 'gram', 'dual', 'svd')
EPS64 = float(np.finfo(np.float64).eps)
AUTO_GRAM_MIN_RATIO = 1e-12
"""'auto' keeps the Gram path only while every kept Gram eigenvalue is at least this fraction of the largest."""
GRAM_SAFE_EXPONENT = 800
"""The Gram path is trusted while its largest diagonal entry lies in [2^-800, 2^800] (else under/overflow)."""
DEFAULT_MAX_BYTES = 4 * 1024 ** 3
"""Default limit (4 GiB) on any single Jacobian or Gram matrix a HIG step allocates."""


@dataclass(frozen=True)
class HalfInverse:
    """Settings of a truncated half-inverse ``max(σ)^β · V Λ^κ Uᵀ``, validated once when built.

    Attributes:
        kappa: κ ∈ [−1, 1]: −1/2 HIG, −1 Gauss–Newton, +1 gradient descent.
        beta: β, any finite number; the direction is scaled by ``σ_max^β`` (β = −1−κ rescales σ_max to 1).
        truncation: τ ≥ 0: singular values ``σ ≤ τ·σ_max`` (``σ ≤ τ`` when not relative) are discarded; a
            relative τ must be < 1 (τ ≥ 1 would discard everything).
        relative: threshold relative to σ_max (as the authors' code) or absolute.
        path: the linear-algebra path, one of `PATHS`: 'auto', 'gram' (J Jᵀ, or JᵀJ when |θ| < rows), 'dual'
            (JᵀJ) or 'svd' (module docstring).

    Raises:
        InvalidInputError: naming the setting and its allowed values (booleans are not numbers).
    """
    kappa: float = -0.5
    beta: float = 0.0
    truncation: float = 1e-6
    relative: bool = True
    path: str = 'auto'

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, 'kappa', checks.number('kappa', self.kappa, low=-1, high=1,
                                          hint='-0.5 HIG, -1 Gauss-Newton, 1 gradient descent'))
        set_(self, 'beta', checks.number('beta', self.beta))
        set_(self, 'relative', checks.flag('relative', self.relative))
        if self.relative:
            tau = checks.number('truncation', self.truncation, low=0, high=1, high_open=True,
                                hint='relative to the largest singular value')
        else:
            tau = checks.number('truncation', self.truncation, low=0, hint='absolute')
        set_(self, 'truncation', tau)
        path = str(self.path) if isinstance(self.path, str) else self.path  # `AUTO` as the plain 'auto'
        set_(self, 'path', checks.choice('path', path, PATHS))


@runtime_checkable
class JacobianOperator(Protocol):
    """The stacked Jacobian ``J`` (``n_rows × n_params``) as the core consumes it.

    Implementations: `DenseJacobian` (a given matrix), `phi_hig.hig.jacobian.JacobianFactors` (per-layer factors of
    network + physics, J never formed), `phi_hig.hig.jax_jacobian.JaxJacobian` (the same on JAX) and, across
    ``torch.distributed`` ranks, an operator whose ``gram()`` gathers the rows of every rank. Contract: ``gram()``
    returns ``J Jᵀ`` and ``gram_dual()`` returns ``JᵀJ`` as float64 arrays accumulated in float64; ``vjp(c)``
    returns ``Jᵀc`` as a float64 ``(n_params,)`` array for a vector ``c`` of length ``n_rows``; ``matrix()`` returns
    J (any floating dtype); all on the backend of the ``g`` the operator is applied to (torch tensors, or JAX
    arrays, which the core reads inside ``jax.enable_x64``). Each may raise `phi_hig.errors.JacobianTooLargeError`
    before allocating. The core calls ``gram()`` or ``gram_dual()`` at most once and then ``vjp`` at most twice.
    """
    n_rows: int
    n_params: int

    def gram(self):
        """``J Jᵀ`` (``n_rows × n_rows``), float64, accumulated in float64."""

    def gram_dual(self):
        """``JᵀJ`` (``n_params × n_params``), float64, accumulated in float64."""

    def vjp(self, c):
        """``Jᵀc`` as a float64 ``(n_params,)`` array for a vector ``c`` of length ``n_rows``."""

    def matrix(self):
        """J itself (``n_rows × n_params``, any floating dtype), for the SVD path."""


class DenseJacobian:
    """`JacobianOperator` of a given matrix ``J`` (``m × n``, any float dtype and device; a torch tensor or a JAX
    array).

    The products are formed in float64 from one float64 copy of J, made on first use.

    >>> import torch
    >>> op = DenseJacobian(torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]]))
    >>> op.n_rows, op.n_params, tuple(op.gram().shape), op.gram_dual().dtype
    (3, 2, (3, 3), torch.float64)
    >>> op.vjp(torch.ones(3)).tolist()
    [2.0, 3.0]
    """

    def __init__(self, J, max_bytes: Optional[float] = DEFAULT_MAX_BYTES):
        self.J, self.max_bytes = J, max_bytes
        self.n_rows, self.n_params = int(J.shape[0]), int(J.shape[1])
        self._ops = array_ops(J)
        self._J64 = None

    def _64(self):
        if self._J64 is None:
            self._J64 = self._ops.float64(self.J)
        return self._J64

    def gram(self):
        """``J Jᵀ`` in float64."""
        J = self._64()
        return J @ J.T

    def gram_dual(self):
        """``JᵀJ`` in float64."""
        J = self._64()
        return J.T @ J

    def vjp(self, c):
        """``Jᵀc`` in float64 on J's device."""
        return self._64().T @ self._ops.float64(self._ops.on_device_of(c, self.J))

    def matrix(self):
        """The matrix J as given (its own dtype and device)."""
        return self.J


@dataclass
class SpectralInfo:
    """What a half-inverse kept: diagnostics for plots and logs.

    Attributes:
        singular_values: kept singular values σ, descending, float64 NumPy array.
        sigma_max: the largest singular value of J (kept or not).
        rank: number of kept singular values.
        path: 'gram', 'gram-dual' or 'svd'.
        fallback: why 'auto' took the SVD path instead of the Gram path ('' when it did not).
    """
    singular_values: np.ndarray
    sigma_max: float
    rank: int
    path: str
    fallback: str = ''


class _DefaultPath(str):
    """The default ``path='auto'`` of a signature, told apart from an ``'auto'`` the caller gave (`choose_path`)."""


AUTO = _DefaultPath('auto')
"""The default value of the ``path`` arguments (equal to 'auto'); `choose_path` tells whether a caller gave one."""


def choose_path(path: str, method: Optional[str], where: str) -> str:
    """The linear-algebra path a caller asked for, accepting the keyword ``method`` of earlier releases.

    ``method`` was renamed ``path`` (``method`` now names training methods only); for one release it is accepted
    with a `DeprecationWarning` and maps to ``path``. Giving both is an error. The value is returned as a plain
    `str`, not yet validated (`HalfInverse` does that).

    Args:
        path: the ``path`` argument (`AUTO` when the caller left it out).
        method: the deprecated ``method`` argument (None when the caller left it out).
        where: the callable, for the messages (e.g. ``'HIG'``).

    Raises:
        InvalidInputError: both ``path`` and ``method`` were given.

    >>> choose_path('svd', None, 'HIG')
    'svd'
    >>> choose_path('svd', 'gram', 'HIG')
    Traceback (most recent call last):
    phi_hig.errors.InvalidInputError: HIG: give path only (method is its deprecated name), got path='svd' and method='gram'
    """
    if method is None:
        return str(path)
    if path is not AUTO:
        raise InvalidInputError(f"{where}: give path only (method is its deprecated name), got path={str(path)!r} "
                                f"and method={method!r}")
    warnings.warn(f"{where}(method=...) is deprecated and will be removed in the next release; use path={method!r}",
                  DeprecationWarning, stacklevel=3)
    return method


def eigh64(G) -> tuple:
    """Eigendecomposition ``(μ ascending, W)`` of a symmetric float64 matrix (a torch tensor or a JAX array); only
    its lower triangle is read. `phi_hig.hig.arrays.TorchOps.eigh` / `JaxOps.eigh`: LAPACK ``syevd`` on the CPU,
    cuSOLVER on CUDA."""
    ops = array_ops(G)
    with ops.scope():
        return ops.eigh(G)


# ------------------------------------------------------------------------------------------- the cut-off

def _svd_keep(s, s_max, settings: HalfInverse, floor_dim: int, xp=torch):
    """Mask of the singular values that are kept: ``σ > max(τ·σ_max or τ, max(m, n)·ε₆₄·σ_max)`` and σ_max > 0.

    Works batched: ``s`` (…, k), ``s_max`` broadcastable to it; ``xp``: the array namespace (torch, jax.numpy or
    NumPy)."""
    user = settings.truncation * s_max if settings.relative else xp.full_like(s_max, settings.truncation)
    return (s > xp.maximum(user, floor_dim * EPS64 * s_max)) & (s_max > 0)


def kept_gram_eigenvalues(mu, mu_max, truncation, relative: bool, auto: bool, floor_dim: int, xp=np) -> tuple:
    """``(keep, too_fine)``: the cut-off of `_svd_keep` on Gram eigenvalues μ = σ² (any order), and the 'auto' rule.

    ``keep``: ``μ > max((τσ_max)² or τ², max(m, n)·ε₆₄·μ_max)`` and μ_max > 0 (τ = ``truncation``, relative to
    σ_max when ``relative``); ``too_fine``: when ``auto`` (the 'auto' path), a kept μ lies below
    ``AUTO_GRAM_MIN_RATIO·μ_max``, beyond the Gram path's resolution, so the SVD path must decide. ``xp``: NumPy on
    the host or ``jax.numpy`` inside a compiled step (`phi_hig.hig.jax_fused`, where τ may be traced): the one
    statement of the rule for both.

    Example:
        >>> import numpy as np
        >>> keep, too_fine = kept_gram_eigenvalues(np.array([1e-14, 1e-4, 1.0]), 1.0, 1e-3, True, True, 3)
        >>> keep.tolist(), bool(too_fine)
        ([False, True, True], False)
    """
    user = truncation ** 2 * (mu_max if relative else 1.0)
    keep = (mu > xp.maximum(user, floor_dim * EPS64 * mu_max)) & (mu_max > 0)
    too_fine = xp.any(keep & (mu < AUTO_GRAM_MIN_RATIO * mu_max)) if auto else False
    return keep, too_fine


def gram_in_range(top, xp=np):
    """Whether the largest diagonal entry ``top`` of a float64 Gram matrix lies in ``[2^-800, 2^800]`` (False for
    NaN): inside, the Gram path neither under- nor overflows (`GRAM_SAFE_EXPONENT`); ``xp`` as in
    `kept_gram_eigenvalues`.

    Example:
        >>> bool(gram_in_range(1.0)), bool(gram_in_range(0.0)), bool(gram_in_range(float('nan')))
        (True, False, False)
    """
    return (top >= 2.0 ** -GRAM_SAFE_EXPONENT) & (top <= 2.0 ** GRAM_SAFE_EXPONENT)


def _spectral(ops, mu, w, rhs, settings: HalfInverse, floor_dim: int, path: str):
    """``σ_max^β · W diag(μ^((κ−1)/2)) Wᵀ rhs`` over the kept eigenpairs, or None when 'auto' must use the SVD.

    The kept eigenvalues (μ ascending) are a suffix (``ops.kept_product``). The decisions are taken on a host copy
    of μ (n numbers), the products on W's device."""
    m = ops.host(mu)
    mu_max = float(m[-1]) if m.size else 0.0
    if mu_max <= 0.0:
        return ops.zeros(rhs.shape[0], like=rhs), SpectralInfo(np.zeros(0), 0.0, 0, path)
    keep, too_fine = kept_gram_eigenvalues(m, mu_max, settings.truncation, settings.relative,
                                           settings.path == 'auto', floor_dim)
    if too_fine:
        return None
    first = m.size - int(keep.sum())
    sigma_max = _pymath.sqrt(mu_max)
    out = ops.kept_product(w, mu, rhs, first, (settings.kappa - 1.0) / 2.0)
    if settings.beta != 0:
        out = out * _power(sigma_max, settings.beta)
    return out, SpectralInfo(np.sqrt(m[first:])[::-1].copy(), sigma_max, m.size - first, path)


def _power(x: float, p: float) -> float:
    """``x ** p`` for x > 0 that is ``inf`` (not an `OverflowError`) when the true value exceeds float64."""
    try:
        return x ** p
    except OverflowError:
        return float('inf')


def _normalized(ops, J) -> tuple:
    """``(J64, k)``: J in float64 divided by the exact power of two 2^k with ``2^(k−1) ≤ max|J| < 2^k`` (k = 0 for
    J = 0), so that nothing of a full-rank J under- or overflows however small or large it is."""
    J64 = ops.float64(J)
    top = ops.abs_max(J64)
    k = _pymath.frexp(top)[1] if top > 0 else 0
    return (ops.ldexp(J64, -k) if k else J64), k


def _scaled_settings(settings: HalfInverse, k: int) -> HalfInverse:
    """The settings for ``J / 2^k``: an absolute truncation τ becomes τ / 2^k (a relative one is unchanged)."""
    if not k or settings.relative:
        return settings
    return HalfInverse(settings.kappa, settings.beta, _pymath.ldexp(settings.truncation, -k), False, settings.path)


def _rescaled(d, info: SpectralInfo, k: int, settings: HalfInverse) -> tuple:
    """Undo `_normalized`: ``d(2^k J') = 2^(k(κ+β)) · d(J')`` (in two factors, so that a representable result is
    never lost to an overflowing intermediate) and σ = 2^k σ'."""
    if k:
        half = _power(2.0, k * (settings.kappa + settings.beta) / 2)
        d = d * half * half
        info = SpectralInfo(info.singular_values * 2.0 ** k, info.sigma_max * 2.0 ** k, info.rank, info.path,
                            info.fallback)
    return d, info


def _svd_apply(ops, J, g64, settings: HalfInverse, path: str = 'svd'):
    """The SVD path on the matrix J, normalized by an exact power of two (`_normalized`); the cut-off is decided on
    a host copy of the singular values."""
    if not ops.all_finite(J):
        raise NonFiniteStepError("the Jacobian J is not finite (NaN or Inf); the weights were left untouched")
    J64, k = _normalized(ops, J)
    m, n = J64.shape
    scaled = _scaled_settings(settings, k)
    u, s, vh = ops.svd(J64)
    s_host = ops.host(s)
    if not s_host.size or s_host[0] == 0.0:
        return ops.zeros(n, like=J64), SpectralInfo(np.zeros(0), 0.0, 0, path)
    s_max = float(s_host[0])
    keep_host = _svd_keep(s_host, s_host[:1], scaled, max(m, n), np)
    keep = ops.mask(keep_host, s)
    s_k = s[keep]
    d = vh[keep].T @ (s_k ** settings.kappa * (u[:, keep].T @ g64))
    if settings.beta != 0:
        d = d * _power(s_max, settings.beta)
    return _rescaled(d, SpectralInfo(s_host[keep_host].copy(), s_max, int(keep_host.sum()), path), k, settings)


# ------------------------------------------------------------------------------------------- the one function

def gram_bytes(path: str, n_rows: int, n_params: int, max_bytes: Optional[float] = None) -> int:
    """Bytes of the float64 Gram matrix that linear-algebra path ``path`` forms for a J of ``n_rows × n_params``:
    ``8·n_rows²`` for J Jᵀ on 'gram', ``8·n_params²`` for JᵀJ on 'dual', none (0) on 'svd' (``path`` as `gram_path`
    returns it). The one rule of the Gram matrix's size: the step checks it before any pass, the run specification
    estimates it before any batch exists.

    Raises:
        JacobianTooLargeError: the matrix would exceed ``max_bytes`` (None: no limit).
    """
    if path == 'svd':
        return 0
    side = int(n_params if path == 'dual' else n_rows)
    what = "The dual Gram matrix JᵀJ (float64)" if path == 'dual' else "The Gram matrix J Jᵀ (float64)"
    checks.check_size(what, (side, side), 8, max_bytes)
    return 8 * side * side


def gram_path(settings, n_rows: int, n_params: int, max_bytes: Optional[float] = DEFAULT_MAX_BYTES) -> str:
    """The path `apply_half_inverse` starts on ('gram', 'dual' or 'svd') for a J of this shape, for `HalfInverse`
    ``settings`` or a path of `PATHS` ('auto' and 'gram' take the dual when ``n_params < n_rows``); raises
    `phi_hig.errors.JacobianTooLargeError` when its Gram matrix would exceed ``max_bytes`` (`gram_bytes`; callers may
    ask before computing the Jacobian, so that a refused size costs nothing)."""
    path = settings if isinstance(settings, str) else settings.path
    if path in ('auto', 'gram'):
        path = 'dual' if n_params < n_rows else 'gram'
    gram_bytes(path, n_rows, n_params, max_bytes)
    return path


def apply_half_inverse(settings: HalfInverse, operator: JacobianOperator, g, *,
                       max_bytes: Optional[float] = DEFAULT_MAX_BYTES) -> tuple:
    """``d = max(σ)^β · V Λ^κ Uᵀ g`` of the operator's J over the kept singular values, in float64.

    Invariants: the path, the cut-off and the fallbacks are those of the module docstring, for torch and JAX alike;
    the result is finite for finite inputs unless its true value overflows float64 (then `NonFiniteStepError`);
    nothing of size ``n_rows²`` (``n_params²`` on the dual path) is allocated above ``max_bytes``; for a JAX ``g``
    no torch tensor is created and every float64 array is made inside ``jax.enable_x64``.

    A distributed operator (`phi_hig.hig.distributed.DistributedJacobian`) returns its Gram matrices and ``matrix()``
    on its root rank only and provides ``sharing(device)``, through which the core takes every decision from
    numbers the root computed and receives the root's results (`phi_hig.hig.distributed.RootSharing`): the
    eigendecomposition or SVD runs once, on the root, and every rank returns the same direction and raises the
    same errors.

    Args:
        settings: a `HalfInverse`.
        operator: a `JacobianOperator` on the backend of ``g``.
        g: the gradient of the loss with respect to the stacked outputs, ``(n_rows,)`` (the global rows): a torch
            tensor or a JAX array.
        max_bytes: limit for the Gram matrices (`phi_hig.errors.JacobianTooLargeError` above it).

    Returns:
        ``(d, info)``: ``d`` of shape ``(n_params,)``, float64, on g's backend and device; a `SpectralInfo`.
    """
    ops = array_ops(g)
    with ops.scope():
        return _apply(ops, settings, operator, g, max_bytes)


def _apply(ops, settings: HalfInverse, operator, g, max_bytes) -> tuple:
    m, n = int(operator.n_rows), int(operator.n_params)
    floor_dim = max(m, n)
    g64 = ops.float64(g.reshape(-1))
    share = operator.sharing(g64.device) if hasattr(operator, 'sharing') else _Local
    path = gram_path(settings, m, n, max_bytes)
    reason, top = '', None
    if path in ('gram', 'dual'):
        dual = path == 'dual'
        G = operator.gram_dual() if dual else operator.gram()
        top, = share.numbers([ops.diagonal_max(G) if share.root else 0.0])
        if top != top:
            raise NonFiniteStepError("the Jacobian J is not finite (NaN); the weights were left untouched")
        if gram_in_range(top):
            rhs = operator.vjp(g64) if dual else g64
            done = share.root_result(lambda: _spectral(ops, *ops.eigh(G), rhs, settings, floor_dim,
                                                       'gram-dual' if dual else 'gram'), n if dual else m)
            del G
            if done is not None:
                out, info = done
                return _finite_result(ops, out if dual else operator.vjp(out), info)
            reason = 'kept spectrum below the Gram resolution'
        elif settings.path == 'auto':
            reason = 'Gram matrix under- or overflows'
        elif top == 0.0:  # the forced Gram path takes an exactly zero Gram matrix for J = 0
            return ops.zeros(n, like=g64), SpectralInfo(np.zeros(0), 0.0, 0, path)
        else:
            raise NonFiniteStepError(
                f"path={settings.path!r}: the float64 {'JᵀJ' if dual else 'J Jᵀ'} under- or overflows at this "
                f"scale of J (largest diagonal entry {top:.3g}); use path='auto' or 'svd', which normalize J")
    try:
        J = operator.matrix()
    except JacobianTooLargeError:
        if reason and top == 0.0:  # a Gram matrix of exact zeros: |J| < 1e-162 everywhere, too large to form
            return ops.zeros(n, like=g64), SpectralInfo(np.zeros(0), 0.0, 0, 'gram', 'zero Gram matrix')
        raise
    d, info = share.root_result(lambda: _svd_apply(ops, J, ops.on_device_of(g64, J), settings), n)
    info.fallback = reason
    return _finite_result(ops, d, info)


class _Local:
    """How the core shares results for a one-process operator: they are already everywhere (the identity)."""
    root = True

    @staticmethod
    def numbers(values: list) -> list:
        return values

    @staticmethod
    def root_result(compute, size: int):
        return compute()


def _finite_result(ops, d, info: SpectralInfo):
    if not _pymath.isfinite(ops.abs_max(d)):
        raise NonFiniteStepError("the half-inverse direction overflows float64 (its true value is out of range); "
                                 "the weights were left untouched")
    return d, info


def batched_half_inverse(settings: HalfInverse, J, g):
    """Per example ``b``: ``max(σ_b)^β · V_b Λ_b^κ U_bᵀ g_b`` for ``J: (B, m, n)``, ``g: (B, m)``, float64 SVD path.

    The same cut-off as `apply_half_inverse` (the batch of small dense Jacobians of a per-example inverse, e.g.
    the Gauss–Newton SIP inverse). ``J`` and ``g`` are torch tensors or JAX arrays; returns ``(B, n)`` float64 on
    their backend.
    """
    ops = array_ops(J)
    xp = ops.xp
    with ops.scope():
        u, s, vh = ops.svd(ops.float64(J))
        s_max = s[:, :1]
        keep = _svd_keep(s, s_max, settings, max(J.shape[1], J.shape[2]), xp)
        power = xp.where(keep, xp.where(keep, s, xp.ones_like(s)) ** settings.kappa, xp.zeros_like(s))
        d = xp.einsum('bkn,bk->bn', vh, power * xp.einsum('bmk,bm->bk', u, ops.float64(g)))
        if settings.beta != 0:
            d = d * xp.where(s_max > 0, s_max, xp.ones_like(s_max)) ** settings.beta
    return d


# ------------------------------------------------------------------------------------------- dense front end

def _array(name: str, value):
    """A NumPy array as a torch tensor, a torch tensor or a JAX array as it is; refused unless real floating-point
    and finite."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    elif not (isinstance(value, torch.Tensor) or is_jax_array(value)):
        raise InvalidInputError(f"{name} must be a NumPy array, a torch tensor, a JAX array or a PhiML tensor, got "
                                f"{type(value).__name__}")
    ops = array_ops(value)
    if not ops.is_real_floating(value):
        raise InvalidInputError(f"{name} must have a real floating-point dtype, got {value.dtype}")
    with ops.scope():
        if not ops.all_finite(value):
            bad = int((~ops.xp.isfinite(value)).sum())
            raise InvalidInputError(f"{name} contains {bad} non-finite value(s) (NaN or Inf)")
    return value


def half_inverse(J, g, kappa: float = -0.5, beta: float = 0.0, truncation: float = 1e-6, relative: bool = True,
                 path: str = AUTO, *, return_info: bool = False, max_bytes: Optional[float] = DEFAULT_MAX_BYTES,
                 method: Optional[str] = None):
    """Apply the truncated, exponentiated pseudo-inverse ``max(σ)^β · V Λ^κ Uᵀ`` of a given ``J`` to ``g``.

    A step ``θ ← θ − η·d`` with the returned ``d`` is HIG for κ = −1/2, Gauss–Newton for κ = −1 and gradient
    descent for κ = +1 (Schnell, Holl & Thuerey 2022, eqs. 5–7). A thin adapter: `HalfInverse` settings,
    `DenseJacobian` and `apply_half_inverse`; see the module docstring for paths and accuracy.

    Invariants: discarded singular values contribute exactly zero, so ``truncation=0`` gives the pseudo-inverse
    and a zero or rank-deficient J gives a finite result that is zero in its null directions; a finite J gives
    the same direction at any scale (up to the factor ``s^(κ+β)`` of a scale s) on every path: J is divided by an
    exact power of two first.

    Args:
        J: the stacked Jacobian ``(m, n)``: a NumPy array, a torch tensor (CPU or CUDA), a JAX array or a PhiML
            tensor (NumPy, torch or JAX backend; computed on that backend, float64 inside ``jax.enable_x64``). For a
            PhiML tensor, the rows are the dims of ``g`` (flattened in ``g``'s order) and the columns all other
            dims of ``J``; the result carries those column dims.
        g: the gradient of the loss with respect to the stacked outputs ``(m,)``, same kind as J.
        kappa, beta, truncation, relative, path: the `HalfInverse` settings.
        return_info: also return a `SpectralInfo`.
        max_bytes: limit for the Gram matrices.
        method: the deprecated name of ``path`` (a `DeprecationWarning`; removed in the next release).

    Returns:
        ``d`` of shape ``(n,)`` with J's kind, device and dtype (and the `SpectralInfo` if asked).

    Raises:
        InvalidInputError: non-finite entries, mismatched shapes or invalid settings.
        NonFiniteStepError: the result overflows J's dtype (e.g. float32), never an inf result.

    Example: for a diagonal J the direction scales each component of g by σ^κ.

    >>> import numpy as np
    >>> J, g = np.diag([4.0, 0.25]), np.array([1.0, 1.0])
    >>> print(np.round(half_inverse(J, g), 6))              # HIG, κ = −1/2: σ^(−1/2)
    [0.5 2. ]
    >>> print(np.round(half_inverse(J, g, kappa=-1), 6))    # Gauss–Newton: J⁻¹g
    [0.25 4.  ]
    >>> d, info = half_inverse(J, g, truncation=0.1, return_info=True)   # σ = 0.25 ≤ 0.1·σ_max is discarded
    >>> print(np.round(d, 6), info.rank, info.path)
    [0.5 0. ] 1 gram
    >>> half_inverse(J, np.array([1.0, np.nan]))
    Traceback (most recent call last):
    phi_hig.errors.InvalidInputError: g contains 1 non-finite value(s) (NaN or Inf)
    """
    settings = HalfInverse(kappa, beta, truncation, relative, choose_path(path, method, 'half_inverse'))
    return_info = checks.flag('return_info', return_info)
    if max_bytes is not None:
        max_bytes = checks.number('max_bytes', max_bytes, low=0, low_open=True, hint='or None for no limit')
    phiml_cols = None
    if 'tensor' in (kind(J), kind(g)):
        if not kind(J) == kind(g) == 'tensor':
            raise InvalidInputError("J and g must both be PhiML tensors when one of them is")
        missing = g.shape.without(J.shape)
        if missing:
            raise InvalidInputError(f"g has dims {missing} that J lacks; J's rows must be the dims of g")
        if J.shape.only(g.shape).sizes != g.shape.sizes:
            raise InvalidInputError(f"J's row dims {J.shape.only(g.shape)} do not match g's shape {g.shape}")
        phiml_cols = J.shape.without(g.shape)
        if not phiml_cols:
            raise InvalidInputError(f"J {J.shape} has no column dims besides g's dims {g.shape}")
        J, g = native_of(J, [g.shape, phiml_cols]), native_of(g, [g.shape])
    is_numpy = isinstance(J, np.ndarray)
    Jt, gt = _array('J', J), _array('g', g)
    ops = array_ops(Jt)
    if array_ops(gt) is not ops:
        raise InvalidInputError(f"J and g must be on the same backend, got J on {ops.name} and g on "
                                f"{array_ops(gt).name}")
    if Jt.ndim != 2:
        raise InvalidInputError(f"J must be 2-D (m, n), got shape {tuple(Jt.shape)}")
    if gt.ndim != 1 or gt.shape[0] != Jt.shape[0]:
        raise InvalidInputError(f"g must have shape ({Jt.shape[0]},) to match J {tuple(Jt.shape)}, got {tuple(gt.shape)}")
    with ops.scope():
        Jn, k = _normalized(ops, Jt)  # a given J of any scale: no Gram matrix under- or overflows, on any path
        d, info = apply_half_inverse(_scaled_settings(settings, k), DenseJacobian(Jn, max_bytes),
                                     ops.on_device_of(gt, Jt), max_bytes=max_bytes)
        d, info = _rescaled(d, info, k, settings)
        d = ops.cast(d, Jt)
        if not ops.all_finite(d):
            raise NonFiniteStepError(f"the half-inverse direction overflows {str(Jt.dtype).replace('torch.', '')} "
                                     f"(its largest float64 entry exceeds that range); pass J in float64")
    if is_numpy:
        d = d.numpy()
    if phiml_cols is not None:
        d = from_native(d, [phiml_cols])
    return (d, info) if return_info else d
