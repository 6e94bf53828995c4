"""Attention blocks, one per file, all constructed as ``Block(channels, **kwargs)``.

``create_block("se", 256)`` is the string factory used by the ResNets; every class is also a
drop-in ``attn_layer`` for timm models.
"""
from __future__ import annotations

from typing import Any

from .bam import BAM
from .base import GATE_ROLES, AttentionBlock
from .cbam import CBAM, CbamChannelGate, CbamSpatialGate
from .eca import EfficientChannelAttention, eca_kernel_size
from .se import SqueezeExcite
from .spatial import SpatialAttention

BLOCKS: dict[str, type[AttentionBlock]] = {
    cls.kind: cls for cls in (SqueezeExcite, EfficientChannelAttention, CBAM, BAM, SpatialAttention)
}
#: Block kinds as reported by the model list; ``none`` is the plain ResNet.
BLOCK_KINDS = (*BLOCKS, "none")


def create_block(kind: str, channels: int, **kwargs: Any) -> AttentionBlock:
    """Build the attention block named ``kind`` (one of :data:`BLOCKS`) for ``channels``."""
    try:
        cls = BLOCKS[kind]
    except KeyError:
        raise ValueError(f"unknown attention block {kind!r}; expected one of {sorted(BLOCKS)}") from None
    return cls(channels, **kwargs)


__all__ = [
    "AttentionBlock", "BAM", "BLOCKS", "BLOCK_KINDS", "CBAM", "CbamChannelGate", "CbamSpatialGate",
    "EfficientChannelAttention", "GATE_ROLES", "SpatialAttention", "SqueezeExcite", "create_block",
    "eca_kernel_size",
]
