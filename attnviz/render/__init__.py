"""Fast, figure-free rendering of attention results to images.

Everything here draws straight into numpy arrays / PIL images; no matplotlib
figure is ever created.  matplotlib is used only as the source of colormap
tables (:func:`colormap_lut`) and of the DejaVu Sans font file, each fetched
once and cached.  All calls are designed to take about a millisecond so that a
whole model (a chart and an overlay per block plus a depth overview) renders in
a few tens of milliseconds.

Public API (modules of this package in brackets)
------------------------------------------------
- :data:`COLORMAPS`, :func:`colormap_lut` -- ``[256, 3] uint8`` colour tables (``colormaps``).
- :func:`upsample_map`, :func:`normalize_map` -- map geometry / value scaling (``maps``).
- :func:`overlay`, :func:`heatmap` -- spatial attention maps as images (``maps``).
- :func:`channel_bar_chart` -- one block's channel gate values; :func:`channel_bar_layout` --
  its plot box and the channel under each pixel (``charts``).
- :func:`branch_stack_chart`, :func:`branch_bar_charts`, :func:`branch_figure` -- selection
  attention's ``[branches, channels]`` softmax weights (SK, ResNeSt), stacked and per branch
  (``branches``).
- :func:`depth_overview` -- blocks x channels gate image for a whole model (``depth``).
- :func:`stats_along_depth` -- line chart of per-depth statistics (``depth``).
- :func:`image_grid`, :func:`stack_vertical`, :func:`to_png_bytes`, :func:`to_jpeg_bytes` -- composition and
  encoding (``grid``).
- :func:`attnviz.render.profiles.profile_heatmap`, :func:`~attnviz.render.profiles.channel_order`
  -- rows x channels heat map of one block's gates (``profiles``).

Text drawing lives in ``text``, shared chart parts (ticks, colorbar) in ``chart_axes``.  The
package depends on numpy, PIL and matplotlib only, nothing else of attnviz.
"""
from __future__ import annotations

from .branches import branch_bar_charts, branch_figure, branch_stack_chart
from .charts import ChannelBarLayout, channel_bar_chart, channel_bar_layout
from .colormaps import COLORMAPS, RGB, colormap_lut
from .depth import depth_overview, stats_along_depth
from .grid import image_grid, stack_vertical, to_jpeg_bytes, to_png_bytes
from .maps import NormalizeMode, heatmap, normalize_map, overlay, upsample_map

__all__ = [
    "COLORMAPS",
    "colormap_lut",
    "upsample_map",
    "normalize_map",
    "overlay",
    "heatmap",
    "channel_bar_chart",
    "channel_bar_layout",
    "ChannelBarLayout",
    "branch_bar_charts",
    "branch_stack_chart",
    "branch_figure",
    "depth_overview",
    "stats_along_depth",
    "image_grid",
    "stack_vertical",
    "to_png_bytes",
    "to_jpeg_bytes",
]
