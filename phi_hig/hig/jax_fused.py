"""A whole JAX HIG step of a small Jacobian as one compiled call: pass, float64 Gram, eigh, cut-off and update.

At the HIG paper's toy size (b = 256, |y| = 2, 30 parameters) the arithmetic of a step takes microseconds and the
staged step (`phi_hig.hig.jax_optimizer.jax_hig_direction`: a compiled pass, then the spectral core's separately
compiled Gram, eigh and products with host decisions between them) spends most of its time dispatching. When the
Gram matrix of the step's path has at most `FUSED_MAX_SIDE` rows (`fusable`), `fused_step` traces all of it into
one function: the network + physics pass, the Gram matrix (``J Jᵀ`` from the layer factors or ``JᵀJ``), a float64
``eigh``, the cut-off, the direction and the cast update. Above that size the eigendecomposition dominates and the
staged step, which reports its Jacobian and linear-algebra times apart, is as fast.

The decisions stay those of `phi_hig.hig.spectral`: the cut-off and the 'auto' rule are
`phi_hig.hig.spectral.kept_gram_eigenvalues` and the Gram range `phi_hig.hig.spectral.gram_in_range`, evaluated in
the trace with ``jax.numpy``. Every case the spectral core treats otherwise (the 'auto' fallback to the SVD, a Gram
matrix under- or overflowing, a non-finite loss, gradient, direction or update) only clears the returned ``ok``
flag: the caller then discards the result and runs the staged step, which decides, falls back and raises exactly as
always. Invariant: an accepted fused update equals the staged step's up to rounding (tests/test_hig_jax.py).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import jax.numpy as jnp

from ..backend import x64
from .arrays import TRACES, array_ops
from .jax_jacobian import StaxStructure
from .spectral import HalfInverse, SpectralInfo, gram_in_range, kept_gram_eigenvalues

__all__ = ['FUSED_MAX_SIDE', 'fusable', 'fused_step', 'fused_result', 'call_fused']

FUSED_MAX_SIDE = 1024
"""The largest Gram matrix side (``b·|y|`` on 'gram', ``|θ|`` on 'dual') a step is fused for (8 MiB in float64)."""
_REPORT = 4  # report entries before the eigenvalues: loss, ok, μ_max, largest Gram diagonal entry


def fusable(path: str, n_rows: int, n_params: int) -> bool:
    """Whether a step on linear-algebra path ``path`` (as `phi_hig.hig.spectral.gram_path` returns it) is fused.

    Example:
        >>> fusable('dual', 512, 30), fusable('gram', 4096, 41408), fusable('svd', 8, 8)
        (True, False, False)
    """
    side = n_params if path == 'dual' else n_rows
    return path in ('gram', 'dual') and side <= FUSED_MAX_SIDE


def fused_step(structure: StaxStructure, run: Callable, relative: bool, auto: bool, path: str) -> Callable:
    """The traceable step ``step(leaves, natives, numbers) -> (new_leaves, report)`` (compile it with ``jax.jit``
    and call it with `call_fused`).

    ``run(leaves, natives)`` is the step's network + physics pass (`phi_hig.hig.jax_jacobian.jacobian_pass` on the
    user's values); ``path`` is 'gram' or 'dual'; ``relative`` and ``auto`` (``path='auto'``) are the static
    settings, ``numbers`` the float64 ``(lr, κ, β, τ)`` (a change of them is a new value, never a new trace).
    ``new_leaves`` are ``θ − (lr·d).astype(θ.dtype)`` per leaf with ``d = σ_max^β · W diag(μ^((κ−1)/2)) Wᵀ rhs``
    over the kept eigenpairs of the float64 Gram matrix (as `phi_hig.hig.spectral.apply_half_inverse`);
    ``report`` is a float64 vector read by `fused_result`.
    """
    dual = path == 'dual'
    ops = array_ops(jnp.zeros(0))

    def step(leaves, natives, numbers):
        TRACES['fused'] += 1
        lr, kappa, beta, truncation = numbers[0], numbers[1], numbers[2], numbers[3]
        y, inputs, deltas, block, value, g = run(leaves, natives)
        n_rows, n_params = int(g.shape[0]), structure.n_params
        g64 = g.astype(jnp.float64)
        if dual:
            J = structure.rows(inputs, deltas, block)
            G = J.T @ J
        else:
            G = structure.gram(inputs, deltas, block)
        top = jnp.max(jnp.diagonal(G))
        mu, w = ops.eigh(G, sort=False)
        mu_max = jnp.max(mu)
        keep, too_fine = kept_gram_eigenvalues(mu, mu_max, truncation, relative, auto, max(n_rows, n_params), jnp)
        rhs = J.T @ g64 if dual else g64
        out = ops.masked_product(w, mu, rhs, keep, (kappa - 1.0) / 2.0)
        out = out * jnp.where(mu_max > 0, jnp.sqrt(jnp.where(mu_max > 0, mu_max, 1.0)) ** beta, 0.0)
        d = out if dual else structure.vjp(inputs, deltas, block, out)
        ok = jnp.isfinite(value) & jnp.isfinite(g64).all() & gram_in_range(top, jnp) & ~too_fine
        new, offset = [], 0
        for leaf in leaves:
            change = (lr * d[offset:offset + leaf.size]).reshape(leaf.shape).astype(leaf.dtype)
            ok = ok & jnp.isfinite(change).all()
            new.append(leaf - change)
            offset += leaf.size
        ok = ok & jnp.isfinite(d).all()
        head = jnp.stack([value.astype(jnp.float64), ok.astype(jnp.float64), mu_max, top])
        return new, jnp.concatenate([head, jnp.where(keep, mu, jnp.nan)])
    return step


def fused_result(report, path: str):
    """``(loss, info)`` from a fused step's ``report``, or None when the step must be made by the staged path (the
    update is then discarded). ``info`` is the `phi_hig.hig.spectral.SpectralInfo` of the staged step: the kept
    singular values descending, σ_max, the rank and the path ('gram' or 'gram-dual')."""
    report = np.asarray(report)
    if report[1] != 1.0:
        return None
    mu = report[_REPORT:]
    kept = np.sort(mu[~np.isnan(mu)])[::-1]
    mu_max = float(report[2])
    if mu_max <= 0.0:
        return float(report[0]), SpectralInfo(np.zeros(0), 0.0, 0, 'gram-dual' if path == 'dual' else 'gram')
    return float(report[0]), SpectralInfo(np.sqrt(kept), float(np.sqrt(mu_max)), int(kept.size),
                                          'gram-dual' if path == 'dual' else 'gram')


def call_fused(compiled: Callable, leaves: list, natives: list, lr: float, settings: HalfInverse) -> tuple:
    """``compiled(leaves, natives, (lr, κ, β, τ))`` inside `phi_hig.backend.x64` (the numbers in float64)."""
    with x64():
        return compiled(leaves, natives, np.array([lr, settings.kappa, settings.beta, settings.truncation]))
