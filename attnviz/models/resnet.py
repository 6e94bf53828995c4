"""ResNet-18/34/50 with an attention block in every residual block (or BAM between stages).

Layout follows torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``fc``) so torchvision's
weights load unchanged; the attention block of a residual block is its ``attn`` submodule,
placed after the last BN and before the residual add. BAM modules are ``bam1``..``bam3``
after stages 1..3, as in the BAM authors' code. Options cover the authors' released
architectures: ``stride_in_1x1`` (the SENet Caffe model strides in conv1, not conv2) and
``stem_pool="max_ceil"`` (SENet's ceil-mode max pool).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from ..blocks import BAM, create_block

StemPool = Literal["max", "max_ceil", "none"]


def _make_attn(kind: str | None, channels: int, kwargs: dict[str, Any]) -> nn.Module:
    return create_block(kind, channels, **kwargs) if kind else nn.Identity()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = _make_attn(attn, planes, attn_kwargs or {})
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=s3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.attn = _make_attn(attn, planes * 4, attn_kwargs or {})
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


BLOCK_TYPES: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}

#: Depth → (residual block type, blocks per stage).
DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


def _make_stem_pool(stem_pool: StemPool) -> nn.Module:
    if stem_pool == "max":
        return nn.MaxPool2d(3, stride=2, padding=1)
    if stem_pool == "max_ceil":
        return nn.MaxPool2d(3, stride=2, ceil_mode=True)
    if stem_pool == "none":
        return nn.Identity()
    raise ValueError(f"stem_pool must be 'max', 'max_ceil' or 'none', got {stem_pool!r}")


def _make_stage(
    block_type: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    n_blocks: int,
    stride: int,
    attn: str | None,
    attn_kwargs: dict[str, Any],
    stride_in_1x1: bool,
) -> nn.Sequential:
    """``n_blocks`` residual blocks; the first one strides and, where the shape changes, projects."""
    outplanes = planes * block_type.expansion
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
            nn.BatchNorm2d(outplanes),
        )
    blocks = [
        block_type(
            inplanes if j == 0 else outplanes, planes,
            stride=stride if j == 0 else 1,
            downsample=downsample if j == 0 else None,
            attn=attn, attn_kwargs=attn_kwargs, stride_in_1x1=stride_in_1x1,
        )
        for j in range(n_blocks)
    ]
    return nn.Sequential(*blocks)


class AttentionResNet(nn.Module):
    """A ResNet whose residual blocks (or stage boundaries, for BAM) carry attention blocks.

    ``attn`` is a block kind from :data:`attnviz.blocks.BLOCKS` or ``None`` for the plain
    ResNet; ``attn_kwargs`` go to every block, ``stage_attn_kwargs[i]`` additionally to the
    blocks of stage ``i + 1`` (e.g. ECA's per-stage kernel sizes). ``forward_features`` returns
    the last stage's output, ``forward_head`` the logits from it. ``stage_strides`` are the
    first block's stride per stage (torchvision: 1, 2, 2, 2); a 1 in the last stage keeps a finer
    last feature map, which is what Grad-CAM and the last stage's spatial gates are drawn on.
    """

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 1000,
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
        stage_attn_kwargs: Sequence[dict[str, Any]] | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        stem_kernel_size: int = 7,
        stem_stride: int = 2,
        stem_pool: StemPool = "max",
        stride_in_1x1: bool = False,
        stage_strides: Sequence[int] = (1, 2, 2, 2),
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        block_name, layers = DEPTHS[depth]
        if len(stage_strides) != len(layers) or any(s not in (1, 2) for s in stage_strides):
            raise ValueError(f"stage_strides must be {len(layers)} values of 1 or 2, got {list(stage_strides)}")
        self.depth = depth
        self.attn_kind = attn or "none"

        self.conv1 = nn.Conv2d(
            in_chans, stem_width, stem_kernel_size, stride=stem_stride,
            padding=stem_kernel_size // 2, bias=False,
        )
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = _make_stem_pool(stem_pool)
        inplanes = self._add_stages(
            BLOCK_TYPES[block_name], layers, widths, stage_strides, stem_width,
            attn, dict(attn_kwargs or {}), list(stage_attn_kwargs or [{} for _ in layers]), stride_in_1x1,
        )
        self.stage_names = [f"layer{i + 1}" for i in range(len(layers))]
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _add_stages(
        self,
        block_type: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        stage_strides: Sequence[int],
        inplanes: int,
        attn: str | None,
        attn_kwargs: dict[str, Any],
        stage_kwargs: list[dict[str, Any]],
        stride_in_1x1: bool,
    ) -> int:
        """Register ``layer1``.. (and ``bam1``.. between stages for BAM), in forward order so the
        state dict's keys and the random init follow it; returns the last stage's channels."""
        per_block_attn = None if attn == "bam" else attn
        for i, (planes, n_blocks, stride) in enumerate(zip(widths, layers, stage_strides)):
            kwargs = {**attn_kwargs, **stage_kwargs[i]}
            stage = _make_stage(block_type, inplanes, planes, n_blocks, stride, per_block_attn, kwargs, stride_in_1x1)
            self.add_module(f"layer{i + 1}", stage)
            inplanes = planes * block_type.expansion
            if attn == "bam" and i < len(layers) - 1:
                self.add_module(f"bam{i + 1}", BAM(inplanes, **kwargs))
        return inplanes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i, stage in enumerate(self.stage_names, start=1):
            x = getattr(self, stage)(x)
            bam = getattr(self, f"bam{i}", None)
            if bam is not None:
                x = bam(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
