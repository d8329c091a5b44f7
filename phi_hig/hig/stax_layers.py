"""The Dense and Conv layers of a JAX network, found in its traced program, and their per-layer Jacobian factors.

PhiML's JAX networks (``StaxNet``: ``jax.example_libraries.stax``) are pure functions of a parameter pytree; no
hook sees their layers. Their traced program (a jaxpr) does: a *layer* is a ``dot_general`` (a Dense layer, the
last input axis contracted with the first axis of a 2-D weight) or a ``conv_general_dilated`` (``groups = 1``)
whose second operand is a parameter leaf used nowhere else, optionally followed by an ``add`` of a bias leaf that
broadcasts along the output features only (checked by evaluating its broadcast, not by pattern alone). Everything
else (activations, padding, pooling, skip connections, batch norm) is left as it is; the leaves of unrecognized
layers go to the dense block of the Jacobian (`phi_hig.hig.jax_jacobian`).

`probed_apply` evaluates the traced network with a zero *probe* added to the output of every layer and returns the
layer inputs, so that the back-propagated signal ``δ`` of a layer is the gradient with respect to its probe; with
the per-sample layer input ``a``, the layer's rows of J are ``∂⟨δ, layer(a, W)⟩/∂W`` (`LayerMap.rows`),
the Jacobian factors of the structured Gram (Schnell, Holl & Thuerey 2022, §2.3: ``J = P_blk·J_net``). This is the
KFAC-style registration of layers by program matching (kfac-jax's graph patterns), reduced to the two layer types
PhiML's networks use. Only called on a JAX network; imports JAX.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Literal

__all__ = ['LayerMap', 'find_layers', 'probed_apply']

_ALIAS = ('convert_element_type',)
"""Primitives through which a weight leaf may reach its layer (a cast to the input's dtype)."""
_BIAS_ALIAS = ('convert_element_type', 'broadcast_in_dim', 'reshape', 'squeeze', 'expand_dims')
"""Primitives through which a bias leaf may reach its ``add``."""


@dataclass(frozen=True)
class LayerMap:
    """One Dense / Conv layer of a traced network: which equation, which leaves, and its linear map ``(a, W) → h``.

    Attributes:
        eqn: index of the ``dot_general`` / ``conv_general_dilated`` equation in the jaxpr.
        kind: 'dense' or 'conv'.
        weight: leaf index of the weight; ``bias``: leaf index of the bias, or None.
        weight_shape, bias_shape: the leaves' shapes.
        out_shape: shape of the layer output for the traced batch (examples on axis 0).
        feature_axis: the axis of the output features (the bias broadcasts along it alone).
        params: the conv equation's geometry (strides, padding, dilations, dimension numbers); None for Dense.
    """
    eqn: int
    kind: str
    weight: int
    bias: Optional[int]
    weight_shape: tuple
    bias_shape: Optional[tuple]
    out_shape: tuple
    feature_axis: int
    params: Optional[tuple] = None

    @property
    def dense_rows(self) -> bool:
        """True for a Dense layer on a single position per example (output ``(b, out)``): then
        ``J_l J_lᵀ = (D Dᵀ)∘((A Aᵀ + 1)⊗1)`` (Schnell, Holl & Thuerey 2022, §2.3)."""
        return self.kind == 'dense' and len(self.out_shape) == 2

    def apply(self, a, w):
        """The layer's linear map without its bias, in the dtype of its arguments (float64 for the Gram)."""
        if self.kind == 'dense':
            return lax.dot_general(a, w, (((a.ndim - 1,), (0,)), ((), ())))
        strides, padding, lhs_dilation, rhs_dilation, numbers = self.params
        return lax.conv_general_dilated(a, w, strides, padding, lhs_dilation, rhs_dilation, numbers)

    def weight_gradient(self, a, cotangent):
        """``∂⟨cotangent, layer(a, W)⟩/∂W`` flattened like W (exact: the layer is linear in W), summed over the
        examples of ``a`` and ``cotangent`` (any common batch size), in their dtype."""
        w0 = jnp.zeros(self.weight_shape, cotangent.dtype)
        gw, = jax.linear_transpose(lambda w: self.apply(a.astype(cotangent.dtype), w), w0)(cotangent)
        return gw.reshape(-1)

    def bias_gradient(self, cotangent):
        """``∂⟨cotangent, h⟩/∂b``: the cotangent summed over every axis but the features (the bias broadcasts along
        the features alone, `find_layers` checked it)."""
        return cotangent.sum(axis=tuple(i for i in range(cotangent.ndim) if i != self.feature_axis))

    def rows(self, a, delta):
        """The layer's column block of J, ``(b·|y|, n_cols)`` in the dtype of ``delta``: for example i and output k,
        ``Σ_p δ[k, i, p] ⊗ a[i, p]`` over the layer's positions p (the unfolded patches of a convolution,
        ``lax.conv_general_dilated_patches``), laid out like the weight leaf, then the bias ``Σ_p δ[k, i, p]``.

        Args:
            a: the layer input for the batch, ``(b, …)``.
            delta: the signals at the layer output, ``(|y|, b, …)`` (one per output row of each example).
        """
        ny, b = delta.shape[:2]
        A = self._patches(a.astype(delta.dtype))                              # (b, P, F)
        D = jnp.moveaxis(delta, self.feature_axis + 1, -1).reshape(ny, b, A.shape[1], -1)   # (|y|, b, P, O)
        if self.kind == 'dense' and A.shape[1] == 1:  # one position: an outer product, not b tiny matmuls
            W = jnp.swapaxes(D[:, :, 0, None, :] * A[None, :, 0, :, None], 0, 1)  # (b, |y|, in, out)
        elif self.kind == 'dense':
            W = jnp.einsum('kbpo,bpf->bkfo', D, A)                              # the (in, out) weight
        else:
            numbers = self.params[-1]
            logical = (b, ny, D.shape[-1], self.weight_shape[numbers.rhs_spec[1]],
                       *(self.weight_shape[j] for j in numbers.rhs_spec[2:]))      # (…, out, in, *kernel)
            W = jnp.einsum('kbpo,bpf->bkof', D, A).reshape(logical)
            W = W.transpose(0, 1, *(2 + np.argsort(numbers.rhs_spec)))           # the kernel's own layout
        blocks = [W.reshape(b * ny, -1)]
        if self.bias is not None:
            blocks.append(jnp.swapaxes(D.sum(2), 0, 1).reshape(b * ny, -1))
        return jnp.concatenate(blocks, axis=1)

    def _patches(self, a):
        """``(b, P, F)``: the inputs each output position sees (features ordered (in, *kernel) for a convolution)."""
        if self.kind == 'dense':
            return a.reshape(a.shape[0], -1, a.shape[-1])
        strides, padding, lhs_dilation, rhs_dilation, numbers = self.params
        kernel = tuple(self.weight_shape[j] for j in numbers.rhs_spec[2:])
        p = lax.conv_general_dilated_patches(a, kernel, strides, padding, lhs_dilation, rhs_dilation, numbers)
        p = jnp.moveaxis(p, numbers.out_spec[1], -1)
        return p.reshape(p.shape[0], -1, p.shape[-1])

    @property
    def n_cols(self) -> int:
        """The layer's number of columns of J (weight and bias entries)."""
        return int(np.prod(self.weight_shape)) + (0 if self.bias is None else int(np.prod(self.bias_shape)))


def find_layers(closed_jaxpr, n_leaves: int, n_examples: int) -> list:
    """The `LayerMap`s of a jaxpr ``(leaves…, x) → (out,)`` traced on a batch of ``n_examples`` (axis 0 of x); leaves
    that are not a layer's weight or bias (or are used more than once), and layers whose input and output do not
    carry the examples on axis 0, are not in any `LayerMap`."""
    jaxpr = closed_jaxpr.jaxpr
    leaf_of = {v: i for i, v in enumerate(jaxpr.invars[:n_leaves])}
    weight_alias, derived = dict(leaf_of), {v: (i, ()) for v, i in leaf_of.items()}
    uses, producers = {}, {}
    for k, eqn in enumerate(jaxpr.eqns):
        for v in eqn.outvars:
            producers[v] = k
        ins = [v for v in eqn.invars if not isinstance(v, Literal)]
        name = eqn.primitive.name
        if len(ins) == 1 and len(eqn.invars) == 1 and ins[0] in derived and name in _BIAS_ALIAS:
            leaf, chain = derived[ins[0]]
            derived[eqn.outvars[0]] = (leaf, chain + (eqn,))
            if name in _ALIAS and ins[0] in weight_alias:
                weight_alias[eqn.outvars[0]] = leaf
            continue
        for v in ins:
            if v in derived:
                uses[derived[v][0]] = uses.get(derived[v][0], 0) + 1
    for v in jaxpr.outvars:
        if not isinstance(v, Literal) and v in derived:
            uses[derived[v][0]] = uses.get(derived[v][0], 0) + 1
    var_uses = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if not isinstance(v, Literal):
                var_uses[v] = var_uses.get(v, 0) + 1
    layers = []
    for k, eqn in enumerate(jaxpr.eqns):
        kind = _layer_kind(eqn, weight_alias, derived, n_examples)
        if kind is None:
            continue
        weight = weight_alias[eqn.invars[1]]
        if uses.get(weight) != 1:
            continue
        out = eqn.outvars[0]
        feature_axis = out.aval.ndim - 1 if kind == 'dense' else eqn.params['dimension_numbers'].out_spec[1]
        bias = _bias_of(jaxpr, k, out, var_uses, derived, uses, feature_axis)
        params = None
        if kind == 'conv':
            p = eqn.params
            params = (p['window_strides'], p['padding'], p['lhs_dilation'], p['rhs_dilation'], p['dimension_numbers'])
        layers.append(LayerMap(k, kind, weight, bias, tuple(jaxpr.invars[weight].aval.shape),
                               None if bias is None else tuple(jaxpr.invars[bias].aval.shape),
                               tuple(out.aval.shape), feature_axis, params))
    return layers


def _layer_kind(eqn, weight_alias: dict, derived: dict, n_examples: int) -> Optional[str]:
    if len(eqn.invars) != 2 or isinstance(eqn.invars[1], Literal) or eqn.invars[1] not in weight_alias:
        return None
    lhs, out = eqn.invars[0], eqn.outvars[0]
    if isinstance(lhs, Literal) or lhs in derived or lhs.aval.ndim < 2 or out.aval.ndim < 2 or \
            lhs.aval.shape[0] != n_examples or out.aval.shape[0] != n_examples:
        return None
    name = eqn.primitive.name
    if name == 'dot_general':
        w = eqn.invars[1].aval
        contracting, batch_dims = eqn.params['dimension_numbers']
        if w.ndim == 2 and batch_dims == ((), ()) and tuple(contracting[0]) == (lhs.aval.ndim - 1,) and \
                tuple(contracting[1]) == (0,):
            return 'dense'
    elif name == 'conv_general_dilated':
        p = eqn.params
        numbers = p['dimension_numbers']
        if p['feature_group_count'] == 1 and p['batch_group_count'] == 1 and numbers.lhs_spec[0] == 0 and \
                numbers.out_spec[0] == 0:
            return 'conv'
    return None


def _bias_of(jaxpr, k: int, out, var_uses: dict, derived: dict, uses: dict, feature_axis: int):
    """The bias leaf when the layer output's only use is an ``add`` of a leaf (used once) broadcast along
    ``feature_axis`` alone (verified by broadcasting ``arange`` through its traced chain); else None."""
    if var_uses.get(out) != 1:
        return None
    for eqn in jaxpr.eqns[k + 1:]:
        if out not in eqn.invars:
            continue
        if eqn.primitive.name != 'add':
            return None
        other = eqn.invars[1] if eqn.invars[0] is out else eqn.invars[0]
        if isinstance(other, Literal) or other not in derived:
            return None
        leaf, chain = derived[other]
        n_out = out.aval.shape[feature_axis]
        shape = tuple(jaxpr.invars[leaf].aval.shape)
        if uses.get(leaf) != 1 or int(np.prod(shape)) != n_out:
            return None
        probe = np.arange(1, n_out + 1, dtype=np.float32).reshape(shape)
        try:
            with jax.ensure_compile_time_eval():
                value = probe
                for e in chain:
                    value = e.primitive.bind(jnp.asarray(value), **e.primitive.get_bind_params(e.params))
                got = np.broadcast_to(np.asarray(value), out.aval.shape)
        except Exception:  # a chain that does not broadcast to the output: not a bias of this layer
            return None
        expected = np.broadcast_to(np.arange(1, n_out + 1).reshape(
            [n_out if i == feature_axis else 1 for i in range(out.aval.ndim)]), out.aval.shape)
        return leaf if np.array_equal(got, expected) else None
    return None


def probed_apply(closed_jaxpr, layers: list, leaves: list, x, probes: list) -> tuple:
    """``(out, layer inputs)``: the traced network evaluated on ``x`` with ``probes[l]`` added to the output of
    ``layers[l]`` (zero probes leave the output unchanged; their gradients are the layers' signals δ)."""
    jaxpr = closed_jaxpr.jaxpr
    at = {layer.eqn: i for i, layer in enumerate(layers)}
    env = dict(zip(jaxpr.constvars, closed_jaxpr.consts))
    env.update(zip(jaxpr.invars, [*leaves, x]))
    inputs = [None] * len(layers)

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]
    for k, eqn in enumerate(jaxpr.eqns):
        values = [read(v) for v in eqn.invars]
        with eqn.ctx.manager:
            out = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
        if k in at:
            inputs[at[k]] = values[0]
            out = out + probes[at[k]]
        if eqn.primitive.multiple_results:
            env.update(zip(eqn.outvars, out))
        else:
            env[eqn.outvars[0]] = out
    return read(jaxpr.outvars[0]), inputs
