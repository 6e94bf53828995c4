"""Plain spatial attention: a 1×1 conv to one map, sigmoid, pixel-wise scale."""
from __future__ import annotations

import torch
from torch import nn

from .base import AttentionBlock


class SpatialAttention(AttentionBlock):
    """``x * σ(conv1x1(x))`` with one output map (the seed text's spatial attention)."""

    kind = "spatial"

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1, bias=bias)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv(x))

    def gate_modules(self) -> dict[str, nn.Module]:
        return {"spatial": self.gate}
