"""Profile heat map: rows (images, classes, variants) x channels of one block's gates.

Drawn straight into numpy arrays like the rest of :mod:`attnviz.render` (no matplotlib figure;
a few milliseconds per call).  It uses the depth overview's colour scale (a colormap on the fixed
gate range 0..1, with the same colorbar), so a value reads the same in both views.

Why a heat map and not one line per row: sigmoid gates mostly sit near 0 or 1, so a line per
image jumps between the two and several lines become a solid tangle; a row of colours per image
stays readable for any number of rows and for 2048 channels.

(The module is not called ``heatmap``: that name is :func:`attnviz.render.heatmap`, the coloured
spatial map, and a submodule of the same name would replace it on the package when imported.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from PIL import Image

from .chart_axes import _CB_W, _draw_colorbar, _label_colorbar, _nice_step
from .colormaps import _AXIS, _BLACK, _MUTED, _TEXT, _to_index, colormap_lut
from .maps import _check_size
from .text import _fit_text, _line_height, _put_text, _text_size

__all__ = ["ChannelOrder", "channel_order", "profile_heatmap"]

ChannelOrder = Literal["mean", "index"]

_FS_TITLE = 13
_FS = 11  # labels and ticks: legible at 1:1 on screen
_PAD = 6
_CB_GAP = 10
_MEAN_GAP = 5  # white gap between the data rows and the mean row
_MISSING = (215, 215, 215)  # colour of a NaN cell


def _as_matrix(matrix: np.ndarray) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"matrix must be [rows, channels] with both > 0 (got shape {np.shape(matrix)})")
    return m


def channel_order(matrix: np.ndarray, order: ChannelOrder = "mean") -> np.ndarray:
    """Column indices of ``matrix`` ``[rows, C]`` in display order.

    ``"mean"``: by the mean over the rows, highest first (ties keep channel order; NaN counts
    as missing, an all-NaN channel goes last); ``"index"``: ``0..C-1``.
    """
    m = _as_matrix(matrix)
    if order == "index":
        return np.arange(m.shape[1])
    if order != "mean":
        raise ValueError(f"order must be 'mean' or 'index', got {order!r}")
    finite = np.isfinite(m)
    counts = finite.sum(axis=0)
    sums = np.where(finite, m, 0.0).sum(axis=0)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), -np.inf)
    return np.argsort(-means, kind="stable")


def _columns(values: np.ndarray, strip_w: int) -> np.ndarray:
    """``[rows, C]`` -> ``[rows, strip_w]``: whole pixels per channel when they fit (every channel
    equally wide), else area averages of consecutive channels (NaN-aware)."""
    c = values.shape[1]
    if c <= strip_w:
        return np.repeat(values, strip_w // c, axis=1)
    x = np.arange(strip_w, dtype=np.int64)
    starts = (x * c) // strip_w
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=1)
    counts = np.add.reduceat(finite.astype(np.int64), starts, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _row_means(m: np.ndarray) -> list[str]:
    out = []
    for r in m:
        f = r[np.isfinite(r)]
        out.append(f"{f.mean():.2f}" if f.size else "–")
    return out


def _nanmean_rows(m: np.ndarray) -> np.ndarray:
    """Mean over the rows per column, ignoring NaN (NaN where a column has no value)."""
    finite = np.isfinite(m)
    mean = np.where(finite, m, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
    mean[~finite.any(axis=0)] = np.nan
    return mean


@dataclass(frozen=True)
class _HeatmapLayout:
    """Columns (labels | strip | means | colorbar) and rows of the profile heat map."""

    font_size: int
    label_w: int
    strip_x: int
    strip_w: int  # a whole number of px per channel when the channels fit
    stats_w: int
    cb_x: int
    top: int  # first row of the strip
    y_rows: list[int]  # top of each row (the mean row after a small gap)
    row_height: int
    body_h: int  # rows, gap and mean row
    bar_h: int  # colorbar: at least room for its three labels
    height: int


def _heatmap_layout(labels: list[str], stats: list[str], n_channels: int, n_data: int, width: int,
                    row_height: int, title: str, with_mean_row: bool) -> _HeatmapLayout:
    fs = _FS if row_height >= 14 else max(8, row_height - 3)
    lh = _line_height(fs)
    label_w = min(max(_text_size(s, fs)[0] for s in labels), max(48, width // 4)) + 8
    stats_w = max(_text_size(s, fs)[0] for s in stats + ["mean"]) + 10
    cb_label_w = _text_size("0.5", fs)[0] + 6
    strip_x = _PAD + label_w
    avail = width - strip_x - stats_w - _CB_GAP - _CB_W - cb_label_w - _PAD
    if avail < 24:
        raise ValueError(f"width {width} is too small for the heat map")
    c = n_channels
    strip_w = (avail // c) * c if c <= avail else avail
    top = _PAD + ((_line_height(_FS_TITLE) + 6) if title else 0) + lh + 4
    y_rows = [top + i * row_height for i in range(n_data)]
    if with_mean_row:
        y_rows.append(top + n_data * row_height + _MEAN_GAP)
    body_h = y_rows[-1] + row_height - top
    bar_h = max(body_h, 3 * lh + 6)  # a single row still gets a colorbar its 3 labels fit on
    return _HeatmapLayout(fs, label_w, strip_x, strip_w, stats_w, strip_x + strip_w + stats_w + _CB_GAP, top,
                          y_rows, row_height, body_h, bar_h, top + bar_h + 4 + lh + 6 + lh + _PAD)


def _paint_rows(canvas: np.ndarray, shown: np.ndarray, lay: _HeatmapLayout, lut: np.ndarray) -> None:
    """One band of colours per row; NaN cells light grey."""
    vals = _columns(shown, lay.strip_w)
    missing = ~np.isfinite(vals)
    colors = lut[_to_index(np.clip(np.nan_to_num(vals, nan=0.0), 0.0, 1.0))]
    colors[missing] = _MISSING
    sep = 1 if lay.row_height >= 8 else 0  # thin white line between rows
    for y, row in zip(lay.y_rows, colors):
        canvas[y : y + lay.row_height - sep, lay.strip_x : lay.strip_x + lay.strip_w] = row[None, :, :]


def profile_heatmap(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    *,
    title: str = "",
    order: ChannelOrder = "mean",
    width: int = 720,
    row_height: int = 22,
    colormap: str = "viridis",
    mean_row: str | None = "mean",
    item: str = "channel",
) -> Image.Image:
    """Heat map of ``matrix`` ``[rows, C]`` (gate values in 0..1): one row per label, one column
    per channel, coloured with ``colormap`` on the fixed scale 0..1 (the depth overview's).

    Channels are shown in :func:`channel_order` ``order``.  Each row is labelled at the left and
    its mean is printed at the right; with ``mean_row`` an extra row under a small gap shows the
    mean over the rows (labelled ``mean_row``).  When the channels fit, each takes the same whole
    number of pixels; with more channels than pixels a pixel column averages consecutive channels
    (of the display order).  NaN cells (a class without images) are drawn light grey.

    Returns:
        RGB image ``width`` wide; its height grows with the number of rows.
    """
    m = _as_matrix(matrix)
    labels = [str(s) for s in row_labels]
    if len(labels) != m.shape[0]:
        raise ValueError(f"{m.shape[0]} rows but {len(labels)} row labels")
    width, row_height = _check_size((width, row_height), "(width, row_height)")
    lut = colormap_lut(colormap)
    shown = m[:, channel_order(m, order)]
    if mean_row is not None:
        shown = np.vstack([shown, _nanmean_rows(shown)[None, :]])
        labels = labels + [str(mean_row)]
    stats = _row_means(shown)
    lay = _heatmap_layout(labels, stats, m.shape[1], m.shape[0], width, row_height, title, mean_row is not None)
    canvas = np.full((lay.height, width, 3), 255, dtype=np.uint8)
    _paint_rows(canvas, shown, lay, lut)
    _draw_colorbar(canvas, lut, lay.cb_x, lay.top, lay.bar_h)
    img = Image.fromarray(canvas)
    _draw_text(img, lay, labels, stats, title, order, item)
    _draw_ticks(img, lay, m.shape[1], order, item)
    _label_colorbar(img, lay.cb_x, lay.top, lay.bar_h, lay.font_size)
    return img


def _draw_text(img: Image.Image, lay: _HeatmapLayout, labels: list[str], stats: list[str], title: str,
               order: ChannelOrder, item: str) -> None:
    """Title, column heads, row labels and row means."""
    W, fs, top, row_height = img.width, lay.font_size, lay.top, lay.row_height
    if title:
        _put_text(img, (W / 2, _PAD), _fit_text(title, _FS_TITLE, W - 8), _FS_TITLE, _BLACK, "mt")
    head = f"{item}s sorted by mean (high → low)" if order == "mean" else f"{item}s in index order"
    lh = _line_height(fs)
    _put_text(img, (lay.strip_x + lay.strip_w / 2, top - 4), _fit_text(head, fs, lay.strip_w), fs, _MUTED, "mb")
    stats_x = lay.strip_x + lay.strip_w + lay.stats_w - 2
    _put_text(img, (stats_x, top - 4), "mean", fs, _MUTED, "rb")
    every = max(1, math.ceil((lh + 1) / row_height))  # thin the labels of very short rows
    for i, (name, st, y) in enumerate(zip(labels, stats, lay.y_rows)):
        if i % every and i != len(labels) - 1:
            continue
        cy = y + (row_height - 1) / 2
        _put_text(img, (_PAD, cy), _fit_text(name, fs, lay.label_w - 6), fs, _TEXT, "lm")
        _put_text(img, (stats_x, cy), st, fs, _TEXT, "rm")


def _draw_ticks(img: Image.Image, lay: _HeatmapLayout, c: int, order: ChannelOrder, item: str) -> None:
    """Tick marks and labels under the strip: channel index (index order) or rank (mean order)."""
    fs, strip_x, strip_w, y0 = lay.font_size, lay.strip_x, lay.strip_w, lay.top + lay.body_h
    lab_w = _text_size(str(c), fs)[0] + 12
    step, _ = _nice_step(c, max(1, min(8, strip_w // max(lab_w, 1))))
    step = max(1, int(step))
    last_x1 = -(10**9)
    for i in range(0, c, step):
        x = int(strip_x + (i + 0.5) * strip_w / c)
        img.paste(_AXIS, (x, y0 + 1, x + 1, y0 + 4))
        label = str(i)
        tw = _text_size(label, fs)[0]
        if x - tw / 2 <= last_x1 + 6 or x + tw / 2 > strip_x + strip_w + 20:
            continue
        last_x1 = _put_text(img, (x, y0 + 4), label, fs, _TEXT, "mt")[2]
    what = f"rank by mean, C={c}" if order == "mean" else f"{item} index, C={c}"
    if c > strip_w:
        what += f", ~{c / strip_w:.1f} {item}s per pixel averaged"
    _put_text(img, (strip_x + strip_w / 2, img.height - _PAD), _fit_text(what, fs, img.width - 8), fs, _MUTED, "mb")
