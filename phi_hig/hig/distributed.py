"""The HIG Jacobian operator across ``torch.distributed`` ranks: data-parallel HIG steps.

Each rank holds a contiguous slice of the global batch, in rank order, and differentiates network + physics for
its own samples (and their conditions, which each rank passes for its own slice) only
(`phi_hig.hig.jacobian.jacobian_factors`). `DistributedJacobian` implements the Jacobian-operator
protocol of `phi_hig.hig` over the *global* stacked Jacobian ``J = [J_0; J_1; …]`` (rank-major rows), so that
`phi_hig.hig.apply_half_inverse` runs unchanged:

* ``gram()``: the per-layer factors (layer inputs ``a`` and output-gradient rows ``δ``, about 1/d_in of J) and
  the dense rows of parameters that are not factored are gathered to the root rank (rank 0 of the group), which
  assembles the global float64 ``J Jᵀ`` exactly as one process would; the other ranks return None.
* ``gram_dual()``: ``Σ_r J_rᵀJ_r`` reduced (SUM) to the root.
* ``vjp(c)``: each rank forms ``J_rᵀ c_r`` of its own rows; a SUM all-reduce gives ``Jᵀc`` on every rank.
* ``matrix()``: the local rows gathered to the root (the SVD fallback of 'auto').
* ``is_root`` / ``broadcast(t)``: the core computes the eigendecomposition once, on the root, and broadcasts what
  the other ranks need (its decision, the coefficient vector ``c`` or the direction, the kept spectrum).

Bytes moved per step (float64 = 8 bytes; R = b·|y| global rows, R_r of them on rank r; F_l, out_l, L_l: inputs,
outputs and positions of layer l; θ_d: parameters without factors; the factors travel in the network's dtype):

==============================  =====================================================================
collective                      bytes
==============================  =====================================================================
all-gather of row counts        8·K
all-gather of g (global g)      8·R
gather of factors to the root   Σ_r Σ_l (b_r·F_l·L_l + R_r·out_l·L_l)·itemsize + R_r·|θ_d|·itemsize + b_r·|y|·itemsize
broadcast of the decision       8·2
broadcast of c (Gram path)      8·R
all-reduce of Jᵀc               8·|θ| (each rank sends and receives about 2·8·|θ| in a ring)
broadcast of the spectrum       8·(rank + 3)
dual path instead               reduce of JᵀJ 8·|θ|², all-reduce of Jᵀg 8·|θ|, broadcast of d 8·|θ|
==============================  =====================================================================

Invariant: every rank ends with the same direction, bit for bit (the all-reduce reduces each element on one rank
and copies it; broadcast copies), so weights stay identical across ranks; the result equals the one-process step
on the concatenated batch up to floating-point reassociation.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import NonFiniteStepError, PhiHigError
from .factors import JacobianFactors, LayerFactor
from .spectral import SpectralInfo

__all__ = ['DistributedJacobian', 'RootSharing', 'active_group']


def active_group(group=None):
    """The process group a HIG step runs in: ``group`` if given, else the default (world) group when
    ``torch.distributed`` is initialized with more than one process, else None (a one-process step).
    ``group=False`` forces a one-process step inside a process group."""
    if group is False:
        return None
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            from ..errors import InvalidInputError
            raise InvalidInputError("group= was given but torch.distributed is not initialized "
                                    "(call torch.distributed.init_process_group first, e.g. under torchrun)")
        return None
    g = group if group is not None else dist.group.WORLD
    return g if dist.get_world_size(g) > 1 else None


def _gather_rows(t: torch.Tensor, counts: list, group, root: int, is_root: bool) -> Optional[torch.Tensor]:
    """Concatenation (rank order) of each rank's ``t`` (rows = dim 0, ``counts[r]`` on rank r) on the root."""
    import torch.distributed as dist
    top = max(counts)
    padded = t if t.shape[0] == top else torch.cat([t, t.new_zeros((top - t.shape[0], *t.shape[1:]))])
    padded = padded.contiguous()
    pieces = [torch.empty_like(padded) for _ in counts] if is_root else None
    dist.gather(padded, pieces, dst=root, group=group)
    if not is_root:
        return None
    return torch.cat([p[:c] for p, c in zip(pieces, counts)])


class DistributedJacobian:
    """`phi_hig.hig.JacobianOperator` of the global stacked Jacobian whose row blocks live on the ranks of
    ``group`` (module docstring). Build it with the local `JacobianFactors` of each rank's own samples.

    Attributes:
        local: this rank's `JacobianFactors`.
        counts: samples per rank, in rank order.
        n_rows: global rows ``Σ_r b_r·|y|``.
        n_params: |θ| (the same on every rank).
        is_root: True on the rank that computes the eigendecomposition (rank 0 of the group).
    """

    def __init__(self, local: JacobianFactors, group):
        import torch.distributed as dist
        self.local, self.group = local, group
        self.root = dist.get_global_rank(group, 0) if group is not dist.group.WORLD else 0
        self.is_root = dist.get_rank(group) == 0
        n = torch.tensor([local.n_samples], dtype=torch.int64, device=local.y.device)
        counts = [torch.zeros_like(n) for _ in range(dist.get_world_size(group))]
        dist.all_gather(counts, n, group=group)
        self.counts = [int(c) for c in counts]
        self.offset = sum(self.counts[:dist.get_rank(group)]) * local.n_out
        self.n_rows = sum(self.counts) * local.n_out
        self.n_params = local.n_params

    # --- the protocol --------------------------------------------------------------------------------------
    def gram(self) -> Optional[torch.Tensor]:
        """``J Jᵀ`` of the global J (float64) on the root rank, from every rank's factors gathered there; None on
        the other ranks. A collective: every rank of the group calls it."""
        full = self._gathered()
        return full.gram() if full is not None else None

    def gram_dual(self) -> Optional[torch.Tensor]:
        """``JᵀJ = Σ_r J_rᵀJ_r`` (float64), reduced onto the root rank; None on the other ranks. A collective."""
        import torch.distributed as dist
        H = self.local.gram_dual().contiguous()
        dist.reduce(H, dst=self.root, op=dist.ReduceOp.SUM, group=self.group)
        return H if self.is_root else None

    def vjp(self, c: torch.Tensor) -> torch.Tensor:
        """``Jᵀc = Σ_r J_rᵀc_r`` (float64) for the global vector ``c`` (``n_rows``), all-reduced: the same on every
        rank. A collective."""
        import torch.distributed as dist
        mine = c.reshape(-1)[self.offset:self.offset + self.local.n_rows]
        out = self.local.vjp(mine).contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group)
        return out

    def matrix(self) -> Optional[torch.Tensor]:
        """The global J on the root rank (rows in rank order), None on the other ranks; refused above
        ``max_bytes`` before any rank allocates it. A collective."""
        from ..checks import check_size
        check_size("The Jacobian J", (self.n_rows, self.n_params), self.local.params[0].element_size(),
                   self.local.max_bytes)
        rows = [c * self.local.n_out for c in self.counts]
        return _gather_rows(self.local.matrix(), rows, self.group, self.root, self.is_root)

    def sharing(self, device) -> 'RootSharing':
        """How `phi_hig.hig.apply_half_inverse` shares the root's decisions and results with the other ranks."""
        return RootSharing(self, device)

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """The root's ``t`` on every rank (``t`` must have the root's shape and dtype on every rank)."""
        import torch.distributed as dist
        t = t.contiguous()
        dist.broadcast(t, src=self.root, group=self.group)
        return t

    # --- helpers -------------------------------------------------------------------------------------------
    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks (SUM all-reduce), on every rank."""
        import torch.distributed as dist
        t = t.contiguous()
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def gather_rows(self, local_rows: torch.Tensor) -> torch.Tensor:
        """All ranks' row-major values ``(R_r,)`` concatenated in rank order, on every rank (e.g. g)."""
        import torch.distributed as dist
        ny = self.local.n_out
        top = max(self.counts) * ny
        mine = local_rows.reshape(-1)
        padded = torch.cat([mine, mine.new_zeros(top - mine.numel())]) if mine.numel() < top else mine.contiguous()
        pieces = [torch.empty_like(padded) for _ in self.counts]
        dist.all_gather(pieces, padded, group=self.group)
        return torch.cat([p[:c * ny] for p, c in zip(pieces, self.counts)])

    def _gathered(self) -> Optional[JacobianFactors]:
        """The global `JacobianFactors` on the root (factors concatenated in rank order), None elsewhere."""
        loc, counts, ny = self.local, self.counts, self.local.n_out
        rows = [c * ny for c in counts]

        def gather(t, per_sample):
            return _gather_rows(t, counts if per_sample else rows, self.group, self.root, self.is_root)
        y = gather(loc.y, True)
        layers = [(gather(f.a, True), gather(f.delta, False), f.weight_col, f.bias_col) for f in loc.layers]
        block = gather(loc.dense_block, False) if loc.dense_block is not None else None
        if not self.is_root:
            return None
        return JacobianFactors(y, loc.params, [LayerFactor(*f) for f in layers], loc.dense_cols, block,
                               max_bytes=loc.max_bytes, chunk_bytes=loc.chunk_bytes)


class RootSharing:
    """What the root of a distributed operator computed, on every rank: the ``sharing`` of `DistributedJacobian`
    through which `phi_hig.hig.apply_half_inverse` takes its decisions and receives the root's results."""

    _PATHS = ('gram', 'gram-dual', 'svd')

    def __init__(self, operator, device):
        self.root = bool(operator.is_root)
        self._broadcast = operator.broadcast
        self.device = device

    def numbers(self, values: list) -> list:
        """The root's list of floats on every rank."""
        t = torch.tensor(values if self.root else [0.0] * len(values), dtype=torch.float64, device=self.device)
        return self._broadcast(t).tolist()

    def root_result(self, compute, size: int):
        """``compute()`` on the root — None, or ``(vector of length size, SpectralInfo)`` — on every rank.

        An exception on the root is re-raised on every rank as a `NonFiniteStepError` / `PhiHigError` of the same
        message, so that no rank waits for a broadcast that never comes."""
        status, result, message = 0.0, None, ''
        if self.root:
            try:
                result = compute()
                status = 1.0 if result is not None else 0.0
            except Exception as err:  # shared below, raised on every rank
                status, message = (2.0 if isinstance(err, NonFiniteStepError) else 3.0), f"{type(err).__name__}: {err}"
        header = self.numbers([status, float(result[1].rank) if status == 1 else 0.0,
                               result[1].sigma_max if status == 1 else 0.0,
                               float(self._PATHS.index(result[1].path)) if status == 1 else 0.0])
        status = header[0]
        if status >= 2:
            cls = NonFiniteStepError if status == 2 else PhiHigError
            raise cls(f"on the root rank: {message}" if self.root else "the root rank failed (see its error)")
        if status == 0:
            return None
        rank = int(header[1])
        vec = result[0] if self.root else torch.empty(size, dtype=torch.float64, device=self.device)
        sv = torch.as_tensor(result[1].singular_values, dtype=torch.float64, device=self.device) if self.root else \
            torch.empty(rank, dtype=torch.float64, device=self.device)
        vec, sv = self._broadcast(vec.to(self.device)), self._broadcast(sv)
        return vec, SpectralInfo(sv.cpu().numpy(), header[2], rank, self._PATHS[int(header[3])])
