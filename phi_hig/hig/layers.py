"""Which layers of a torch network hold their Jacobian columns as factors, checked on a forward pass of the network.

A layer is held as factors (`phi_hig.hig.factors.LayerFactor`) when it is an ``nn.Linear``, ``nn.Conv1d`` or
``nn.Conv2d`` (``groups == 1``) that alone owns its trainable parameters, is called once per forward pass on
batch-first inputs, and whose parameters reach the output through that call only. Forward hooks see a layer's own
call and nothing else: a weight also read elsewhere (a decoder tied to an encoder as ``F.linear(h,
enc.weight.t())``) would lose the other terms of its columns. `factored_layers` counts every parameter's uses in
the autograd graph of a forward pass (`parameter_uses`) and keeps a layer only when each of its parameters is
used once; the others get their columns from ``torch.func`` (`phi_hig.hig.jacobian.jacobian_factors`).

A per-sample Jacobian also needs a forward pass that treats every example alone and the same way in each of its
replicated rows: batch norm in training mode mixes the examples of a batch and dropout in training mode draws
another mask for every row. `refuse_sample_mixing` refuses both modules (every pass) and `refuse_random_draws`
any other random draw of the forward pass (e.g. functional dropout; checked with the layers).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
from torch import nn

from ..backend import torch_backend
from ..errors import InvalidInputError

__all__ = ['STRUCTURED_TYPES', 'factored_layers', 'refuse_sample_mixing', 'refuse_random_draws', 'parameter_uses',
           'accepts_input', 'layer_input', 'layer_delta']

STRUCTURED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layer types whose columns of J are held as factors (convolutions with ``groups == 1`` only)."""

_LAYER_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def factored_layers(net: nn.Module, params: list, modules: list, example: torch.Tensor) -> dict:
    """``{module: (weight column, bias column)}`` of the layers whose columns of J are held as factors: the Linear /
    Conv layers (groups = 1) that own trainable parameters, each owned by this module alone and used once in a
    forward pass; the other parameters go to the dense block.

    Checked on one forward pass of ``net`` on ``example`` (the first input, batch first) with gradients, which also
    refuses a network that draws random numbers (`refuse_random_draws`). Done once per network configuration and
    cached: the same parameter list, module tree (``modules = list(net.modules())``) and training modes."""
    key = (tuple(id(p) for p in params), tuple(id(m) for m in modules), tuple(m.training for m in modules))
    hit = _LAYER_CACHE.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    col = {id(p): i for i, p in enumerate(params)}
    owners = {}
    for m in modules:
        for p in m.parameters(recurse=False):
            if id(p) in col:
                owners.setdefault(id(p), set()).add(m)
    with torch.enable_grad(), torch_backend(), refuse_random_draws(example.device):
        output = net(example.detach())
    uses = parameter_uses(output) if isinstance(output, torch.Tensor) else {}
    layers = {}
    for m in modules:
        if type(m) not in STRUCTURED_TYPES or getattr(m, 'groups', 1) != 1:
            continue
        own = [p for p in m.parameters(recurse=False) if id(p) in col]
        if not own or any(len(owners[id(p)]) != 1 or uses.get(id(p), 0) != 1 for p in own):
            continue
        layers[m] = (col.get(id(m.weight)), col.get(id(m.bias)) if m.bias is not None else None)
    _LAYER_CACHE[net] = (key, layers)
    return layers


def refuse_sample_mixing(net: nn.Module, modules: list) -> None:
    """Raises `InvalidInputError` naming the first module of ``modules`` (``list(net.modules())``) that makes the
    per-sample Jacobian undefined: batch norm in training mode (mixes the examples of a batch) or dropout with
    ``p > 0`` in training mode (another mask for every replicated row of an example)."""
    for m in modules:
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise InvalidInputError(f"per-sample Jacobians are undefined with batch norm in training mode "
                                    f"({_describe(net, m)} mixes the samples of a batch); call net.eval() or "
                                    f"remove it")
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            raise InvalidInputError(f"per-sample Jacobians are undefined with dropout in training mode "
                                    f"({_describe(net, m)} would draw another mask for every row of the Jacobian); "
                                    f"call net.eval() or set p=0")


def _describe(net: nn.Module, module: nn.Module) -> str:
    name = next((n for n, m in net.named_modules() if m is module), '')
    return f"{type(module).__name__} '{name}'" if name else type(module).__name__


def _generator_state(device: torch.device):
    if device.type == 'cpu':
        return torch.default_generator.get_state().numpy().tobytes()
    if device.type == 'cuda':
        return torch.cuda.get_rng_state(device).numpy().tobytes()
    return None


@contextmanager
def refuse_random_draws(device: torch.device):
    """Raises `InvalidInputError` after the body when it drew random numbers from ``device``'s default generator
    (CPU and CUDA; other devices are not checked): a network that does (functional dropout, noise in training
    mode) gives every replicated row of an example another draw, so its per-sample Jacobian is undefined."""
    before = _generator_state(device)
    yield
    if before is not None and before != _generator_state(device):
        raise InvalidInputError("the network drew random numbers in its forward pass (functional dropout or noise "
                                "in training mode?): per-sample Jacobians would give every row of an example "
                                "another draw; call net.eval() or make the forward pass deterministic")


def parameter_uses(output: torch.Tensor) -> dict:
    """``{id(leaf): n}``: how many edges of the autograd graph of ``output`` lead to each leaf tensor (a parameter
    read twice, e.g. by its layer and by a tied decoder, counts 2)."""
    counts, seen = {}, set()
    stack = [output.grad_fn] if output.grad_fn is not None else []
    while stack:
        for node, _ in stack.pop().next_functions:
            if node is None:
                continue
            if type(node).__name__ == 'AccumulateGrad':  # the edge to a leaf
                counts[id(node.variable)] = counts.get(id(node.variable), 0) + 1
            elif node not in seen:
                seen.add(node)
                stack.append(node)
    return counts


def accepts_input(m: nn.Module, x, out, rows: int) -> bool:
    """Whether the hooked call of layer ``m`` took a batch-first input of ``rows`` rows of the layer's kind."""
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor) or x.shape[0] != rows or out.shape[0] != rows:
        return False
    if isinstance(m, nn.Conv2d):
        return x.ndim == 4
    if isinstance(m, nn.Conv1d):
        return x.ndim == 3
    return x.ndim >= 2


def layer_input(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
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


def layer_delta(m: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """The per-row signal ``δ``: ``(R, out)`` or ``(R, out, L)`` matching `layer_input`."""
    R = grad.shape[0]
    if isinstance(m, nn.Linear):
        return grad if grad.ndim == 2 else grad.reshape(R, -1, grad.shape[-1]).transpose(1, 2).contiguous()
    return grad.reshape(R, grad.shape[1], -1)
