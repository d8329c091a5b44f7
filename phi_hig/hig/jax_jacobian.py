"""The stacked per-sample Jacobian of a PhiML JAX network + physics as a Jacobian operator, on JAX.

The JAX twin of `phi_hig.hig.jacobian` + `phi_hig.hig.factors`: ``J = [∂y_1/∂θ; …; ∂y_b/∂θ]`` (``b·|y| × |θ|``,
sample-major rows, columns in the order of the flattened parameter pytree) for ``y = simulate(net(x))``.

* `StaxStructure` reads the network's traced program once per parameter and input shape: its Dense / Conv layers
  (`phi_hig.hig.stax_layers.find_layers`) and the leaves that are in none (the *dense block*); it refuses a network
  that mixes the examples of a batch (stax ``BatchNorm`` always normalizes with the batch statistics, so
  per-sample Jacobians do not exist).
* `jacobian_pass` (traced inside the step's compiled function) runs network and physics **once** on the whole
  batch with zero probes at every layer output and at the network output, and pulls the |y| unit cotangents
  back through it with one vmapped VJP: the layer signals δ, the physics Jacobian ``P = ∂y/∂z`` where the dense
  block needs it, the layer inputs, and the loss value and gradient from the same trace. The physics is called on
  the batch as the user passes it (no replication, no per-example slicing), so per-example conditions need no
  handling here.
* `JaxJacobian` is the operator the spectral core applies (``n_rows``, ``n_params``, ``gram()``, ``gram_dual()``,
  ``vjp(c)``, ``matrix()``): compiled functions of the factors, evaluated in float64 inside ``jax.enable_x64``
  whatever the network's dtype. Dense layers on one position per example give
  ``G_l = (D Dᵀ)∘((A Aᵀ + 1)⊗1_{|y|×|y|})`` (never their rows of J); convolutions and the dense block give their
  column blocks of J, one layer at a time; ``Jᵀc`` is one transposed layer map per layer.

Every Gram matrix, J and block is estimated first and refused above ``max_bytes``
(`phi_hig.errors.JacobianTooLargeError`). Limitation: a convolution's column block of J is formed whole (torch
forms it in row blocks of ``chunk_bytes``). Only imported for a JAX network; imports JAX.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import jax
import jax.numpy as jnp

from ..checks import check_size
from ..errors import InvalidInputError
from .arrays import TRACES
from .spectral import DEFAULT_MAX_BYTES
from .stax_layers import find_layers, probed_apply

__all__ = ['StaxStructure', 'JaxJacobian', 'jacobian_pass', 'call_with_parameters']

F64 = jnp.float64


def call_with_parameters(net, params, x):
    """``net(x)`` with the parameter pytree ``params`` in place of ``net.parameters`` (restored afterwards): a pure
    function of ``params`` that JAX can trace, for any PhiML JAX network (its ``__call__`` applies
    ``net.parameters``)."""
    saved = net.parameters
    net.parameters = params
    try:
        return net(x)
    finally:
        net.parameters = saved


class StaxStructure:
    """A network's parameters as J's columns: its layers (factors), the dense block, and the compiled float64
    linear algebra of `JaxJacobian` (compiled once per shape, reused by every step).

    Attributes:
        apply: ``apply(leaves, x) -> z``, the network as a function of its flattened parameters.
        jaxpr: the network's program traced on the batch.
        layers: the `phi_hig.hig.stax_layers.LayerMap` s held as factors.
        rest: indices of the leaves in the dense block (their columns of J are formed per example).
        shapes, sizes, offsets: of every leaf, in column order; ``n_params``: their total size.
    """

    def __init__(self, apply: Callable, leaves: list, x, structured: Optional[bool] = None):
        self.apply = apply
        self.jaxpr = jax.make_jaxpr(apply)(leaves, x)
        b = int(x.shape[0])
        _refuse_mixing(apply, leaves, x)
        self.layers = find_layers(self.jaxpr, len(leaves), b) if structured is not False else []
        covered = {i for layer in self.layers for i in (layer.weight, layer.bias) if i is not None}
        self.rest = [i for i in range(len(leaves)) if i not in covered]
        if structured and self.rest:
            raise InvalidInputError("structured=True needs every parameter leaf in a Dense (dot_general) or Conv "
                                    "(conv_general_dilated, groups=1) layer of the network, used once; these leaves "
                                    f"are not: {self.rest}")
        self.shapes = [tuple(leaf.shape) for leaf in leaves]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int).tolist()
        self.n_params = self.offsets[-1]
        self.gram = jax.jit(self._gram)
        self.vjp = jax.jit(self._vjp)
        self.rows = jax.jit(self._rows)

    def check_blocks(self, n_rows: int, max_bytes: Optional[float]) -> None:
        """Refuse (`phi_hig.errors.JacobianTooLargeError`) a convolution whose float64 column block of J, which
        ``gram`` forms whole, would exceed ``max_bytes`` for ``n_rows`` rows."""
        for layer in self.layers:
            if not layer.dense_rows:
                check_size("A convolution's column block of J (float64)", (n_rows, layer.n_cols), 8, max_bytes)

    # ---------------------------------------------------------------- traced float64 linear algebra of the factors
    def _gram(self, inputs, deltas, block):
        TRACES['gram'] += 1
        ny, b = deltas[0].shape[:2] if deltas else block.shape[1::-1]
        R = b * ny
        G = jnp.zeros((R, R), F64)
        for layer, a, d in zip(self.layers, inputs, deltas):
            if layer.dense_rows:
                D = jnp.swapaxes(d.astype(F64), 0, 1).reshape(R, -1)
                A = a.astype(F64).reshape(b, -1)
                ka = A @ A.T + (0.0 if layer.bias is None else 1.0)
                G = G + ((D @ D.T).reshape(b, ny, b, ny) * ka[:, None, :, None]).reshape(R, R)
            else:
                B = layer.rows(a, d.astype(F64))
                G = G + B @ B.T
        if block is not None:
            B = block.astype(F64).reshape(R, -1)
            G = G + B @ B.T
        return G

    def _vjp(self, inputs, deltas, block, c):
        TRACES['vjp'] += 1
        ny, b = deltas[0].shape[:2] if deltas else block.shape[1::-1]
        c2 = c.reshape(b, ny)
        pieces = [None] * len(self.sizes)
        for layer, a, d in zip(self.layers, inputs, deltas):
            cotangent = jnp.einsum('kb...,bk->b...', d.astype(F64), c2)   # Σ_k c_ik δ_ik, per example
            pieces[layer.weight] = layer.weight_gradient(a.astype(F64), cotangent)
            if layer.bias is not None:
                pieces[layer.bias] = layer.bias_gradient(cotangent)
        if block is not None:
            self._place_rest(pieces, block.astype(F64).reshape(b * ny, -1).T @ c, axis=0)
        return jnp.concatenate(pieces)

    def _rows(self, inputs, deltas, block):
        TRACES['rows'] += 1
        ny, b = deltas[0].shape[:2] if deltas else block.shape[1::-1]
        pieces = [None] * len(self.sizes)
        for layer, a, d in zip(self.layers, inputs, deltas):
            B = layer.rows(a, d.astype(F64))
            n_w = self.sizes[layer.weight]
            pieces[layer.weight] = B[:, :n_w]
            if layer.bias is not None:
                pieces[layer.bias] = B[:, n_w:]
        if block is not None:
            self._place_rest(pieces, block.astype(F64).reshape(b * ny, -1), axis=1)
        return jnp.concatenate(pieces, axis=1)

    def _place_rest(self, pieces: list, values, axis: int) -> None:
        offset = 0
        for i in self.rest:
            n = self.sizes[i]
            pieces[i] = values[offset:offset + n] if axis == 0 else values[:, offset:offset + n]
            offset += n


def _refuse_mixing(apply: Callable, leaves: list, x) -> None:
    """`InvalidInputError` when the network's output for the first example depends on the others (batch norm)."""
    if x.shape[0] < 2:
        return
    whole, alone = jax.jit(lambda v, xx: (apply(v, xx)[:1], apply(v, xx[:1])))(leaves, x)
    whole, alone = np.asarray(whole), np.asarray(alone)
    scale = max(1.0, float(np.abs(whole).max(initial=0.0)))
    if whole.shape != alone.shape or not np.allclose(whole, alone, rtol=1e-4, atol=1e-5 * scale):
        raise InvalidInputError("the network mixes the examples of a batch (its output for one example changes with "
                                "the others, e.g. stax BatchNorm, which always normalizes with the batch "
                                "statistics): per-sample Jacobians are undefined; build it with batch_norm=False")


def jacobian_pass(structure: StaxStructure, leaves: list, x, simulate_flat: Callable, objective: Callable) -> tuple:
    """One forward pass of ``simulate_flat(net(x))`` on the batch and one VJP vmapped over the |y| unit cotangents.

    Traced inside the step's compiled function. Returns ``(y, inputs, deltas, block, value, g)``: ``y`` ``(b, |y|)``;
    per layer its input ``(b, …)`` and its signals ``(|y|, b, …)``; the dense block ``(b, |y|, n_rest)`` or None;
    ``objective(y)`` and its gradient ``(b·|y|,)``. Invariant: the rows of J these factors define are those of
    ``jax.jacrev`` of each example's ``simulate_flat(net(x_i))`` (examples independent).
    """
    layers = structure.layers
    z_aval = structure.jaxpr.out_avals[0]
    probes = [jnp.zeros(layer.out_shape, structure.jaxpr.jaxpr.eqns[layer.eqn].outvars[0].aval.dtype)
              for layer in layers] + [jnp.zeros(z_aval.shape, z_aval.dtype)]

    def forward(p):
        z, inputs = probed_apply(structure.jaxpr, layers, leaves, x, p[:-1])
        return simulate_flat(z + p[-1]), inputs

    y, pullback, inputs = jax.vjp(forward, probes, has_aux=True)
    b, ny = y.shape
    units = jnp.broadcast_to(jnp.eye(ny, dtype=y.dtype)[:, None, :], (ny, b, ny))
    signals, = jax.vmap(pullback)(units)                       # per probe: (|y|, b, …)
    value, g = jax.value_and_grad(objective)(y)
    block = _dense_block(structure, leaves, x, signals[-1]) if structure.rest else None
    return y, inputs, signals[:-1], block, value, g.reshape(-1)


def _dense_block(structure: StaxStructure, leaves: list, x, P):
    """The columns of the dense-block leaves, ``(b, |y|, n_rest)``: per example, the network's VJP with the rows of
    ``P = ∂y/∂z`` (vmapped over examples and rows; the network alone, never the physics, is vmapped)."""
    rest = structure.rest

    def net_of_rest(values, x_i):
        full = list(leaves)
        for i, v in zip(rest, values):
            full[i] = v
        return structure.apply(full, x_i[None])

    def rows_of_sample(x_i, P_i):
        _, pullback = jax.vjp(lambda values: net_of_rest(values, x_i), [leaves[i] for i in rest])
        rows, = jax.vmap(pullback)(P_i[:, None])
        return jnp.concatenate([r.reshape(P_i.shape[0], -1) for r in rows], axis=1)
    return jax.vmap(rows_of_sample)(x, jnp.swapaxes(P, 0, 1))


class JaxJacobian:
    """The Jacobian operator of one step on JAX: the factors of `jacobian_pass` and their `StaxStructure`.

    Invariant: ``gram()``, ``gram_dual()``, ``vjp(c)`` and ``matrix()`` are float64 JAX arrays accumulated in float64
    (call them inside ``jax.enable_x64``, as `phi_hig.hig.spectral.apply_half_inverse` does); nothing of size
    ``|θ| × b·|y|`` is formed by ``gram()`` / ``vjp()`` beyond the column blocks of convolutions and the dense block.
    """

    def __init__(self, structure: StaxStructure, y, inputs: list, deltas: list, block,
                 max_bytes: Optional[float] = DEFAULT_MAX_BYTES):
        self.structure, self.y, self.inputs, self.deltas, self.block = structure, y, inputs, deltas, block
        self.max_bytes = max_bytes
        self.n_samples, self.n_out = int(y.shape[0]), int(y.shape[1])
        self.n_rows, self.n_params = self.n_samples * self.n_out, structure.n_params

    @property
    def structured(self) -> bool:
        """True when every leaf is a layer factor (nothing of size |θ| × b·|y| exists)."""
        return self.block is None

    @property
    def mixed(self) -> bool:
        """True when some leaves are layer factors and others in the dense block."""
        return self.block is not None and bool(self.structure.layers)

    def _check_blocks(self) -> None:
        self.structure.check_blocks(self.n_rows, self.max_bytes)

    def gram(self):
        """``J Jᵀ`` in float64 from the factors (`StaxStructure`), refused above ``max_bytes``."""
        check_size("The Gram matrix J Jᵀ (float64)", (self.n_rows, self.n_rows), 8, self.max_bytes)
        self._check_blocks()
        return self.structure.gram(self.inputs, self.deltas, self.block)

    def matrix(self):
        """J as a float64 ``(b·|y|, |θ|)`` array, refused above ``max_bytes``."""
        check_size("The Jacobian J (float64)", (self.n_rows, self.n_params), 8, self.max_bytes)
        return self.structure.rows(self.inputs, self.deltas, self.block)

    def gram_dual(self):
        """``JᵀJ`` in float64 (from `matrix`), refused above ``max_bytes``."""
        check_size("The dual Gram matrix JᵀJ (float64)", (self.n_params, self.n_params), 8, self.max_bytes)
        J = self.matrix()
        return _gram_dual(J)

    def vjp(self, c):
        """``Jᵀc`` in float64 for ``c`` of length ``b·|y|``: one transposed layer map per layer."""
        return self.structure.vjp(self.inputs, self.deltas, self.block, c)


def _dual(J):
    TRACES['gram_dual'] += 1
    return J.T @ J


_gram_dual = jax.jit(_dual)
