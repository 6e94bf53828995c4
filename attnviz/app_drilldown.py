"""The app's channel drill-down: one channel's map before and after its block, and the block's
top-k channels as a grid (:mod:`attnviz.drilldown` underneath).

:func:`channel_maps` runs the model (call it on the app's torch thread); :func:`drilldown_views`
only draws. Before and after are drawn on one common scale, so the gate's effect is visible.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import render
from .drilldown import ChannelMap, channel_map, top_channel_maps
from .inspection import Inspection

VIEW_SIZE = 448
GRID_CELL = 160


def channel_maps(result: Inspection, block: str, channel: int | None, k: int = 8) -> tuple[ChannelMap, list[ChannelMap]]:
    """The chosen channel (None or < 0: the block's highest gate) and the block's top-k channels."""
    b = result.block(block)
    if channel is None or int(channel) < 0:
        if b.channel is None:
            raise ValueError(f"{block} has no channel gate: give a channel index")
        channel = int(np.argmax(b.channel))
    top = top_channel_maps(result, block, k) if b.channel is not None else []
    return channel_map(result, block, int(channel)), top


@dataclass
class DrilldownViews:
    before: str
    after: str
    grid: str | None
    markdown: str


def _common_scale(*maps: np.ndarray) -> list[np.ndarray]:
    lo = min(float(m.min()) for m in maps)
    hi = max(float(m.max()) for m in maps)
    span = hi - lo if hi > lo else 1.0
    return [(m - lo) / span for m in maps]


def drilldown_views(result: Inspection, chosen: ChannelMap, top: list[ChannelMap], folder: Path, *,
                    alpha: float = 0.5, colormap: str = "jet") -> DrilldownViews:
    folder.mkdir(parents=True, exist_ok=True)
    view = result.view(VIEW_SIZE)
    paths = []
    for name, m in zip(("before", "after"), _common_scale(chosen.before, chosen.after)):
        path = folder / f"channel_{name}.jpg"
        path.write_bytes(render.to_jpeg_bytes(render.overlay(view, m, alpha=alpha, colormap=colormap, normalize="none")))
        paths.append(str(path))
    grid = None
    if top:
        small = result.view(GRID_CELL)
        tiles = [render.overlay(small, m.after, alpha=alpha, colormap=colormap) for m in top]
        image = render.image_grid(tiles, [f"ch {m.channel} · gate {m.gate:.3f}" for m in top], cols=4, cell=GRID_CELL)
        grid = str(folder / "top_channels.png")
        Path(grid).write_bytes(render.to_png_bytes(image))
    gate = "no channel gate" if chosen.gate is None else f"gate {chosen.gate:.4f}"
    b = result.block(chosen.block)
    rank = "" if b.channel is None else (f", rank {int((b.channel > b.channel[chosen.channel]).sum()) + 1} "
                                         f"of {b.channel.size}")
    md = (f"**{chosen.block}**, channel **{chosen.channel}**: {gate}{rank}. Its feature map entering the block "
          f"(range {chosen.before.min():.3g}..{chosen.before.max():.3g}) and leaving it "
          f"({chosen.after.min():.3g}..{chosen.after.max():.3g}), on one colour scale.")
    return DrilldownViews(paths[0], paths[1], grid, md)
