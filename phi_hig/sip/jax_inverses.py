"""The derivatives behind `phi_hig.sip.inverses` for batched JAX functions ``forward(x (B, n), …) -> (B, m)``.

The factories of `phi_hig.inverses` (gradient descent, Newton, saddle-free Newton, Gauss–Newton, iterative) build one
inverse for torch and JAX alike; where ``x`` is a JAX array they take their per-example derivatives from here:
``jax.vmap`` over examples of ``jax.grad`` / ``jax.hessian`` / ``jax.jacrev`` of one example's loss or output
(examples independent: the Hessian of the summed loss is block-diagonal). Conditions (by position or by name)
that are JAX arrays with a leading batch of B are per example (mapped with x); other conditions are shared.
Only imported for JAX values; imports JAX.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import jax
import jax.numpy as jnp

from ..backend import is_jax_array
from ..errors import InvalidInputError, NonFiniteStepError

__all__ = ['check_batched', 'gradient_and_hessian', 'jacobian', 'finite_forward']


def check_batched(x, y_target) -> None:
    """Refuse (`InvalidInputError`) anything but finite JAX arrays ``x (B, n)`` and ``y_target (B, m)``."""
    for name, value in (('x', x), ('y_target', y_target)):
        if not is_jax_array(value) or value.ndim != 2:
            raise InvalidInputError(f"{name} must be a JAX array of shape (examples, n) (like x) but got "
                                    f"{getattr(value, 'shape', type(value).__name__)}")
    if x.shape[0] != y_target.shape[0]:
        raise InvalidInputError(f"y_target has {y_target.shape[0]} examples but x has {x.shape[0]}; they must match")
    for name, value in (('x', x), ('y_target', y_target)):
        if not np.isfinite(np.asarray(value)).all():
            raise InvalidInputError(f"{name} contains non-finite values (NaN or Inf)")


def finite_forward(y) -> None:
    """Refuse a simulation output that is not finite (`NonFiniteStepError` naming the examples)."""
    bad = np.nonzero(~np.isfinite(np.asarray(y).reshape(y.shape[0], -1)).all(1))[0].tolist()
    if bad:
        raise NonFiniteStepError(f"forward(x) is not finite (NaN or Inf) for example(s) {bad[:10]}"
                                 f"{' …' if len(bad) > 10 else ''}; no inverse step exists there")


def _per_example(forward: Callable, x, conditions: tuple, named: dict) -> tuple:
    """``(f(x_i, per-example conditions_i), mapped conditions)``: one example's forward as a function of its row;
    the mapped conditions are ``{position or name: batched array}``."""
    b = x.shape[0]
    given = {**dict(enumerate(conditions)), **named}
    mapped = {k: v for k, v in given.items() if is_jax_array(v) and v.ndim >= 1 and v.shape[0] == b}

    def one(x_i, cond_i):
        values = {k: (cond_i[k][None] if k in cond_i else v) for k, v in given.items()}
        args = [values[i] for i in range(len(conditions))]
        return forward(x_i[None], *args, **{k: values[k] for k in named})[0]
    return one, mapped


def gradient_and_hessian(forward: Callable, loss: Optional[Callable], x, y_target, conditions: tuple, named: dict,
                         hessian: bool = True) -> tuple:
    """Per-example gradient ``(B, n)`` and Hessian ``(B, n, n)`` (None unless ``hessian``) of
    ``loss(forward(x), y*)`` (default ½‖·‖²), after checking the inputs and that ``forward(x)`` is finite."""
    check_batched(x, y_target)
    one, mapped = _per_example(forward, x, conditions, named)
    finite_forward(jax.vmap(one)(x, mapped))

    def loss_one(x_i, t_i, cond_i):
        y_i = one(x_i, cond_i)
        if loss is None:
            return 0.5 * jnp.sum((y_i - t_i) ** 2)
        value = loss(y_i[None], t_i[None])
        if not is_jax_array(value) or value.shape != (1,):
            raise InvalidInputError(f"loss(y, y_target) must return one value per example, shape (B,); got "
                                    f"{getattr(value, 'shape', type(value).__name__)}")
        return value[0]
    grad = jax.vmap(jax.grad(loss_one))(x, y_target, mapped)
    if not hessian:
        return grad, None
    return grad, jax.vmap(jax.hessian(loss_one))(x, y_target, mapped)


def jacobian(forward: Callable, x, y_target, conditions: tuple, named: dict) -> tuple:
    """Per-example Jacobian ``(B, m, n)`` of a batched forward and ``y = forward(x)``."""
    check_batched(x, y_target)
    one, mapped = _per_example(forward, x, conditions, named)
    y = jax.vmap(one)(x, mapped)
    if y.shape != y_target.shape:
        raise InvalidInputError(f"forward(x) must return a JAX array of the shape of y_target {tuple(y_target.shape)}, "
                                f"got {tuple(y.shape)}")
    finite_forward(y)
    return jax.vmap(jax.jacrev(one))(x, mapped), y
