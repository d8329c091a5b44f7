"""Network factories of the SIP experiments: the papers' periodic U-net and small dense networks.

`unet` builds the U-net of seed 003 (B.2, B.4): max-pool down, bilinear up, two (3×3 conv → batch norm → ReLU)
blocks per level, skip connections by concatenation, a final 1×1 convolution. Its layers and parameter counts
are those of PhiFlow's `u_net(in, out, levels, filters)` (37,697 for 1 → 1 with 4 levels, 49,570 for 2 → 2 with 5
levels), but it is periodic throughout: convolutions pad circularly and the bilinear upsampling wraps around
instead of clamping at the edges. PhiFlow 3.4's `u_net(periodic=True)` cannot be used: its `Down` blocks take
`(…, use_res_blocks, periodic, …)` while `UNet` passes `(…, periodic, use_res_blocks, …)`, so `periodic=True` builds
zero-padded ResNet down-blocks with the same parameter count. `PeriodicUNet` is equivariant under periodic
shifts by multiples of `2^(levels−1)` cells (tested in eval mode).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['unet', 'PeriodicUNet', 'dense', 'parameter_count']


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
            raise ValueError(f"filters has {len(filters)} entries for {levels} levels")
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
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"U-net with {self.levels} levels needs sizes divisible by {factor}, got {tuple(x.shape[-2:])}")
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
    """The papers' U-net (seed 003 B.2/B.4); `unet(1, 1)` has 37,697 and `unet(2, 2, levels=5)` 49,570 parameters."""
    return PeriodicUNet(in_channels, out_channels, levels, filters, batch_norm, periodic)


def dense(sizes: Sequence[int], activation=nn.ReLU) -> nn.Sequential:
    """Fully connected network `sizes[0] → … → sizes[-1]` with `activation` between layers (none at the end)."""
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def parameter_count(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
