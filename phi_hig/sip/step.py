"""Scale-invariant physics (SIP) training: the proxy loss and the training step.

SIP (Holl, Koltun & Thuerey 2022, §3.2; Holl, Koltun & Thuerey 2021, Algorithm 1) trains a network `x = NN(y*)`
through an inverse solver instead of the physics gradient: `x̃ = x + U(y*|x)` is computed with `x` detached, and
the network minimizes the proxy loss `½‖NN(y*) − stop_gradient(x̃)‖²` with any optimizer. The physics never
enters the autograd graph.

An *inverse* is any callable `inverse(x, y_target, *, y=None, **conditions) -> Δx` returning the update of one
inverse-solver step (η = 1). The physics modules in `phi_hig.physics` provide analytic ones; `phi_hig.inverses`
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
from torch.nn.parallel import DistributedDataParallel
from phi.field import Field
from phiml import math
from phiml.math import Tensor, batch, non_batch

from .. import checks
from ..backend import is_jax_array
from ..errors import InvalidInputError, NonFiniteStepError
from ..convert import call_network, is_jax_network

__all__ = ['sip_loss', 'l2_loss', 'sip_step', 'SIPStepResult']


def sip_loss(prediction, correction):
    """Per-example proxy loss `½‖prediction − stop_gradient(correction)‖²`.

    Gradients flow only into `prediction`; `correction` (e.g. `x + Δx` from an inverse solver) is a constant.

    Args:
        prediction: Network output: a PhiFlow `Field`, a PhiML `Tensor` (batch dims = examples) or a torch
            tensor or JAX array whose first dimension indexes examples.
        correction: The corrected estimate, of the same kind and exactly the same shape as `prediction` (for a
            Tensor prediction a Field whose values have its shape is accepted).

    Returns:
        The loss per example: a PhiML `Tensor` with the batch dims of `prediction` (Field / Tensor input) or a
        torch tensor of shape `(B,)`.

    Raises:
        InvalidInputError: the kinds or shapes differ (nothing is broadcast).
    """
    if _native(prediction):
        if _native(correction) != _native(prediction):
            raise InvalidInputError(f"correction must be a {_NATIVE_NAMES[_native(prediction)]} like prediction but "
                                    f"got {type(correction).__name__}")
        require_same_shape('correction', correction, 'prediction', prediction)
        diff = prediction - _detach(correction)
        return 0.5 * (diff ** 2).reshape(diff.shape[0], -1).sum(1)
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
    require_same_shape('correction', corr_values, 'prediction', pred_values)
    diff = pred_values - math.stop_gradient(corr_values)
    return 0.5 * math.sum(diff ** 2, non_batch(diff))


def l2_loss(y, y_target):
    """Per-example `½‖y − y*‖²` for Fields, PhiML Tensors and torch tensors (gradients into both).

    Raises:
        InvalidInputError: `y` and `y_target` differ in shape (nothing is broadcast).
    """
    require_same_shape('y_target', y_target, 'y', y)
    if _native(y):
        diff = y - y_target
        return 0.5 * (diff ** 2).reshape(diff.shape[0], -1).sum(1)
    diff = (y - y_target).values if isinstance(y, Field) else y - y_target
    return 0.5 * math.sum(diff ** 2, non_batch(diff))


def require_same_shape(name: str, value, reference_name: str, reference) -> None:
    """Raises unless `value` has exactly the shape of `reference`: equal torch shapes, or for PhiML tensors and
    Fields (compared by their values) the same dims with the same types, sizes and item names, in any order.

    A torch tensor never matches a PhiML tensor or Field; a PhiML tensor matches a Field whose values have its shape.
    """
    if _native(value) or _native(reference):
        if _native(value) != _native(reference):
            raise InvalidInputError(f"{name} is a {type(value).__name__} but {reference_name} is a "
                                    f"{type(reference).__name__}; both must be torch tensors or both JAX arrays")
        if tuple(value.shape) != tuple(reference.shape):
            raise InvalidInputError(f"{name} has shape {tuple(value.shape)} but {reference_name} has shape "
                                    f"{tuple(reference.shape)}; they must be equal (nothing is broadcast)")
        return
    shapes = []
    for n, v in ((name, value), (reference_name, reference)):
        values = v.values if isinstance(v, Field) else v
        if not isinstance(values, Tensor):
            raise InvalidInputError(f"{n} must be a torch tensor, a PhiML Tensor or a Field, got {type(v).__name__}")
        shapes.append(values.shape)
    if shapes[0] != shapes[1]:
        raise InvalidInputError(f"{name} has shape {shapes[0]} but {reference_name} has shape {shapes[1]}; they must "
                                f"have the same dims and sizes (nothing is broadcast)")


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
        physics: A module (or object) with `forward(x, **conditions)` and `inverse(x, y_target, *, y, **conditions)`,
            e.g. `phi_hig.physics.heat`, or a `(forward, inverse)` pair.
        conditions: Known simulation inputs passed by name to `forward` and `inverse` (heat: `diffusivity`,
            `dt`; fluid: `m0`).
        loss: Per-example physics loss `loss(y, y_target)` for the report. Defaults to `physics.loss` if the
            physics module defines one, else `l2_loss`.
        inverse_options: Extra keyword arguments for `inverse` only (e.g. `noise` for heat).

    Returns:
        `SIPStepResult(physics_loss, proxy_loss)`, per example and detached, measured before the update.

    Raises:
        InvalidInputError: an argument is of the wrong kind, a learning rate of the optimizer is not a finite
            number >= 0, `forward` / `inverse` cannot take the conditions and options given, the inputs or targets
            are not finite, `Δx` does not have exactly the shape of the prediction, or the prediction carries no
            gradient.
        NonFiniteStepError: the proxy loss is not finite.
    """
    forward, inverse = _physics_pair(physics)
    conditions = _mapping('conditions', conditions)
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
    _check_call('the physics forward', forward, ('x',), conditions)
    _check_call('the physics inverse', inverse, ('x', 'y_target'), dict(conditions, y=None, **inverse_options))
    prediction = _predict(network, inputs)
    x0 = _detach(prediction)
    with torch.no_grad():
        y = forward(x0, **conditions)
        dx = inverse(x0, targets, y=y, **conditions, **inverse_options)
        physics_loss = loss(y, targets)
    _require_numbers('the inverse update dx', dx)
    require_same_shape('the inverse update dx', dx, 'the prediction x', x0)
    proxy = sip_loss(prediction, x0 + dx)
    if on_jax:  # every check above ran; the update is PhiML's update_weights (all or nothing)
        from .jax_step import update_on_jax
        update_on_jax(network, optimizer, inputs if isinstance(inputs, tuple) else (inputs,), x0 + dx, proxy)
        return SIPStepResult(_detach(physics_loss), _detach(proxy))
    mean_proxy = _mean(proxy)
    finite = bool(torch.isfinite(torch.as_tensor(mean_proxy)).all())
    if isinstance(network, DistributedDataParallel):  # every rank refuses, or none (no rank left waiting)
        from .. import processes
        finite = processes.all_true(finite, mean_proxy.device)
    if not finite:
        raise NonFiniteStepError("SIP step: the proxy loss is not finite (non-finite prediction or inverse "
                                 "update); the weights were left untouched")
    if not getattr(mean_proxy, 'requires_grad', False):
        raise InvalidInputError("SIP step: the prediction does not depend on the network's parameters (it carries no "
                                "gradient: a detached or NumPy output?), so there is nothing to train")
    optimizer.zero_grad()
    mean_proxy.backward()
    optimizer.step()
    return SIPStepResult(_detach(physics_loss), _detach(proxy))


def _check_call(what: str, fn: Callable, positional: tuple, keywords: dict) -> None:
    """Refuse (`InvalidInputError`) when ``fn`` cannot take ``positional`` arguments and ``keywords`` by name: a
    missing or unknown condition or inverse option, named before anything runs."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: let the call tell
        return
    try:
        signature.bind(*positional, **keywords)
    except TypeError as err:
        raise InvalidInputError(f"{what} {getattr(fn, '__name__', fn)!r} cannot take the conditions / inverse "
                                f"options given ({', '.join(keywords) or 'none'}): {err}") from None


def _mapping(name: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInputError(f"{name} must be None or a dict of keyword arguments, got {value!r}")
    return dict(value)


_NATIVE_NAMES = {'torch': 'torch tensor', 'jax': 'JAX array'}


def _native(value) -> str:
    """'torch' for a torch tensor, 'jax' for a JAX array, '' for anything else."""
    return 'torch' if isinstance(value, torch.Tensor) else ('jax' if is_jax_array(value) else '')


def _require_numbers(name: str, value) -> None:
    """Raises if `value` is a tensor of booleans (booleans are not numbers)."""
    if isinstance(value, torch.Tensor):
        boolean = value.dtype == torch.bool
    elif is_jax_array(value):
        boolean = value.dtype == bool
    elif isinstance(value, (Field, Tensor)):
        boolean = (value.values if isinstance(value, Field) else value).dtype.kind is bool
    else:
        boolean = False
    if boolean:
        raise InvalidInputError(f"{name} must hold numbers, got a boolean {type(value).__name__}")


def _require_finite(name: str, value) -> None:
    """Raises if a torch tensor, PhiML Tensor or Field holds booleans, NaN or Inf (other objects pass)."""
    _require_numbers(name, value)
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            if not bool(torch.isfinite(value).all()):
                raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")
    elif is_jax_array(value):
        import numpy as np
        if not np.isfinite(np.asarray(value)).all():
            raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")
    elif isinstance(value, (Field, Tensor)):
        values = value.values if isinstance(value, Field) else value
        if values.available and not math.is_finite(values).all:
            raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")


def _physics_pair(physics) -> Tuple[Callable, Callable]:
    if isinstance(physics, tuple) and len(physics) == 2 and all(callable(f) for f in physics):
        return physics
    if callable(getattr(physics, 'forward', None)) and callable(getattr(physics, 'inverse', None)):
        return physics.forward, physics.inverse
    raise InvalidInputError(f"physics must be a module with forward() and inverse() or a (forward, inverse) pair but got {physics!r}")


def _predict(network, inputs):
    return call_network(network, *(inputs if isinstance(inputs, tuple) else (inputs,)))


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if is_jax_array(value):
        import jax
        return jax.lax.stop_gradient(value)
    return math.stop_gradient(value)


def _mean(loss_per_example) -> torch.Tensor:
    if isinstance(loss_per_example, torch.Tensor):
        return loss_per_example.mean()
    mean = math.mean(loss_per_example, batch(loss_per_example))
    return mean.native()
