"""The losses of SIP training: the proxy loss a network minimizes (Holl, Koltun & Thuerey 2022, §3.2, eq. 4), the
per-example L2 loss of the physics, and the shape rule they share (nothing is broadcast).

Values are torch tensors, JAX arrays (batch first), PhiML tensors or Fields.
"""
from phiml import math
from phiml.math import non_batch

from ..convert import NATIVE, detach, kind, values_of
from ..errors import InvalidInputError

__all__ = ['sip_loss', 'l2_loss', 'require_same_shape']

NATIVE_NAMES = {'torch': 'torch tensor', 'jax': 'JAX array'}
"""How a message names a value of each native array kind."""


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

    >>> import torch
    >>> x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    >>> sip_loss(x, torch.tensor([[1.0, 0.0], [1.0, 1.0]])).tolist()
    [2.0, 1.0]
    >>> sip_loss(x, torch.zeros(3, 2))
    Traceback (most recent call last):
    phi_hig.errors.InvalidInputError: correction has shape (3, 2) but prediction has shape (2, 2); they must be equal (nothing is broadcast)
    """
    pred_kind, corr_kind = kind(prediction), kind(correction)
    if pred_kind in NATIVE:
        if corr_kind != pred_kind:
            raise InvalidInputError(f"correction must be a {NATIVE_NAMES[pred_kind]} like prediction but got "
                                    f"{type(correction).__name__}")
        require_same_shape('correction', correction, 'prediction', prediction)
        diff = prediction - detach(correction)
        return 0.5 * (diff ** 2).reshape(diff.shape[0], -1).sum(1)
    if pred_kind == 'field':
        if corr_kind != 'field':
            raise InvalidInputError(f"correction must be a Field like prediction but got {type(correction).__name__}")
        if correction.resolution != prediction.resolution:
            raise InvalidInputError(f"correction has resolution {correction.resolution} but prediction has {prediction.resolution}")
    elif pred_kind == 'tensor':
        if values_of(correction) is None:
            raise InvalidInputError(f"correction must be a PhiML Tensor like prediction but got {type(correction).__name__}")
    else:
        raise InvalidInputError(f"prediction must be a Field, a PhiML Tensor or a torch tensor but got {type(prediction).__name__}")
    pred_values, corr_values = values_of(prediction), values_of(correction)
    require_same_shape('correction', corr_values, 'prediction', pred_values)
    diff = pred_values - detach(corr_values)
    return 0.5 * math.sum(diff ** 2, non_batch(diff))


def l2_loss(y, y_target):
    """Per-example `½‖y − y*‖²` for Fields, PhiML Tensors and torch tensors (gradients into both).

    Raises:
        InvalidInputError: `y` and `y_target` differ in shape (nothing is broadcast).

    >>> import torch
    >>> l2_loss(torch.tensor([[1.0, 1.0], [3.0, 0.0]]), torch.zeros(2, 2)).tolist()
    [1.0, 4.5]
    """
    require_same_shape('y_target', y_target, 'y', y)
    if kind(y) in NATIVE:
        diff = y - y_target
        return 0.5 * (diff ** 2).reshape(diff.shape[0], -1).sum(1)
    diff = values_of(y - y_target)
    return 0.5 * math.sum(diff ** 2, non_batch(diff))


def require_same_shape(name: str, value, reference_name: str, reference) -> None:
    """Raises unless `value` has exactly the shape of `reference`: equal torch shapes, or for PhiML tensors and
    Fields (compared by their values) the same dims with the same types, sizes and item names, in any order.

    A torch tensor never matches a PhiML tensor or Field; a PhiML tensor matches a Field whose values have its shape.
    """
    if kind(value) in NATIVE or kind(reference) in NATIVE:
        if kind(value) != kind(reference):
            raise InvalidInputError(f"{name} is a {type(value).__name__} but {reference_name} is a "
                                    f"{type(reference).__name__}; both must be torch tensors or both JAX arrays")
        if tuple(value.shape) != tuple(reference.shape):
            raise InvalidInputError(f"{name} has shape {tuple(value.shape)} but {reference_name} has shape "
                                    f"{tuple(reference.shape)}; they must be equal (nothing is broadcast)")
        return
    shapes = []
    for n, v in ((name, value), (reference_name, reference)):
        values = values_of(v)
        if values is None:
            raise InvalidInputError(f"{n} must be a torch tensor, a PhiML Tensor or a Field, got {type(v).__name__}")
        shapes.append(values.shape)
    if shapes[0] != shapes[1]:
        raise InvalidInputError(f"{name} has shape {shapes[0]} but {reference_name} has shape {shapes[1]}; they must "
                                f"have the same dims and sizes (nothing is broadcast)")
