"""Per-sample Jacobians and Gram matrices of a network followed by a batched physics simulation.

The stacked per-sample Jacobian of ``y_i = simulate(net(x_i))`` is ``J = [∂y_1/∂θ; …; ∂y_b/∂θ]`` of shape
``(b·|y|, |θ|)`` with sample-major rows (row ``i·|y| + k`` is output ``k`` of sample ``i``). Because the
physics acts on each sample alone, ``∂y/∂z`` is block-diagonal and ``J = P_blk · J_net``:

1. ``P`` (``b × |y| × |z|``) comes from one backward pass of the physics on a batch that repeats every
   sample |y| times, with the k-th unit cotangent on the k-th copy. This works for any physics written
   with PyTorch or PhiML/PhiFlow operations, including a Dirichlet ``field.laplace`` and ``solve_linear``
   that ``torch.func.vmap`` cannot trace, and needs no Python loop over samples.
2. For networks whose trainable parameters all sit in ``nn.Linear`` layers applied once to ``(batch,
   features)`` inputs (any elementwise activations between them), the rows of J are ``δ ⊗ [a, 1]`` with
   ``a`` the layer input of the sample and ``δ`` the back-propagated signal at the layer output. All
   signals come from one backward pass of the network on the repeated batch with cotangents ``P``.
   From these factors the Gram matrix ``G = J Jᵀ = Σ_layers (D Dᵀ) ∘ ((A Aᵀ + 1) ⊗ 1_{|y|×|y|})`` is
   assembled in float64 without forming J, and ``Jᵀc`` is a per-layer contraction.
3. Other networks (no batch norm) use ``torch.func``: per sample, the vector–Jacobian products of the
   network with the |y| rows of ``P_i``, vectorized over samples with ``vmap`` and chunked.

Every allocation of ``J``, ``G`` or ``JᵀJ`` is estimated first and refused above ``max_bytes`` with a
`JacobianTooLargeError` that names the size.
"""
from __future__ import annotations

from dataclasses import dataclass, field as _field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .errors import InvalidInputError, JacobianTooLargeError

__all__ = ['physics_jacobian', 'per_sample_jacobian', 'gram', 'jacobian_factors', 'JacobianFactors',
           'DEFAULT_MAX_BYTES', 'check_size']

DEFAULT_MAX_BYTES = 4 * 1024 ** 3
"""Default limit (4 GiB) on any single Jacobian or Gram matrix allocated by this module."""
DEFAULT_CHUNK_ROWS = 16384
"""Default number of replicated rows (samples × outputs) processed in one backward pass."""


def _human(nbytes: float) -> str:
    for unit in ['B', 'kB', 'MB', 'GB', 'TB', 'PB']:
        if nbytes < 1000 or unit == 'PB':
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return ''  # pragma: no cover


def check_size(what: str, shape: Sequence[int], itemsize: int, max_bytes: Optional[float]) -> None:
    """Raise `JacobianTooLargeError` if an array of ``shape`` and ``itemsize`` would exceed ``max_bytes``."""
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * itemsize
    if max_bytes is not None and nbytes > max_bytes:
        dims = ' x '.join(str(int(s)) for s in shape)
        raise JacobianTooLargeError(
            f"{what} of shape {dims} would need {_human(nbytes)}, above the limit of {_human(max_bytes)} "
            f"(max_bytes). Use a smaller batch or output, or raise max_bytes if the memory is there.")


def _flat_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor with the batch first, got {type(t).__name__}")
    if t.ndim == 0:
        raise InvalidInputError(f"{name} must have a leading batch dimension, got a scalar")
    return t.reshape(t.shape[0], -1)


def physics_jacobian(simulate: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *,
                     y: Optional[torch.Tensor] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS, max_bytes: Optional[float] = DEFAULT_MAX_BYTES):
    """The block-diagonal Jacobian of a batched simulation: ``P[i, k, j] = ∂y_(i,k)/∂z_(i,j)``.

    Args:
        simulate: ``z -> y``, batch first, treating batch entries independently (entry i of the output may
            depend on entry i of the input only). It may use PyTorch and PhiML/PhiFlow operations and must
            accept any batch size.
        z: the simulation input, ``(b, *z_shape)``.
        y: ``simulate(z)``, if already computed.
        chunk_rows: at most this many replicated rows (samples × outputs) per backward pass.
        max_bytes: refuse to allocate P above this size.

    Returns:
        ``(y, P)``: ``y = simulate(z)`` detached and flattened to ``(b, |y|)``, and ``P`` of shape
        ``(b, |y|, |z|)`` in z's dtype.
    """
    z = z.detach()
    b = z.shape[0]
    nz = z[0].numel()
    if y is None:
        with torch.no_grad(), _torch_backend():
            y = simulate(z)
    y = _flat_batch(y, 'simulate(z)').detach()
    if y.shape[0] != b:
        raise InvalidInputError(f"simulate(z) returned batch size {y.shape[0]} for an input of batch size {b}")
    ny = y.shape[1]
    check_size("The physics Jacobian", (b, ny, nz), z.element_size(), max_bytes)
    P = torch.empty(b, ny, nz, dtype=z.dtype, device=z.device)
    per_chunk = max(1, chunk_rows // max(ny, 1))
    eye = torch.eye(ny, dtype=y.dtype, device=z.device)
    for start in range(0, b, per_chunk):
        zc = z[start:start + per_chunk]
        n = zc.shape[0]
        zr = zc.repeat_interleave(ny, dim=0).requires_grad_(True)
        with torch.enable_grad(), _torch_backend():
            yr = _flat_batch(simulate(zr), 'simulate(z)')
            grad, = torch.autograd.grad(yr, zr, eye.repeat(n, 1), allow_unused=True)
        P[start:start + n] = 0 if grad is None else grad.reshape(n, ny, nz)
    return y, P


def _forward(net: nn.Module, inputs: torch.Tensor, simulate: Callable):
    """``(z, y)`` with ``z = net(inputs)`` and ``y = simulate(z)`` (batch first, in simulate's own shape)."""
    z = net(inputs)
    with _torch_backend():
        y = simulate(z)
    _flat_batch(y, 'simulate(net(inputs))')
    return z, y


def _torch_backend():
    """PhiML's torch backend as context: PhiML traces solve matrices (e.g. in ``solve_linear``) with the
    context backend, and their backward pass needs torch tensors."""
    try:
        from phiml.backend.torch import TORCH
    except ImportError:  # pragma: no cover
        import contextlib
        return contextlib.nullcontext()
    return TORCH


def _trainable(net: nn.Module, params: Optional[Sequence[torch.Tensor]]) -> list:
    if params is None:
        params = [p for p in net.parameters() if p.requires_grad]
    params = list(params)
    if not params:
        raise InvalidInputError("the network has no trainable parameters")
    owned = {id(p) for p in net.parameters()}
    if any(id(p) not in owned for p in params):
        raise InvalidInputError("params must be parameters of net")
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise InvalidInputError(f"per-sample Jacobians are undefined with batch norm in training mode "
                                    f"({type(m).__name__} mixes the samples of a batch); call net.eval() or "
                                    f"remove it")
    return params


@dataclass
class _LinearFactor:
    a: torch.Tensor          # (b, in): layer input per sample
    delta: torch.Tensor      # (R, out): back-propagated signal per (sample, output) row
    weight_col: Optional[int] = None   # position of the weight among the trainable params, if trainable
    bias_col: Optional[int] = None


@dataclass
class JacobianFactors:
    """The stacked per-sample Jacobian J (``b·|y| × |θ|``, sample-major rows) of network + physics.

    Holds either per-layer factors (structured form: nothing of size ``|θ| × b·|y|``) or the matrix itself.
    Columns follow the order of ``params`` (each parameter flattened row-major).

    Attributes:
        y: the simulation output ``(b, |y|)``, detached.
        params: the trainable parameters, in column order.
        structured: True when J is held as layer factors.
    """
    y: torch.Tensor
    params: list
    layers: list = _field(default_factory=list)
    matrix_: Optional[torch.Tensor] = None
    max_bytes: Optional[float] = DEFAULT_MAX_BYTES
    _dense: Optional[torch.Tensor] = None

    @property
    def n_samples(self) -> int:
        return self.y.shape[0]

    @property
    def n_out(self) -> int:
        return self.y.shape[1]

    @property
    def n_rows(self) -> int:
        return self.y.shape[0] * self.y.shape[1]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def structured(self) -> bool:
        return self.matrix_ is None

    def matrix(self) -> torch.Tensor:
        """J as a dense ``(b·|y|, |θ|)`` tensor in the parameters' dtype."""
        if self.matrix_ is not None:
            return self.matrix_
        if self._dense is not None:
            return self._dense
        check_size("The Jacobian J", (self.n_rows, self.n_params), self.params[0].element_size(), self.max_bytes)
        ny = self.n_out
        blocks = [None] * len(self.params)
        for f in self.layers:
            if f.weight_col is not None:
                a_rows = f.a.repeat_interleave(ny, dim=0)
                blocks[f.weight_col] = (f.delta[:, :, None] * a_rows[:, None, :]).reshape(self.n_rows, -1)
            if f.bias_col is not None:
                blocks[f.bias_col] = f.delta
        self._dense = torch.cat([blk.to(self.params[0].dtype) for blk in blocks], dim=1)
        return self._dense

    def gram(self) -> torch.Tensor:
        """``G = J Jᵀ`` as a float64 ``(b·|y|, b·|y|)`` tensor, accumulated in float64."""
        R, b, ny = self.n_rows, self.n_samples, self.n_out
        check_size("The Gram matrix J Jᵀ (float64)", (R, R), 8, self.max_bytes)
        if self.matrix_ is not None:
            J64 = self.matrix_.to(torch.float64)
            return J64 @ J64.T
        G = torch.zeros(R, R, dtype=torch.float64, device=self.y.device)
        G4 = G.view(b, ny, b, ny)
        for f in self.layers:
            d64 = f.delta.to(torch.float64)
            a64 = f.a.to(torch.float64)
            ka = a64 @ a64.T if f.weight_col is not None else torch.zeros(b, b, dtype=torch.float64, device=G.device)
            if f.bias_col is not None:
                ka += 1.0
            dd = (d64 @ d64.T).view(b, ny, b, ny)
            G4.add_(dd.mul_(ka[:, None, :, None]))
        return G

    def gram_dual(self) -> torch.Tensor:
        """``JᵀJ`` as a float64 ``(|θ|, |θ|)`` tensor."""
        check_size("The dual Gram matrix JᵀJ (float64)", (self.n_params, self.n_params), 8, self.max_bytes)
        J64 = self.matrix().to(torch.float64)
        return J64.T @ J64

    def vjp(self, c: torch.Tensor) -> torch.Tensor:
        """``Jᵀc`` for a vector ``c`` of length ``b·|y|``, in float64, as a flat ``(|θ|,)`` tensor."""
        c64 = c.to(torch.float64)
        if self.matrix_ is not None:
            return self.matrix_.to(torch.float64).T @ c64
        b, ny = self.n_samples, self.n_out
        pieces = [None] * len(self.params)
        for f in self.layers:
            dc = f.delta.to(torch.float64) * c64[:, None]              # (R, out)
            if f.weight_col is not None:
                per_sample = dc.view(b, ny, -1).sum(1)                  # (b, out)
                pieces[f.weight_col] = (per_sample.T @ f.a.to(torch.float64)).reshape(-1)
            if f.bias_col is not None:
                pieces[f.bias_col] = dc.sum(0)
        return torch.cat(pieces)


def _structured_layers(net: nn.Module, params: list) -> Optional[dict]:
    """Map each trainable parameter to a Linear layer, or None if some parameter is elsewhere."""
    col = {id(p): i for i, p in enumerate(params)}
    layers = {}
    for m in net.modules():
        own = [p for p in m.parameters(recurse=False) if id(p) in col]
        if not own:
            continue
        if type(m) is not nn.Linear:
            return None
        layers[m] = (col.get(id(m.weight)), col.get(id(m.bias)) if m.bias is not None else None)
    covered = sum((w is not None) + (bcol is not None) for w, bcol in layers.values())
    return layers if covered == len(params) else None


def _structured_factors(net, inputs, P, layers, chunk_rows) -> Optional[list]:
    """Layer inputs and back-propagated signals for all (sample, output) rows, or None if not applicable."""
    b, ny, nz = P.shape
    captured = {}
    calls = {}

    def hook(module, args, output):
        calls[module] = calls.get(module, 0) + 1
        captured[module] = (args[0], output)

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        per_chunk = max(1, chunk_rows // max(ny, 1))
        deltas = {m: [] for m in layers}
        inputs_a = {m: [] for m in layers}
        for start in range(0, b, per_chunk):
            xc = inputs[start:start + per_chunk]
            n = xc.shape[0]
            calls.clear()
            captured.clear()
            with torch.enable_grad():
                zr = net(xc.repeat_interleave(ny, dim=0))
                if any(calls.get(m, 0) != 1 for m in layers) or any(captured[m][0].ndim != 2 for m in layers):
                    return None
                outs = [captured[m][1] for m in layers]
                grads = torch.autograd.grad(_flat_batch(zr, 'net(inputs)'), outs,
                                            P[start:start + n].reshape(n * ny, nz), allow_unused=True)
            for m, gr in zip(layers, grads):
                a = captured[m][0].detach()[::ny]
                deltas[m].append(torch.zeros_like(captured[m][1]) if gr is None else gr)
                inputs_a[m].append(a)
    finally:
        for h in handles:
            h.remove()
    return [_LinearFactor(torch.cat(inputs_a[m]), torch.cat(deltas[m]).detach(), *layers[m]) for m in layers]


def _generic_matrix(net, params, inputs, P, chunk_rows, max_bytes) -> torch.Tensor:
    """J via torch.func: per-sample VJPs of the network with the rows of P, vmapped over samples."""
    from torch.func import functional_call, vjp, vmap
    b, ny, nz = P.shape
    n_params = sum(p.numel() for p in params)
    check_size("The Jacobian J", (b * ny, n_params), params[0].element_size(), max_bytes)
    names = {id(p): n for n, p in net.named_parameters()}
    sel_names = [names[id(p)] for p in params]
    fixed = {n: p.detach() for n, p in net.named_parameters() if n not in set(sel_names)}
    fixed.update(dict(net.named_buffers()))

    def f(sel, x_i):
        out = functional_call(net, {**fixed, **dict(zip(sel_names, sel))}, (x_i.unsqueeze(0),))
        return out.reshape(-1)

    def rows_of_sample(x_i, P_i):
        _, pullback = vjp(lambda *sel: f(sel, x_i), *[p.detach() for p in params])
        rows = vmap(pullback)(P_i)
        return torch.cat([r.reshape(ny, -1) for r in rows], dim=1)

    J = torch.empty(b * ny, n_params, dtype=params[0].dtype, device=params[0].device)
    per_chunk = max(1, chunk_rows // max(ny, 1))
    for start in range(0, b, per_chunk):
        xc, Pc = inputs[start:start + per_chunk], P[start:start + per_chunk]
        J[start * ny:(start + xc.shape[0]) * ny] = vmap(rows_of_sample)(xc, Pc).reshape(-1, n_params)
    return J


def jacobian_factors(net: nn.Module, inputs: torch.Tensor, simulate: Callable, *, params=None,
                     structured: Optional[bool] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     max_bytes: Optional[float] = DEFAULT_MAX_BYTES, forward=None) -> JacobianFactors:
    """Compute the stacked per-sample Jacobian of ``simulate(net(inputs))`` in factored form.

    Args:
        net: a ``torch.nn.Module`` (e.g. from ``phiml.nn.dense_net``), without batch norm in training mode.
        inputs: network inputs, batch first.
        simulate: batched physics ``z -> y`` (see `physics_jacobian`); use ``lambda z: z`` for none.
        params: the trainable parameters (column order); default all parameters that require grad.
        structured: force (True) or forbid (False) the per-layer form; default: use it when possible.
        chunk_rows: replicated rows per backward pass (bounds the memory of the passes).
        max_bytes: refuse any single J / G / P allocation above this size.
        forward: optionally ``(z, y)`` = ``(net(inputs), simulate(z))``, if already computed.
    """
    params = _trainable(net, params)
    if forward is None:
        with torch.no_grad():
            forward = _forward(net, inputs, simulate)
    z, y = forward
    y, Pm = physics_jacobian(simulate, z, y=y, chunk_rows=chunk_rows, max_bytes=max_bytes)
    layers = _structured_layers(net, params) if structured is not False else None
    if layers is not None:
        factors = _structured_factors(net, inputs, Pm, layers, chunk_rows)
        if factors is not None:
            return JacobianFactors(y, params, factors, max_bytes=max_bytes)
    if structured:
        raise InvalidInputError("structured=True needs every trainable parameter in an nn.Linear layer applied "
                                "once per forward pass to (batch, features) inputs")
    return JacobianFactors(y, params, matrix_=_generic_matrix(net, params, inputs, Pm, chunk_rows, max_bytes),
                           max_bytes=max_bytes)


def per_sample_jacobian(net: nn.Module, inputs: torch.Tensor, simulate: Callable = None, **kwargs) -> torch.Tensor:
    """The stacked per-sample Jacobian ``J`` of ``simulate(net(inputs))``, shape ``(b·|y|, |θ|)``.

    Rows are sample-major (row ``i·|y| + k`` is output k of sample i); columns follow the trainable
    parameters in ``net.parameters()`` order, each flattened row-major. Keyword arguments as in
    `jacobian_factors`. Raises `JacobianTooLargeError` before allocating above ``max_bytes``.
    """
    return jacobian_factors(net, inputs, simulate or (lambda z: z), **kwargs).matrix()


def gram(net: nn.Module, inputs: torch.Tensor, simulate: Callable = None, **kwargs) -> torch.Tensor:
    """The float64 Gram matrix ``J Jᵀ`` (``b·|y| × b·|y|``) of `per_sample_jacobian`, without forming J when
    the network's parameters all sit in Linear layers. Raises `JacobianTooLargeError` before allocating
    above ``max_bytes``."""
    simulate = simulate or (lambda z: z)
    with torch.no_grad():
        z, y = _forward(net, inputs, simulate)
    check_size("The Gram matrix J Jᵀ (float64)", (y.numel(), y.numel()), 8, kwargs.get('max_bytes', DEFAULT_MAX_BYTES))
    return jacobian_factors(net, inputs, simulate, forward=(z, y), **kwargs).gram()
