"""Scale-invariant physics (SIP) training: the training step (its proxy loss is `phi_hig.sip.loss.sip_loss`).

SIP (Holl, Koltun & Thuerey 2022, §3.2; Holl, Koltun & Thuerey 2021, Algorithm 1) trains a network `x = NN(y*)`
through an inverse solver instead of the physics gradient: `x̃ = x + U(y*|x)` is computed with `x` detached, and
the network minimizes the proxy loss `½‖NN(y*) − stop_gradient(x̃)‖²` with any optimizer. The physics never
enters the autograd graph.

An *inverse* is any callable `inverse(x, y_target, *conditions, y=None, **named) -> Δx` returning the update of
one inverse-solver step (η = 1); the conditions reach it (and the forward physics) as in `phi_hig.hig_step`
(`phi_hig.convert.Conditions`). The physics modules in `phi_hig.physics` provide analytic ones; `phi_hig.inverses`
builds generic ones (Newton, saddle-free Newton, Gauss–Newton, a few L-BFGS-B iterations) for batched torch or JAX
functions.

Backends: a torch network with any torch optimizer, or a PhiML JAX network (``StaxNet``) with a PhiML JAX optimizer
(``phiml.nn.adam(net)`` on the JAX backend; the weights are updated by ``phiml.nn.update_weights``,
`phi_hig.sip.jax_step`). Values are torch tensors, JAX arrays (batch first), PhiML tensors or Fields.

Shapes are never broadcast: a prediction, its correction and the update `Δx` must have exactly the same shape
(torch) or the same dims with the same sizes (PhiML tensors and Fields; the order of the dims does not matter).
"""
import inspect
from typing import Callable, Mapping, NamedTuple, Tuple

import torch

from .. import checks
from ..errors import InvalidInputError, NonFiniteStepError
from ..convert import Conditions, all_finite, call_network, detach, example_mean, examples_of, is_boolean, is_jax_network
from ..processes import refuse_together
from .loss import l2_loss, require_same_shape, sip_loss

__all__ = ['sip_step', 'SIPStepResult']


class SIPStepResult(NamedTuple):
    """What `sip_step` measured, per example (detached): the physics loss at the prediction and the proxy loss."""
    physics_loss: object
    proxy_loss: object


def sip_step(network, optimizer: torch.optim.Optimizer, inputs, targets, physics,
             conditions=None, *,
             loss: Callable = None,
             inverse_options: dict = None) -> SIPStepResult:
    """One SIP training step: predict, detach, run one inverse-solver step, minimize the proxy loss.

    Equivalent to::

        x = network(inputs); x0 = stop_gradient(x)
        y = forward(x0, *args, **named);  dx = inverse(x0, targets, *args, y=y, **named, **inverse_options)
        mean_over_batch(sip_loss(x, x0 + dx)).backward(); optimizer.step()

    with ``args`` / ``named`` the conditions by position / by name (see ``conditions``).

    With `inverse = −∂L/∂x` (one gradient-descent step with η = 1) the network gradient equals that of
    back-propagating `mean(L)` through the physics (Holl, Koltun & Thuerey 2021, appendix A.1, Theorem 1).

    Invariant: either the whole update is applied or none. Everything is validated (arguments, finiteness of
    inputs and targets, the shape of `Δx`, finiteness of the proxy loss) before `optimizer.zero_grad()`, so a
    refused step leaves the weights and their `.grad` as they were (the network's forward pass has run, so
    batch-norm running statistics may have moved).

    Args:
        network: A `torch.nn.Module` or a PhiML JAX network (called through `field.native_call` /
            `math.native_call` when the inputs are PhiFlow Fields / PhiML Tensors, directly for native arrays) or
            any callable `network(*inputs) -> x` whose parameters `optimizer` updates.
        optimizer: Any torch optimizer over the network parameters; for a JAX network a PhiML JAX optimizer
            (``phiml.nn.adam(net)`` on the JAX backend).
        inputs: Network input, or a tuple of inputs.
        targets: Target observations `y*`.
        physics: A module (or object) with `forward(x, *args, **named)` and `inverse(x, y_target, *args, y,
            **named)` (the conditions), e.g. `phi_hig.physics.heat`, or a `(forward, inverse)` pair.
        conditions: Known simulation inputs of `forward` and `inverse`, the same rule as `phi_hig.hig_step`: a
            dict is passed by name (heat: `diffusivity`, `dt`; fluid: `m0`), a tuple by position after `x`
            (after `x, y_target` for the inverse), one value as one positional argument. Per-example ones
            (torch tensors batch first, PhiML tensors / Fields with batch dims) must have the prediction's batch;
            values without a batch are shared (`phi_hig.convert.Conditions`).
        loss: Per-example physics loss `loss(y, y_target)` for the report. Defaults to `physics.loss` if the
            physics module defines one, else `l2_loss`.
        inverse_options: Extra keyword arguments for `inverse` only (e.g. `noise` for heat).

    Returns:
        `SIPStepResult(physics_loss, proxy_loss)`, per example and detached, measured before the update.

    Raises:
        InvalidInputError: an argument is of the wrong kind, a learning rate of the optimizer is not a finite
            number >= 0, `forward` / `inverse` cannot take the conditions and options given, a per-example
            condition does not have the prediction's batch, the inputs or targets
            are not finite, `Δx` does not have exactly the shape of the prediction, or the prediction carries no
            gradient.
        NonFiniteStepError: the proxy loss is not finite.

    Example: with the exact inverse of ``y = 2x`` the proxy loss is ``½‖x − x*‖²`` of the exact solution x*, a
    quarter of the physics loss ``½‖2x − y*‖²`` whatever the network predicts (the scale invariance of SIP).

    >>> import torch
    >>> net = torch.nn.Linear(1, 1)
    >>> forward = lambda x: 2 * x
    >>> inverse = lambda x, y_target, y=None: (y_target - 2 * x) / 2
    >>> y_star = torch.tensor([[2.0], [4.0]])
    >>> result = sip_step(net, torch.optim.SGD(net.parameters(), lr=0.1), y_star, y_star, (forward, inverse))
    >>> bool(torch.allclose(result.physics_loss, 4 * result.proxy_loss))
    True
    """
    forward, inverse = _physics_pair(physics)
    given = Conditions(conditions)
    inverse_options = _mapping('inverse_options', inverse_options)
    if loss is None:
        loss = getattr(physics, 'loss', l2_loss) if not isinstance(physics, tuple) else l2_loss
    elif not callable(loss):
        raise InvalidInputError(f"loss must be None or a callable loss(y, y_target) -> per-example values, got {type(loss).__name__}")
    if not callable(network):
        raise InvalidInputError(f"network must be a torch.nn.Module or a callable, got {type(network).__name__}")
    on_jax = is_jax_network(network)
    if on_jax:
        from .jax_step import check_optimizer
        check_optimizer(optimizer)
    elif not (callable(getattr(optimizer, 'zero_grad', None)) and callable(getattr(optimizer, 'step', None))):
        raise InvalidInputError(f"optimizer must be a torch optimizer (zero_grad() and step()), got {type(optimizer).__name__}")
    if hasattr(optimizer, 'param_groups'):
        checks.learning_rates(optimizer.param_groups)
    for i, value in enumerate(inputs if isinstance(inputs, tuple) else (inputs,)):
        _require_finite(f'inputs[{i}]' if isinstance(inputs, tuple) else 'inputs', value)
    _require_finite('targets', targets)
    _check_call('the physics forward', forward, ('x',), given, {})
    _check_call('the physics inverse', inverse, ('x', 'y_target'), given, dict(y=None, **inverse_options))
    prediction = _predict(network, inputs)
    x0 = detach(prediction)
    if given:  # per-example conditions must have the prediction's batch
        given = Conditions(conditions, *examples_of('the predictions', x0), examples='the predictions')
    with torch.no_grad():
        y = forward(x0, *given.args, **given.kwargs)
        dx = inverse(x0, targets, *given.args, y=y, **given.kwargs, **inverse_options)
        physics_loss = loss(y, targets)
    _require_numbers('the inverse update dx', dx)
    require_same_shape('the inverse update dx', dx, 'the prediction x', x0)
    proxy = sip_loss(prediction, x0 + dx)
    if on_jax:  # every check above ran; the update is PhiML's update_weights (all or nothing)
        from .jax_step import update_on_jax
        update_on_jax(network, optimizer, inputs if isinstance(inputs, tuple) else (inputs,), x0 + dx, proxy)
        return SIPStepResult(detach(physics_loss), detach(proxy))
    mean_proxy = example_mean(proxy)
    if not refuse_together(bool(torch.isfinite(mean_proxy)), network, mean_proxy.device):
        raise NonFiniteStepError("SIP step: the proxy loss is not finite (non-finite prediction or inverse "
                                 "update); the weights were left untouched")
    if not getattr(mean_proxy, 'requires_grad', False):
        raise InvalidInputError("SIP step: the prediction does not depend on the network's parameters (it carries no "
                                "gradient: a detached or NumPy output?), so there is nothing to train")
    optimizer.zero_grad()
    mean_proxy.backward()
    optimizer.step()
    return SIPStepResult(detach(physics_loss), detach(proxy))


def _check_call(what: str, fn: Callable, positional: tuple, conditions: Conditions, keywords: dict) -> None:
    """Refuse (`InvalidInputError`) when ``fn`` cannot take ``positional`` arguments, the conditions and ``keywords``
    by name: a missing or unknown condition or inverse option, named before anything runs."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: let the call tell
        return
    try:
        signature.bind(*positional, *conditions.args, **conditions.kwargs, **keywords)
    except TypeError as err:
        names = conditions.labels[:len(conditions.args)] + list(conditions.kwargs) + list(keywords)
        raise InvalidInputError(f"{what} {getattr(fn, '__name__', fn)!r} cannot take the conditions / inverse "
                                f"options given ({', '.join(names) or 'none'}): {err}") from None


def _mapping(name: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInputError(f"{name} must be None or a dict of keyword arguments, got {value!r}")
    return dict(value)




def _require_numbers(name: str, value) -> None:
    """Raises if `value` is a tensor of booleans (booleans are not numbers; `phi_hig.convert.is_boolean`)."""
    if is_boolean(value):
        raise InvalidInputError(f"{name} must hold numbers, got a boolean {type(value).__name__}")


def _require_finite(name: str, value) -> None:
    """Raises if a torch tensor, PhiML Tensor or Field holds booleans, NaN or Inf (other objects pass;
    `phi_hig.convert.all_finite`)."""
    _require_numbers(name, value)
    if not all_finite(value):
        raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")


def _physics_pair(physics) -> Tuple[Callable, Callable]:
    if isinstance(physics, tuple) and len(physics) == 2 and all(callable(f) for f in physics):
        return physics
    if callable(getattr(physics, 'forward', None)) and callable(getattr(physics, 'inverse', None)):
        return physics.forward, physics.inverse
    raise InvalidInputError(f"physics must be a module with forward() and inverse() or a (forward, inverse) pair but got {physics!r}")


def _predict(network, inputs):
    return call_network(network, *(inputs if isinstance(inputs, tuple) else (inputs,)))

