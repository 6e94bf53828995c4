"""Bottleneck Attention Module (Park et al., BMVC 2018), placed between ResNet stages."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .base import AttentionBlock


class BAM(AttentionBlock):
    """BAM: ``x * (1 + σ(Mc(x) ∘ Ms(x)))``.

    Mc: global avg pool → FC C→C/r → BN → ReLU → FC C/r→C. Ms: 1×1 reduce → BN → ReLU →
    ``num_dilated_convs`` × (3×3 dilated conv → BN → ReLU) → 1×1 to one map. The authors'
    released code combines the branches by product (``combine="mul"``, needed for their
    weights); the paper writes a sum (``combine="sum"``). The gate is one ``[B, C, H, W]``
    tensor; capture reports its spatial mean per channel and its channel mean per pixel.
    """

    kind = "bam"

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        dilation: int = 4,
        num_dilated_convs: int = 2,
        combine: Literal["mul", "sum"] = "mul",
    ) -> None:
        super().__init__()
        if combine not in ("mul", "sum"):
            raise ValueError(f"BAM combine must be 'mul' or 'sum', got {combine!r}")
        self.combine = combine
        rd = max(1, channels // reduction)
        self.channel_branch = nn.Sequential()
        self.channel_branch.add_module("fc1", nn.Linear(channels, rd))
        self.channel_branch.add_module("bn1", nn.BatchNorm1d(rd))
        self.channel_branch.add_module("act1", nn.ReLU(inplace=True))
        self.channel_branch.add_module("fc2", nn.Linear(rd, channels))
        self.spatial_branch = nn.Sequential()
        self.spatial_branch.add_module("reduce", nn.Conv2d(channels, rd, 1))
        self.spatial_branch.add_module("reduce_bn", nn.BatchNorm2d(rd))
        self.spatial_branch.add_module("reduce_act", nn.ReLU(inplace=True))
        for i in range(num_dilated_convs):
            self.spatial_branch.add_module(
                f"dil{i}", nn.Conv2d(rd, rd, 3, padding=dilation, dilation=dilation)
            )
            self.spatial_branch.add_module(f"dil{i}_bn", nn.BatchNorm2d(rd))
            self.spatial_branch.add_module(f"dil{i}_act", nn.ReLU(inplace=True))
        self.spatial_branch.add_module("final", nn.Conv2d(rd, 1, 1))
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        mc = self.channel_branch(x.mean((2, 3))).view(b, c, 1, 1)
        ms = self.spatial_branch(x)
        return x * (1 + self.gate(mc * ms if self.combine == "mul" else mc + ms))

    def gate_modules(self) -> dict[str, nn.Module]:
        return {"joint": self.gate}
