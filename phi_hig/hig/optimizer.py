"""The HIG optimizer (a ``torch.optim.Optimizer`` holding the settings) and its training step.

Usage, with torch tensors, PhiML tensors or PhiFlow Fields alike::

    opt = phi_hig.HIG(net, learning_rate=1., truncation=1e-6)       # κ = -1/2: HIG; κ = -1: Gauss–Newton
    info = phi_hig.hig_step(net, opt, inputs, targets, simulate, loss)
    print(info.loss)

Physics that depends on each example's initial state, boundary values or parameters takes them as conditions,
aligned with the inputs (the step repeats them with z wherever it repeats z)::

    info = phi_hig.hig_step(net, opt, inputs, targets, lambda u, x0: rk4(x0, u), loss, conditions=(x0,))

**Scale of g and how to pick η.** ``g`` is the gradient of the **batch-mean** loss ``(1/b)·Σ_i loss_i`` with
respect to the simulation outputs. The update is linear in g, so this normalization decides what η means: it
matches the authors' oscillator and quantum-dipole code (η = 1; Schnell, Holl & Thuerey 2022, appendix B). A
"full" Gauss–Newton step ``Δθ = J⁺r`` (the paper's GN without learning rate) is ``learning_rate = b`` with
``kappa = -1``. For a new problem start at η = 1 with τ = 1e-6 … 1e-4 and watch the first ten steps: a loss
that grows (often by orders of magnitude within a few steps) means η is too large for the problem's scale —
divide it by 10 until the loss falls. The papers' values in this convention: toy 1, oscillators 1, quantum
dipole 0.5, 8×8 Poisson 0.64.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from .. import checks
from ..backend import torch_backend
from .distributed import DistributedJacobian, active_group
from ..errors import HIGUsageError, InvalidInputError, NonFiniteStepError
from .spectral import AUTO, DEFAULT_MAX_BYTES, HalfInverse, apply_half_inverse, gram_path
from .jacobian import DEFAULT_CHUNK_ROWS, jacobian_factors, physics_function
from .options import OPTION_KEYS, HIGStepInfo, hig_options, reported_path, validated_arguments
from ..convert import BatchLayout, Conditions, NetworkCall, is_jax_network, refuse_tensorflow

__all__ = ['HIG', 'hig_step']

_SETTING_KEYS = ('truncation', 'kappa', 'beta', 'relative', 'path')
_OPTIONS_ENTRY = 'hig'  # their entry in state_dict()


class HIG(torch.optim.Optimizer):
    """Half-inverse gradients (κ = −1/2), Gauss–Newton (κ = −1) or GD (κ = +1) as a torch optimizer.

    The optimizer holds the settings and the parameters; an update needs per-sample Jacobians, so it is made by
    `hig_step`, not by ``loss.backward(); opt.step()``. The learning rate lives in ``param_groups[i]['lr']``, so
    torch learning-rate schedulers and ``state_dict`` round trips work; it is validated at every step.

    ``HIG(net, …)`` on a PhiML JAX network (``StaxNet``) returns a `phi_hig.hig.jax_optimizer.JaxHIG` with the same
    arguments, for `hig_step` on JAX.

    Args:
        net: a ``torch.nn.Module`` (e.g. ``phiml.nn.dense_net(...)`` on the torch backend) or an iterable of
            parameters / parameter groups; or a PhiML JAX network.
        learning_rate: η ≥ 0; the step is ``θ ← θ − η·d`` with g of the batch-mean loss (module docstring). Also
            accepted as ``lr``, its name in ``torch.optim`` and where it is stored (``param_groups[i]['lr']``); the
            command line's ``--hp hig.lr=…`` / ``--hp hig.learning_rate=…`` are the same key.
        truncation, kappa, beta, relative, path: the `phi_hig.hig.HalfInverse` settings: τ (relative to
            σ_max unless ``relative=False``), κ ∈ [−1, 1], β, and the linear-algebra path 'auto' (the float64
            Gram matrix, its dual when |θ| < b·|y|, a float64 SVD of J when the kept spectrum is below the Gram
            resolution or the Gram matrix under/overflows), 'gram', 'dual' or 'svd'.
        max_bytes: refuse any single J / Gram allocation above this size (`JacobianTooLargeError`).
        chunk_rows: replicated rows per backward pass when computing Jacobians.
        structured: None (default): hold the Jacobian columns of Linear / Conv layers as layer factors and
            never form J on the Gram paths; False: form J per sample (the reference path); True: require the
            factored form for every parameter.
        method: the deprecated name of ``path`` (a `DeprecationWarning`; giving both is an error; removed in the
            next release).

    The settings live in every parameter group under the keys ``truncation``, ``kappa``, ``beta``, ``relative``
    and ``path``; ``max_bytes``, ``chunk_rows`` and ``structured`` are attributes, which `state_dict` saves under
    the key ``'hig'``; `load_state_dict` also takes a state saved by an earlier release (key ``method``, no
    ``'hig'``). A `hig_step` counts as the optimizer's step for torch's learning-rate schedulers (which warn when
    they step before the optimizer did).

    >>> import torch
    >>> opt = HIG(torch.nn.Linear(2, 1), learning_rate=0.5, truncation=1e-5)
    >>> opt.settings.kappa, opt.settings.path, opt.param_groups[0]['lr']
    (-0.5, 'auto', 0.5)
    >>> HIG(torch.nn.Linear(2, 1), lr=0.5).param_groups[0]['lr']  # torch.optim's name
    0.5
    >>> HIG(torch.nn.Linear(2, 1), kappa=-2)
    Traceback (most recent call last):
    phi_hig.errors.InvalidInputError: kappa must be a finite number >= -1 and <= 1 (-0.5 HIG, -1 Gauss-Newton, 1 gradient descent), got -2
    """

    def __new__(cls, net=None, *args, **kwargs):
        if cls is HIG and is_jax_network(net):
            from .jax_optimizer import JaxHIG
            return JaxHIG(net, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, net, learning_rate: float = 1.0, truncation: float = 1e-6, kappa: float = -0.5,
                 beta: float = 0.0, relative: bool = True, path: str = AUTO,
                 max_bytes: Optional[float] = DEFAULT_MAX_BYTES, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 structured: Optional[bool] = None, *, lr: Optional[float] = None, method: Optional[str] = None):
        lr, settings, options = validated_arguments(learning_rate, truncation, kappa, beta, relative, path, max_bytes,
                                                    chunk_rows, structured, lr, method)
        params = _parameters(net)
        defaults = dict(lr=lr, **{k: getattr(settings, k) for k in _SETTING_KEYS})
        super().__init__(params, defaults)
        self.max_bytes, self.chunk_rows, self.structured = (options[k] for k in OPTION_KEYS)
        self._n_out = None  # |y| of the last step: lets the next step read y off the replicated physics pass

    def step(self, closure=None):
        """Not available: a summed scalar loss cannot give per-sample Jacobians.

        Raises:
            HIGUsageError: always; use ``phi_hig.hig_step(net, optimizer, inputs, targets, simulate, loss)``.
        """
        raise HIGUsageError("HIG needs the per-sample Jacobian of network and physics, which a summed scalar "
                            "loss cannot provide. Make the update with phi_hig.hig_step(net, optimizer, inputs, "
                            "targets, simulate, loss), where loss(y, targets) returns the loss per sample.")

    @property
    def settings(self) -> HalfInverse:
        """The validated `HalfInverse` settings, shared by all parameter groups (the spectrum is global).

        Read from ``param_groups`` every time (a user or ``load_state_dict`` may change them), validated when they
        differ from the last settings read."""
        first = tuple(self.param_groups[0][k] for k in _SETTING_KEYS)
        for group in self.param_groups[1:]:
            if tuple(group[k] for k in _SETTING_KEYS) != first:
                raise InvalidInputError("all parameter groups of HIG must share truncation, kappa, beta, "
                                        "relative and path (only lr may differ per group)")
        cached = getattr(self, '_settings', None)
        if cached is None or cached[0] != first or any(type(a) is not type(b) for a, b in zip(cached[0], first)):
            self._settings = (first, HalfInverse(**dict(zip(_SETTING_KEYS, first))))
        return self._settings[1]

    def state_dict(self) -> dict:
        """``torch.optim.Optimizer.state_dict`` plus, under the key ``'hig'``, the settings held outside the
        parameter groups (``max_bytes``, ``chunk_rows``, ``structured``): a `load_state_dict` round trip restores
        every setting."""
        state = super().state_dict()
        state[_OPTIONS_ENTRY] = {k: getattr(self, k) for k in OPTION_KEYS}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """``torch.optim.Optimizer.load_state_dict`` and the settings of `state_dict`'s ``'hig'`` entry, validated
        before anything changes; also a state of an earlier release: without that entry (or some of its keys) the
        current values stay, and a group's ``method`` (the old name of ``path``) is read as its ``path`` (the
        settings are validated at the next step)."""
        options = state_dict.get(_OPTIONS_ENTRY) if isinstance(state_dict, dict) else None
        if options is not None:
            if not isinstance(options, dict) or set(options) - set(OPTION_KEYS):
                raise InvalidInputError(f"state_dict['{_OPTIONS_ENTRY}'] must be a dict with keys among "
                                        f"{', '.join(OPTION_KEYS)}, got {options!r}")
            options = hig_options(dict({k: getattr(self, k) for k in OPTION_KEYS}, **options))
        groups = state_dict.get('param_groups') if isinstance(state_dict, dict) else None
        if groups and any(isinstance(g, dict) and 'method' in g for g in groups):
            renamed = [dict({k: v for k, v in g.items() if k != 'method'}, path=g.get('path', g['method']))
                       if isinstance(g, dict) and 'method' in g else g for g in groups]
            state_dict = dict(state_dict, param_groups=renamed)
        super().load_state_dict(state_dict)
        if options is not None:
            self.max_bytes, self.chunk_rows, self.structured = (options[k] for k in OPTION_KEYS)

    def params(self) -> list:
        """The trainable parameters, in the column order of the Jacobian."""
        return [p for g in self.param_groups for p in g['params'] if p.requires_grad]

    @torch.no_grad()
    def apply_direction(self, direction: torch.Tensor) -> None:
        """``θ ← θ − lr·d`` for a flat direction over `params` (in that order), all or nothing.

        Invariant: every group's lr is checked (a finite number ≥ 0, whoever set it: a scheduler,
        ``load_state_dict`` or user code) and every ``lr·d`` is checked to be finite *after* the cast to its
        parameter's dtype, before any weight changes.

        Raises:
            InvalidInputError: an invalid learning rate or a direction of the wrong length.
            NonFiniteStepError: an update that is not finite in its parameter's dtype.
        """
        lrs = checks.learning_rates(self.param_groups)
        groups = [(lr, [p for p in group['params'] if p.requires_grad]) for lr, group in zip(lrs, self.param_groups)]
        total = sum(p.numel() for _, ps in groups for p in ps)
        if total != direction.numel():
            raise InvalidInputError(f"direction has {direction.numel()} entries for {total} parameters")
        largest = float(direction.abs().max()) if total else 0.0
        if largest != largest or largest == float('inf'):
            raise NonFiniteStepError("the update direction is not finite; the weights were left untouched")
        updates, offset = [], 0
        for lr, ps in groups:
            cast = {}  # lr·d once per dtype of the group (one multiplication and one cast, then views)
            for p in ps:
                if p.dtype not in cast:
                    cast[p.dtype] = (lr * direction).to(p.dtype)
                n = p.numel()
                updates.append((p, cast[p.dtype][offset:offset + n].view_as(p)))
                offset += n
        # every |lr·d| below the dtype's largest value cannot overflow in the cast; else check each update
        safe = all(lr * largest < torch.finfo(p.dtype).max for lr, ps in groups for p in ps)
        if not safe and not all(bool(torch.isfinite(u).all()) for _, u in updates):
            raise NonFiniteStepError("the update lr·d is not finite in the parameters' dtype (it overflows); the "
                                     "weights were left untouched")
        for p, u in updates:
            p.sub_(u)
        self._opt_called = True  # a step was made: what torch's lr schedulers look for (their wrapper of step())


def _parameters(net) -> list:
    """The parameters (or parameter groups) HIG is built on, refused unless they are torch tensors."""
    if isinstance(net, nn.Module):
        params = list(net.parameters())
    elif hasattr(net, '__iter__') and not isinstance(net, (torch.Tensor, np.ndarray, str, bytes, dict)):
        params = list(net)
    else:
        refuse_tensorflow(net)
        raise InvalidInputError(f"HIG(net): net must be a torch.nn.Module or an iterable of its parameters (or "
                                f"parameter groups), or a PhiML JAX network (StaxNet), got {type(net).__name__}")
    if not params:
        raise InvalidInputError("HIG got no parameters: the network has none (or the list is empty)")
    for p in params:
        tensors = p.get('params', []) if isinstance(p, dict) else [p]
        tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise InvalidInputError(f"HIG needs torch tensors as parameters, got {type(p).__name__}"
                                    f"{'' if not isinstance(p, dict) else ' (a parameter group without tensors)'}")
    return params


def _loss_objective(loss: Callable, layout: list, targets) -> Callable:
    """The batch-mean loss as a function of the flattened outputs ``(b, |y|)``, y given to ``loss`` in its own
    form (``layout`` holds the `BatchLayout` once simulate has run)."""
    def objective(y_flat: torch.Tensor) -> torch.Tensor:
        value = layout[0].per_example(loss(layout[0].unflatten(y_flat), targets)).mean()
        if not value.requires_grad:
            raise InvalidInputError("loss(y, targets) is not differentiable in y (it returned a value without a "
                                    "gradient, e.g. computed from a detached y or from .numpy())")
        return value
    return objective


def _loss_gradient(objective: Callable, y_flat: torch.Tensor, known=None) -> tuple:
    """``(mean loss, g)``: g = ∂(mean_i loss_i)/∂y as ``(b·|y|,)``, from ``known = (value, gradient)`` when the
    Jacobian pass computed them, else by one backward pass of the loss alone; refused when not finite."""
    if known is None:
        y_var = y_flat.detach().requires_grad_(True)
        with torch.enable_grad(), torch_backend():
            value = objective(y_var)
            g, = torch.autograd.grad(value, y_var, allow_unused=True)
        known = value.detach(), g
    value, g = known
    mean = float(value)
    if mean != mean or mean in (float('inf'), float('-inf')):
        raise NonFiniteStepError("the loss is not finite (NaN or Inf); the weights were left untouched")
    g = torch.zeros_like(y_flat) if g is None else g
    g = g.reshape(-1)
    if not bool(torch.isfinite(g).all()):
        raise NonFiniteStepError("the loss gradient g is not finite (NaN or Inf); the weights were left untouched")
    return mean, g


def _sync(device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def hig_step(net: nn.Module, optimizer: HIG, inputs, targets, simulate: Optional[Callable],
             loss: Callable, conditions=None, *, group=None) -> HIGStepInfo:
    """One HIG (or Gauss–Newton, κ = −1) update of ``net``'s parameters held by ``optimizer``.

    Computes ``y = simulate(net(inputs), conditions)``, the per-example losses ``loss(y, targets)``, the gradient ``g`` of their
    mean with respect to y, the stacked per-sample Jacobian of network + physics as a Jacobian operator, and
    applies ``θ ← θ − lr·max(σ)^β·V Λ^κ Uᵀ g`` (truncated; `phi_hig.hig.apply_half_inverse`). Invariant: either the
    whole update is applied or, on error, none of it.

    On a PhiML JAX network (with the `phi_hig.hig.jax_optimizer.JaxHIG` that ``HIG(net)`` built) the step runs on
    JAX, compiled (`phi_hig.hig.jax_optimizer.jax_hig_step`), with the same arguments and diagnostics.

    Args:
        net: a ``torch.nn.Module`` or a PhiML JAX network. It is called like PhiFlow calls networks:
            ``field.native_call(net, inputs)``
            for a Field, ``math.native_call(net, inputs)`` for a PhiML tensor, ``net(inputs)`` for a torch tensor.
        optimizer: a `HIG` built on ``net``'s parameters.
        inputs: the network inputs: a batch-first torch tensor, a PhiML tensor or a PhiFlow Field (batch dims =
            examples), on the torch or NumPy backend.
        targets: whatever ``loss`` needs besides y (passed through, not checked: it may be a tensor, a Field, a
            tuple or a shared reference; a ``loss`` that broadcasts targets of another batch size is the
            caller's to refuse; its result must still hold one value per example).
        simulate: the physics ``z -> y`` in the form of the network output (Field → Field, e.g.
            ``field.laplace``; Tensor → Tensor; torch → torch), treating examples independently and accepting
            any batch size: the step evaluates it on b·|y| rows, every example repeated |y| times, to get the
            physics Jacobian in one backward pass. None for the identity.
        conditions: what ``simulate`` needs per example besides z (initial states, boundary values, masks,
            parameters), aligned with the inputs: a tuple → ``simulate(z, *conditions)``, a dict →
            ``simulate(z, **conditions)``, one value → ``simulate(z, conditions)``. Torch tensors (batch first),
            PhiML tensors and Fields with the inputs' batch dims are per-example: ``simulate`` receives the rows
            that go with z, in z's form; values without a batch (numbers, PhiML tensors without batch dims) are
            passed unchanged (the rule: `phi_hig.convert.Conditions`). Under a process group each rank passes
            the conditions of its own slice.
        loss: ``loss(y, targets)`` per example: a PhiML tensor with exactly the batch dims of y, or a torch
            tensor of shape ``(b,)``; differentiable in y.
        group: the ``torch.distributed`` process group whose ranks hold the slices of the global batch (rank
            order = batch order); default: the world group when ``torch.distributed`` is initialized with more
            than one process; ``False``: a one-process step. Each rank passes its own slice; g is the gradient
            of the *global* batch-mean loss, the Gram matrix and its eigendecomposition are formed once on rank 0
            (`phi_hig.hig.distributed.DistributedJacobian`), and every rank applies the same update, so weights stay
            identical across ranks. Without a process group this is the one-process step.

    Raises:
        NonFiniteStepError: non-finite loss, gradient, Jacobian or update (weights untouched).
        JacobianTooLargeError: the Jacobian or Gram matrix would exceed ``optimizer.max_bytes``.
        InvalidInputError: unsupported kinds (the message says what is supported), a wrong loss shape, invalid
            settings or learning rates, an empty batch, batch norm or dropout in training mode (or other random
            draws of the network), a condition whose batch does not match the inputs, or a ``simulate`` that fails
            on the replicated batch or returns another batch size (the message gives the rows and points to
            ``conditions=``; the original error is chained).

    Example: a full Gauss–Newton step (κ = −1, η = b) fits a linear model to linear data exactly.

    >>> import torch
    >>> net = torch.nn.Linear(1, 1)
    >>> x = torch.tensor([[0.0], [1.0], [2.0]])
    >>> opt = HIG(net, learning_rate=3.0, kappa=-1)
    >>> info = hig_step(net, opt, x, 2 * x + 1, None, lambda y, t: 0.5 * ((y - t) ** 2).sum(-1))
    >>> print(f"w = {net.weight.item():.3f}, b = {net.bias.item():.3f}, rank {info.rank}")
    w = 2.000, b = 1.000, rank 2
    """
    if not isinstance(optimizer, HIG) and is_jax_network(net):
        from .jax_optimizer import jax_hig_step
        return jax_hig_step(net, optimizer, inputs, targets, simulate, loss, conditions=conditions, group=group)
    if not isinstance(optimizer, HIG):
        raise InvalidInputError(f"optimizer must be a phi_hig.HIG, got {type(optimizer).__name__}")
    settings = optimizer.settings
    checks.learning_rates(optimizer.param_groups)
    call = NetworkCall(net, inputs)
    x = call.native_inputs
    if x.ndim == 0 or x.shape[0] == 0:
        raise InvalidInputError(f"inputs must hold at least one example, got a batch of shape {tuple(x.shape)}")
    simulate = physics_function(simulate, conditions)
    conditions = Conditions(conditions, x.shape[0], call.batch)
    params = optimizer.params()
    device = params[0].device if params else x.device
    group = active_group(group)
    if optimizer._n_out and group is None:  # |y| known from the last step: refuse a too large Gram before any pass
        gram_path(settings, x.shape[0] * optimizer._n_out, sum(p.numel() for p in params), optimizer.max_bytes)
    t0 = time.perf_counter()
    layouts = []  # the layout of simulate's output, fixed by its first call

    def simulate_native(z_native: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y_user = simulate(call.wrap(z_native), *args, **kwargs)
        if not layouts:
            layouts.append(BatchLayout(y_user, x.shape[0], call.batch))
        return layouts[0].flatten(y_user)

    objective = _loss_objective(loss, layouts, targets)
    operator = jacobian_factors(net, x, simulate_native, conditions=conditions, params=params, chunk_rows=optimizer.chunk_rows,
                                max_bytes=optimizer.max_bytes, structured=optimizer.structured,
                                n_out=optimizer._n_out, objective=objective)
    optimizer._n_out = operator.n_out
    mean_loss, g = _loss_gradient(objective, operator.y, operator.objective)
    structured, mixed = operator.structured, operator.mixed
    if group is not None:  # g of the global batch-mean loss, in rank order; the global operator
        operator = DistributedJacobian(operator, group)
        fraction = x.shape[0] / sum(operator.counts)
        g = operator.gather_rows(g * fraction)
        mean_loss = float(operator.sum(torch.tensor([mean_loss * fraction], dtype=torch.float64,
                                                        device=g.device)))
    _sync(device)
    t1 = time.perf_counter()
    d, info = apply_half_inverse(settings, operator, g, max_bytes=optimizer.max_bytes)
    optimizer.apply_direction(d)
    _sync(device)
    t2 = time.perf_counter()
    return HIGStepInfo(mean_loss, info.singular_values, info.rank, info.sigma_max,
                       reported_path(info.path, structured, mixed), t1 - t0, t2 - t1, t2 - t0)
