"""Channel drill-down: one channel's feature map before and after its block's attention.

The default inspection keeps only the gates. When a channel is asked for, the model is re-run
on the inspection's own input tensor with one extra forward hook on that attention block
(its input is the feature before the gates, its output the feature after them); the forward
stops right after the block, and the block's maps are kept on the inspection so the next
channel of the same block costs nothing. The plain model is re-run (no interventions).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .capture import block_io
from .inspection import Inspection, amp_autocast

_CACHE_ATTR = "_drilldown_maps"  # on the Inspection: block -> (before [C,H,W], after [C,H,W])


@dataclass(frozen=True)
class ChannelMap:
    """``before`` / ``after``: the channel's map [H, W] entering and leaving the attention
    block; ``gate``: that channel's gate value in the inspection (None: no channel gate)."""

    block: str
    channel: int
    gate: float | None
    before: np.ndarray
    after: np.ndarray


class _StopForward(Exception):
    """Raised by the hook once the block has run: the rest of the network is not needed."""


def block_maps(inspection: Inspection, block: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(before, after)`` [C, H, W] of ``block`` for the inspected image (cached)."""
    cache = inspection.__dict__.setdefault(_CACHE_ATTR, {})
    if block in cache:
        return cache[block]
    loaded = inspection.loaded
    if loaded is None:
        raise ValueError("this inspection holds no model; inspect with attnviz.inspect() to drill down")
    seen: list[torch.Tensor] = []

    def keep_first_image(entering: torch.Tensor, leaving: torch.Tensor) -> None:
        seen[:] = [entering[0].float().cpu(), leaving[0].float().cpu()]
        raise _StopForward

    try:
        with block_io(loaded.model, block, keep_first_image):
            x = inspection.prepared.tensor.to(loaded.device)
            with torch.inference_mode(), amp_autocast(inspection.amp, loaded.device):
                loaded.model(x)
    except _StopForward:
        pass
    if not seen:
        raise RuntimeError(f"block {block!r} did not run in the model's forward")
    cache[block] = (seen[0], seen[1])
    return cache[block]


def channel_map(inspection: Inspection, block: str, channel: int) -> ChannelMap:
    """The map of ``channel`` in ``block`` before and after the attention, with its gate."""
    before, after = block_maps(inspection, block)
    c = before.shape[0]
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < c:
        raise ValueError(f"channel {channel!r} out of range for {block}: valid 0..{c - 1}")
    gates = inspection.block(block).channel
    return ChannelMap(block, int(channel), None if gates is None else float(gates[channel]),
                      before[channel].numpy(), after[channel].numpy())


def top_channel_maps(inspection: Inspection, block: str, k: int = 8) -> list[ChannelMap]:
    """The maps of the ``k`` channels with the highest gate in ``block`` (ties: lower first)."""
    gates = inspection.block(block).channel
    if gates is None:
        raise ValueError(f"{block} has no channel gate; drill down by channel index instead")
    order = np.argsort(-gates, kind="stable")[:k]
    return [channel_map(inspection, block, int(i)) for i in order]
