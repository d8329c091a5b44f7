"""Per-sample Jacobians and Gram matrices of a network followed by a batched physics simulation.

The stacked per-sample Jacobian of ``y_i = simulate(net(x_i))`` is ``J = [∂y_1/∂θ; …; ∂y_b/∂θ]`` of shape
``(b·|y|, |θ|)`` with sample-major rows (row ``i·|y| + k`` is output ``k`` of sample ``i``). Because the
physics acts on each sample alone, ``∂y/∂z`` is block-diagonal and ``J = P_blk · J_net``:

1. ``P`` (``b × |y| × |z|``) comes from one backward pass of the physics on a batch that repeats every
   sample |y| times, with the k-th unit cotangent on the k-th copy. This works for any physics written
   with PyTorch or PhiML/PhiFlow operations, including a Dirichlet ``field.laplace`` and ``solve_linear``
   that ``torch.func.vmap`` cannot trace, and needs no Python loop over samples.
2. The columns of ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` layers (``groups == 1``; any stride,
   dilation, padding and padding mode; any elementwise activations between layers) are held as factors: the
   per-sample layer input ``a`` (unfolded patches for convolutions) and the back-propagated signal ``δ`` at
   the layer output for every (sample, output) row, all from one forward and one backward pass of the
   network on the repeated batch with cotangents ``P``. A row of the weight block is ``Σ_p δ_p ⊗ a_p`` over
   the layer's positions p. For a dense layer (one position) the Gram matrix is
   ``G_l = (D Dᵀ) ∘ ((A Aᵀ + 1) ⊗ 1_{|y|×|y|})``; for convolutions the sum over positions couples, and
   ``J_l J_lᵀ`` is accumulated from the layer's per-row weight gradients formed in row blocks of at most
   ``chunk_bytes``. Everything is accumulated in float64 and nothing of size ``|θ| × b·|y|`` exists.
3. The columns of all other parameters (layers of unknown type, shared weights) use ``torch.func``: per
   sample, the vector–Jacobian products of the network with the |y| rows of ``P_i``, vectorized over
   samples with ``vmap`` and chunked. Only these columns are ever formed as a matrix.

Every allocation of ``J``, ``G`` or ``JᵀJ`` is estimated first and refused above ``max_bytes`` with a
`JacobianTooLargeError` that names the size.
"""
from __future__ import annotations

from dataclasses import dataclass, field as _field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .errors import InvalidInputError, JacobianTooLargeError

__all__ = ['physics_jacobian', 'per_sample_jacobian', 'gram', 'jacobian_factors', 'JacobianFactors', 'eigh64',
           'DEFAULT_MAX_BYTES', 'DEFAULT_CHUNK_BYTES', 'check_size']

DEFAULT_MAX_BYTES = 4 * 1024 ** 3
"""Default limit (4 GiB) on any single Jacobian or Gram matrix allocated by this module."""
DEFAULT_CHUNK_ROWS = 16384
"""Default number of replicated rows (samples × outputs) processed in one backward pass."""
DEFAULT_CHUNK_BYTES = 64 * 1024 ** 2
"""Default bound (64 MiB) on the row blocks formed while assembling Gram matrices and ``Jᵀc``."""


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
    y, P = _physics_pass(simulate, z, y, None, chunk_rows, max_bytes)
    return _flat_batch(y, 'simulate(z)'), P


def _physics_pass(simulate, z, y, n_out, chunk_rows, max_bytes):
    """``(y in simulate's own shape, P)``. With ``y`` None and a hint ``n_out`` (= |y| of an earlier call),
    y is read off the replicated pass instead of a separate forward; a wrong hint is detected from the
    shape of the replicated output and the pass redone."""
    z = z.detach()
    b = z.shape[0]
    nz = z[0].numel()
    from_replicas = y is None and n_out is not None
    if y is None and not from_replicas:
        with torch.no_grad(), _torch_backend():
            y = simulate(z)
    if y is not None:
        yf = _flat_batch(y, 'simulate(z)')
        if yf.shape[0] != b:
            raise InvalidInputError(f"simulate(z) returned batch size {yf.shape[0]} for an input of batch size {b}")
        ny = yf.shape[1]
    else:
        ny = int(n_out)
    check_size("The physics Jacobian", (b, ny, nz), z.element_size(), max_bytes)
    P = torch.empty(b, ny, nz, dtype=z.dtype, device=z.device)
    eye = None
    y_rows = []
    for chunk in _sample_chunks(b, ny, chunk_rows):
        zc = z[chunk]
        n = zc.shape[0]
        zr = zc.repeat_interleave(ny, dim=0).requires_grad_(True)
        with torch.enable_grad(), _torch_backend():
            yr = simulate(zr)
            if from_replicas and (not isinstance(yr, torch.Tensor) or yr.ndim == 0 or yr.shape[0] != n * ny
                                  or yr[0].numel() != ny):
                return _physics_pass(simulate, z, None, None, chunk_rows, max_bytes)  # the hint was wrong
            yrf = _flat_batch(yr, 'simulate(z)')
            if eye is None:
                eye = torch.eye(ny, dtype=yrf.dtype, device=z.device)
            grad, = torch.autograd.grad(yrf, zr, eye.repeat(n, 1), allow_unused=True)
        P[chunk] = 0 if grad is None else grad.reshape(n, ny, nz)
        if from_replicas:
            y_rows.append(yr.detach()[::ny])
    if from_replicas:
        y = torch.cat(y_rows)
    return y.detach(), P


def _sample_chunks(b: int, ny: int, chunk_rows: int):
    """Slices of samples whose replicated rows (samples × |y|) stay within ``chunk_rows`` (at least one sample)."""
    step = max(1, chunk_rows // max(ny, 1))
    return [slice(start, min(start + step, b)) for start in range(0, b, step)]


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


_STRUCTURED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layer types whose columns of J are held as factors (convolutions with ``groups == 1`` only)."""


@dataclass
class _LayerFactor:
    """The columns of J that belong to one Linear / Conv layer, as per-sample inputs and per-row signals.

    With sample ``s = r // |y|`` of row r, row r of the weight block is ``Σ_p δ[r, :, p] ⊗ a[s, :, p]`` (sum
    over the layer's positions p: the unfolded patches of a convolution, the leading dims of a Linear layer
    applied to ``(batch, ..., features)``), flattened like the weight; the bias block is ``Σ_p δ[r, :, p]``.
    A *dense* factor (``a`` of shape ``(b, F)``, ``delta`` of shape ``(R, out)``) has a single position; then
    ``J_l J_lᵀ = (D Dᵀ) ∘ ((A Aᵀ + 1) ⊗ 1_{|y|×|y|})`` costs no more than the two small Gram matrices.
    """
    a: torch.Tensor                      # (b, F) or (b, F, L)
    delta: torch.Tensor                  # (R, out) or (R, out, L)
    weight_col: Optional[int] = None     # position of the weight among the trainable params, if trainable
    bias_col: Optional[int] = None

    @property
    def dense(self) -> bool:
        return self.a.ndim == 2

    @property
    def n_cols(self) -> int:
        out, feat = self.delta.shape[1], self.a.shape[1]
        return out * feat * (self.weight_col is not None) + out * (self.bias_col is not None)

    def rows(self, s0: int, s1: int, ny: int, dtype) -> dict:
        """``{param column index: rows of J for samples s0..s1}`` in ``dtype``, shapes ``((s1−s0)·|y|, numel)``."""
        n = s1 - s0
        d = self.delta[s0 * ny:s1 * ny].to(dtype)
        a = self.a[s0:s1].to(dtype)
        out = d.shape[1]
        blocks = {}
        if self.weight_col is not None:
            if self.dense:
                blocks[self.weight_col] = (d.view(n, ny, out, 1) * a.view(n, 1, 1, -1)).reshape(n * ny, -1)
            else:
                blocks[self.weight_col] = torch.bmm(d.reshape(n, ny * out, -1), a.transpose(1, 2)).reshape(n * ny, -1)
        if self.bias_col is not None:
            blocks[self.bias_col] = d if self.dense else d.sum(-1)
        return blocks


@dataclass
class JacobianFactors:
    """The stacked per-sample Jacobian J (``b·|y| × |θ|``, sample-major rows) of network + physics.

    Columns follow the order of ``params`` (each parameter flattened row-major). The columns of Linear and
    Conv layers are held as per-layer factors (`_LayerFactor`); the columns of all other parameters
    ("unknown" layers, shared weights) as a dense block ``(b·|y|, |θ_other|)`` computed per sample with
    ``torch.func``. Invariant: `gram`, `gram_dual` and `vjp` never allocate anything of size
    ``|θ| × b·|y|`` beyond that dense block; their temporaries are row blocks of at most ``chunk_bytes``
    (or one sample's rows, if larger), and their results are float64, accumulated in float64.

    Attributes:
        y: the simulation output ``(b, |y|)``, detached.
        params: the trainable parameters, in column order.
        layers: the factors of the structured layers.
        dense_cols: indices (into ``params``) of the parameters held in ``dense_block``.
        dense_block: their columns of J, or None.
        structured: True when no parameter needs the dense block (nothing of size |θ| × b·|y| exists).
    """
    y: torch.Tensor
    params: list
    layers: list = _field(default_factory=list)
    dense_cols: list = _field(default_factory=list)
    dense_block: Optional[torch.Tensor] = None
    max_bytes: Optional[float] = DEFAULT_MAX_BYTES
    chunk_bytes: float = DEFAULT_CHUNK_BYTES

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
        return self.dense_block is None

    @property
    def mixed(self) -> bool:
        """True when some parameters are held as layer factors and others in the dense block."""
        return self.dense_block is not None and bool(self.layers)

    def _samples_per_block(self, n_cols: int) -> int:
        return max(1, int(self.chunk_bytes // max(1, self.n_out * n_cols * 8)))

    def rows(self, s0: int, s1: int, dtype=torch.float64) -> torch.Tensor:
        """Rows of J for samples ``s0 … s1−1`` (``(s1−s0)·|y|`` rows, all columns) in ``dtype``."""
        ny = self.n_out
        blocks = [None] * len(self.params)
        for f in self.layers:
            for col, blk in f.rows(s0, s1, ny, dtype).items():
                blocks[col] = blk
        if self.dense_block is not None:
            sub = self.dense_block[s0 * ny:s1 * ny].to(dtype)
            offset = 0
            for col in self.dense_cols:
                n = self.params[col].numel()
                blocks[col] = sub[:, offset:offset + n]
                offset += n
        return torch.cat(blocks, dim=1)

    def matrix(self) -> torch.Tensor:
        """J as a dense ``(b·|y|, |θ|)`` tensor in the parameters' dtype (refused above ``max_bytes``)."""
        if self.dense_block is not None and not self.layers:
            return self.dense_block
        check_size("The Jacobian J", (self.n_rows, self.n_params), self.params[0].element_size(), self.max_bytes)
        return self.rows(0, self.n_samples, self.params[0].dtype)

    def gram(self) -> torch.Tensor:
        """``G = J Jᵀ`` as a float64 ``(b·|y|, b·|y|)`` tensor, accumulated in float64 layer by layer.

        Dense layers use ``(D Dᵀ) ∘ ((A Aᵀ + 1) ⊗ 1)`` in row blocks; convolutions (and Linear layers on
        more than one position) form their per-row weight gradients in row blocks of at most
        ``chunk_bytes`` and accumulate ``J_l J_lᵀ``; the dense block likewise.
        """
        R, b, ny = self.n_rows, self.n_samples, self.n_out
        check_size("The Gram matrix J Jᵀ (float64)", (R, R), 8, self.max_bytes)
        G = torch.zeros(R, R, dtype=torch.float64, device=self.y.device)
        for f in self.layers:
            if f.dense:
                self._add_dense_layer_gram(G, f)
            else:
                self._add_block_gram(G, lambda s0, s1, f=f: torch.cat(list(f.rows(s0, s1, ny, torch.float64).values()), 1), f.n_cols)
        if self.dense_block is not None:
            blk = self.dense_block
            self._add_block_gram(G, lambda s0, s1: blk[s0 * ny:s1 * ny].to(torch.float64), blk.shape[1])
        return G

    def _add_dense_layer_gram(self, G: torch.Tensor, f: _LayerFactor) -> None:
        b, ny, R = self.n_samples, self.n_out, self.n_rows
        d64 = f.delta.to(torch.float64)
        if f.weight_col is not None:
            a64 = f.a.to(torch.float64)
            ka = a64 @ a64.T
        else:
            ka = torch.zeros(b, b, dtype=torch.float64, device=G.device)
        if f.bias_col is not None:
            ka += 1.0
        step = self._samples_per_block(R)
        for s0 in range(0, b, step):
            s1 = min(b, s0 + step)
            rows = slice(s0 * ny, s1 * ny)
            tmp = d64[rows] @ d64.T
            tmp.view(s1 - s0, ny, b, ny).mul_(ka[s0:s1, None, :, None])
            G[rows] += tmp

    def _add_block_gram(self, G: torch.Tensor, rows_fn: Callable, n_cols: int) -> None:
        """``G += B Bᵀ`` for a column block B of J given by ``rows_fn(s0, s1)`` (float64 row blocks)."""
        b, ny = self.n_samples, self.n_out
        step = self._samples_per_block(n_cols)
        if step >= b:
            B = rows_fn(0, b)
            G.addmm_(B, B.T)
            return
        starts = list(range(0, b, step))
        for i, si in enumerate(starts):
            ri = slice(si * ny, min(b, si + step) * ny)
            Bi = rows_fn(si, min(b, si + step))
            for sj in starts[:i + 1]:
                rj = slice(sj * ny, min(b, sj + step) * ny)
                Bj = Bi if sj == si else rows_fn(sj, min(b, sj + step))
                tmp = Bi @ Bj.T
                G[ri, rj] += tmp
                if sj != si:
                    G[rj, ri] += tmp.T

    def gram_dual(self) -> torch.Tensor:
        """``JᵀJ`` as a float64 ``(|θ|, |θ|)`` tensor, accumulated over row blocks of J (never all of J)."""
        n = self.n_params
        check_size("The dual Gram matrix JᵀJ (float64)", (n, n), 8, self.max_bytes)
        H = torch.zeros(n, n, dtype=torch.float64, device=self.y.device)
        step = self._samples_per_block(n)
        for s0 in range(0, self.n_samples, step):
            B = self.rows(s0, min(self.n_samples, s0 + step))
            H.addmm_(B.T, B)
        return H

    def vjp(self, c: torch.Tensor) -> torch.Tensor:
        """``Jᵀc`` for a vector ``c`` of length ``b·|y|``, in float64, as a flat ``(|θ|,)`` tensor.

        Computed from the factors in float64 (a float32 backward pass would lose ``ε₃₂·σ_max/σ_min`` of the
        HIG direction, because c is dominated by the small singular values)."""
        c64 = c.to(torch.float64).reshape(-1)
        b, ny = self.n_samples, self.n_out
        pieces = [None] * len(self.params)
        for f in self.layers:
            if f.dense:
                dc = f.delta.to(torch.float64) * c64[:, None]              # (R, out)
                if f.weight_col is not None:
                    per_sample = dc.view(b, ny, -1).sum(1)                  # (b, out)
                    pieces[f.weight_col] = (per_sample.T @ f.a.to(torch.float64)).reshape(-1)
                if f.bias_col is not None:
                    pieces[f.bias_col] = dc.sum(0)
                continue
            out, feat = f.delta.shape[1], f.a.shape[1]
            gw = torch.zeros(out, feat, dtype=torch.float64, device=c64.device)
            gb = torch.zeros(out, dtype=torch.float64, device=c64.device)
            step = self._samples_per_block(f.delta[0].numel())
            for s0 in range(0, b, step):
                s1 = min(b, s0 + step)
                d = f.delta[s0 * ny:s1 * ny].to(torch.float64).view(s1 - s0, ny, out, -1)
                w = torch.einsum('skol,sk->sol', d, c64[s0 * ny:s1 * ny].view(s1 - s0, ny))
                gw += torch.einsum('sol,sfl->of', w, f.a[s0:s1].to(torch.float64))
                gb += w.sum((0, 2))
            if f.weight_col is not None:
                pieces[f.weight_col] = gw.reshape(-1)
            if f.bias_col is not None:
                pieces[f.bias_col] = gb
        if self.dense_block is not None:
            acc = torch.zeros(self.dense_block.shape[1], dtype=torch.float64, device=c64.device)
            step = self._samples_per_block(self.dense_block.shape[1])
            for s0 in range(0, b, step):
                rows = slice(s0 * ny, min(b, s0 + step) * ny)
                acc += self.dense_block[rows].to(torch.float64).T @ c64[rows]
            offset = 0
            for col in self.dense_cols:
                n = self.params[col].numel()
                pieces[col] = acc[offset:offset + n]
                offset += n
        return torch.cat(pieces)


def _candidate_layers(net: nn.Module, params: list) -> dict:
    """``{module: (weight column, bias column)}`` for the Linear / Conv layers (groups = 1) that own
    trainable parameters, each owned by exactly one module; the other parameters go to the dense block."""
    col = {id(p): i for i, p in enumerate(params)}
    owners = {}
    for m in net.modules():
        for p in m.parameters(recurse=False):
            if id(p) in col:
                owners.setdefault(id(p), set()).add(m)
    layers = {}
    for m in net.modules():
        if type(m) not in _STRUCTURED_TYPES or getattr(m, 'groups', 1) != 1:
            continue
        own = [p for p in m.parameters(recurse=False) if id(p) in col]
        if not own or any(len(owners[id(p)]) != 1 for p in own):
            continue
        layers[m] = (col.get(id(m.weight)), col.get(id(m.bias)) if m.bias is not None else None)
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


def _structured_factors(net, inputs, P, layers: dict, chunk_rows: int) -> list:
    """Layer inputs and back-propagated signals for all (sample, output) rows of the layers in ``layers``.

    One forward pass of the network on a batch repeating each sample |y| times and one backward pass with
    the rows of P as cotangents, per chunk of samples. Layers not called exactly once per forward pass on
    batch-first inputs are dropped (their parameters go to the dense block)."""
    b, ny, nz = P.shape
    captured, calls = {}, {}

    def hook(module, args, output):
        calls[module] = calls.get(module, 0) + 1
        captured[module] = (args[0] if args else None, output)

    valid = dict(layers)
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        deltas = {m: [] for m in layers}
        inputs_a = {m: [] for m in layers}
        for chunk in _sample_chunks(b, ny, chunk_rows):
            xc = inputs[chunk]
            n = xc.shape[0]
            calls.clear()
            captured.clear()
            with torch.enable_grad():
                zr = net(xc.repeat_interleave(ny, dim=0))
                for m in list(valid):
                    if calls.get(m, 0) != 1 or not _input_ok(m, *captured[m], n * ny):
                        del valid[m]
                if not valid:
                    return []
                outs = [captured[m][1] for m in valid]
                grads = torch.autograd.grad(_flat_batch(zr, 'net(inputs)'), outs,
                                            P[chunk].reshape(n * ny, nz), allow_unused=True)
            for m, gr in zip(valid, grads):
                with torch.no_grad():
                    inputs_a[m].append(_layer_input(m, captured[m][0].detach()[::ny]))
                    deltas[m].append(_layer_delta(m, torch.zeros_like(captured[m][1]) if gr is None else gr.detach()))
    finally:
        for h in handles:
            h.remove()
    return [_LayerFactor(torch.cat(inputs_a[m]), torch.cat(deltas[m]), *valid[m]) for m in valid]


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
                     forward=None, physics: Optional[torch.Tensor] = None) -> JacobianFactors:
    """Compute the stacked per-sample Jacobian of ``simulate(net(inputs))`` in factored form.

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
        forward: optionally ``(z, y)`` = ``(net(inputs), simulate(z))``, if already computed.
        physics: optionally the physics Jacobian ``P`` of `physics_jacobian` at that z, if already computed.
    """
    params = _trainable(net, params)
    if forward is None:
        with torch.no_grad():
            forward = _forward(net, inputs, simulate)
    z, y = forward
    if physics is None:
        y, Pm = physics_jacobian(simulate, z, y=y, chunk_rows=chunk_rows, max_bytes=max_bytes)
    else:
        y, Pm = _flat_batch(y, 'simulate(z)').detach(), physics
    factors = []
    if structured is not False:
        layers = _candidate_layers(net, params)
        if layers:
            factors = _structured_factors(net, inputs, Pm, layers, chunk_rows)
    covered = {c for f in factors for c in (f.weight_col, f.bias_col) if c is not None}
    rest = [i for i in range(len(params)) if i not in covered]
    if structured and rest:
        raise InvalidInputError("structured=True needs every trainable parameter in an nn.Linear / nn.Conv1d / "
                                "nn.Conv2d (groups=1) layer applied once per forward pass to batch-first inputs")
    block = None
    if rest:
        block = _generic_matrix(net, [params[i] for i in rest], inputs, Pm, chunk_rows, max_bytes)
    return JacobianFactors(y, params, factors, rest, block, max_bytes=max_bytes, chunk_bytes=chunk_bytes)


def eigh64(G: torch.Tensor, overwrite: bool = False, lean: bool = False) -> tuple:
    """Eigendecomposition ``(μ ascending, W)`` of a symmetric float64 matrix; only its lower triangle is read.

    By default ``torch.linalg.eigh`` (LAPACK ``syevd`` through MKL on CPU, cuSOLVER on CUDA), which holds a
    copy of G plus a 2n² workspace besides G. With ``lean=True`` on CPU it calls ``dsyevr`` through SciPy on
    G's own storage when ``overwrite`` (G is destroyed): one extra n×n array and O(n) workspace, but SciPy's
    LAPACK (OpenBLAS) ran the n = 4096 Poisson Gram matrix about 2.5× slower than MKL on the 2-core CPU here.
    """
    if not lean or G.device.type != 'cpu' or G.dtype != torch.float64:
        return torch.linalg.eigh(G)
    try:
        import scipy.linalg
    except ImportError:  # pragma: no cover
        return torch.linalg.eigh(G)
    a = G.detach().numpy().T  # Fortran-ordered view of the same (symmetric) matrix: no copy
    mu, w = scipy.linalg.eigh(a, lower=False, overwrite_a=overwrite, check_finite=False, driver='evr')
    return torch.from_numpy(mu), torch.from_numpy(w)


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
