"""Scale-invariant physics (SIP) training: the proxy loss, the training step and generic inverse updates.

SIP (seed 002 §3.2, seed 003 Alg. 1) trains a network `x = NN(y*)` through an inverse solver instead of the
physics gradient: `x̃ = x + U(y*|x)` is computed with `x` detached, and the network minimizes the proxy loss
`½‖NN(y*) − stop_gradient(x̃)‖²` with any optimizer. The physics never enters the autograd graph.

An *inverse* here is any callable `inverse(x, y_target, *, y=None, **conditions) -> Δx` returning the update of
one inverse-solver step (η = 1); the physics modules in `phi_hig.physics` provide analytic ones. For
low-dimensional problems given as a batched torch function `forward(x) -> y` (`x: (B, n)`, `y: (B, m)`, rows
independent examples) this module builds generic ones: `newton`, `saddle_free_newton`, `gauss_newton` and
`iterative`. All minimize the per-example loss `L(x) = ½‖forward(x) − y*‖²` (or a given `loss`).
"""
from typing import Callable, NamedTuple, Tuple

import torch
from phi.field import Field
from phiml import math
from phiml.math import Tensor, batch, non_batch

from .errors import InvalidInputError

Inverse = Callable[..., object]


# --------------------------------------------------------------------------------------------------------------
# Proxy loss and training step
# --------------------------------------------------------------------------------------------------------------

def sip_loss(prediction, correction):
    """Per-example proxy loss `½‖prediction − stop_gradient(correction)‖²`.

    Gradients flow only into `prediction`; `correction` (e.g. `x + Δx` from an inverse solver) is a constant.

    Args:
        prediction: Network output: a PhiFlow `Field`, a PhiML `Tensor` (batch dims = examples) or a torch
            tensor whose first dimension indexes examples.
        correction: The corrected estimate, same kind and shape as `prediction` (a Field may be given for a
            Field prediction, a PhiML Tensor for a PhiML Tensor).

    Returns:
        The loss per example: a PhiML `Tensor` with the batch dims of `prediction` (Field / Tensor input) or a
        torch tensor of shape `(B,)`.
    """
    if isinstance(prediction, torch.Tensor):
        if not isinstance(correction, torch.Tensor):
            raise InvalidInputError(f"correction must be a torch tensor like prediction but got {type(correction).__name__}")
        if correction.shape != prediction.shape:
            raise InvalidInputError(f"correction has shape {tuple(correction.shape)} but prediction has {tuple(prediction.shape)}")
        diff = prediction - correction.detach()
        return 0.5 * (diff ** 2).reshape(diff.shape[0], -1).sum(dim=1)
    if isinstance(prediction, Field):
        if not isinstance(correction, Field):
            raise InvalidInputError(f"correction must be a Field like prediction but got {type(correction).__name__}")
        if correction.resolution != prediction.resolution:
            raise InvalidInputError(f"correction has resolution {correction.resolution} but prediction has {prediction.resolution}")
        pred_values, corr_values = prediction.values, correction.values
    elif isinstance(prediction, Tensor):
        pred_values = prediction
        corr_values = correction.values if isinstance(correction, Field) else correction
        if not isinstance(corr_values, Tensor):
            raise InvalidInputError(f"correction must be a PhiML Tensor like prediction but got {type(correction).__name__}")
    else:
        raise InvalidInputError(f"prediction must be a Field, a PhiML Tensor or a torch tensor but got {type(prediction).__name__}")
    diff = pred_values - math.stop_gradient(corr_values)
    return 0.5 * math.sum(diff ** 2, non_batch(diff))


def l2_loss(y, y_target):
    """Per-example `½‖y − y*‖²` for Fields, PhiML Tensors and torch tensors (gradients into both)."""
    if isinstance(y, torch.Tensor):
        diff = y - y_target
        return 0.5 * (diff ** 2).reshape(diff.shape[0], -1).sum(dim=1)
    diff = (y - y_target).values if isinstance(y, Field) else y - y_target
    return 0.5 * math.sum(diff ** 2, non_batch(diff))


class SIPStepResult(NamedTuple):
    """What `sip_step` measured, per example (detached): the physics loss at the prediction and the proxy loss."""
    physics_loss: object
    proxy_loss: object


def sip_step(network, optimizer: torch.optim.Optimizer, inputs, targets, physics,
             conditions: dict = None, *,
             loss: Callable = None,
             inverse_options: dict = None) -> SIPStepResult:
    """One SIP training step: predict, detach, run one inverse-solver step, minimize the proxy loss.

    Equivalent to::

        x = network(inputs); x0 = stop_gradient(x)
        y = forward(x0, **conditions);  dx = inverse(x0, targets, **conditions, y=y, **inverse_options)
        mean_over_batch(sip_loss(x, x0 + dx)).backward(); optimizer.step()

    With `inverse = −∂L/∂x` (one gradient-descent step with η = 1) the network gradient equals that of
    back-propagating `mean(L)` through the physics (seed 003, Theorem 1).

    Args:
        network: A `torch.nn.Module` (called through `field.native_call` / `math.native_call` when the inputs
            are PhiFlow Fields / PhiML Tensors, directly for torch tensors) or any callable
            `network(*inputs) -> x` whose parameters `optimizer` updates.
        optimizer: Any torch optimizer over the network parameters.
        inputs: Network input, or a tuple of inputs.
        targets: Target observations `y*`.
        physics: A module (or object) with `forward(x, **conditions)` and `inverse(x, y_target, *, y, **conditions)`,
            e.g. `phi_hig.physics.heat`, or a `(forward, inverse)` pair.
        conditions: Known simulation inputs passed by name to `forward` and `inverse` (heat: `diffusivity`,
            `dt`; fluid: `m0`).
        loss: Per-example physics loss `loss(y, y_target)` for the report. Defaults to `physics.loss` if the
            physics module defines one, else `l2_loss`.
        inverse_options: Extra keyword arguments for `inverse` only (e.g. `noise` for heat).

    Returns:
        `SIPStepResult(physics_loss, proxy_loss)`, per example and detached, measured before the update.
    """
    forward, inverse = _physics_pair(physics)
    conditions = dict(conditions or {})
    if loss is None:
        loss = getattr(physics, 'loss', l2_loss) if not isinstance(physics, tuple) else l2_loss
    optimizer.zero_grad()
    prediction = _predict(network, inputs)
    x0 = _detach(prediction)
    with torch.no_grad():
        y = forward(x0, **conditions)
        dx = inverse(x0, targets, y=y, **conditions, **(inverse_options or {}))
        physics_loss = loss(y, targets)
    proxy = sip_loss(prediction, x0 + dx)
    mean_proxy = _mean(proxy)
    if not bool(torch.isfinite(torch.as_tensor(mean_proxy)).all()):
        from .errors import NonFiniteStepError
        raise NonFiniteStepError("SIP step: the proxy loss is not finite (non-finite prediction or inverse "
                                 "update); the weights were left untouched")
    mean_proxy.backward()
    optimizer.step()
    return SIPStepResult(_detach(physics_loss), _detach(proxy))


def _physics_pair(physics) -> Tuple[Callable, Callable]:
    if isinstance(physics, tuple) and len(physics) == 2 and all(callable(f) for f in physics):
        return physics
    if callable(getattr(physics, 'forward', None)) and callable(getattr(physics, 'inverse', None)):
        return physics.forward, physics.inverse
    raise InvalidInputError(f"physics must be a module with forward() and inverse() or a (forward, inverse) pair but got {physics!r}")


def _predict(network, inputs):
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if isinstance(network, torch.nn.Module):
        if any(isinstance(i, Field) for i in inputs):
            from phi import field
            return field.native_call(network, *inputs)
        if any(isinstance(i, Tensor) for i in inputs):
            return math.native_call(network, *inputs)
    return network(*inputs)


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    return math.stop_gradient(value)


def _mean(loss_per_example) -> torch.Tensor:
    if isinstance(loss_per_example, torch.Tensor):
        return loss_per_example.mean()
    mean = math.mean(loss_per_example, batch(loss_per_example))
    return mean.native()


# --------------------------------------------------------------------------------------------------------------
# Generic inverse updates for low-dimensional problems (torch tensors of shape (B, n))
# --------------------------------------------------------------------------------------------------------------

def gradient_descent(forward: Callable, *, learning_rate: float = 1., loss: Callable = None) -> Inverse:
    """Inverse of one gradient-descent step: `Δx = −η·∂L/∂x` per example.

    With η = 1 and `L` the loss that back-propagation would use, SIP with this inverse reproduces ordinary
    back-propagation training (seed 003, Theorem 1).
    """
    def inverse(x, y_target, *, y=None, **conditions):
        grad, _ = _gradient_and_hessian(forward, loss, x, y_target, conditions, hessian=False)
        return -learning_rate * grad
    return inverse


def newton(forward: Callable, *, loss: Callable = None) -> Inverse:
    """Inverse of one Newton step on the per-example loss: `Δx = −H⁻¹∇L` (`H` the per-example Hessian).

    Converges quadratically near a minimum with a non-singular Hessian; moves towards saddles and maxima
    where `H` is indefinite (use `saddle_free_newton` there).
    """
    def inverse(x, y_target, *, y=None, **conditions):
        grad, hess = _gradient_and_hessian(forward, loss, x, y_target, conditions)
        return -torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
    return inverse


def saddle_free_newton(forward: Callable, *, max_step: float = 1., loss: Callable = None) -> Inverse:
    """Inverse of one saddle-free Newton step: `Δx = −Σ_i q_i·clip(q_iᵀ∇L / |λ_i|, ±max_step)`.

    `(λ_i, q_i)` are the eigenpairs of the per-example Hessian. Using `|λ_i|` turns every direction into a
    descent direction (no attraction to saddles or maxima); the clip caps the change along low-curvature
    directions, where `1/|λ_i|` would explode. The step is invariant to rescaling the outputs of `forward`
    and to rotations of `x` (except through the cap), which is what makes it scale-invariant.

    Args:
        forward: Batched torch function `(B, n) -> (B, m)`.
        max_step: Largest change along any eigen-direction, in units of `x`.
        loss: Per-example loss `loss(y, y_target) -> (B,)`; default `½‖y − y*‖²`.
    """
    if not max_step > 0:
        raise InvalidInputError(f"max_step must be positive but got {max_step}")

    def inverse(x, y_target, *, y=None, **conditions):
        grad, hess = _gradient_and_hessian(forward, loss, x, y_target, conditions)
        eigenvalues, q = torch.linalg.eigh(hess)
        along = torch.einsum('bni,bn->bi', q, grad)
        step = along / eigenvalues.abs().clamp_min(torch.finfo(grad.dtype).tiny)
        step = step.clamp(-max_step, max_step)
        return -torch.einsum('bni,bi->bn', q, step)
    return inverse


def gauss_newton(forward: Callable, *, truncation: float = 1e-6, relative: bool = True) -> Inverse:
    """Inverse of one per-example Gauss–Newton step: `Δx = J⁺(y* − y)` with the truncated pseudo-inverse of the
    physics Jacobian `J = ∂y/∂x` of each example.

    Singular values `σ ≤ max(truncation·σ_max, max(m, n)·ε₆₄·σ_max)` (or `truncation` when not `relative`) are
    discarded — the semantics of `phi_hig.half_inverse(J, y* − y, kappa=-1)`, computed batched in float64.
    The result has the dtype of `x`.
    """
    def inverse(x, y_target, *, y=None, **conditions):
        jac, y = _jacobian(forward, x, y_target, conditions)
        residual = (y_target - y).to(torch.float64)
        return pseudo_inverse_apply(jac, residual, truncation=truncation, relative=relative).to(x.dtype)
    return inverse


def pseudo_inverse_apply(jac: torch.Tensor, rhs: torch.Tensor, *, truncation: float = 1e-6, relative: bool = True) -> torch.Tensor:
    """Batched truncated pseudo-inverse `J_b⁺ r_b` for `jac: (B, m, n)`, `rhs: (B, m)`, in float64.

    Matches `half_inverse(J_b, r_b, kappa=-1, truncation=truncation, relative=relative)` per example.
    """
    jac = jac.to(torch.float64)
    u, s, vh = torch.linalg.svd(jac, full_matrices=False)
    s_max = s[:, :1]
    floor = max(jac.shape[1], jac.shape[2]) * torch.finfo(torch.float64).eps * s_max
    threshold = torch.maximum(truncation * s_max if relative else torch.full_like(s_max, truncation), floor)
    keep = (s > threshold) & (s_max > 0)
    inv_s = torch.where(keep, 1 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    coefficients = inv_s * torch.einsum('bmk,bm->bk', u, rhs.to(torch.float64))
    return torch.einsum('bkn,bk->bn', vh, coefficients)


def iterative(forward: Callable, *, iterations: int = 1, method: str = 'L-BFGS-B', loss: Callable = None) -> Inverse:
    """Inverse made of `iterations` steps of an iterative optimizer run through PhiML's `math.minimize`.

    Each example is minimized independently (SciPy's L-BFGS-B by default) starting from `x`; the update is the
    difference between the iterate after `iterations` steps and `x`. Not converging within `iterations` is
    the normal case and is not an error.
    """
    if iterations < 1:
        raise InvalidInputError(f"iterations must be at least 1 but got {iterations}")

    def inverse(x, y_target, *, y=None, **conditions):
        from phiml.backend.torch import TORCH
        from phiml.math import channel, Solve
        per_example = loss or l2_loss
        target = y_target.detach()

        def objective(params):
            native = params.native(['examples', 'params'])
            return math.wrap(per_example(forward(native, **conditions), target), batch('examples'))
        x0 = math.wrap(x.detach().to(torch.float64), batch('examples'), channel('params'))
        solve = Solve(method, 0, 0, max_iterations=iterations, x0=x0, suppress=[math.NotConverged, math.Diverged])
        with TORCH:
            x_new = math.minimize(objective, solve)
        return (x_new.native(['examples', 'params']) - x0.native(['examples', 'params'])).to(x.dtype)
    return inverse


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


def _gradient_and_hessian(forward, loss, x, y_target, conditions, hessian=True):
    """Per-example gradient `(B, n)` and Hessian `(B, n, n)` of `loss(forward(x), y*)`, by n extra backward passes.

    Examples are independent, so the Hessian of the summed loss is block-diagonal and row `j` of every block is
    the gradient of `Σ_b ∂L_b/∂x_bj`.
    """
    _check_batched(x, y_target)
    loss = loss or l2_loss
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        total = loss(forward(x, **conditions), y_target.detach()).sum()
        grad, = torch.autograd.grad(total, x, create_graph=hessian)
        if not hessian:
            return grad.detach(), None
        rows = [torch.autograd.grad(grad[:, j].sum(), x, retain_graph=True, allow_unused=True)[0] for j in range(x.shape[1])]
    rows = [torch.zeros_like(x) if r is None else r for r in rows]
    return grad.detach(), torch.stack(rows, dim=1).detach()


def _jacobian(forward, x, y_target, conditions):
    """Per-example Jacobian `(B, m, n)` of a batched forward, by m backward passes, and `y = forward(x)`."""
    _check_batched(x, y_target)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = forward(x, **conditions)
        rows = [torch.autograd.grad(y[:, i].sum(), x, retain_graph=True, allow_unused=True)[0] for i in range(y.shape[1])]
    rows = [torch.zeros_like(x) if r is None else r for r in rows]
    return torch.stack(rows, dim=1).detach(), y.detach()
