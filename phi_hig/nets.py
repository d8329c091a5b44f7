"""The papers' networks: the periodic U-net, dense networks (PyTorch- and Keras-initialized) and the wrapper that
appends known conditions to a network's output; one parameter count.

* `unet` / `PeriodicUNet`: the U-net of the SIP experiments;
* `dense`: a fully connected network with PyTorch's default initialization;
* `keras_dense`: the same layers initialized like Keras' `Dense` (the HIG experiments, whose authors used TF);
* `Conditioned`: `z = (net(x), x[:, columns])`, for physics that needs known inputs next to the prediction (or
  pass them to the physics as conditions: `phi_hig.hig_step(..., conditions=…)`);
* `accept_conditioned_keys`: a network that also loads the state dicts of its `Conditioned` wrapper;
* `parameter_count`: the number of trainable parameters;
* `jax_twin`: a PhiML JAX network (``StaxNet``) computing the same function as a dense torch network, with its
  weights copied (the JAX backend of the runner and the JAX benchmark start from the torch weights).

`unet` builds the U-net of Holl, Koltun & Thuerey 2021 (appendix B.2, B.4): max-pool down, bilinear up, two
(3×3 conv → batch norm → ReLU) blocks per level, skip connections by concatenation, a final 1×1 convolution. Its
layers and parameter counts
are those of PhiFlow's `u_net(in, out, levels, filters)` (37,697 for 1 → 1 with 4 levels, 49,570 for 2 → 2 with 5
levels), but it is periodic throughout: convolutions pad circularly and the bilinear upsampling wraps around
instead of clamping at the edges. PhiFlow 3.4's `u_net(periodic=True)` cannot be used: its `Down` blocks take
`(…, use_res_blocks, periodic, …)` while `UNet` passes `(…, periodic, use_res_blocks, …)`, so `periodic=True` builds
zero-padded ResNet down-blocks with the same parameter count. `PeriodicUNet` is equivariant under periodic
shifts by multiples of `2^(levels−1)` cells (tested in eval mode).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .errors import InvalidInputError

__all__ = ['unet', 'PeriodicUNet', 'dense', 'keras_dense', 'Conditioned', 'accept_conditioned_keys',
           'parameter_count', 'jax_twin']


class _DoubleConv(nn.Sequential):
    """(3×3 conv → batch norm → ReLU) × 2, circular padding."""

    def __init__(self, c_in: int, c_out: int, c_mid: int, batch_norm: bool, padding_mode: str):
        def norm(c):
            return nn.BatchNorm2d(c) if batch_norm else nn.Identity()
        super().__init__(
            nn.Conv2d(c_in, c_mid, 3, padding=1, padding_mode=padding_mode), norm(c_mid), nn.ReLU(),
            nn.Conv2d(c_mid, c_out, 3, padding=1, padding_mode=padding_mode), norm(c_out), nn.ReLU())


def _upsample(x: torch.Tensor, periodic: bool) -> torch.Tensor:
    """Bilinear ×2 upsampling (half-pixel centres); periodic: the edges interpolate with the opposite side."""
    if not periodic:
        return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    x = F.pad(x, (1, 1, 1, 1), mode='circular')
    x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    return x[..., 2:-2, 2:-2]


class PeriodicUNet(nn.Module):
    """2D U-net with `levels` resolution levels (inputs and outputs `(b, C, H, W)`, H and W divisible by
    `2^(levels−1)`). `periodic=False` gives zero padding and edge-clamped upsampling (PhiFlow's default u_net)."""

    def __init__(self, in_channels: int, out_channels: int, levels: int = 4, filters: int | Sequence[int] = 16,
                 batch_norm: bool = True, periodic: bool = True):
        super().__init__()
        filters = tuple(filters) if isinstance(filters, (tuple, list)) else (int(filters),) * levels
        if len(filters) != levels:
            raise InvalidInputError(f"filters has {len(filters)} entries for {levels} levels")
        self.levels, self.periodic = levels, periodic
        mode = 'circular' if periodic else 'zeros'
        self.inc = _DoubleConv(in_channels, filters[0], filters[0], batch_norm, mode)
        self.down = nn.ModuleList([_DoubleConv(filters[i - 1], filters[i], filters[i], batch_norm, mode)
                                   for i in range(1, levels)])
        ups = []
        for i in range(1, levels):
            c_in = filters[-i] + filters[-i - 1]
            ups.append(_DoubleConv(c_in, filters[-i - 1], c_in // 2, batch_norm, mode))
        self.up = nn.ModuleList(ups)
        self.outc = nn.Conv2d(filters[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The output ``(b, out_channels, H, W)`` of ``x`` ``(b, in_channels, H, W)``.

        Raises:
            InvalidInputError: H or W is not divisible by ``2^(levels−1)``.
        """
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise InvalidInputError(f"U-net with {self.levels} levels needs sizes divisible by {factor}, got {tuple(x.shape[-2:])}")
        x = self.inc(x)
        skips = [x]
        for block in self.down:
            x = block(F.max_pool2d(x, 2))
            skips.insert(0, x)
        for i, block in enumerate(self.up, start=1):
            x = block(torch.cat([skips[i], _upsample(x, self.periodic)], dim=1))
        return self.outc(x)


def unet(in_channels: int = 1, out_channels: int = 1, levels: int = 4, filters: int = 16, batch_norm: bool = True,
         periodic: bool = True) -> PeriodicUNet:
    """The papers' U-net (Holl, Koltun & Thuerey 2021, appendix B.2/B.4); `unet(1, 1)` has 37,697 and `unet(2, 2, levels=5)` 49,570 parameters."""
    return PeriodicUNet(in_channels, out_channels, levels, filters, batch_norm, periodic)


def dense(sizes: Sequence[int], activation=nn.ReLU) -> nn.Sequential:
    """Fully connected network `sizes[0] → … → sizes[-1]` with `activation` between layers (none at the end)."""
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def keras_dense(sizes: Sequence[int], activation: str = 'relu') -> nn.Sequential:
    """Dense network `sizes[0] → … → sizes[-1]` with `activation` ('relu' or 'tanh') between layers and a linear
    output, initialized like Keras' `Dense` (Glorot-uniform weights, zero biases) as in the authors' TF code of
    Schnell, Holl & Thuerey 2022. The layers are those of `dense(sizes)`; only the initialization differs."""
    acts = {'relu': nn.ReLU, 'tanh': nn.Tanh}
    if activation not in acts:
        raise InvalidInputError(f"activation must be one of {', '.join(map(repr, acts))}; got {activation!r}")
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(acts[activation]())
    return nn.Sequential(*layers)


class Conditioned(nn.Module):
    """`z = (net(x), x[:, columns])`: a network whose output carries known inputs on to the simulation.

    Physics such as an oscillator chain (the initial state), the fluid (the initial marker) or `sin(a/x)` (the
    parameter a) needs inputs that the network does not predict; appending them to the output lets
    `simulate(z)` receive everything in one tensor. The appended part has no parameters, so it adds nothing to
    the network Jacobian and receives a zero update. Concatenation is along dim 1 (features or channels).

    The same training without a wrapper passes the known inputs to the physics as conditions
    (`phi_hig.hig_step(..., conditions=…)`, `phi_hig.sip_step`, an experiment's ``conditions``; the oscillators,
    the linear chain and sin(a/x) do): the updates are the same, and `accept_conditioned_keys` lets the plain
    network load the wrapper's checkpoints.

    Args:
        net: The network; its output and `x[:, columns]` must agree in all dims but dim 1.
        columns: The entries of dim 1 of `x` to append (`None`: all of `x`).
    """

    def __init__(self, net: nn.Module, columns: Optional[Sequence[int]] = None):
        super().__init__()
        self.net = net
        self.columns = None if columns is None else list(columns)
        self._register_load_state_dict_pre_hook(_accept_control_net_keys)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own output `net(x)`, without the appended conditions (e.g. the controls)."""
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``torch.cat([net(x), x[:, columns]], dim=1)``: the network output followed by the carried inputs."""
        conditions = x if self.columns is None else x[:, self.columns]
        return torch.cat([self.net(x), conditions], dim=1)


def _accept_control_net_keys(state_dict, prefix, *args):
    """Checkpoints written before `Conditioned` replaced `ControlNet` name the inner network `body`."""
    for key in [k for k in state_dict if k.startswith(prefix + 'body.')]:
        state_dict[prefix + 'net.' + key[len(prefix) + 5:]] = state_dict.pop(key)


def accept_conditioned_keys(net: nn.Module) -> nn.Module:
    """``net``, which from now on also loads the state dicts of ``Conditioned(net)`` (keys ``net.…``) and of the
    older ``ControlNet`` (keys ``body.…``): an experiment that passes its conditions to the physics instead of
    wrapping its network keeps loading the checkpoints and initial states written with the wrapper. A key is renamed
    only when ``net`` has no attribute ``net`` / ``body`` of its own.

    Example:
        >>> wrapped = Conditioned(torch.nn.Linear(3, 2))
        >>> plain = accept_conditioned_keys(torch.nn.Linear(3, 2))
        >>> plain.load_state_dict(wrapped.state_dict()).missing_keys
        []
        >>> torch.equal(plain.weight, wrapped.net.weight)
        True
    """
    net.register_load_state_dict_pre_hook(_strip_wrapper_keys)
    return net


def _strip_wrapper_keys(module, state_dict, prefix, *args):
    """``prefix + 'net.' + key`` (and ``'body.'``) -> ``prefix + key``, unless ``module`` has such an attribute."""
    for wrapper in ('net', 'body'):
        if hasattr(module, wrapper):
            continue
        start = f'{prefix}{wrapper}.'
        for key in [k for k in state_dict if k.startswith(start)]:
            state_dict[prefix + key[len(start):]] = state_dict.pop(key)


def parameter_count(net: nn.Module) -> int:
    """Number of trainable parameters (those with `requires_grad`), i.e. |θ| of the HIG Jacobian. For the papers'
    networks, which freeze nothing, this is the count the papers state; buffers (batch-norm statistics) are not
    parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


_STAX_ACTIVATIONS = {nn.Tanh: 'Tanh', nn.ReLU: 'Relu', nn.Sigmoid: 'Sigmoid'}


def jax_twin(net: nn.Module):
    """A PhiML JAX network (``StaxNet``: ``stax.Dense`` layers and activations) equal to ``net`` as a function, with
    ``net``'s weights copied (transposed to stax's ``(in, out)``) in ``net``'s dtype.

    Invariant: for a batch-first input x, ``jax_twin(net)(x)`` equals ``net(x)`` to round-off. Imports JAX and
    PhiML's JAX backend (which sets ``jax_enable_x64``) when called.

    Args:
        net: an ``nn.Sequential`` of ``nn.Linear``, ``nn.Tanh``, ``nn.ReLU`` and ``nn.Sigmoid`` (e.g. `dense`,
            `keras_dense`).

    Raises:
        InvalidInputError: another layer type (the message names the supported ones).
    """
    import jax.numpy as jnp
    from jax.example_libraries import stax
    from phiml.backend.jax.stax_nets import StaxNet
    supported = (nn.Linear, *_STAX_ACTIVATIONS)
    if not isinstance(net, nn.Sequential) or not all(isinstance(m, supported) for m in net):
        found = type(net).__name__ if not isinstance(net, nn.Sequential) else \
            ', '.join(sorted({type(m).__name__ for m in net if not isinstance(m, supported)}))
        raise InvalidInputError(f"jax_twin needs an nn.Sequential of nn.Linear, nn.Tanh, nn.ReLU and nn.Sigmoid "
                                f"layers (a dense network); got {found}")
    layers, params = [], []
    for m in net:
        if isinstance(m, nn.Linear):
            layers.append(stax.Dense(m.out_features))
            weight = m.weight.detach().cpu().numpy().T
            bias = m.bias.detach().cpu().numpy() if m.bias is not None else weight[0] * 0
            params.append((jnp.asarray(weight), jnp.asarray(bias)))
        else:
            layers.append(getattr(stax, _STAX_ACTIVATIONS[type(m)]))
            params.append(())
    init, apply = stax.serial(*layers)
    first = next(m for m in net if isinstance(m, nn.Linear))
    twin = StaxNet(init, apply, (-1, first.in_features))
    twin.parameters = params
    return twin
