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

For JAX (imported only where a JAX value is met, never at import):

* `is_jax_array(value)`: whether ``value`` is a JAX array, without importing JAX;
* `x64()`: a context in which JAX computes in float64 (``jax.enable_x64(True)``). JAX truncates float64 to float32
  unless ``jax_enable_x64`` is set (PhiML's JAX backend sets it globally when it is imported; a user may unset it);
  phi_hig never changes the global setting and runs its float64 parts in this context.
"""
from __future__ import annotations

import contextlib
import sys

import torch

__all__ = ['torch_backend', 'call_in_torch_backend', 'is_jax_array', 'x64']


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


def is_jax_array(value) -> bool:
    """Whether ``value`` is a JAX array (or a tracer of one); False without importing JAX when JAX is not loaded."""
    jax = sys.modules.get('jax')
    return jax is not None and isinstance(value, jax.Array)


def x64():
    """A context manager in which JAX honours float64 (``jax.enable_x64(True)``), restoring the setting on exit.

    Invariant: the global ``jax_enable_x64`` setting is the same after the context as before it. Functions compiled
    inside the context are compiled for float64 and are found again by later calls inside it (no re-trace)."""
    import jax
    if hasattr(jax, 'enable_x64'):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # JAX before the context moved to its top level
    return enable_x64()
