"""Batches of PhiFlow Fields, PhiML tensors and native arrays as batch-first native arrays (torch or JAX), and back.

A HIG step differentiates per example, which needs the stacked values as native arrays with one leading batch
dimension. This module is the one place that converts between what a user passes (a PhiFlow ``Field``, a PhiML
``Tensor`` or a torch tensor) and that layout:

* `NetworkCall` calls a ``torch.nn.Module`` on user inputs exactly like ``field.native_call`` (Fields) and
  ``math.native_call`` (PhiML tensors) do, or directly (torch tensors), and exposes the native input the network
  receives and the wrapping of native outputs of *any* batch size back into the user's kind;
* `BatchLayout` flattens simulation outputs and losses of any kind to ``(b, |y|)`` / ``(b,)`` and back.

Supported: torch networks (``torch.nn.Module``, e.g. ``phiml.nn`` networks on the torch backend) with values on
the torch or NumPy backend (NumPy values are converted to torch), and PhiML's JAX networks (``StaxNet``, e.g.
``phiml.nn.mlp`` after ``from phi.jax.flow import *``) with JAX arrays or values on the JAX or NumPy backend
(converted to JAX); `network_backend` tells which. All batch dims of a PhiML value are examples and are packed into
one leading dimension in their shape order; the replicated batches of a Jacobian pass use a single batch dim named
like the first one. Anything else (TensorFlow / Keras networks, a torch network with JAX values, …) is refused with
`phi_hig.errors.InvalidInputError` naming what is supported. Nothing here imports JAX; a JAX value is recognized
only once JAX is loaded.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch

from .backend import is_jax_array
from .errors import InvalidInputError

__all__ = ['NetworkCall', 'BatchLayout', 'call_network', 'kind_of', 'network_backend', 'is_jax_network', 'SUPPORTED',
           'NATIVE']

SUPPORTED = ("torch tensors, PhiML tensors and PhiFlow Fields on the torch or NumPy backend, with a torch network "
             "(torch.nn.Module, e.g. phiml.nn networks after `from phi.torch.flow import *`); or JAX arrays, PhiML "
             "tensors and PhiFlow Fields on the JAX or NumPy backend, with a PhiML JAX network (StaxNet, e.g. "
             "phiml.nn.mlp after `from phi.jax.flow import *`)")
"""What `NetworkCall` and `BatchLayout` accept, for error messages."""
NATIVE = ('torch', 'jax')
"""The kinds of `kind_of` that are native arrays of a backend (batch first)."""


def network_backend(net) -> str:
    """'torch' for a ``torch.nn.Module``, 'jax' for a PhiML JAX network (a callable whose ``parameters`` attribute is
    a pytree of JAX arrays, or None: see `phi_hig.hig.jax_optimizer.require_parameters`); `InvalidInputError`
    naming what is supported for anything else (TensorFlow / Keras networks included)."""
    if isinstance(net, torch.nn.Module):
        return 'torch'
    module = type(net).__module__ or ''
    if module.startswith(('tensorflow', 'keras', 'tf_keras')):
        raise InvalidInputError(f"the network is a {module}.{type(net).__name__}: TensorFlow / Keras networks are not "
                                f"supported; phi_hig trains torch.nn.Module networks and PhiML's JAX networks "
                                f"(StaxNet)")
    if is_jax_network(net):
        return 'jax'
    raise InvalidInputError(f"the network is a {module}.{type(net).__name__}; phi_hig supports {SUPPORTED}")


def is_jax_network(net) -> bool:
    """A PhiML JAX network, or any callable with a non-callable ``parameters`` attribute once JAX is loaded."""
    if (type(net).__module__ or '').startswith('phiml.backend.jax'):
        return True
    return callable(net) and 'jax' in sys.modules and hasattr(net, 'parameters') and not callable(net.parameters)


def kind_of(name: str, value, backend: str = 'torch') -> str:
    """'torch' or 'jax' (a native array of ``backend``), 'tensor' (PhiML) or 'field' (PhiFlow); raise
    `InvalidInputError` for anything else, also for a native array or PhiML value of another backend."""
    if isinstance(value, torch.Tensor) if backend == 'torch' else is_jax_array(value):
        return backend
    from phiml.math import Tensor
    if isinstance(value, Tensor):
        _check_backend(name, value, backend)
        return 'tensor'
    from phi.field import Field
    if isinstance(value, Field):
        _check_backend(name, value.values, backend)
        return 'field'
    other = 'jax' if backend == 'torch' else 'torch'
    if isinstance(value, torch.Tensor) if other == 'torch' else is_jax_array(value):
        raise InvalidInputError(f"{name} is a {other} array but the network is a {backend} network; phi_hig supports "
                                f"{SUPPORTED}")
    raise InvalidInputError(f"{name} is a {type(value).__module__}.{type(value).__name__}; phi_hig supports {SUPPORTED}")


def _check_backend(name: str, tensor, backend: str = 'torch') -> None:
    found = tensor.default_backend.name
    if found not in (backend, 'numpy'):
        raise InvalidInputError(f"{name} lives on PhiML's {found} backend but the network is a {backend} network; "
                                f"phi_hig supports {SUPPORTED}")


def _to_backend(value, backend: str = 'torch'):
    """A PhiML tensor / Field on the NumPy backend converted to ``backend`` (data only; others unchanged)."""
    from phiml import math
    from phi.field import Field
    values = value.values if isinstance(value, Field) else value
    if values.default_backend.name == backend:
        return value
    if backend == 'torch':
        from phiml.backend.torch import TORCH as target
    else:
        from phiml.backend.jax import JAX as target
    converted = math.convert(values, target)
    return value.with_values(converted) if isinstance(value, Field) else converted


def _native_call(kind: str) -> Callable:
    if kind == 'field':
        from phi.field import native_call
        return native_call
    from phiml.math import native_call
    return native_call


def call_network(network, *inputs):
    """``network(*inputs)`` the way PhiFlow calls networks: a ``torch.nn.Module`` or a PhiML JAX network through
    ``field.native_call`` when an input is a Field, through ``math.native_call`` when one is a PhiML tensor, directly
    otherwise (and any other callable directly)."""
    if isinstance(network, torch.nn.Module) or is_jax_network(network):
        from phi.field import Field
        from phiml.math import Tensor
        if any(isinstance(i, Field) for i in inputs):
            return _native_call('field')(network, *inputs)
        if any(isinstance(i, Tensor) for i in inputs):
            return _native_call('tensor')(network, *inputs)
    return network(*inputs)


class NetworkCall:
    """A torch or PhiML JAX network applied to a batch of user inputs the way PhiFlow calls networks.

    Invariant: ``wrap(net(native_inputs))`` equals ``field.native_call(net, inputs)`` for a Field,
    ``math.native_call(net, inputs)`` for a PhiML tensor and ``net(inputs)`` for a native array.

    Attributes:
        backend: 'torch' or 'jax' (`network_backend` of the network).
        kind: 'torch' / 'jax' (a native array), 'tensor' or 'field'.
        native_inputs: the batch-first native array the network receives.
        batch: the batch shape of PhiML inputs (None for native arrays).
    """

    def __init__(self, net, inputs, name: str = 'inputs'):
        self.backend = network_backend(net)
        self.kind = kind_of(name, inputs, self.backend)
        if self.kind in NATIVE:
            self.inputs, self.native_inputs, self.batch = inputs, inputs, None
            self._check_dtype(name)
            return
        self.inputs = _to_backend(inputs, self.backend)
        captured = []

        def capture(x):
            captured.append(x)
            return x
        _native_call(self.kind)(capture, self.inputs)
        self.native_inputs = captured[0]
        self._check_dtype(name)
        values = self.inputs.values if self.kind == 'field' else self.inputs
        self.batch = values.shape.batch
        if not self.batch:
            raise InvalidInputError(f"{name} has no batch dimension; HIG needs a batch of examples (PhiML batch dims)")
        self.rest = values.shape.non_batch
        self._templates = {}

    def _check_dtype(self, name: str) -> None:
        dtype = getattr(self.native_inputs, 'dtype', None)
        if self.backend == 'jax':
            import numpy as np
            floating = dtype is not None and np.issubdtype(dtype, np.floating)
        else:
            floating = dtype is not None and dtype.is_floating_point
        if not floating:
            raise InvalidInputError(f"{name} must hold floating-point values (a network's input), got {dtype}")

    def wrap(self, native):
        """A native network output with any leading batch size N as a value of the input's kind."""
        if self.kind in NATIVE:
            return native
        n = int(native.shape[0])
        template = self.inputs if n == self.batch.volume else self._template(n)
        return _native_call(self.kind)(lambda *_: native, template)

    def _template(self, n: int):
        if n not in self._templates:
            from phiml import math
            from phiml.math import batch
            shape = batch(**{self.batch.names[0]: n}) & self.rest
            values = math.expand(math.tensor(0.), shape)
            self._templates = {n: self.inputs.with_values(values) if self.kind == 'field' else values}
        return self._templates[n]


class BatchLayout:
    """How a simulation output of one kind flattens to ``(N, |y|)`` and how ``(b, |y|)`` unflattens again.

    Made from a first output (any batch size N) and the batch of the examples: ``n_examples`` and, for PhiML
    inputs, their batch shape (the dims the output of the forward pass carries). Invariant: ``unflatten(flatten(y))``
    is ``y`` (same values and dims) for the forward output ``y``; `flatten` packs batch dims in their shape order
    and the other dims in the first output's order, so the rows of replicated batches line up.
    """

    def __init__(self, value, n_examples: int, batch=None, name: str = 'simulate(z)', backend: str = 'torch'):
        self.name, self.b, self.backend = name, int(n_examples), backend
        self.kind = kind_of(name, value, backend)
        if self.kind in NATIVE:
            if value.ndim == 0:
                raise InvalidInputError(f"{name} must have a leading batch dimension, got a scalar")
            self.tail = tuple(value.shape[1:])
            return
        from phi.field import Field
        if self.kind == 'field':
            if not value.values.shape.is_uniform:
                raise InvalidInputError(f"{name} is a non-uniform Field ({value.values.shape}, e.g. a StaggeredGrid); "
                                        f"return its values at cell centres (field.at_centers) or a Tensor")
            self.template = value
        values = value.values if isinstance(value, Field) else value
        own_batch, self.rest = values.shape.batch, values.shape.non_batch
        if not own_batch:
            raise InvalidInputError(f"{name} has no batch dimension; it must keep the batch dims of its input")
        if batch is None:
            from phiml.math import batch as batch_shape
            batch = batch_shape(**{own_batch.names[0]: self.b})
        self.batch = batch

    def flatten(self, value):
        """``(N, |y|)`` native array of a value of this layout's kind (any batch size N)."""
        if self.kind in NATIVE:
            if kind_of(self.name, value, self.backend) != self.kind or value.ndim == 0 or \
                    tuple(value.shape[1:]) != self.tail:
                raise InvalidInputError(f"{self.name} returned {type(value).__name__} of shape "
                                        f"{tuple(getattr(value, 'shape', ()))}, expected (N, {', '.join(map(str, self.tail))})")
            return value.reshape(value.shape[0], -1)
        from phi.field import Field
        values = value.values if isinstance(value, Field) else value
        if getattr(values, 'shape', None) is None or values.shape.non_batch != self.rest:
            raise InvalidInputError(f"{self.name} returned non-batch dims {getattr(values, 'shape', type(value).__name__)},"
                                    f" expected {self.rest}")
        return values.native([values.shape.batch, self.rest])

    def unflatten(self, native):
        """The inverse of `flatten` for the first value's batch: ``(b, |y|)`` → a value of this kind."""
        if self.kind in NATIVE:
            return native.reshape(native.shape[0], *self.tail)
        from phiml import math
        values = math.reshaped_tensor(native, [self.batch, self.rest], convert=False)
        return self.template.with_values(values) if self.kind == 'field' else values

    def per_example(self, loss):
        """A per-example loss (native ``(b,)`` or a PhiML tensor with exactly the batch dims) as a native ``(b,)``."""
        if isinstance(loss, torch.Tensor) if self.backend == 'torch' else is_jax_array(loss):
            if loss.shape != (self.b,):
                raise InvalidInputError(f"loss(y, targets) must return one value per example, shape ({self.b},), "
                                        f"got {tuple(loss.shape)}")
            return loss
        from phiml.math import Tensor
        batch = getattr(self, 'batch', None)
        if not isinstance(loss, Tensor) or batch is None or set(loss.shape.names) != set(batch.names) or \
                any(loss.shape.get_size(d) != batch.get_size(d) for d in batch.names):
            raise InvalidInputError(f"loss(y, targets) must return one value per example: a PhiML tensor with exactly "
                                    f"the batch dims {batch} of y (or a native array of shape ({self.b},)), got "
                                    f"{getattr(loss, 'shape', type(loss).__name__)}")
        return loss.native([batch])
