"""Generic inverse updates for SIP training of low-dimensional problems given as batched torch functions.

An *inverse* is a callable `inverse(x, y_target, *conditions, y=None, **named) -> Δx` returning the update of one
inverse-solver step (η = 1), the contract of `phi_hig.sip.sip_step`. The factories here build inverses for a
batched torch or JAX function `forward(x, *conditions, **named) -> y` (`x: (B, n)`, `y: (B, m)`, rows
independent examples; the conditions as `sip_step` passes them, `phi_hig.convert.Conditions`; the inverse works on
the backend of the `x` it is given, JAX derivatives from `phi_hig.sip.jax_inverses`); each inverse minimizes the
per-example loss `L(x) = ½‖forward(x) − y*‖²` (or a given `loss(y, y*) -> (B,)`):

* `gradient_descent`: `Δx = −η·∂L/∂x`; with η = 1 SIP equals back-propagation (Holl, Koltun & Thuerey 2021,
  appendix A.1, Theorem 1);
* `newton`: `Δx = −H⁻¹∇L`;
* `saddle_free_newton`: Newton with `|eigenvalues|` of `H` and a capped step (Holl, Koltun & Thuerey 2022, §3.4);
* `gauss_newton`: `Δx = J⁺(y* − y)` with a truncated pseudo-inverse of the physics Jacobian;
* `iterative`: a few iterations of an optimizer of PhiML's `math.minimize` (L-BFGS-B by default).

Every factory validates its settings when it is called, and every inverse validates `x` and `y_target` before
computing anything; refusals raise `InvalidInputError` naming the argument and the allowed values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numpy as np
import torch
from phiml import math
from phiml.math import batch, channel, Solve

from .. import checks
from ..backend import is_jax_array, torch_backend
from ..convert import Conditions
from ..errors import InvalidInputError, NonFiniteStepError
from ..hig.arrays import array_ops
from ..hig.jacobian import physics_jacobian
from ..hig.spectral import HalfInverse, batched_half_inverse
from .loss import l2_loss

__all__ = ['Inverse', 'gradient_descent', 'newton', 'saddle_free_newton', 'gauss_newton', 'pseudo_inverse_apply',
           'iterative', 'newton_inverse', 'ITERATIVE_METHODS']

ITERATIVE_METHODS = ('L-BFGS-B', 'BFGS', 'CG', 'GD')
"""Optimizers `iterative` accepts: SciPy's (through PhiML's `math.minimize`) and PhiML's adaptive 'GD'."""


def gradient_descent(forward: Callable, *, learning_rate: float = 1., loss: Callable = None) -> Callable:
    """Inverse of one gradient-descent step: `Δx = −η·∂L/∂x` per example.

    With η = 1 and `L` the loss that back-propagation would use, SIP with this inverse reproduces ordinary
    back-propagation training (Holl, Koltun & Thuerey 2021, appendix A.1, Theorem 1).

    Args:
        forward: Batched torch or JAX function `(B, n) -> (B, m)`.
        learning_rate: η, a finite number > 0.
        loss: Per-example loss `loss(y, y_target) -> (B,)`; default `½‖y − y*‖²`.

    Raises:
        InvalidInputError: `forward` or `loss` is not callable, or `learning_rate` is not a finite number > 0.
    """
    _check_functions(forward, loss)
    learning_rate = checks.number('learning_rate', learning_rate, low=0, low_open=True)

    def inverse(x, y_target, *conditions, y=None, **named):
        grad, _ = _derivatives(forward, loss, x, y_target, conditions, named, hessian=False)
        return -learning_rate * grad
    return inverse


def newton(forward: Callable, *, loss: Callable = None) -> Callable:
    """Inverse of one Newton step on the per-example loss: `Δx = −H⁻¹∇L` (`H` the per-example Hessian).

    Converges quadratically near a minimum with a non-singular Hessian; moves towards saddles and maxima
    where `H` is indefinite (use `saddle_free_newton` there). Where `H` is singular the step does not exist:
    the inverse then raises `InvalidInputError` naming the examples and suggesting `saddle_free_newton`.

    Args:
        forward: Batched torch or JAX function `(B, n) -> (B, m)`.
        loss: Per-example loss `loss(y, y_target) -> (B,)`; default `½‖y − y*‖²`.
    """
    _check_functions(forward, loss)

    def inverse(x, y_target, *conditions, y=None, **named):
        grad, hess = _derivatives(forward, loss, x, y_target, conditions, named)
        if is_jax_array(x):
            import jax.numpy as jnp
            step = jnp.linalg.solve(hess, grad[..., None])
            singular = torch.from_numpy(~np.isfinite(np.asarray(step)).all(axis=(1, 2)))
        else:
            step, info = torch.linalg.solve_ex(hess, grad.unsqueeze(-1))
            singular = (info != 0) | ~torch.isfinite(step).all(dim=(1, 2))
        if bool(singular.any()):
            examples = torch.nonzero(singular).flatten().tolist()
            raise InvalidInputError(f"newton: the Hessian of the loss is singular at x for example(s) {examples[:10]}"
                                    f"{' …' if len(examples) > 10 else ''}, so the Newton step -H⁻¹∇L does not exist "
                                    f"there; use saddle_free_newton, which caps the step along flat directions")
        return -step[..., 0]
    return inverse


def saddle_free_newton(forward: Callable, *, max_step: float = 1., loss: Callable = None) -> Callable:
    """Inverse of one saddle-free Newton step: `Δx = −Σ_i q_i·clip(q_iᵀ∇L / |λ_i|, ±max_step)`.

    `(λ_i, q_i)` are the eigenpairs of the per-example Hessian. Using `|λ_i|` turns every direction into a
    descent direction (no attraction to saddles or maxima); the clip caps the change along low-curvature
    directions, where `1/|λ_i|` would explode. The step is invariant to rescaling the outputs of `forward`
    and to rotations of `x` (except through the cap), which is what makes it scale-invariant.

    Args:
        forward: Batched torch or JAX function `(B, n) -> (B, m)`.
        max_step: Largest change along any eigen-direction, in units of `x`: a finite number > 0.
        loss: Per-example loss `loss(y, y_target) -> (B,)`; default `½‖y − y*‖²`.
    """
    _check_functions(forward, loss)
    max_step = checks.number('max_step', max_step, low=0, low_open=True)

    def inverse(x, y_target, *conditions, y=None, **named):
        grad, hess = _derivatives(forward, loss, x, y_target, conditions, named)
        xp = array_ops(grad).xp
        eigenvalues, q = xp.linalg.eigh(hess)
        along = xp.einsum('bni,bn->bi', q, grad)
        step = along / xp.clip(xp.abs(eigenvalues), xp.finfo(grad.dtype).tiny, None)
        step = xp.clip(step, -max_step, max_step)
        return -xp.einsum('bni,bi->bn', q, step)
    return inverse


def gauss_newton(forward: Callable, *, truncation: float = 1e-6, relative: bool = True) -> Callable:
    """Inverse of one per-example Gauss–Newton step: `Δx = J⁺(y* − y)` with the truncated pseudo-inverse of the
    physics Jacobian `J = ∂y/∂x` of each example (`pseudo_inverse_apply`, float64). The result has the dtype of `x`.

    Args:
        forward: Batched torch or JAX function `(B, n) -> (B, m)`.
        truncation: Singular-value cut-off: a finite number >= 0, and < 1 when `relative`.
        relative: Whether `truncation` is relative to the largest singular value of each example.
    """
    _check_functions(forward, None)
    settings = _pseudo_inverse(truncation, relative)

    def inverse(x, y_target, *conditions, y=None, **named):
        if is_jax_array(x):
            from .jax_inverses import jacobian
            jac, y = jacobian(forward, x, y_target, conditions, named)
        else:
            jac, y = _jacobian(forward, x, y_target, conditions, named)
        ops = array_ops(jac)
        with ops.scope():
            return ops.cast(batched_half_inverse(settings, jac, ops.float64(y_target - y)), x)
    return inverse


def pseudo_inverse_apply(jac: torch.Tensor, rhs: torch.Tensor, *, truncation: float = 1e-6, relative: bool = True) -> torch.Tensor:
    """Batched truncated pseudo-inverse `J_b⁺ r_b` for `jac: (B, m, n)`, `rhs: (B, m)`, in float64.

    Singular values `σ ≤ max(truncation·σ_max, max(m, n)·ε₆₄·σ_max)` (or `truncation` when not `relative`) are
    discarded, so the result matches `phi_hig.half_inverse(J_b, r_b, kappa=-1, truncation=truncation,
    relative=relative)` per example.

    Raises:
        InvalidInputError: the shapes do not fit, or `truncation` / `relative` are invalid (see `gauss_newton`).
    """
    settings = _pseudo_inverse(truncation, relative)
    if not isinstance(jac, torch.Tensor) or jac.ndim != 3:
        raise InvalidInputError(f"jac must be a torch tensor of shape (B, m, n), got {getattr(jac, 'shape', type(jac).__name__)}")
    if not isinstance(rhs, torch.Tensor) or tuple(rhs.shape) != tuple(jac.shape[:2]):
        raise InvalidInputError(f"rhs must be a torch tensor of shape {tuple(jac.shape[:2])} (B, m) for jac of shape "
                                f"{tuple(jac.shape)}, got {getattr(rhs, 'shape', type(rhs).__name__)}")
    return batched_half_inverse(settings, jac, rhs)


def iterative(forward: Callable, *, iterations: int = 1, method: str = 'L-BFGS-B', loss: Callable = None) -> Callable:
    """Inverse made of `iterations` steps of an iterative optimizer run through PhiML's `math.minimize`.

    Each example is minimized independently (SciPy's L-BFGS-B by default) starting from `x`, in float64 under
    PhiML's torch backend; the update is the difference between the iterate after `iterations` steps and `x`,
    in the dtype of `x`. Not converging within `iterations` is the normal case and is not an error.

    Args:
        forward: Batched torch or JAX function `(B, n) -> (B, m)`.
        iterations: Optimizer iterations per call, an integer >= 1.
        method: One of `ITERATIVE_METHODS`.
        loss: Per-example loss `loss(y, y_target) -> (B,)`; default `½‖y − y*‖²`.
    """
    _check_functions(forward, loss)
    iterations = checks.integer('iterations', iterations, low=1)
    method = checks.choice('method', method, ITERATIVE_METHODS)

    def inverse(x, y_target, *conditions, y=None, **named):
        if is_jax_array(x):
            return _iterate_on_jax(forward, loss, x, y_target, conditions, named, iterations, method)
        _check_batched(x, y_target)
        per_example = loss or l2_loss
        target = y_target.detach()
        with torch.no_grad():  # everything that can refuse runs here, before the optimizer's worker threads
            y0 = forward(x.detach(), *conditions, **named) if y is None else y
            _finite_forward(y0)
            _per_example_loss(per_example, y0, target)
        failure = []

        def objective(params):
            native = params.native(['examples', 'params'])
            try:
                value = per_example(forward(native, *conditions, **named), target)
            except Exception as err:  # raising inside math.minimize would leave its threads waiting forever:
                failure.append(err)   # end the optimization with a NaN objective, re-raise afterwards
                value = native.sum(-1) * float('nan')
            return math.wrap(value, batch('examples'))
        x0 = math.wrap(x.detach().to(torch.float64), batch('examples'), channel('params'))
        solve = Solve(method, 0, 0, max_iterations=iterations, x0=x0, suppress=[math.NotConverged, math.Diverged])
        with torch_backend():
            x_new = math.minimize(objective, solve)
        if failure:
            raise failure[0]
        return (x_new.native(['examples', 'params']) - x0.native(['examples', 'params'])).to(x.dtype)
    return inverse


@dataclass(frozen=True)
class Inverse:
    """One SIP inverse solver of an experiment and its options.

    Calling the Inverse, `inverse(z, targets, *conditions, y=None, **overrides)`, runs
    `solve(z, targets, *conditions, y=y, **resolve(overrides))`: one inverse-physics step (η = 1) from the network
    output `z`, returning `Δz` of the shape of `z` (the `phi_hig.sip.sip_step` contract).

    Attributes:
        solve: `solve(z, targets, *conditions, y=None, **options) -> Δz`; `y` is the simulation of `z` when known.
            The conditions are those of the experiment's physics (`phi_hig.experiments.Experiment.conditions`),
            passed as `phi_hig.sip_step` passes them (a tuple by position, a dict by name, one value as one
            argument); an experiment without conditions passes none.
        options: option name -> default value (int, float, bool or str); the keyword arguments `solve` takes
            besides `y`. Read-only.
        check: optional `check(options)` run on every complete set of options; raises `InvalidInputError`
            naming the option for a bad value (e.g. a negative noise level).
    """
    solve: Callable
    options: Mapping[str, object] = field(default_factory=dict)
    check: Optional[Callable[[dict], None]] = None

    def __post_init__(self):
        if not callable(self.solve):
            raise InvalidInputError(f"Inverse.solve must be callable solve(z, targets, *, y=None, **options), "
                                    f"got {type(self.solve).__name__}")
        if not isinstance(self.options, Mapping):
            raise InvalidInputError(f"Inverse.options must be a dict of option defaults, got {self.options!r}")
        for key, value in self.options.items():
            if not isinstance(key, str) or not isinstance(value, (bool, int, float, str)):
                raise InvalidInputError(f"Inverse option {key!r} must have a default of type int, float, bool or "
                                        f"str, got {value!r}")
        if self.check is not None and not callable(self.check):
            raise InvalidInputError(f"Inverse.check must be None or callable, got {type(self.check).__name__}")
        object.__setattr__(self, 'options', MappingProxyType(dict(self.options)))
        self.resolve()  # the defaults themselves must pass

    def resolve(self, overrides: Optional[Mapping] = None) -> dict:
        """The complete options: the defaults updated by `overrides`, validated.

        An override must name an option and have the type of its default (a bool for a bool; an integer for an
        int; a finite number for a float, ints and NumPy scalars accepted; a string for a str); then `check`
        runs on the complete set.

        Raises:
            InvalidInputError: an unknown option, a value of the wrong type, or one that `check` refuses.
        """
        if overrides is not None and not isinstance(overrides, Mapping):
            raise InvalidInputError(f"inverse_options must be a dict of option values, got {overrides!r}")
        options = dict(self.options)
        for key, value in (overrides or {}).items():
            if key not in options:
                raise InvalidInputError(f"unknown inverse option {key!r}; this inverse has "
                                        f"{', '.join(map(repr, options)) or 'no options'}")
            options[key] = _option_value(key, value, options[key])
        if self.check is not None:
            self.check(options)
        return options

    def __call__(self, z, targets, *conditions, y=None, **overrides):
        """`solve(z, targets, *conditions, y=y, **options)` with the options `resolve(overrides)` (conditions by
        name: call `solve` with resolved options)."""
        return self.solve(z, targets, *conditions, y=y, **self.resolve(overrides))


def newton_inverse(simulate: Callable, n_y: int, max_step: float) -> Inverse:
    """The SIP inverse of a low-dimensional experiment whose targets start with `y*` (their first ``n_y`` columns):
    one saddle-free Newton step (`phi_hig.inverses.saddle_free_newton`; Holl, Koltun & Thuerey 2022, §3.4) of
    ``simulate``, computed in float64 and returned in the network's dtype, with the option ``max_step`` (its
    default given here; a finite number > 0, checked when set)."""
    def solve(z, targets, *, y=None, max_step):
        return saddle_free_newton(simulate, max_step=max_step)(z.double(), targets[:, :n_y].double()).to(z.dtype)
    return Inverse(solve, {'max_step': max_step}, lambda o: saddle_free_newton(simulate, max_step=o['max_step']))


def _option_value(key: str, value, default):
    """`value` checked against (and converted to) the type of `default`."""
    if isinstance(default, bool):
        return checks.flag(key, value)
    if isinstance(default, int):
        return checks.integer(key, value)
    if isinstance(default, float):
        return checks.number(key, value)
    if not isinstance(value, str):
        raise InvalidInputError(f"{key} must be a string, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------- helpers

def _derivatives(forward, loss, x, y_target, conditions: tuple, named: dict, hessian=True):
    """Per-example gradient and Hessian of the loss on the backend of ``x`` (torch or JAX)."""
    if is_jax_array(x):
        from .jax_inverses import gradient_and_hessian
        return gradient_and_hessian(forward, loss, x, y_target, conditions, named, hessian)
    return _gradient_and_hessian(forward, loss, x, y_target, conditions, named, hessian)


def _iterate_on_jax(forward, loss, x, y_target, conditions: tuple, named: dict, iterations: int, method: str):
    """`iterative` for JAX arrays: ``iterations`` steps of PhiML's ``math.minimize`` under its JAX backend, from x."""
    from phiml.backend.jax import JAX
    from .jax_inverses import check_batched, finite_forward
    check_batched(x, y_target)
    finite_forward(forward(x, *conditions, **named))
    per_example = loss or l2_loss

    def objective(params):
        return math.wrap(per_example(forward(params.native(['examples', 'params']), *conditions, **named), y_target),
                         batch('examples'))
    x0 = math.wrap(x, batch('examples'), channel('params'))
    solve = Solve(method, 0, 0, max_iterations=iterations, x0=x0, suppress=[math.NotConverged, math.Diverged])
    with JAX:
        x_new = math.minimize(objective, solve)
    return (x_new.native(['examples', 'params']) - x).astype(x.dtype)


def _check_functions(forward, loss: Optional[Callable]) -> None:
    if not callable(forward):
        raise InvalidInputError(f"forward must be a callable (B, n) -> (B, m), got {type(forward).__name__}")
    if loss is not None and not callable(loss):
        raise InvalidInputError(f"loss must be None or a callable loss(y, y_target) -> (B,), got {type(loss).__name__}")


def _pseudo_inverse(truncation, relative) -> HalfInverse:
    """The truncated pseudo-inverse (κ = −1) as validated `HalfInverse` settings of the HIG core (one cut-off)."""
    return HalfInverse(kappa=-1.0, truncation=truncation, relative=relative, path='svd')


def _check_batched(x, y_target):
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise InvalidInputError(f"x must be a torch tensor of shape (examples, n) but got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(y_target, torch.Tensor) or y_target.ndim != 2:
        raise InvalidInputError(f"y_target must be a torch tensor of shape (examples, m) but got {getattr(y_target, 'shape', type(y_target).__name__)}")
    if x.shape[0] != y_target.shape[0]:
        raise InvalidInputError(f"y_target has {y_target.shape[0]} examples but x has {x.shape[0]}; they must match")
    for name, t in (('x', x), ('y_target', y_target)):
        if not torch.isfinite(t).all():
            raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")


def _finite_forward(y) -> None:
    """Refuse a simulation output that is not finite (`NonFiniteStepError` naming the examples): an inverse step
    from it would be NaN or, for an optimizer that stops at a NaN objective, silently zero."""
    if isinstance(y, torch.Tensor) and not bool(torch.isfinite(y).all()):
        bad = (~torch.isfinite(y.reshape(y.shape[0], -1))).any(1).nonzero().reshape(-1).tolist()
        raise NonFiniteStepError(f"forward(x) is not finite (NaN or Inf) for example(s) {bad[:10]}"
                                 f"{' …' if len(bad) > 10 else ''}; no inverse step exists there")


def _per_example_loss(loss, y, y_target):
    """``loss(y, y_target)``, refused (`InvalidInputError`) unless it has one value per example."""
    value = loss(y, y_target)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (y.shape[0],):
        raise InvalidInputError(f"loss(y, y_target) must return one value per example, shape ({y.shape[0]},); got "
                                f"{getattr(value, 'shape', type(value).__name__)}")
    return value


def _differentiable(y, x) -> None:
    """Refuse a forward whose output does not carry x's gradient (detached, NumPy, integer): no gradient-based
    inverse step exists for it."""
    if not (isinstance(y, torch.Tensor) and y.requires_grad):
        raise InvalidInputError("forward is not differentiable in its input x: its output carries no gradient "
                                "(detached, NumPy or integer?); the gradient-based inverses need a differentiable "
                                "torch forward")


def _gradient_and_hessian(forward, loss, x, y_target, conditions: tuple, named: dict, hessian=True):
    """Per-example gradient `(B, n)` and Hessian `(B, n, n)` of `loss(forward(x), y*)`, by n extra backward passes.

    Examples are independent, so the Hessian of the summed loss is block-diagonal and row `j` of every block is
    the gradient of `Σ_b ∂L_b/∂x_bj`.
    """
    _check_batched(x, y_target)
    loss = loss or l2_loss
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = forward(x, *conditions, **named)
        _differentiable(y, x)
        _finite_forward(y)
        total = loss(y, y_target.detach()).sum()
        grad, = torch.autograd.grad(total, x, create_graph=hessian)
        if not hessian:
            return grad.detach(), None
        rows = [torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True, allow_unused=True)[0] for j in range(x.shape[1])]
    rows = [torch.zeros_like(x) if r is None else r for r in rows]
    return grad.detach(), torch.stack(rows, dim=1).detach()


def _jacobian(forward, x, y_target, conditions: tuple, named: dict):
    """Per-example Jacobian `(B, m, n)` of a batched forward and `y = forward(x)`, from the replicated pass of
    `phi_hig.hig.jacobian.physics_jacobian` (the conditions repeated with their examples)."""
    _check_batched(x, y_target)
    y, jac = physics_jacobian(forward, x, conditions=Conditions(conditions, x.shape[0], named=named), name='forward')
    if y.shape != y_target.shape:
        raise InvalidInputError(f"forward(x) must return a torch tensor of the shape of y_target "
                                f"{tuple(y_target.shape)}, got {y.shape}")
    _finite_forward(y)
    return jac, y
