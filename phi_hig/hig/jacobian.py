"""Per-sample Jacobians and Gram matrices of a network followed by a batched physics simulation.

The stacked per-sample Jacobian of ``y_i = simulate(net(x_i))`` is ``J = [∂y_1/∂θ; …; ∂y_b/∂θ]`` of shape
``(b·|y|, |θ|)`` with sample-major rows (row ``i·|y| + k`` is output ``k`` of sample ``i``). Because the
physics acts on each sample alone, ``∂y/∂z`` is block-diagonal and ``J = P_blk · J_net``.

`jacobian_factors` gets everything from **one** forward and one backward pass of network + physics on a batch
that repeats every sample |y| times, with the k-th unit cotangent on the k-th copy (chunked to ``chunk_rows``
rows): the outputs ``y``, the physics Jacobian ``P`` (``b × |y| × |z|``, the gradient at the network output) and,
for every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` layer (``groups == 1``; any stride, dilation, padding and
padding mode; any elementwise activations between layers) called once per forward pass on batch-first inputs,
the per-sample layer input ``a`` and the back-propagated signal ``δ`` at the layer output for every (sample,
output) row. This works for any physics written with PyTorch or PhiML/PhiFlow operations, including a Dirichlet
``field.laplace`` and ``solve_linear`` that ``torch.func.vmap`` cannot trace, and needs no Python loop over
samples. The result is a `phi_hig.hig.factors.JacobianFactors`, the Jacobian operator the HIG core applies; the
columns of all other parameters (layers of unknown type, shared weights) are formed per sample with
``torch.func`` from ``P`` (vectorized over samples with ``vmap``, chunked) — only these columns are ever formed
as a matrix.

Every allocation of ``J``, ``G``, ``JᵀJ`` or ``P`` is estimated first and refused above ``max_bytes`` with a
`JacobianTooLargeError` that names the size.
"""
from __future__ import annotations

import weakref
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..backend import torch_backend
from ..checks import check_size
from ..errors import InvalidInputError
from .factors import DEFAULT_CHUNK_BYTES, JacobianFactors, LayerFactor
from .spectral import DEFAULT_MAX_BYTES, gram_bytes

__all__ = ['physics_jacobian', 'per_sample_jacobian', 'gram', 'jacobian_factors', 'JacobianFactors',
           'DEFAULT_MAX_BYTES', 'DEFAULT_CHUNK_BYTES', 'DEFAULT_CHUNK_ROWS']

DEFAULT_CHUNK_ROWS = 16384
"""Default number of replicated rows (samples × outputs) processed in one backward pass."""


def _flat_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor with the batch first, got {type(t).__name__}")
    if t.ndim == 0:
        raise InvalidInputError(f"{name} must have a leading batch dimension, got a scalar")
    return t.reshape(t.shape[0], -1)


def physics_jacobian(simulate: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *,
                     y: Optional[torch.Tensor] = None,
                     chunk_rows: int = DEFAULT_CHUNK_ROWS, max_bytes: Optional[float] = DEFAULT_MAX_BYTES):
    """The block-diagonal Jacobian of a batched simulation: ``P[i, k, j] = ∂y_(i,k)/∂z_(i,j)``.

    One backward pass on a batch that repeats every sample |y| times with the k-th unit cotangent on the k-th
    copy (chunked to ``chunk_rows`` rows), under PhiML's torch backend (`phi_hig.backend.torch_backend`).

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

    >>> import torch
    >>> y, P = physics_jacobian(lambda z: z ** 2, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    >>> tuple(P.shape), P[1].tolist()   # ∂(z_j²)/∂z_j = 2·z_j, one block per example
    ((2, 2, 2), [[6.0, 0.0], [0.0, 8.0]])
    """
    z = z.detach()
    b = z.shape[0]
    nz = z[0].numel()
    if y is None:
        with torch.no_grad(), torch_backend():
            y = simulate(z)
    yf = _flat_batch(y, 'simulate(z)')
    if yf.shape[0] != b:
        raise InvalidInputError(f"simulate(z) returned batch size {yf.shape[0]} for an input of batch size {b}")
    ny = yf.shape[1]
    check_size("The physics Jacobian", (b, ny, nz), z.element_size(), max_bytes)
    P = torch.empty(b, ny, nz, dtype=z.dtype, device=z.device)
    eye = torch.eye(ny, dtype=yf.dtype, device=z.device)
    for chunk in _sample_chunks(b, ny, chunk_rows):
        zc = z[chunk]
        n = zc.shape[0]
        zr = zc.repeat_interleave(ny, dim=0).requires_grad_(True)
        with torch.enable_grad(), torch_backend():
            yrf = _flat_batch(simulate(zr), 'simulate(z)')
            grad, = torch.autograd.grad(yrf, zr, eye.to(yrf.dtype).repeat(n, 1), allow_unused=True)
        P[chunk] = 0 if grad is None else grad.reshape(n, ny, nz)
    return yf.detach(), P


def _sample_chunks(b: int, ny: int, chunk_rows: int):
    """Slices of samples whose replicated rows (samples × |y|) stay within ``chunk_rows`` (at least one sample)."""
    step = max(1, chunk_rows // max(ny, 1))
    return [slice(start, min(start + step, b)) for start in range(0, b, step)]


def _trainable(net: nn.Module, params: Optional[Sequence[torch.Tensor]], modules: list) -> list:
    """The trainable parameters (default: all that require grad), checked to belong to ``net``, with no batch norm
    of ``modules`` (``list(net.modules())``) in training mode."""
    if params is None:
        params = [p for p in net.parameters() if p.requires_grad]
    params = list(params)
    if not params:
        raise InvalidInputError("the network has no trainable parameters")
    owned = {id(p) for p in net.parameters()}
    if any(id(p) not in owned for p in params):
        raise InvalidInputError("params must be parameters of net")
    for m in modules:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise InvalidInputError(f"per-sample Jacobians are undefined with batch norm in training mode "
                                    f"({type(m).__name__} mixes the samples of a batch); call net.eval() or "
                                    f"remove it")
    return params


_STRUCTURED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layer types whose columns of J are held as factors (convolutions with ``groups == 1`` only)."""


_LAYER_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _candidate_layers(net: nn.Module, params: list, modules: list) -> dict:
    """``{module: (weight column, bias column)}`` for the Linear / Conv layers (groups = 1) that own
    trainable parameters, each owned by exactly one module; the other parameters go to the dense block.
    Cached per network for the same parameter list and module tree (``modules = list(net.modules())``)."""
    key = (tuple(id(p) for p in params), tuple(id(m) for m in modules))
    hit = _LAYER_CACHE.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    col = {id(p): i for i, p in enumerate(params)}
    owners = {}
    for m in modules:
        for p in m.parameters(recurse=False):
            if id(p) in col:
                owners.setdefault(id(p), set()).add(m)
    layers = {}
    for m in modules:
        if type(m) not in _STRUCTURED_TYPES or getattr(m, 'groups', 1) != 1:
            continue
        own = [p for p in m.parameters(recurse=False) if id(p) in col]
        if not own or any(len(owners[id(p)]) != 1 for p in own):
            continue
        layers[m] = (col.get(id(m.weight)), col.get(id(m.bias)) if m.bias is not None else None)
    _LAYER_CACHE[net] = (key, layers)
    return layers


def _input_ok(m: nn.Module, x, out, rows: int) -> bool:
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or x.shape[0] != rows or out.shape[0] != rows:
        return False
    if isinstance(m, nn.Conv2d):
        return x.ndim == 4
    if isinstance(m, nn.Conv1d):
        return x.ndim == 3
    return x.ndim >= 2


def _layer_input(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The per-sample factor ``a``: ``(n, F)`` for a Linear layer on ``(n, F)``, else ``(n, F, L)`` with L
    positions (unfolded, padded patches for convolutions, in the weight's ``(in, kh, kw)`` order)."""
    n = x.shape[0]
    if isinstance(m, nn.Linear):
        return x if x.ndim == 2 else x.reshape(n, -1, x.shape[-1]).transpose(1, 2).contiguous()
    mode = 'constant' if m.padding_mode == 'zeros' else m.padding_mode
    pad = list(m._reversed_padding_repeated_twice)
    if any(pad):
        x = torch.nn.functional.pad(x, pad, mode=mode)
    if isinstance(m, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, dilation, stride = (1, m.kernel_size[0]), (1, m.dilation[0]), (1, m.stride[0])
    else:
        kernel, dilation, stride = m.kernel_size, m.dilation, m.stride
    return torch.nn.functional.unfold(x, kernel, dilation=dilation, padding=0, stride=stride)


def _layer_delta(m: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """The per-row signal ``δ``: ``(R, out)`` or ``(R, out, L)`` matching `_layer_input`."""
    R = grad.shape[0]
    if isinstance(m, nn.Linear):
        return grad if grad.ndim == 2 else grad.reshape(R, -1, grad.shape[-1]).transpose(1, 2).contiguous()
    return grad.reshape(R, grad.shape[1], -1)


def _replicated_pass(net, inputs, simulate, ny: int, layers: dict, chunk_rows: int, max_bytes, objective=None):
    """One forward and one backward pass of ``simulate(net(·))`` on every sample repeated ``ny`` times.

    Returns ``(y (b, |y|), P (b, |y|, |z|), factors, objective)``, or None when ``ny`` is not |y| (then the caller
    learns |y| and calls again); ``objective`` is ``(value, gradient)`` of ``objective(y)`` when one is given and the
    pass is one chunk (the same backward call), else None. Layers not called exactly once per forward pass on
    batch-first inputs are dropped from the factors (their parameters go to the dense block)."""
    b = inputs.shape[0]
    captured, calls = {}, {}

    def hook(module, args, output):
        calls[module] = calls.get(module, 0) + 1
        captured[module] = (args[0] if args else None, output)

    valid = dict(layers)
    handles = [m.register_forward_hook(hook) for m in layers]
    deltas, inputs_a, ys, P = {m: [] for m in layers}, {m: [] for m in layers}, [], None
    eye, value = None, None
    chunks = _sample_chunks(b, ny, chunk_rows)
    try:
        for chunk in chunks:
            xc = inputs[chunk]
            n = xc.shape[0]
            calls.clear()
            captured.clear()
            with torch.enable_grad(), torch_backend():
                zr = net(xc.repeat_interleave(ny, dim=0))
                yr = simulate(zr)
                if not isinstance(yr, torch.Tensor) or yr.ndim == 0 or yr.shape[0] != n * ny or yr[0].numel() != ny:
                    return None
                yrf = yr.reshape(n * ny, ny)
                if P is None:
                    nz = zr[0].numel()
                    check_size("The physics Jacobian", (b, ny, nz), zr.element_size(), max_bytes)
                    P = torch.empty(b, ny, nz, dtype=zr.dtype, device=zr.device)
                    eye = torch.eye(ny, dtype=yrf.dtype, device=yrf.device)
                for m in list(valid):
                    if calls.get(m, 0) != 1 or not _input_ok(m, *captured[m], n * ny):
                        del valid[m]
                outs = [captured[m][1] for m in valid]
                if objective is not None and len(chunks) == 1:  # its gradient in the same backward call
                    y_leaf = yrf.detach()[::ny].clone().requires_grad_(True)
                    value = objective(y_leaf)
                    grads = torch.autograd.grad([yrf, value], [zr, *outs, y_leaf],
                                                [eye.repeat(n, 1), torch.ones_like(value)], allow_unused=True)
                    value, grads = (value.detach(), grads[-1]), grads[:-1]
                else:
                    grads = torch.autograd.grad(yrf, [zr, *outs], eye.repeat(n, 1), allow_unused=True)
            P[chunk] = 0 if grads[0] is None else grads[0].reshape(n, ny, -1)
            ys.append(yrf.detach()[::ny])
            for m, gr in zip(valid, grads[1:]):
                with torch.no_grad():
                    inputs_a[m].append(_layer_input(m, captured[m][0].detach()[::ny]))
                    deltas[m].append(_layer_delta(m, torch.zeros_like(captured[m][1]) if gr is None else gr.detach()))
    finally:
        for h in handles:
            h.remove()
    factors = [LayerFactor(_cat(inputs_a[m]), _cat(deltas[m]), *valid[m]) for m in valid]
    return _cat(ys), P, factors, value


def _cat(pieces: list) -> torch.Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


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
    for chunk in _sample_chunks(b, ny, chunk_rows):
        J[chunk.start * ny:chunk.stop * ny] = vmap(rows_of_sample)(inputs[chunk], P[chunk]).reshape(-1, n_params)
    return J


def jacobian_factors(net: nn.Module, inputs: torch.Tensor, simulate: Callable, *, params=None,
                     structured: Optional[bool] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     max_bytes: Optional[float] = DEFAULT_MAX_BYTES, chunk_bytes: float = DEFAULT_CHUNK_BYTES,
                     n_out: Optional[int] = None, objective: Optional[Callable] = None) -> JacobianFactors:
    """The stacked per-sample Jacobian of ``simulate(net(inputs))`` as a Jacobian operator, in factored form.

    Parameters of ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` layers (``groups == 1``, any padding mode,
    stride and dilation) that are called once per forward pass on batch-first inputs are held as layer
    factors; all other parameters (unknown layers, shared weights) get their columns of J per sample from
    ``torch.func``, chunked. Limitation: a layer's weight used outside its own ``forward`` (e.g.
    ``F.linear(x, layer.weight)`` elsewhere) is not seen by the hooks; pass ``structured=False`` for such nets.

    Args:
        net: a ``torch.nn.Module`` (e.g. from ``phiml.nn.dense_net``), without batch norm in training mode.
        inputs: network inputs, batch first.
        simulate: batched physics ``z -> y`` (see `physics_jacobian`); use ``lambda z: z`` for none.
        params: the trainable parameters (column order); default all parameters that require grad.
        structured: True: every parameter must be in a structured layer (else `InvalidInputError`);
            False: form J per sample for all parameters; None (default): structured where possible.
        chunk_rows: replicated rows per backward pass (bounds the memory of the passes).
        max_bytes: refuse any single J / G / P allocation above this size.
        chunk_bytes: bound on the row blocks that `JacobianFactors.gram` / `gram_dual` / `vjp` form.
        n_out: |y|, if known (e.g. from the previous step); else a forward pass of one sample finds it.
        objective: optionally a scalar function of the flattened outputs ``(b, |y|)`` (e.g. the batch-mean loss);
            when the pass is one chunk its value and gradient come from the same backward call and are stored in
            the result's ``objective`` as ``(value, gradient)`` (else ``objective`` is None).
    """
    modules = list(net.modules())
    params = _trainable(net, params, modules)
    if inputs.shape[0] == 0:
        raise InvalidInputError("inputs must hold at least one example, got an empty batch")
    layers = _candidate_layers(net, params, modules) if structured is not False else {}
    pass_args = (layers, chunk_rows, max_bytes, objective)
    result = _replicated_pass(net, inputs, simulate, int(n_out), *pass_args) if n_out else None
    if result is None:
        result = _replicated_pass(net, inputs, simulate, _output_size(net, inputs, simulate), *pass_args)
        if result is None:
            raise InvalidInputError("simulate(z) must return one row per input row with the same number of values "
                                    "for every batch size (examples must be independent)")
    y, P, factors, value = result
    covered = {c for f in factors for c in (f.weight_col, f.bias_col) if c is not None}
    rest = [i for i in range(len(params)) if i not in covered]
    if structured and rest:
        raise InvalidInputError("structured=True needs every trainable parameter in an nn.Linear / nn.Conv1d / "
                                "nn.Conv2d (groups=1) layer applied once per forward pass to batch-first inputs")
    block = _generic_matrix(net, [params[i] for i in rest], inputs, P, chunk_rows, max_bytes) if rest else None
    return JacobianFactors(y, params, factors, rest, block, max_bytes=max_bytes, chunk_bytes=chunk_bytes,
                           objective=value)


def _output_size(net: nn.Module, inputs: torch.Tensor, simulate: Callable) -> int:
    """|y|: the number of values ``simulate(net(·))`` returns per example, from a no-grad pass of one example."""
    with torch.no_grad(), torch_backend():
        return _flat_batch(simulate(net(inputs[:1])), 'simulate(net(inputs))').shape[1]


def per_sample_jacobian(net: nn.Module, inputs: torch.Tensor, simulate: Callable = None, **kwargs) -> torch.Tensor:
    """The stacked per-sample Jacobian ``J`` of ``simulate(net(inputs))``, shape ``(b·|y|, |θ|)``.

    Rows are sample-major (row ``i·|y| + k`` is output k of sample i); columns follow the trainable
    parameters in ``net.parameters()`` order, each flattened row-major. Keyword arguments as in
    `jacobian_factors`. Raises `JacobianTooLargeError` before allocating above ``max_bytes``.

    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> per_sample_jacobian(net, torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()   # row i: ∂y_i/∂(w, b) = (x_i, 1)
    [[1.0, 2.0, 1.0], [3.0, 4.0, 1.0]]
    """
    return jacobian_factors(net, inputs, simulate or (lambda z: z), **kwargs).matrix()


def gram(net: nn.Module, inputs: torch.Tensor, simulate: Callable = None, **kwargs) -> torch.Tensor:
    """The float64 Gram matrix ``J Jᵀ`` (``b·|y| × b·|y|``) of `per_sample_jacobian`, without forming J when
    the network's parameters all sit in Linear / Conv layers. Raises `JacobianTooLargeError` before allocating
    above ``max_bytes``.

    >>> import torch
    >>> G = gram(torch.nn.Linear(2, 1), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))   # G_ij = x_i·x_j + 1
    >>> G.dtype, G.tolist()
    (torch.float64, [[6.0, 12.0], [12.0, 26.0]])
    """
    simulate = simulate or (lambda z: z)
    n_out = _output_size(net, inputs, simulate)
    n_params = sum(p.numel() for p in kwargs.get('params') or net.parameters() if p.requires_grad)
    gram_bytes('gram', inputs.shape[0] * n_out, n_params, kwargs.get('max_bytes', DEFAULT_MAX_BYTES))
    return jacobian_factors(net, inputs, simulate, n_out=n_out, **kwargs).gram()
