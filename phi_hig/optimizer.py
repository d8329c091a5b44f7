"""The HIG optimizer (a ``torch.optim.Optimizer`` holding the settings) and its training step.

Usage::

    opt = phi_hig.HIG(net, learning_rate=1., truncation=1e-6)       # κ = -1/2: HIG; κ = -1: Gauss–Newton
    info = phi_hig.hig_step(net, opt, inputs, targets, simulate, loss)

**Scale of g.** ``g`` is the gradient of the **batch-mean** loss ``(1/b)·Σ_i loss_i`` with respect to the
simulation outputs. The update is linear in g, so this normalization decides what η means: it matches the
authors' oscillator and quantum-dipole code (η = 1). A "full" Gauss–Newton step ``Δθ = J⁺r`` (the paper's
GN without learning rate) is ``learning_rate = b`` with ``kappa = -1`` in this convention.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .errors import HIGUsageError, InvalidInputError, NonFiniteStepError
from .hig import _half_inverse_torch, _gram_keeps_resolved, spectral_apply, validate_hig_settings
from .jacobian import DEFAULT_CHUNK_ROWS, DEFAULT_MAX_BYTES, _physics_pass, check_size, eigh64, jacobian_factors

__all__ = ['HIG', 'hig_step', 'HIGStepInfo']

PATHS = ('auto', 'gram', 'dual', 'svd')


class HIG(torch.optim.Optimizer):
    """Half-inverse gradients (κ = −1/2), Gauss–Newton (κ = −1) or GD (κ = +1) as a torch optimizer.

    The optimizer holds the settings and the parameters; an update needs per-sample Jacobians, so it is
    made by `hig_step`, not by ``loss.backward(); opt.step()``. The learning rate lives in
    ``param_groups[i]['lr']``, so torch learning-rate schedulers and ``state_dict`` round trips work.

    Args:
        net: a ``torch.nn.Module`` (e.g. ``phiml.nn.dense_net(...)`` on the torch backend) or an iterable of
            parameters / parameter groups.
        learning_rate: η; the step is ``θ ← θ − η·d`` with g of the batch-mean loss (module docstring).
        truncation: τ; singular values ``σ ≤ τ·σ_max`` are discarded (``σ ≤ τ`` if not ``relative``).
        kappa: κ ∈ [−1, 1].
        beta: β; the direction is scaled by ``σ_max^β``.
        relative: truncation relative to σ_max (default, as the authors' code) or absolute.
        method: 'auto' (fastest exact path: the dual ``eigh(JᵀJ)`` when |θ| < b·|y|, else the float64 Gram
            matrix, with a float64 SVD of J when the kept spectrum is below the Gram path's resolution),
            'gram', 'dual' or 'svd' to force one.
        max_bytes: refuse any single J / Gram allocation above this size (`JacobianTooLargeError`).
        chunk_rows: replicated rows per backward pass when computing Jacobians.
        structured: None (default): hold the Jacobian columns of Linear / Conv layers as layer factors and
            never form J on the 'gram' and 'dual' paths; False: form J per sample (the reference path);
            True: require the factored form for every parameter.
    """

    def __init__(self, net, learning_rate: float = 1.0, truncation: float = 1e-6, kappa: float = -0.5,
                 beta: float = 0.0, relative: bool = True, method: str = 'auto',
                 max_bytes: Optional[float] = DEFAULT_MAX_BYTES, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 structured: Optional[bool] = None):
        validate_hig_settings(kappa, beta, truncation, relative, 'auto')
        if method not in PATHS:
            raise InvalidInputError(f"method must be one of {PATHS}, got {method!r}")
        if not isinstance(learning_rate, (int, float)) or not np.isfinite(learning_rate) or learning_rate < 0:
            raise InvalidInputError(f"learning_rate must be a finite number >= 0, got {learning_rate!r}")
        params = net.parameters() if isinstance(net, nn.Module) else net
        defaults = dict(lr=float(learning_rate), truncation=float(truncation), kappa=float(kappa),
                        beta=float(beta), relative=relative, method=method)
        super().__init__(params, defaults)
        self.max_bytes = max_bytes
        self.chunk_rows = chunk_rows
        if structured not in (None, True, False):
            raise InvalidInputError(f"structured must be None, True or False, got {structured!r}")
        self.structured = structured

    def step(self, closure=None):
        """Not available: a summed scalar loss cannot give per-sample Jacobians.

        Raises:
            HIGUsageError: always; use ``phi_hig.hig_step(net, optimizer, inputs, targets, simulate, loss)``.
        """
        raise HIGUsageError("HIG needs the per-sample Jacobian of network and physics, which a summed scalar "
                            "loss cannot provide. Make the update with phi_hig.hig_step(net, optimizer, inputs, "
                            "targets, simulate, loss), where loss(y, targets) returns the loss per sample.")

    @property
    def settings(self) -> dict:
        """κ, β, τ, relative and method, shared by all parameter groups (the spectrum is global)."""
        keys = ('truncation', 'kappa', 'beta', 'relative', 'method')
        first = {k: self.param_groups[0][k] for k in keys}
        for group in self.param_groups[1:]:
            if any(group[k] != first[k] for k in keys):
                raise InvalidInputError("all parameter groups of HIG must share truncation, kappa, beta, "
                                        "relative and method (only lr may differ per group)")
        validate_hig_settings(first['kappa'], first['beta'], first['truncation'], first['relative'], 'auto')
        return first

    def params(self) -> list:
        """The trainable parameters, in the column order of the Jacobian."""
        return [p for g in self.param_groups for p in g['params'] if p.requires_grad]

    @torch.no_grad()
    def apply_direction(self, direction: torch.Tensor) -> None:
        """``θ ← θ − lr·d`` for a flat direction over `params` (in that order), all or nothing."""
        offset = 0
        updates = []
        for group in self.param_groups:
            for p in group['params']:
                if not p.requires_grad:
                    continue
                n = p.numel()
                updates.append((p, group['lr'], direction[offset:offset + n].view_as(p).to(p.dtype)))
                offset += n
        if offset != direction.numel():
            raise InvalidInputError(f"direction has {direction.numel()} entries for {offset} parameters")
        for p, lr, d in updates:
            p.sub_(lr * d)


@dataclass
class HIGStepInfo:
    """Diagnostics of one `hig_step`.

    Attributes:
        loss: batch-mean loss before the update.
        singular_values: kept singular values of J, descending (NumPy float64).
        rank: number of kept singular values.
        sigma_max: largest singular value of J.
        path: linear-algebra path taken ('gram', 'gram-dual' or 'svd'), '+structured' if J was not formed.
        time_jacobian: seconds for the Jacobian / Gram matrix.
        time_linalg: seconds for the eigendecomposition / SVD and the update direction.
        time_total: seconds for the whole step.
    """
    loss: float
    singular_values: np.ndarray
    rank: int
    sigma_max: float
    path: str
    time_jacobian: float
    time_linalg: float
    time_total: float


def _check_finite(what: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteStepError(f"{what} is not finite (NaN or Inf); the weights were left untouched")


def _sync(device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def hig_step(net: nn.Module, optimizer: HIG, inputs: torch.Tensor, targets, simulate: Optional[Callable],
             loss: Callable) -> HIGStepInfo:
    """One HIG (or Gauss–Newton, κ = −1) update of ``net``'s parameters held by ``optimizer``.

    Computes ``y = simulate(net(inputs))``, the per-sample losses ``loss(y, targets)`` (shape ``(b,)``), the
    gradient ``g`` of their mean with respect to y, the stacked per-sample Jacobian of network + physics,
    and applies ``θ ← θ − lr·max(σ)^β·V Λ^κ Uᵀ g`` (truncated). Invariant: either the whole update is applied
    or, on error, none of it.

    Args:
        net: the network (``torch.nn.Module``), on the device of ``inputs``.
        optimizer: a `HIG` built on ``net``'s parameters.
        inputs: network inputs, batch first.
        targets: whatever ``loss`` needs besides y (passed through).
        simulate: batched physics ``z -> y`` treating samples independently (PyTorch / PhiML operations);
            None for the identity.
        loss: ``loss(y, targets) -> (b,)`` per-sample loss, differentiable in y.

    Raises:
        NonFiniteStepError: non-finite loss, gradient, Jacobian or update (weights untouched).
        JacobianTooLargeError: the Jacobian or Gram matrix would exceed ``optimizer.max_bytes``.
        InvalidInputError: a wrong loss shape, invalid settings or batch norm in training mode.
    """
    if not isinstance(optimizer, HIG):
        raise InvalidInputError(f"optimizer must be a phi_hig.HIG, got {type(optimizer).__name__}")
    s = optimizer.settings
    simulate = simulate or (lambda z: z)
    params = optimizer.params()
    device = params[0].device
    t0 = time.perf_counter()
    with torch.no_grad():
        z = net(inputs)
    # y and the physics Jacobian P from one replicated pass (|y| known from the previous step; else a forward)
    y, P = _physics_pass(simulate, z, None, getattr(optimizer, '_n_out', None), optimizer.chunk_rows,
                         optimizer.max_bytes)
    optimizer._n_out = P.shape[1]
    y_var = y.detach().clone().requires_grad_(True)
    b, ny = y.shape[0], y[0].numel()
    with torch.enable_grad():
        per_sample = loss(y_var, targets)
        if per_sample.shape != (b,):
            raise InvalidInputError(f"loss(y, targets) must return one value per sample, shape ({b},), "
                                    f"got {tuple(per_sample.shape)}")
        mean_loss = per_sample.mean()
        g, = torch.autograd.grad(mean_loss, y_var)
    _check_finite("the loss", per_sample.detach())
    _check_finite("the loss gradient g", g)
    g = g.reshape(-1)
    R, n_params = b * ny, sum(p.numel() for p in params)
    path = s['method']
    if path == 'auto':
        path = 'dual' if n_params < R else 'gram'
    if path == 'dual':
        check_size("The dual Gram matrix JᵀJ (float64)", (n_params, n_params), 8, optimizer.max_bytes)
    elif path == 'gram':
        check_size("The Gram matrix J Jᵀ (float64)", (R, R), 8, optimizer.max_bytes)
    factors = jacobian_factors(net, inputs, simulate, params=params, chunk_rows=optimizer.chunk_rows,
                               max_bytes=optimizer.max_bytes, forward=(z, y), physics=P,
                               structured=getattr(optimizer, 'structured', None))
    kappa, beta, tau, rel = s['kappa'], s['beta'], s['truncation'], s['relative']
    floor_dim = max(R, n_params)
    if path == 'gram':
        G = factors.gram()
        _sync(device)
        t1 = time.perf_counter()
        _check_finite("the Gram matrix J Jᵀ", G)
        eig = eigh64(G, overwrite=True)  # G is not needed afterwards
        del G
        if s['method'] == 'auto' and not _gram_keeps_resolved(eig[0], tau, rel, floor_dim):
            path = 'svd'
        else:
            c, info = spectral_apply(None, g.to(torch.float64), kappa, beta, tau, rel, floor_dim, eig)
            d = factors.vjp(c)
            info.path = 'gram+structured' if factors.structured else ('gram+mixed' if factors.mixed else 'gram')
        del eig
    if path == 'dual':
        H = factors.gram_dual()
        _sync(device)
        t1 = time.perf_counter()
        _check_finite("the Jacobian J", H)
        d, info = spectral_apply(None, factors.vjp(g), kappa, beta, tau, rel, floor_dim, eigh64(H, overwrite=True))
        info.path = 'gram-dual'
    if path == 'svd':
        J = factors.matrix()
        _check_finite("the Jacobian J", J)
        _sync(device)
        t1 = time.perf_counter()
        d, info = _half_inverse_torch(J, g, kappa, beta, tau, rel, 'svd')
    _check_finite("the update direction", d)
    optimizer.apply_direction(d)
    _sync(device)
    t2 = time.perf_counter()
    return HIGStepInfo(float(mean_loss.detach()), info.singular_values, info.rank, info.sigma_max, info.path,
                       t1 - t0, t2 - t1, t2 - t0)

