"""Efficient Channel Attention (Wang et al., CVPR 2020), laid out as the authors' release."""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import AttentionBlock


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """Adaptive ECA kernel size: ``|log2(C)/γ + b/γ|`` truncated, then made odd (authors' code)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(AttentionBlock):
    """ECA: global avg pool → 1-D conv across channels (no bias) → sigmoid → scale.

    ``kernel_size=None`` picks the adaptive size from ``channels``; the authors' ImageNet
    ResNet-50 instead fixes k = 3, 5, 5, 7 per stage (see the model zoo).
    """

    kind = "eca"

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2,
        beta: float = 1,
    ) -> None:
        super().__init__()
        k = kernel_size if kernel_size is not None else eca_kernel_size(channels, gamma, beta)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA kernel_size must be a positive odd number, got {k}")
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        y = self.conv(x.mean((2, 3)).view(b, 1, c)).view(b, c, 1, 1)
        return x * self.gate(y)

    def gate_modules(self) -> dict[str, nn.Module]:
        return {"channel": self.gate}
