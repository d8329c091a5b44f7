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
samples. The physics may take per-example conditions (initial states, boundary values, parameters;
`phi_hig.convert.Conditions`), which the pass repeats with their samples. `physics_jacobian` is the same pass
without a network (the generic inverses of `phi_hig.sip.inverses` use it).

The result is a `phi_hig.hig.factors.JacobianFactors`, the Jacobian operator the HIG core applies; the columns of
all other parameters (layers of unknown type, shared or tied weights: `phi_hig.hig.layers`) are formed per sample
with ``torch.func`` from ``P`` (vectorized over samples with ``vmap``, chunked; the conditions enter through ``P``)
— only these columns are ever formed as a matrix.

Every allocation of ``J``, ``G``, ``JᵀJ`` or ``P`` is estimated first and refused above ``max_bytes`` with a
`JacobianTooLargeError` that names the size.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..backend import torch_backend
from ..checks import check_size
from ..convert import Conditions
from ..errors import InvalidInputError, PhiHigError
from .factors import DEFAULT_CHUNK_BYTES, JacobianFactors, LayerFactor
from .layers import accepts_input, factored_layers, layer_delta, layer_input, refuse_sample_mixing
from .spectral import DEFAULT_MAX_BYTES, gram_bytes

__all__ = ['physics_jacobian', 'per_sample_jacobian', 'gram', 'jacobian_factors', 'physics_function',
           'JacobianFactors', 'DEFAULT_MAX_BYTES', 'DEFAULT_CHUNK_BYTES', 'DEFAULT_CHUNK_ROWS']

DEFAULT_CHUNK_ROWS = 16384
"""Default number of replicated rows (samples × outputs) processed in one backward pass."""


def _flat_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch tensor with the batch first, got {type(t).__name__}")
    if t.ndim == 0:
        raise InvalidInputError(f"{name} must have a leading batch dimension, got a scalar")
    return t.reshape(t.shape[0], -1)


def physics_function(simulate: Optional[Callable], conditions=None) -> Callable:
    """The physics ``z -> y`` of a step: ``simulate``, or the identity (y = the network output) when None.

    The one place where ``simulate=None`` is decided. Raises `InvalidInputError` for a ``simulate`` that is
    neither None nor callable, and for conditions given with ``simulate=None`` (the identity takes none)."""
    if simulate is None:
        if bool(conditions) if isinstance(conditions, (Conditions, tuple, dict)) else conditions is not None:
            raise InvalidInputError("conditions were given but simulate is None: the identity takes no conditions; "
                                    "pass the simulate(z, …) that uses them")
        return _identity
    if not callable(simulate):
        raise InvalidInputError(f"simulate must be None or a callable z -> y, got {type(simulate).__name__}")
    return simulate


def _identity(z):
    return z


def physics_jacobian(simulate: Callable, z: torch.Tensor, *, conditions=None, y: Optional[torch.Tensor] = None,
                     chunk_rows: int = DEFAULT_CHUNK_ROWS, max_bytes: Optional[float] = DEFAULT_MAX_BYTES,
                     name: str = 'simulate'):
    """The block-diagonal Jacobian of a batched function: ``P[i, k, j] = ∂y_(i,k)/∂z_(i,j)``.

    One backward pass on a batch that repeats every sample |y| times with the k-th unit cotangent on the k-th
    copy (chunked to ``chunk_rows`` rows), under PhiML's torch backend (`phi_hig.backend.torch_backend`): the
    same replicated pass as `jacobian_factors`, without a network.

    Args:
        simulate: ``z -> y``, batch first, treating batch entries independently (entry i of the output may
            depend on entry i of the input and of the conditions only). It may use PyTorch and PhiML/PhiFlow
            operations and must accept any batch size.
        z: the simulation input, ``(b, *z_shape)``.
        conditions: per-example values ``simulate`` takes besides z, replicated with z
            (`phi_hig.convert.Conditions`: a tuple → ``simulate(z, *conditions)``, a dict → ``simulate(z,
            **conditions)``, one value → ``simulate(z, conditions)``).
        y: ``simulate(z)``, if already computed (only its size per sample is used).
        chunk_rows: at most this many replicated rows (samples × outputs) per backward pass.
        max_bytes: refuse to allocate P above this size.
        name: how messages call ``simulate`` (e.g. 'forward').

    Returns:
        ``(y, P)``: ``y = simulate(z)`` detached and flattened to ``(b, |y|)``, and ``P`` of shape
        ``(b, |y|, |z|)`` in z's dtype.

    Raises:
        InvalidInputError: ``simulate`` fails on the replicated batch, returns another batch size or a value
            without gradient; a condition whose batch does not match z.

    >>> import torch
    >>> y, P = physics_jacobian(lambda z: z ** 2, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    >>> tuple(P.shape), P[1].tolist()   # ∂(z_j²)/∂z_j = 2·z_j, one block per example
    ((2, 2, 2), [[6.0, 0.0], [0.0, 8.0]])
    """
    simulate = physics_function(simulate, conditions)
    if not isinstance(z, torch.Tensor) or z.ndim == 0 or z.shape[0] == 0:
        raise InvalidInputError(f"z must be a torch tensor of at least one example, batch first; got "
                                f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
    z, b = z.detach(), z.shape[0]
    conditions = _conditions(conditions, b)
    if y is not None:
        yf = _flat_batch(y, f'{name}(z)')
        if yf.shape[0] != b:
            raise InvalidInputError(f"{name}(z) returned batch size {yf.shape[0]} for an input of batch size {b}")
        ny = yf.shape[1]
    else:
        ny = _output_size(None, z, simulate, conditions, name)
    result = _replicated_pass(None, z, simulate, conditions, ny, {}, chunk_rows, max_bytes, name=name)
    if result is None:
        raise InvalidInputError(f"{name}(z) must return the same number of values per row for every batch size "
                                f"(examples must be independent); y has {ny} per row")
    return result[0], result[1]


def _conditions(conditions, b: int):
    return conditions if isinstance(conditions, Conditions) else Conditions(conditions, b)


def _evaluate(simulate: Callable, z: torch.Tensor, conditions, rows: torch.Tensor, b: int, ny, name: str):
    """``simulate`` on the rows ``rows`` of the examples (z and the conditions' rows), flattened to ``(N, |y|)``.

    A failure that is not phi_hig's own, or a result with another batch size, is refused with an
    `InvalidInputError` that explains the replicated batches and points to ``conditions=`` (the original error
    chained)."""
    n = int(rows.numel())
    try:
        y = conditions.call(simulate, z, rows)
    except PhiHigError:
        raise
    except Exception as err:
        raise InvalidInputError(_rows_message(name, f"failed on {_rows(n, b, ny)}: {type(err).__name__}: {err}",
                                              b, ny)) from err
    if not isinstance(y, torch.Tensor) or y.ndim == 0 or y.shape[0] != n:
        got = f"batch size {y.shape[0]}" if isinstance(y, torch.Tensor) and y.ndim else \
            f"a {type(y).__name__}{' scalar' if isinstance(y, torch.Tensor) else ''}"
        raise InvalidInputError(_rows_message(name, f"returned {got} for {_rows(n, b, ny)}", b, ny))
    return y.reshape(n, -1)


def _rows(n: int, b: int, ny) -> str:
    if ny is None:
        return "a batch of 1 row (the first example alone, to learn |y|)"
    return f"a batch of {n} rows ({'all' if n == b * ny else f'{n // ny} of the'} {b} examples, each repeated " \
           f"|y| = {ny} times)"


def _rows_message(name: str, problem: str, b: int, ny) -> str:
    total = "b·|y| rows" if ny is None else f"b·|y| = {b}·{ny} = {b * ny} rows"
    return (f"{name} {problem}. The step evaluates {name} on {total}, every example repeated |y| times (in chunks "
            f"of at most chunk_rows), to get the per-sample Jacobian in one backward pass: {name} must treat the "
            f"rows independently and accept any batch size. Pass the per-example values it needs (initial states, "
            f"boundary values, parameters) as conditions=, which the step repeats with z, instead of closing over "
            f"the batch of {b}.")


def _sample_chunks(b: int, ny: int, chunk_rows: int):
    """Slices of samples whose replicated rows (samples × |y|) stay within ``chunk_rows`` (at least one sample)."""
    step = max(1, chunk_rows // max(ny, 1))
    return [slice(start, min(start + step, b)) for start in range(0, b, step)]


def _trainable(net: nn.Module, params: Optional[Sequence[torch.Tensor]], modules: list) -> list:
    """The trainable parameters (default: all that require grad), checked to belong to ``net``, with no batch norm
    or dropout of ``modules`` (``list(net.modules())``) in training mode."""
    if params is None:
        params = [p for p in net.parameters() if p.requires_grad]
    params = list(params)
    if not params:
        raise InvalidInputError("the network has no trainable parameters")
    owned = {id(p) for p in net.parameters()}
    if any(id(p) not in owned for p in params):
        raise InvalidInputError("params must be parameters of net")
    refuse_sample_mixing(net, modules)
    return params


def _replicated_pass(net, inputs, simulate, conditions, ny: int, layers: dict, chunk_rows: int, max_bytes,
                     objective=None, name: str = 'simulate'):
    """One forward and one backward pass of ``simulate(net(·), conditions)`` on every sample (and its conditions)
    repeated ``ny`` times; ``net`` None: of ``simulate`` alone, on ``inputs`` = z (`physics_jacobian`).

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
            n = chunk.stop - chunk.start
            rows = torch.arange(chunk.start, chunk.stop, device=inputs.device).repeat_interleave(ny)
            calls.clear()
            captured.clear()
            with torch.enable_grad(), torch_backend():
                zr = net(inputs[rows]) if net is not None else inputs[rows].requires_grad_(True)
                yrf = _evaluate(simulate, zr, conditions, rows, b, ny, name)
                if yrf.shape[1] != ny:
                    return None
                if not yrf.requires_grad:
                    raise InvalidInputError(f"{name} is not differentiable in its input: its output carries no "
                                            f"gradient (detached, NumPy or integer?)")
                if P is None:
                    nz = zr[0].numel()
                    check_size("The physics Jacobian", (b, ny, nz), zr.element_size(), max_bytes)
                    P = torch.empty(b, ny, nz, dtype=zr.dtype, device=zr.device)
                    eye = torch.eye(ny, dtype=yrf.dtype, device=yrf.device)
                for m in list(valid):
                    if calls.get(m, 0) != 1 or not accepts_input(m, *captured[m], n * ny):
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
                    inputs_a[m].append(layer_input(m, captured[m][0].detach()[::ny]))
                    deltas[m].append(layer_delta(m, torch.zeros_like(captured[m][1]) if gr is None else gr.detach()))
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
        try:
            J[chunk.start * ny:chunk.stop * ny] = vmap(rows_of_sample)(inputs[chunk], P[chunk]).reshape(-1, n_params)
        except PhiHigError:
            raise
        except Exception as err:
            cause = str(err).strip().splitlines()[0] if str(err).strip() else ''
            raise InvalidInputError(
                f"the Jacobian columns of {_names(sel_names)} (parameters outside factored Linear / Conv layers, or "
                f"structured=False) are formed per example with torch.func.vjp and vmap, which failed on the "
                f"network's forward pass: {type(err).__name__}: {cause} — the forward pass must be traceable by "
                f"torch.func (no .item() or branches on values, no in-place changes of parameters or buffers, no "
                f"random draws)") from err
    return J


def _names(names: list) -> str:
    return ', '.join(names) if len(names) <= 4 else f"{', '.join(names[:4])} and {len(names) - 4} more"


def jacobian_factors(net: nn.Module, inputs: torch.Tensor, simulate: Optional[Callable], *, conditions=None,
                     params=None, structured: Optional[bool] = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                     max_bytes: Optional[float] = DEFAULT_MAX_BYTES, chunk_bytes: float = DEFAULT_CHUNK_BYTES,
                     n_out: Optional[int] = None, objective: Optional[Callable] = None) -> JacobianFactors:
    """The stacked per-sample Jacobian of ``simulate(net(inputs), conditions)`` as a Jacobian operator, in factored
    form.

    Parameters of ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` layers (``groups == 1``, any padding mode,
    stride and dilation) that are called once per forward pass on batch-first inputs are held as layer
    factors; all other parameters (unknown layers, shared weights) get their columns of J per sample from
    ``torch.func``, chunked. A layer whose parameters are also used outside its own call (tied weights, e.g.
    ``F.linear(h, enc.weight.t())`` elsewhere) is found in the autograd graph of a forward pass and its parameters
    get their columns from ``torch.func`` too (`phi_hig.hig.layers.factored_layers`).

    Args:
        net: a ``torch.nn.Module`` (e.g. from ``phiml.nn.dense_net``), without batch norm or dropout in training
            mode and without other random draws in its forward pass (`InvalidInputError`).
        inputs: network inputs, batch first.
        simulate: batched physics ``z -> y`` (see `physics_jacobian`); None for the identity.
        conditions: per-example values ``simulate`` takes besides z, replicated and sliced with z: a tuple →
            ``simulate(z, *conditions)``, a dict → ``simulate(z, **conditions)``, one value → ``simulate(z,
            conditions)`` (the rule and what is per-example: `phi_hig.convert.Conditions`).
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
    simulate = physics_function(simulate, conditions)
    modules = list(net.modules())
    params = _trainable(net, params, modules)
    if inputs.shape[0] == 0:
        raise InvalidInputError("inputs must hold at least one example, got an empty batch")
    conditions = _conditions(conditions, inputs.shape[0])
    layers = factored_layers(net, params, modules, inputs[:1])  # refuses random draws whatever `structured`
    layers = layers if structured is not False else {}
    pass_args = (layers, chunk_rows, max_bytes, objective)
    result = _replicated_pass(net, inputs, simulate, conditions, int(n_out), *pass_args) if n_out else None
    if result is None:
        n_out = _output_size(net, inputs, simulate, conditions)
        result = _replicated_pass(net, inputs, simulate, conditions, n_out, *pass_args)
        if result is None:
            raise InvalidInputError("simulate(z) must return the same number of values per row for every batch "
                                    "size (examples must be independent)")
    y, P, factors, value = result
    covered = {c for f in factors for c in (f.weight_col, f.bias_col) if c is not None}
    rest = [i for i in range(len(params)) if i not in covered]
    if structured and rest:
        names = {id(p): n for n, p in net.named_parameters()}
        raise InvalidInputError(f"structured=True needs every trainable parameter in an nn.Linear / nn.Conv1d / "
                                f"nn.Conv2d (groups=1) layer applied once per forward pass to batch-first inputs and "
                                f"used nowhere else (no tied weights); not so: "
                                f"{_names([names.get(id(params[i]), f'params[{i}]') for i in rest])}")
    block = _generic_matrix(net, [params[i] for i in rest], inputs, P, chunk_rows, max_bytes) if rest else None
    return JacobianFactors(y, params, factors, rest, block, max_bytes=max_bytes, chunk_bytes=chunk_bytes,
                           objective=value)


def _output_size(net: Optional[nn.Module], inputs: torch.Tensor, simulate: Callable, conditions: Conditions,
                 name: str = 'simulate') -> int:
    """|y|: the number of values ``simulate(net(·))`` (``net`` None: ``simulate(·)``) returns per example, from a
    no-grad pass of the first example and its conditions."""
    first = torch.zeros(1, dtype=torch.long, device=inputs.device)
    with torch.no_grad(), torch_backend():
        z = inputs[:1] if net is None else net(inputs[:1])
        return _evaluate(simulate, z, conditions, first, inputs.shape[0], None, name).shape[1]


def per_sample_jacobian(net: nn.Module, inputs: torch.Tensor, simulate: Callable = None, conditions=None,
                        **kwargs) -> torch.Tensor:
    """The stacked per-sample Jacobian ``J`` of ``simulate(net(inputs), conditions)``, shape ``(b·|y|, |θ|)``.

    Rows are sample-major (row ``i·|y| + k`` is output k of sample i); columns follow the trainable
    parameters in ``net.parameters()`` order, each flattened row-major. ``simulate`` None is the identity;
    ``conditions`` and keyword arguments as in `jacobian_factors`. Raises `JacobianTooLargeError` before allocating
    above ``max_bytes``.

    >>> import torch
    >>> net = torch.nn.Linear(2, 1)
    >>> per_sample_jacobian(net, torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist()   # row i: ∂y_i/∂(w, b) = (x_i, 1)
    [[1.0, 2.0, 1.0], [3.0, 4.0, 1.0]]
    """
    return jacobian_factors(net, inputs, simulate, conditions=conditions, **kwargs).matrix()


def gram(net: nn.Module, inputs: torch.Tensor, simulate: Callable = None, conditions=None, **kwargs) -> torch.Tensor:
    """The float64 Gram matrix ``J Jᵀ`` (``b·|y| × b·|y|``) of `per_sample_jacobian`, without forming J when
    the network's parameters all sit in Linear / Conv layers. Raises `JacobianTooLargeError` before allocating
    above ``max_bytes``.

    >>> import torch
    >>> G = gram(torch.nn.Linear(2, 1), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))   # G_ij = x_i·x_j + 1
    >>> G.dtype, G.tolist()
    (torch.float64, [[6.0, 12.0], [12.0, 26.0]])
    """
    simulate, conditions = physics_function(simulate, conditions), _conditions(conditions, inputs.shape[0])
    n_out = _output_size(net, inputs, simulate, conditions)
    n_params = sum(p.numel() for p in kwargs.get('params') or net.parameters() if p.requires_grad)
    gram_bytes('gram', inputs.shape[0] * n_out, n_params, kwargs.get('max_bytes', DEFAULT_MAX_BYTES))
    return jacobian_factors(net, inputs, simulate, conditions=conditions, n_out=n_out, **kwargs).gram()
