"""Batches of PhiFlow Fields, PhiML tensors and native arrays as batch-first native arrays (torch or JAX), and back.

A HIG step differentiates per example, which needs the stacked values as native arrays with one leading batch
dimension. This module is the one place that converts between what a user passes (a PhiFlow ``Field``, a PhiML
``Tensor`` or a torch tensor) and that layout:

* `NetworkCall` calls a ``torch.nn.Module`` on user inputs exactly like ``field.native_call`` (Fields) and
  ``math.native_call`` (PhiML tensors) do, or directly (torch tensors), and exposes the native input the network
  receives and the wrapping of native outputs of *any* batch size back into the user's kind;
* `BatchLayout` flattens simulation outputs and losses of any kind to ``(b, |y|)`` / ``(b,)`` and back;
* the primitives every other module uses instead of its own ``isinstance`` chain: `kind` (which of the kinds a
  value is), `network_backend` / `is_jax_network` (which backend a network trains on), `values_of` (the PhiML
  tensor of a Field or Tensor), `detach`, `is_boolean`, `all_finite`,
  `example_mean`, and `native_of` / `from_native` (a PhiML tensor as a native array in its own precision,
  and back).
* `Conditions` holds the per-example conditions of a batched function (initial states, boundary values,
  parameters) and hands it the rows of any batch of examples, in the form z has there.

Supported: torch networks (``torch.nn.Module``, e.g. ``phiml.nn`` networks on the torch backend) with values on
the torch or NumPy backend (NumPy values are converted to torch), and PhiML's JAX networks (``StaxNet``, e.g.
``phiml.nn.mlp`` after ``from phi.jax.flow import *``) with JAX arrays or values on the JAX or NumPy backend
(converted to JAX). All batch dims of a PhiML value are examples and are packed into one leading dimension in their
shape order; the replicated batches of a Jacobian pass use a single batch dim named like the first one. Anything
else (TensorFlow / Keras networks, a torch network with JAX values, …) is refused with
`phi_hig.errors.InvalidInputError` naming what is supported. Nothing here imports JAX; a JAX value is recognized
only once JAX is loaded.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

import torch

from .backend import is_jax_array
from .errors import InvalidInputError

__all__ = ['NetworkCall', 'BatchLayout', 'Conditions', 'call_network', 'kind', 'kind_of', 'values_of', 'detach',
           'is_boolean', 'all_finite', 'example_mean', 'native_of', 'from_native', 'rows_batch', 'network_backend',
           'is_jax_network', 'refuse_tensorflow', 'SUPPORTED', 'NATIVE']

SUPPORTED = ("torch tensors, PhiML tensors and PhiFlow Fields on the torch or NumPy backend, with a torch network "
             "(torch.nn.Module, e.g. phiml.nn networks after `from phi.torch.flow import *`); or JAX arrays, PhiML "
             "tensors and PhiFlow Fields on the JAX or NumPy backend, with a PhiML JAX network (StaxNet, e.g. "
             "phiml.nn.mlp after `from phi.jax.flow import *`)")
"""What `NetworkCall` and `BatchLayout` accept, for error messages."""
NATIVE = ('torch', 'jax')
"""The kinds of `kind` that are native arrays of a backend (batch first)."""


def _loaded_class(module: str, name: str):
    """The class ``module.name`` if that module has been imported, else None: an instance of a class can only
    exist once its module is loaded, so asking costs no import (a NumPy or torch value never loads PhiFlow)."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def kind(value) -> Optional[str]:
    """'torch' (a torch tensor), 'jax' (a JAX array), 'tensor' (a PhiML tensor), 'field' (a PhiFlow Field) or None
    (anything else).

    The one dispatch of the kinds phi_hig accepts; it never raises and imports nothing.

    >>> import numpy as np, torch
    >>> from phiml import math
    >>> [kind(torch.zeros(2)), kind(math.zeros(math.batch(b=2))), kind(np.zeros(2)), kind(1.0)]
    ['torch', 'tensor', None, None]
    """
    if isinstance(value, torch.Tensor):
        return 'torch'
    if is_jax_array(value):
        return 'jax'
    tensor = _loaded_class('phiml.math', 'Tensor')
    if tensor is not None and isinstance(value, tensor):
        return 'tensor'
    field = _loaded_class('phi.field', 'Field')
    if field is not None and isinstance(value, field):
        return 'field'
    return None


def values_of(value):
    """The PhiML tensor of a value: a Field's values, a PhiML tensor itself; None for anything else (a torch tensor
    included).

    >>> from phiml import math
    >>> t = math.ones(math.batch(b=2), math.spatial(x=3))
    >>> values_of(t) is t, values_of(2.0)
    (True, None)
    """
    k = kind(value)
    return value.values if k == 'field' else (value if k == 'tensor' else None)


def network_backend(net) -> str:
    """'torch' for a ``torch.nn.Module``, 'jax' for a PhiML JAX network (`is_jax_network`).

    Raises:
        InvalidInputError: anything else, naming what is supported (TensorFlow / Keras networks by name).
    """
    if isinstance(net, torch.nn.Module):
        return 'torch'
    refuse_tensorflow(net)
    if is_jax_network(net):
        return 'jax'
    raise InvalidInputError(f"the network is a {type(net).__module__}.{type(net).__name__}; phi_hig supports "
                            f"{SUPPORTED}")


def refuse_tensorflow(net) -> None:
    """Raise `InvalidInputError` for a TensorFlow / Keras network, naming the networks phi_hig trains; nothing else.

    >>> refuse_tensorflow(object())
    """
    module = type(net).__module__ or ''
    if module.startswith(('tensorflow', 'keras', 'tf_keras')):
        raise InvalidInputError(f"the network is a {module}.{type(net).__name__}: TensorFlow / Keras networks are not "
                                f"supported; phi_hig trains torch.nn.Module networks and PhiML's JAX networks "
                                f"(StaxNet)")


def is_jax_network(net) -> bool:
    """Whether ``net`` is a PhiML JAX network (``StaxNet``), or any callable with a non-callable ``parameters``
    attribute (a pytree) once JAX is loaded; never imports JAX."""
    if (type(net).__module__ or '').startswith('phiml.backend.jax'):
        return True
    return callable(net) and 'jax' in sys.modules and hasattr(net, 'parameters') and not callable(net.parameters)


def kind_of(name: str, value, backend: str = 'torch') -> str:
    """'torch' / 'jax' (a native array of ``backend``), 'tensor' (PhiML) or 'field' (PhiFlow) on a backend phi_hig
    supports for a ``backend`` network (that backend or NumPy).

    Raises:
        InvalidInputError: ``value`` is of another kind, a native array of the other backend, or a PhiML value on
            another backend; the message names ``name`` and what is supported.

    >>> import torch
    >>> kind_of('x', torch.zeros(2))
    'torch'
    >>> kind_of('x', [1.0])
    Traceback (most recent call last):
    phi_hig.errors.InvalidInputError: x is a builtins.list; phi_hig supports torch tensors, PhiML tensors and PhiFlow Fields on the torch or NumPy backend, with a torch network (torch.nn.Module, e.g. phiml.nn networks after `from phi.torch.flow import *`); or JAX arrays, PhiML tensors and PhiFlow Fields on the JAX or NumPy backend, with a PhiML JAX network (StaxNet, e.g. phiml.nn.mlp after `from phi.jax.flow import *`)
    """
    k = kind(value)
    if k is None:
        raise InvalidInputError(f"{name} is a {type(value).__module__}.{type(value).__name__}; phi_hig supports "
                                f"{SUPPORTED}")
    if k in NATIVE and k != backend:
        raise InvalidInputError(f"{name} is a {k} array but the network is a {backend} network; phi_hig supports "
                                f"{SUPPORTED}")
    if k not in NATIVE:
        _check_backend(name, values_of(value), backend)
    return k


def detach(value):
    """``value`` cut from the autograd graph: ``Tensor.detach()`` for torch, ``math.stop_gradient`` for a PhiML
    tensor or a Field (and any PhiML tree of them). Invariant: the same values, no gradient flows through.

    >>> import torch
    >>> detach(torch.ones(2, requires_grad=True) * 2).requires_grad
    False
    """
    if isinstance(value, torch.Tensor):
        return value.detach()
    if is_jax_array(value):
        import jax
        return jax.lax.stop_gradient(value)
    from phiml import math
    return math.stop_gradient(value)


def is_boolean(value) -> bool:
    """Whether ``value`` is a torch tensor, PhiML tensor or Field of booleans (booleans are not numbers); False
    for anything else.

    >>> import torch
    >>> is_boolean(torch.tensor([True])), is_boolean(torch.tensor([1.0])), is_boolean(True)
    (True, False, False)
    """
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    if is_jax_array(value):
        return value.dtype == bool
    values = values_of(value)
    return values is not None and values.dtype.kind is bool


def all_finite(value) -> bool:
    """Whether a torch tensor, PhiML tensor or Field holds no NaN and no ±Inf. Integer and boolean values are
    finite; other objects and PhiML values without data (traced, not ``available``) count as finite: this rule
    refuses only what it can see.

    >>> import torch
    >>> all_finite(torch.tensor([1.0, 2.0])), all_finite(torch.tensor([1.0, float('nan')]))
    (True, False)
    """
    if isinstance(value, torch.Tensor):
        return not (value.is_floating_point() or value.is_complex()) or bool(torch.isfinite(value).all())
    if is_jax_array(value):
        import numpy as np
        return bool(np.isfinite(np.asarray(value)).all()) if np.issubdtype(value.dtype, np.inexact) else True
    values = values_of(value)
    if values is None or not values.available:
        return True
    from phiml import math
    return bool(math.is_finite(values).all)


def native_of(tensor, groups: Sequence):
    """``tensor.native(groups)`` in the tensor's own precision (PhiML's ``native`` converts floats to the context
    precision): a NumPy array or torch tensor with one axis per group of dims (`from_native` inverts it).

    >>> from phiml import math
    >>> t = math.zeros(math.batch(b=2), math.spatial(x=3), dtype=(float, 64))
    >>> native_of(t, ['b', 'x']).dtype, native_of(t, ['b', 'x']).shape
    (dtype('float64'), (2, 3))
    """
    from phiml import math
    with math.precision(tensor.dtype.precision):
        return tensor.native(groups)


def from_native(native, groups: Sequence):
    """A native array (NumPy or torch) as a PhiML tensor with one shape per axis (``math.reshaped_tensor``), kept
    in the array's own precision and on its own backend (no conversion).

    >>> import numpy as np
    >>> from phiml import math
    >>> from_native(np.zeros((2, 3)), [math.batch(b=2), math.spatial(x=3)]).shape
    (bᵇ=2, xˢ=3)
    """
    from phiml import math
    item = native.element_size() if isinstance(native, torch.Tensor) else native.itemsize
    with math.precision(8 * item):
        return math.reshaped_tensor(native, groups, convert=False)


def _check_backend(name: str, tensor, backend: str = 'torch') -> None:
    found = tensor.default_backend.name
    if found not in (backend, 'numpy'):
        raise InvalidInputError(f"{name} lives on PhiML's {found} backend but the network is a {backend} network; "
                                f"phi_hig supports {SUPPORTED}")


def _to_backend(value, backend: str = 'torch'):
    """A PhiML tensor / Field on the NumPy backend converted to ``backend`` (data only; others unchanged)."""
    from phiml import math
    values = values_of(value)
    if values.default_backend.name == backend:
        return value
    if backend == 'torch':
        from phiml.backend.torch import TORCH as target
    else:
        from phiml.backend.jax import JAX as target
    converted = math.convert(values, target)
    return value.with_values(converted) if kind(value) == 'field' else converted


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


def example_mean(per_example) -> torch.Tensor:
    """The mean over the examples of a per-example loss — a torch tensor ``(b,)`` or a PhiML tensor over batch dims —
    as a 0-d torch tensor that keeps its autograd graph (the batch-mean loss a training step minimizes)."""
    if isinstance(per_example, torch.Tensor):
        return per_example.mean()
    from phiml import math
    from phiml.math import batch
    mean = math.mean(per_example, batch(per_example)).native()
    return mean if isinstance(mean, torch.Tensor) else torch.as_tensor(mean)


def rows_batch(batch, n: int):
    """The batch shape of ``n`` rows of the examples whose batch shape is ``batch``: ``batch`` itself when ``n`` is
    its volume, else one batch dim of size ``n`` named like its first dim (the replicated batches of a Jacobian
    pass). `NetworkCall.wrap` and `Conditions` give z and the conditions of the same rows this batch shape."""
    if n == batch.volume:
        return batch
    from phiml.math import batch as batch_shape
    return batch_shape(**{batch.names[0]: n})


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
        values = values_of(self.inputs)
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
            shape = rows_batch(self.batch, n) & self.rest
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
        if self.kind == 'field':
            if not value.values.shape.is_uniform:
                raise InvalidInputError(f"{name} is a non-uniform Field ({value.values.shape}, e.g. a StaggeredGrid); "
                                        f"return its values at cell centres (field.at_centers) or a Tensor")
            self.template = value
        values = values_of(value)
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
            if kind(value) != self.kind or value.ndim == 0 or tuple(value.shape[1:]) != self.tail:
                raise InvalidInputError(f"{self.name} returned {type(value).__name__} of shape "
                                        f"{tuple(getattr(value, 'shape', ()))}, expected (N, {', '.join(map(str, self.tail))})")
            return value.reshape(value.shape[0], -1)
        values = values_of(value)
        if values is None:
            values = value  # refused below, naming what was returned
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
        if kind(loss) == self.backend:
            if loss.shape != (self.b,):
                raise InvalidInputError(f"loss(y, targets) must return one value per example, shape ({self.b},), "
                                        f"got {tuple(loss.shape)}")
            return loss
        batch = getattr(self, 'batch', None)
        if kind(loss) != 'tensor' or batch is None or set(loss.shape.names) != set(batch.names) or \
                any(loss.shape.get_size(d) != batch.get_size(d) for d in batch.names):
            raise InvalidInputError(f"loss(y, targets) must return one value per example: a PhiML tensor with exactly "
                                    f"the batch dims {batch} of y (or a native array of shape ({self.b},)), got "
                                    f"{getattr(loss, 'shape', type(loss).__name__)}")
        return loss.native([batch])


def _on_jax(value) -> bool:
    values = values_of(value)
    return values is not None and values.default_backend.name == 'jax'


def examples_of(name: str, value) -> tuple:
    """``(b, batch)``: the number of examples of a batch-first torch tensor or JAX array (``batch`` None), or the
    volume and shape of the batch dims of a PhiML tensor or Field (on any backend phi_hig trains on)."""
    kind = kind_of(name, value, 'jax' if is_jax_array(value) or _on_jax(value) else 'torch')
    if kind in NATIVE:
        if value.ndim == 0:
            raise InvalidInputError(f"{name} must have a leading batch dimension, got a scalar")
        return int(value.shape[0]), None
    shape = (value.values if kind == 'field' else value).shape.batch
    return shape.volume, shape


class Conditions:
    """The per-example conditions of a batched function ``fn(z, …)``: what it needs per example besides z (initial
    states, boundary values, obstacle masks, physical parameters), aligned with the examples of z.

    The rule, the same in `phi_hig.hig_step`, `phi_hig.sip_step`, `phi_hig.per_sample_jacobian`, `phi_hig.gram`,
    `phi_hig.physics_jacobian` and the generic inverses of `phi_hig.inverses`: conditions given as

    * a tuple are passed by position, ``fn(z, *conditions)``;
    * a dict (string keys) are passed by name, ``fn(z, **conditions)``;
    * None: ``fn(z)``;
    * any other value is the one condition, ``fn(z, conditions)`` (wrap a tuple to pass it as one: ``(pair,)``).

    Each condition (an entry of the tuple or dict, or the one value) is per-example or shared:

    * a torch tensor with at least one dim is per-example, batch first: its leading size is the number of examples;
    * a PhiML tensor or Field with batch dims is per-example: with PhiML inputs its batch dims must be among the
      inputs' batch dims, with the same sizes (missing ones broadcast); with torch inputs all its batch dims are
      the examples (their volume is the number of examples). A Field's geometry and boundary must not depend on
      the examples (pass such values as a Tensor condition and build the Field inside ``fn``);
    * anything else (Python numbers, strings, 0-d torch tensors, PhiML tensors without batch dims) is shared and
      passed unchanged.

    Invariant: ``call(fn, z, rows)`` passes ``fn`` the rows ``rows`` (example indices, one per row of z) of every
    per-example condition, detached, on PhiML's torch backend and in the batch shape z has for that many rows
    (`rows_batch`), so a step replicates or slices the conditions exactly where it replicates or slices z;
    without ``rows`` it passes the conditions as given.

    Args:
        conditions: None, a tuple, a dict or one value (above).
        n_examples: the number of examples b; None: only the form is checked (`call` then takes no ``rows``).
        batch: the batch shape of PhiML inputs (None for torch inputs).
        name: how messages call the argument.
        examples: how messages call what holds the examples.
        named: conditions passed by name besides positional ones (a call ``fn(z, *args, **named)`` taken apart,
            as the generic inverses receive it).

    Attributes:
        args: the conditions passed by position, as given.
        kwargs: the conditions passed by name, as given.
        labels: the name of each condition, positional ones first (for messages).

    Raises:
        InvalidInputError: a dict key that is not a string, or a per-example condition whose batch does not match
            the examples (the message names the condition).
    """

    def __init__(self, conditions=None, n_examples=None, batch=None, name: str = 'conditions',
                 examples: str = 'the inputs', *, named: dict = None):
        if conditions is None:
            self.args, self.kwargs = (), {}
        elif isinstance(conditions, tuple):
            self.args, self.kwargs = conditions, {}
        elif isinstance(conditions, dict):
            if not all(isinstance(k, str) for k in conditions):
                raise InvalidInputError(f"{name} given as a dict are passed by name: its keys must be strings, got "
                                        f"{[k for k in conditions if not isinstance(k, str)][:3]}")
            self.args, self.kwargs = (), dict(conditions)
        else:
            self.args, self.kwargs = (conditions,), {}
        if named:
            self.kwargs = {**self.kwargs, **named}
        single = conditions is not None and not isinstance(conditions, (tuple, dict))
        self.labels = [name] if single else [f"{name}[{i}]" for i in range(len(self.args))]
        self.labels += [f"{name}[{k!r}]" for k in self.kwargs]
        self.n_examples, self.batch, self._rows_of, self._natives = n_examples, batch, {}, {}
        if n_examples is not None:
            keys = list(range(len(self.args))) + list(self.kwargs)
            for key, label in zip(keys, self.labels):
                value = self.args[key] if isinstance(key, int) else self.kwargs[key]
                examples_batch = self._examples_batch(label, value, examples)
                if examples_batch is not False:
                    self._rows_of[key] = (value, examples_batch)

    def __bool__(self) -> bool:
        return bool(self.args or self.kwargs)

    def call(self, fn, z, rows=None):
        """``fn(z, *args, **kwargs)`` with the conditions' rows ``rows`` (a 1-D integer torch tensor of example
        indices, one per row of z), or as given when ``rows`` is None."""
        if rows is None:
            return fn(z, *self.args, **self.kwargs)
        args = [self._rows(i, v, rows) for i, v in enumerate(self.args)]
        return fn(z, *args, **{k: self._rows(k, v, rows) for k, v in self.kwargs.items()})

    def _examples_batch(self, label: str, value, examples: str):
        """False for a shared condition; else None (batch first) or the PhiML batch shape of its examples.
        Refuses one whose batch does not match the examples."""
        b = int(self.n_examples)
        if isinstance(value, torch.Tensor):
            if value.ndim == 0:
                return False
            if value.shape[0] != b:
                raise InvalidInputError(
                    f"{label} is a torch tensor of shape {tuple(value.shape)}, but {examples} hold {b} examples: a "
                    f"torch tensor condition is per-example, batch first (leading size {b}). Pass a value shared by "
                    f"all examples as a Python number, a 0-d tensor or a PhiML tensor without batch dims.")
            return None
        from phiml.math import Tensor
        from phi.field import Field
        if not isinstance(value, (Tensor, Field)):
            return False
        kind_of(label, value)  # refuses JAX / TensorFlow values
        own = (value.values if isinstance(value, Field) else value).shape.batch
        reference = self.batch if self.batch is not None else own
        if isinstance(value, Field):
            boundary = getattr(value.boundary, 'shape', None)
            fixed = set(value.geometry.shape.batch.names) | set(boundary.batch.names if boundary is not None else ())
            if fixed & set(reference.names):
                raise InvalidInputError(f"{label} is a Field whose geometry or boundary depends on the examples "
                                        f"({sorted(fixed & set(reference.names))}); pass those values as a PhiML "
                                        f"tensor condition and build the Field inside the function")
        if not own:
            return False
        if self.batch is None:
            if own.volume != b:
                raise InvalidInputError(f"{label} has batch dims {own} ({own.volume} examples), but {examples} hold "
                                        f"{b} examples: the batch dims of a per-example condition are the examples'")
            return own
        foreign = [d for d in own.names if d not in self.batch.names]
        wrong = [d for d in own.names if d in self.batch.names and own.get_size(d) != self.batch.get_size(d)]
        if foreign or wrong:
            why = f"not there: {', '.join(foreign)}" if foreign else f"sizes differ: {', '.join(wrong)}"
            raise InvalidInputError(f"{label} has batch dims {own}, but {examples} have {self.batch}: a per-example "
                                    f"condition's batch dims must be among the examples' with the same sizes ({why})")
        return self.batch

    def _rows(self, key, value, rows: torch.Tensor):
        if key not in self._rows_of:
            return value
        value, examples = self._rows_of[key]
        if examples is None:
            return value.detach()[rows.to(value.device)]
        from phiml import math
        from phi.field import Field
        if key not in self._natives:  # the packed native (b, |rest|) on the torch backend, once
            user = _to_backend(value)
            values = math.expand(user.values if isinstance(user, Field) else user, examples)
            rest = values.shape.non_batch
            self._natives[key] = user, values.native([examples, rest] if rest else [examples]).detach(), rest
        user, native, rest = self._natives[key]
        shape = rows_batch(examples, int(rows.numel()))
        values = math.reshaped_tensor(native[rows.to(native.device)], [shape, rest] if rest else [shape],
                                      convert=False)
        return user.with_values(values) if isinstance(user, Field) else values
