"""PhiML's torch backend for code that PyTorch differentiates: the one place phi_hig switches backends.

PhiML creates helper tensors (solve matrices traced by ``solve_linear``, constant fields, FFT frequencies) on its
*default* backend, which is NumPy unless a script ran ``from phi.torch.flow import *``. When such code runs inside a
PyTorch autograd graph, NumPy arrays then reach autograd and the backward pass fails. phi_hig never changes the
global default (importing it has no side effects); instead it runs physics under `torch_backend()` where autograd
needs it:

* `torch_backend()`: a context in which PhiML's default backend is torch (forward passes, replicated Jacobian
  passes);
* `call_in_torch_backend(fn, x)`: ``fn(x)`` as one autograd node whose forward *and* backward pass run under the
  torch backend (PyTorch runs a backward pass outside any ``with`` block of the forward pass).
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ['torch_backend', 'call_in_torch_backend']


def torch_backend():
    """A context manager in which PhiML's default backend is torch (a no-op context without phiml's torch backend)."""
    try:
        from phiml.backend.torch import TORCH
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return TORCH


class _InTorchBackend(torch.autograd.Function):
    """``fn(x)`` with PhiML's default backend set to torch in the forward and in the backward pass."""

    @staticmethod
    def forward(ctx, fn, x):
        with torch.enable_grad(), torch_backend():
            x_in = x.detach().requires_grad_(True)
            y = fn(x_in)
        ctx.save_for_backward(x_in, y)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        x_in, y = ctx.saved_tensors
        with torch.enable_grad(), torch_backend():
            g, = torch.autograd.grad(y, x_in, grad, allow_unused=True)
        return None, (torch.zeros_like(x_in) if g is None else g)


def call_in_torch_backend(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for a torch tensor ``x`` and a function of PhiML / PhiFlow operations returning a torch tensor,
    differentiable in ``x``, with PhiML's default backend set to torch in the forward and in the backward pass.

    Invariant: the value and the gradient equal those of ``fn(x)`` evaluated under ``with torch_backend():``.
    """
    return _InTorchBackend.apply(fn, x)
