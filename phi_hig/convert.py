"""Batches of PhiFlow Fields, PhiML tensors and torch tensors as batch-first torch tensors, and back.

A HIG step differentiates per example, which needs the stacked values as torch tensors with one leading batch
dimension. This module is the one place that converts between what a user passes (a PhiFlow ``Field``, a PhiML
``Tensor`` or a torch tensor) and that layout:

* `NetworkCall` calls a ``torch.nn.Module`` on user inputs exactly like ``field.native_call`` (Fields) and
  ``math.native_call`` (PhiML tensors) do, or directly (torch tensors), and exposes the native input the network
  receives and the wrapping of native outputs of *any* batch size back into the user's kind;
* `BatchLayout` flattens simulation outputs and losses of any kind to ``(b, |y|)`` / ``(b,)`` and back;
* `example_mean` reduces a per-example loss of either kind to the torch scalar a step minimizes.

Supported: torch networks (``torch.nn.Module``, e.g. ``phiml.nn`` networks on the torch backend) and values on
the torch or NumPy backend (NumPy values are converted to torch). All batch dims of a PhiML value are examples
and are packed into one leading dimension in their shape order; the replicated batches of a Jacobian pass use a
single batch dim named like the first one. Anything else (JAX / TensorFlow networks or arrays) is refused with
`phi_hig.errors.InvalidInputError` naming what is supported.
"""
from __future__ import annotations

from typing import Callable

import torch

from .errors import InvalidInputError

__all__ = ['NetworkCall', 'BatchLayout', 'call_network', 'kind_of', 'example_mean', 'SUPPORTED']

SUPPORTED = ("torch tensors, PhiML tensors and PhiFlow Fields on the torch or NumPy backend, with a torch network "
             "(torch.nn.Module, e.g. phiml.nn networks after `from phi.torch.flow import *`)")
"""What `NetworkCall` and `BatchLayout` accept, for error messages."""


def kind_of(name: str, value) -> str:
    """'torch', 'tensor' (PhiML) or 'field' (PhiFlow); raise `InvalidInputError` for anything else."""
    if isinstance(value, torch.Tensor):
        return 'torch'
    from phiml.math import Tensor
    if isinstance(value, Tensor):
        _check_backend(name, value)
        return 'tensor'
    from phi.field import Field
    if isinstance(value, Field):
        _check_backend(name, value.values)
        return 'field'
    raise InvalidInputError(f"{name} is a {type(value).__module__}.{type(value).__name__}; phi_hig supports {SUPPORTED}")


def _check_backend(name: str, tensor) -> None:
    backend = tensor.default_backend.name
    if backend not in ('torch', 'numpy'):
        raise InvalidInputError(f"{name} lives on PhiML's {backend} backend; phi_hig supports {SUPPORTED}")


def _to_torch_backend(value):
    """A PhiML tensor / Field on the NumPy backend converted to torch (data only; torch ones unchanged)."""
    from phiml import math
    from phiml.backend.torch import TORCH
    from phi.field import Field
    values = value.values if isinstance(value, Field) else value
    if values.default_backend.name == 'torch':
        return value
    converted = math.convert(values, TORCH)
    return value.with_values(converted) if isinstance(value, Field) else converted


def _native_call(kind: str) -> Callable:
    if kind == 'field':
        from phi.field import native_call
        return native_call
    from phiml.math import native_call
    return native_call


def call_network(network, *inputs):
    """``network(*inputs)`` the way PhiFlow calls networks: a ``torch.nn.Module`` through ``field.native_call``
    when an input is a Field, through ``math.native_call`` when one is a PhiML tensor, directly otherwise (and any
    other callable directly)."""
    if isinstance(network, torch.nn.Module):
        from phi.field import Field
        from phiml.math import Tensor
        if any(isinstance(i, Field) for i in inputs):
            return _native_call('field')(network, *inputs)
        if any(isinstance(i, Tensor) for i in inputs):
            return _native_call('tensor')(network, *inputs)
    return network(*inputs)


def example_mean(per_example) -> torch.Tensor:
    """The mean over the examples of a per-example loss — a torch tensor ``(b,)`` or a PhiML tensor over batch dims —
    as a 0-d torch tensor that keeps its autograd graph (the batch-mean loss a training step minimizes)."""
    if isinstance(per_example, torch.Tensor):
        return per_example.mean()
    from phiml import math
    from phiml.math import batch
    mean = math.mean(per_example, batch(per_example)).native()
    return mean if isinstance(mean, torch.Tensor) else torch.as_tensor(mean)


class NetworkCall:
    """A torch network applied to a batch of user inputs the way PhiFlow calls networks.

    Invariant: ``wrap(net(native_inputs))`` equals ``field.native_call(net, inputs)`` for a Field,
    ``math.native_call(net, inputs)`` for a PhiML tensor and ``net(inputs)`` for a torch tensor.

    Attributes:
        kind: 'torch', 'tensor' or 'field'.
        native_inputs: the batch-first torch tensor the network receives.
        batch: the batch shape of PhiML inputs (None for torch tensors).
    """

    def __init__(self, net, inputs, name: str = 'inputs'):
        if not isinstance(net, torch.nn.Module):
            raise InvalidInputError(f"the network is a {type(net).__module__}.{type(net).__name__}; phi_hig supports "
                                    f"{SUPPORTED}")
        self.kind = kind_of(name, inputs)
        if self.kind == 'torch':
            self.inputs, self.native_inputs, self.batch = inputs, inputs, None
            self._check_dtype(name)
            return
        self.inputs = _to_torch_backend(inputs)
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
        if dtype is None or not dtype.is_floating_point:
            raise InvalidInputError(f"{name} must hold floating-point values (a network's input), got {dtype}")

    def wrap(self, native: torch.Tensor):
        """A native network output with any leading batch size N as a value of the input's kind."""
        if self.kind == 'torch':
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

    def __init__(self, value, n_examples: int, batch=None, name: str = 'simulate(z)'):
        self.name, self.b = name, int(n_examples)
        self.kind = kind_of(name, value)
        if self.kind == 'torch':
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

    def flatten(self, value) -> torch.Tensor:
        """``(N, |y|)`` torch tensor of a value of this layout's kind (any batch size N)."""
        if self.kind == 'torch':
            if not isinstance(value, torch.Tensor) or value.ndim == 0 or tuple(value.shape[1:]) != self.tail:
                raise InvalidInputError(f"{self.name} returned {type(value).__name__} of shape "
                                        f"{tuple(getattr(value, 'shape', ()))}, expected (N, {', '.join(map(str, self.tail))})")
            return value.reshape(value.shape[0], -1)
        from phi.field import Field
        values = value.values if isinstance(value, Field) else value
        if getattr(values, 'shape', None) is None or values.shape.non_batch != self.rest:
            raise InvalidInputError(f"{self.name} returned non-batch dims {getattr(values, 'shape', type(value).__name__)},"
                                    f" expected {self.rest}")
        return values.native([values.shape.batch, self.rest])

    def unflatten(self, native: torch.Tensor):
        """The inverse of `flatten` for the first value's batch: ``(b, |y|)`` → a value of this kind."""
        if self.kind == 'torch':
            return native.reshape(native.shape[0], *self.tail)
        from phiml import math
        values = math.reshaped_tensor(native, [self.batch, self.rest], convert=False)
        return self.template.with_values(values) if self.kind == 'field' else values

    def per_example(self, loss) -> torch.Tensor:
        """A per-example loss (torch ``(b,)`` or a PhiML tensor with exactly the batch dims) as a torch ``(b,)``."""
        if isinstance(loss, torch.Tensor):
            if loss.shape != (self.b,):
                raise InvalidInputError(f"loss(y, targets) must return one value per example, shape ({self.b},), "
                                        f"got {tuple(loss.shape)}")
            return loss
        from phiml.math import Tensor
        batch = getattr(self, 'batch', None)
        if not isinstance(loss, Tensor) or batch is None or set(loss.shape.names) != set(batch.names) or \
                any(loss.shape.get_size(d) != batch.get_size(d) for d in batch.names):
            raise InvalidInputError(f"loss(y, targets) must return one value per example: a PhiML tensor with exactly "
                                    f"the batch dims {batch} of y (or a torch tensor of shape ({self.b},)), got "
                                    f"{getattr(loss, 'shape', type(loss).__name__)}")
        return loss.native([batch])
