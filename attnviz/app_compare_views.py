"""What the compare tabs draw, at the size they are shown at (UI-free; no gradio here).

* Compare images: each block's channel weights of the images as a heat map (one row per
  image, :func:`attnviz.render.profiles.profile_heatmap`), or as lines for up to
  :data:`MAX_LINE_ROWS` images, where lines stay readable.  The same heat map draws a dataset
  analysis' per-class profiles (:func:`attnviz.analysis.class_heatmap.class_profiles`).
* Compare variants: each column's channel chart and depth overview are drawn for the column's
  width (:func:`column_width`) with 11 px text, instead of large figures the browser shrinks
  until their text cannot be read.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from . import render
from .inspection import Inspection
from .render.profiles import channel_order, profile_heatmap

#: The profile views a user can pick: (label, value).
PROFILE_VIEWS: tuple[tuple[str, str], ...] = (
    ("heat map, channels sorted by their mean", "mean"),
    ("heat map, channels in index order", "index"),
    ("lines, channels sorted by their mean (up to 3 images)", "lines"),
)
DEFAULT_PROFILE_VIEW = "mean"
#: More lines than this over ~100+ channels of 0/1 gates are a tangle: the heat map is drawn instead.
MAX_LINE_ROWS = 3
#: Lines are drawn over at most this many points (bins of consecutive channels averaged).
LINE_POINTS = 128
PROFILE_WIDTH = 720
COLUMN_FONT = 11  # px: legible at 1:1 on screen


def profile_view(matrix: np.ndarray, names: Sequence[str], block: str, kind: str,
                 view: str = DEFAULT_PROFILE_VIEW) -> Image.Image:
    """One block's channel weights of the images (``matrix`` ``[images, C]``), as ``view``:
    ``"mean"`` / ``"index"`` a heat map with channels sorted by their mean over the images / in
    index order; ``"lines"`` one line per image (channels sorted by mean), drawn only for up to
    :data:`MAX_LINE_ROWS` images (the heat map sorted by mean otherwise)."""
    if view not in {v for _, v in PROFILE_VIEWS}:
        raise ValueError(f"view must be one of {[v for _, v in PROFILE_VIEWS]}, got {view!r}")
    c = int(np.shape(matrix)[1])
    title = f"{block} ({kind}): channel weights per image, C={c}"
    if view == "lines" and len(names) <= MAX_LINE_ROWS:
        return _profile_lines(np.asarray(matrix, dtype=np.float64), names, title)
    order = "index" if view == "index" else "mean"
    if view == "lines":  # too many images for lines: say why the heat map is shown instead
        title += f" (lines need {MAX_LINE_ROWS} images or fewer)"
    return profile_heatmap(matrix, names, title=title, order=order, width=PROFILE_WIDTH,
                           item="channel", mean_row="mean of the images")


def keep_profiles(names: Sequence[str], kinds: Mapping[str, str],
                  mats: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """What the view control redraws from: the image names, each block's kind and its
    ``[images, C]`` matrix as float32 (8 images of a ResNet-50: ~0.5 MB)."""
    return {"names": [str(n) for n in names], "kinds": dict(kinds),
            "mats": {k: np.asarray(v, dtype=np.float32) for k, v in mats.items()}}


def _profile_lines(matrix: np.ndarray, names: Sequence[str], title: str) -> Image.Image:
    """Lines over the channels sorted by their mean (bins averaged beyond :data:`LINE_POINTS`)."""
    m = matrix[:, channel_order(matrix, "mean")]
    c = m.shape[1]
    step = max(1, math.ceil(c / LINE_POINTS))
    starts = list(range(0, c, step))
    binned = np.add.reduceat(m, starts, axis=1) / np.diff(starts + [c])
    series = {str(n): binned[i].tolist() for i, n in enumerate(names)}
    what = "rank by mean" if step == 1 else f"rank by mean, {step}-channel bins"
    return render.stats_along_depth(series, title=f"{title} ({what})", labels=[str(s) for s in starts],
                                    size=(PROFILE_WIDTH, 300))


# ----------------------------------------------------------------------------------------------
# Compare variants: charts for the columns


def column_width(n_columns: int) -> int:
    """Width in px of a Compare-variants column's chart at a 1400 px window (what the browser
    shows it at: drawing it wider only makes it shrink, with its text)."""
    n = max(1, int(n_columns))
    # the app's content is ~1240 px wide there; columns keep a 16 px gap and ~20 px of padding
    return int(min(640, max(200, (1240 - 16 * (n - 1)) // n - 20)))


def column_chart(result: Inspection, block: str | None, folder: Path, width: int) -> str | None:
    """The selected block's channel chart for a column ``width`` px wide (None: no such block)."""
    if block not in {b.name for b in result.channel_blocks}:
        return None
    b = result.block(block)
    height = max(160, min(240, int(width * 0.65)))
    im = render.channel_bar_chart(b.channel, title=f"{b.name} ({b.kind}) · {b.channel.size} ch", size=(width, height),
                                  font_size=COLUMN_FONT, top_k=5 if width >= 300 else 3)
    folder.mkdir(parents=True, exist_ok=True)
    return _save(im, folder / f"column_channels_{width}.png")


def column_overview(result: Inspection, folder: Path, width: int) -> str:
    """The depth overview for a column ``width`` px wide (no mean±std column when narrow)."""
    im = render.depth_overview([(b.name, b.channel) for b in result.channel_blocks], width=width,
                               row_height=14, show_stats=width >= 400)
    folder.mkdir(parents=True, exist_ok=True)
    return _save(im, folder / f"column_overview_{width}.png")


def _save(image: Image.Image, path: Path) -> str:
    path.write_bytes(render.to_png_bytes(image))
    return str(path)
