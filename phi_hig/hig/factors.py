"""The stacked per-sample Jacobian of network + physics held as per-layer factors: a Jacobian operator.

`JacobianFactors` implements the Jacobian-operator protocol of `phi_hig.hig` (``n_rows``, ``n_params``,
``gram()``, ``gram_dual()``, ``vjp(c)``, ``matrix()``) without forming J when the network's parameters sit in
Linear / Conv layers: a row of a layer's weight block is ``Σ_p δ_p ⊗ a_p`` over the layer's positions p (the
per-sample layer input ``a``, unfolded patches for convolutions, and the back-propagated signal ``δ`` of the row).
For a dense layer (one position) ``J_l J_lᵀ = (D Dᵀ) ∘ ((A Aᵀ + 1) ⊗ 1_{|y|×|y|})``, two small Gram matrices; for
convolutions the sum over positions couples, and ``J_l J_lᵀ`` is accumulated from the layer's per-row weight
gradients formed in row blocks. Parameters of other layers are held as a dense column block of J. Everything is
accumulated in float64. `phi_hig.hig.jacobian.jacobian_factors` builds it.
"""
from __future__ import annotations

from dataclasses import dataclass, field as _field
from typing import Callable, Optional

import torch

from ..checks import check_size
from .spectral import DEFAULT_MAX_BYTES

__all__ = ['JacobianFactors', 'LayerFactor', 'DEFAULT_CHUNK_BYTES']

DEFAULT_CHUNK_BYTES = 64 * 1024 ** 2
"""Default bound (64 MiB) on the row blocks formed while assembling Gram matrices and ``Jᵀc``."""


@dataclass
class LayerFactor:
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
        """True for a single-position factor (``a`` of shape ``(b, F)``), whose Gram block is a Hadamard product."""
        return self.a.ndim == 2

    @property
    def n_cols(self) -> int:
        """The number of columns of J this layer holds: its trainable weight and bias entries."""
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
    Conv layers are held as per-layer factors (`LayerFactor`); the columns of all other parameters
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
        objective: ``(value, gradient)`` of the objective given to `phi_hig.hig.jacobian.jacobian_factors`, or None.
        structured: True when no parameter needs the dense block (nothing of size |θ| × b·|y| exists).
    """
    y: torch.Tensor
    params: list
    layers: list = _field(default_factory=list)
    dense_cols: list = _field(default_factory=list)
    dense_block: Optional[torch.Tensor] = None
    max_bytes: Optional[float] = DEFAULT_MAX_BYTES
    chunk_bytes: float = DEFAULT_CHUNK_BYTES
    objective: Optional[tuple] = None
    _J64: Optional[torch.Tensor] = _field(default=None, repr=False)  # all of J in float64, when one block holds it

    @property
    def n_samples(self) -> int:
        """The number of examples b."""
        return self.y.shape[0]

    @property
    def n_out(self) -> int:
        """The number of outputs per example |y|."""
        return self.y.shape[1]

    @property
    def n_rows(self) -> int:
        """The number of rows of J, ``b·|y|``."""
        return self.y.shape[0] * self.y.shape[1]

    @property
    def n_params(self) -> int:
        """The number of columns of J, |θ| (trainable entries of ``params``)."""
        return sum(p.numel() for p in self.params)

    @property
    def structured(self) -> bool:
        """True when every parameter is held as layer factors (no dense block: J is never formed)."""
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
        R, ny = self.n_rows, self.n_out
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

    def _add_dense_layer_gram(self, G: torch.Tensor, f: LayerFactor) -> None:
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
        """``JᵀJ`` as a float64 ``(|θ|, |θ|)`` tensor, accumulated over row blocks of J (never all of J, unless
        all of J fits in one block of ``chunk_bytes``: then that block is kept for `vjp`)."""
        n = self.n_params
        check_size("The dual Gram matrix JᵀJ (float64)", (n, n), 8, self.max_bytes)
        step = self._samples_per_block(n)
        if step >= self.n_samples:
            B = self._J64 = self.rows(0, self.n_samples)
            return B.T @ B
        H = torch.zeros(n, n, dtype=torch.float64, device=self.y.device)
        for s0 in range(0, self.n_samples, step):
            B = self.rows(s0, min(self.n_samples, s0 + step))
            H.addmm_(B.T, B)
        return H

    def vjp(self, c: torch.Tensor) -> torch.Tensor:
        """``Jᵀc`` for a vector ``c`` of length ``b·|y|``, in float64, as a flat ``(|θ|,)`` tensor.

        Computed from the factors in float64 (a float32 backward pass would lose ``ε₃₂·σ_max/σ_min`` of the
        HIG direction, because c is dominated by the small singular values)."""
        c64 = c.to(torch.float64).reshape(-1)
        if self._J64 is not None:
            return self._J64.T @ c64
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
