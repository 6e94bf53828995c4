"""Convolutional Block Attention Module (Woo et al., ECCV 2018), as in the authors' code."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .base import AttentionBlock
from .eca import eca_kernel_size


class CbamChannelGate(nn.Module):
    """Shared MLP (or ECA-style 1-D conv) on avg- and max-pooled vectors, summed, sigmoid."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        mlp: Literal["fc", "conv1d"] = "fc",
        kernel_size: int | None = None,
    ) -> None:
        super().__init__()
        if mlp == "fc":
            rd = max(1, channels // reduction)
            self.mlp: nn.Module = nn.Sequential()
            self.mlp.add_module("fc1", nn.Linear(channels, rd, bias=True))
            self.mlp.add_module("act", nn.ReLU(inplace=True))
            self.mlp.add_module("fc2", nn.Linear(rd, channels, bias=True))
        elif mlp == "conv1d":
            k = kernel_size if kernel_size is not None else eca_kernel_size(channels)
            self.mlp = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        else:
            raise ValueError(f"CBAM channel mlp must be 'fc' or 'conv1d', got {mlp!r}")
        self.mlp_kind = mlp
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        # One MLP call on [avg; max] stacked along the batch: same weights, half the launches.
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=0)
        if self.mlp_kind == "conv1d":
            pooled = pooled.unsqueeze(1)
        z = self.mlp(pooled).view(2, b, c).sum(0)
        return x * self.gate(z.view(b, c, 1, 1))


class CbamSpatialGate(nn.Module):
    """Channel-wise max and mean maps (max first, as the authors) → k×k conv → BN → sigmoid."""

    def __init__(self, kernel_size: int = 7, batch_norm: bool = True) -> None:
        super().__init__()
        if kernel_size not in (3, 5, 7):
            raise ValueError(f"CBAM spatial kernel_size must be 3, 5 or 7, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
        # momentum 0.01 is the authors' BasicConv setting.
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if batch_norm else nn.Identity()
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        return x * self.gate(self.bn(self.conv(pooled)))


class CBAM(AttentionBlock):
    """CBAM: channel gate, then spatial gate on the channel-refined features."""

    kind = "cbam"

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        channel_mlp: Literal["fc", "conv1d"] = "fc",
        channel_kernel_size: int | None = None,
        spatial_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.channel = CbamChannelGate(channels, reduction, channel_mlp, channel_kernel_size)
        self.spatial = CbamSpatialGate(spatial_kernel_size, spatial_batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))

    def gate_modules(self) -> dict[str, nn.Module]:
        return {"channel": self.channel.gate, "spatial": self.spatial.gate}
