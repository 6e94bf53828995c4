"""Squeeze-and-Excitation (Hu et al., CVPR 2018), laid out as the authors' released model."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .base import AttentionBlock


class SqueezeExcite(AttentionBlock):
    """SE: global pool → FC C→C/r → ReLU → FC C/r→C → sigmoid → channel-wise scale.

    The FC layers are 1×1 convolutions with bias, as in the authors' Caffe model (and timm's
    ``legacy_seresnet`` port), so their state dicts load unchanged.
    """

    kind = "se"

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        pool: Literal["avg", "max"] = "avg",
        rd_channels: int | None = None,
    ) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"SE pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        rd = rd_channels or max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True) if self.pool == "avg" else x.amax((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))

    def gate_modules(self) -> dict[str, nn.Module]:
        return {"channel": self.gate}
