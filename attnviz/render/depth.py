"""Charts along a model's depth: the blocks x channels gate image (:func:`depth_overview`) and
line charts of per-block statistics (:func:`stats_along_depth`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .chart_axes import _CB_W, _as_1d, _draw_colorbar, _label_colorbar, _nice_step, _resample_row
from .colormaps import _AXIS, _BLACK, _GRID, _MUTED, _PALETTE, _TEXT, _WHITE, RGB, _to_index, colormap_lut
from .maps import _check_size
from .text import _fit_text, _line_height, _put_text, _text_size

__all__ = ["depth_overview", "stats_along_depth"]


# --------------------------------------------------------------------------- #
# depth overview
# --------------------------------------------------------------------------- #
_OVERVIEW_PAD = 4
_CB_GAP = 10  # between the mean±std column and the colorbar


@dataclass(frozen=True)
class _OverviewLayout:
    """Columns and rows of the depth overview: block names | strip | mean±std | colorbar."""

    font_size: int
    label_w: int  # block name column
    strip_x: int
    strip_w: int
    stats_x: int  # right edge of the mean±std text
    cb_x: int
    top: int  # first row of the strip
    rows_h: int  # height of the strip (blocks x row height)
    body_h: int  # height of the colorbar (at least room for its three labels)
    height: int


def _overview_layout(names: list[str], stats: list[str], width: int, n_rows: int, row_height: int,
                     font_size: int, show_stats: bool) -> _OverviewLayout:
    fs = font_size
    lh = _line_height(fs)
    label_w = min(max(_text_size(s, fs)[0] for s in names), max(40, width // 4)) + 8
    stats_w = (max(_text_size(s, fs)[0] for s in stats + ["mean±std"]) + 10) if show_stats else 0
    cb_label_w = _text_size("0.5", fs)[0] + 6
    strip_x = _OVERVIEW_PAD + label_w
    strip_w = width - strip_x - stats_w - _CB_GAP - _CB_W - cb_label_w - _OVERVIEW_PAD
    if strip_w < 16:
        raise ValueError(f"width {width} is too small for the overview")
    top = lh + 6
    rows_h = n_rows * row_height
    body_h = max(rows_h, 3 * lh + 6)
    return _OverviewLayout(fs, label_w, strip_x, strip_w, strip_x + strip_w + stats_w - 2,
                           strip_x + strip_w + stats_w + _CB_GAP, top, rows_h, body_h, top + body_h + 16)


def _empty_overview(width: int, font_size: int) -> Image.Image:
    msg = "no channel attention in this model"
    w = max(width, _text_size(msg, font_size)[0] + 16)
    img = Image.new("RGB", (w, max(_line_height(font_size) + 16, 32)), _WHITE)
    _put_text(img, (w / 2, img.height / 2), msg, font_size, _MUTED, "mm")
    return img


def _paint_strip(canvas: np.ndarray, rows: list[np.ndarray], lay: _OverviewLayout, lut: np.ndarray,
                 row_height: int, sort_channels: bool) -> None:
    """Each block's gates resampled to the strip width and coloured on the fixed scale 0..1, one
    band of ``row_height`` rows per block (an empty block stays white)."""
    n, strip_w = len(rows), lay.strip_w
    mat = np.zeros((n, strip_w), dtype=np.float32)
    valid = np.ones(n, dtype=bool)
    for i, r in enumerate(rows):
        r = np.nan_to_num(r, nan=0.0, posinf=1.0, neginf=0.0)
        if r.size == 0:
            valid[i] = False
            continue
        if sort_channels:
            r = -np.sort(-r)
        mat[i] = _resample_row(np.clip(r, 0.0, 1.0), strip_w)
    colors = lut[_to_index(mat)]  # [n, strip_w, 3]
    colors[~valid] = 255
    strip = np.repeat(colors, row_height, axis=0)
    if row_height >= 6:  # thin white separators between blocks
        strip[row_height - 1 :: row_height] = 255
    canvas[lay.top : lay.top + lay.rows_h, lay.strip_x : lay.strip_x + strip_w] = strip


def _label_overview(img: Image.Image, lay: _OverviewLayout, names: list[str], stats: list[str], row_height: int,
                    sort_channels: bool, show_stats: bool) -> None:
    """Column heads, block names and mean±std per row (thinned on very short rows), colorbar
    labels and the footnote."""
    fs, lh, width, H = lay.font_size, _line_height(lay.font_size), img.width, lay.height
    head = "channels (sorted by gate value)" if sort_channels else "channels (index order)"
    if not show_stats:
        head = "channels, sorted" if sort_channels else "channels"
    _put_text(img, (lay.strip_x + lay.strip_w / 2, 2), _fit_text(head, fs, lay.strip_w), fs, _MUTED, "mt")
    if show_stats:
        _put_text(img, (lay.stats_x, 2), "mean±std", fs, _MUTED, "rt")
    _put_text(img, (_OVERVIEW_PAD, 2), "block", fs, _MUTED, "lt")
    every = max(1, math.ceil((lh + 1) / row_height))
    for i, (name, st) in enumerate(zip(names, stats)):
        if i % every:
            continue
        cy = lay.top + i * row_height + (row_height - (1 if row_height >= 6 else 0)) / 2
        _put_text(img, (_OVERVIEW_PAD, cy), _fit_text(name, fs, lay.label_w - 6), fs, _TEXT, "lm")
        if show_stats:
            _put_text(img, (lay.stats_x, cy), st, fs, _TEXT, "rm")
    _label_colorbar(img, lay.cb_x, lay.top, lay.body_h, fs)
    foot = f"{len(names)} blocks, gates on a fixed 0..1 scale"
    if show_stats:
        _put_text(img, (lay.strip_x + lay.strip_w / 2, H - 2), foot, fs, _MUTED, "mb")
    else:  # narrow: centred on the whole image so it is not cut at an edge
        _put_text(img, (width / 2, H - 2), _fit_text(foot, fs, width - 8), fs, _MUTED, "mb")


def depth_overview(
    channel_weights: Sequence[tuple[str, np.ndarray]],
    *,
    width: int = 640,
    row_height: int = 14,
    colormap: str = "viridis",
    sort_channels: bool = True,
    show_stats: bool = True,
) -> Image.Image:
    """Blocks x channels image of channel gates for a whole model.

    One row per ``(name, weights)`` block, top to bottom: the block name at the
    left, the block's gate values (sorted descending if ``sort_channels``, else
    in channel order) resampled to a common strip width (area average when
    there are more channels than pixels, nearest otherwise) and coloured with
    ``colormap`` on the fixed scale 0..1, then ``mean±std`` of the block's
    gates.  A colorbar with 0 / 0.5 / 1 labels sits at the far right.  An empty
    list gives a small image saying "no channel attention in this model".
    ``show_stats=False`` leaves out the ``mean±std`` column (a narrow overview keeps its width
    for the strip) and shortens the column head.

    Returns:
        RGB image ``width`` wide; its height grows with the number of blocks.
    """
    lut = colormap_lut(colormap)
    items = list(channel_weights)
    width = int(width)
    row_height = int(row_height)
    if row_height < 2:
        raise ValueError(f"row_height must be >= 2, got {row_height}")
    fs = int(min(max(row_height - 3, 8), 13))
    if not items:
        return _empty_overview(width, fs)
    names = [str(name) for name, _ in items]
    rows = [_as_1d(wts) for _, wts in items]
    stats: list[str] = []
    for r in rows:
        f = r[np.isfinite(r)]
        stats.append(f"{f.mean():.2f}±{f.std():.2f}" if f.size else "–")
    lay = _overview_layout(names, stats, width, len(items), row_height, fs, show_stats)
    canvas = np.full((lay.height, width, 3), 255, dtype=np.uint8)
    _paint_strip(canvas, rows, lay, lut, row_height, sort_channels)
    _draw_colorbar(canvas, lut, lay.cb_x, lay.top, lay.body_h)
    img = Image.fromarray(canvas)
    _label_overview(img, lay, names, stats, row_height, sort_channels, show_stats)
    return img


# --------------------------------------------------------------------------- #
# line chart along depth
# --------------------------------------------------------------------------- #
_FS_TITLE, _FS_TICK = 13, 10
_INNER = 8  # px between the y axis and the first point (and the last point and the right edge)

_LegendEntry = tuple[int, int, str, RGB, int]  # x, y, text, colour, series index


@dataclass(frozen=True)
class _LinePlot:
    """Plot area of the line chart and its data -> pixel mapping."""

    x0: int
    y0: int
    pw: int
    ph: int
    n: int  # points along x
    t_lo: float  # y range: the outer ticks
    t_hi: float

    def px(self, i: float) -> float:
        if self.n == 1:
            return self.x0 + self.pw / 2
        return self.x0 + _INNER + i * (self.pw - 2 * _INNER) / (self.n - 1)

    def py(self, v: float) -> float:
        return self.y0 + self.ph - (v - self.t_lo) / (self.t_hi - self.t_lo) * self.ph


@dataclass(frozen=True)
class _XTicks:
    text: list[str]
    rotate: bool  # labels turned by 90 degrees
    every: int  # label every n-th point
    extent: int  # px the labels take under the axis


def _draw_marker(draw: ImageDraw.ImageDraw, x: float, y: float, kind: int, color: RGB, r: int = 3) -> None:
    """Series marker ``kind`` (cycling circle, square, triangle, diamond) centred at ``(x, y)``."""
    kind %= 4
    if kind == 0:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    elif kind == 1:
        draw.rectangle((x - r, y - r, x + r, y + r), fill=color)
    elif kind == 2:
        draw.polygon([(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)], fill=color)
    else:
        draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=color)


def _place_legend(names: list[str], W: int, y: int) -> tuple[list[_LegendEntry], int]:
    """Legend entries in rows under the title, wrapping at the right edge; returns them and the
    first row below the legend."""
    lh = _line_height(_FS_TICK)
    x, line_y = 8, y
    placed: list[_LegendEntry] = []
    for i, nm in enumerate(names):
        txt = _fit_text(nm, _FS_TICK, W // 2)
        ew = 22 + _text_size(txt, _FS_TICK)[0] + 12
        if x + ew > W - 4 and x > 8:
            x, line_y = 8, line_y + lh + 3
        placed.append((x, line_y, txt, _PALETTE[i % len(_PALETTE)], i))
        x += ew
    return placed, (line_y + lh + 6 if placed else y)


def _y_ticks(data: list[np.ndarray]) -> tuple[float, float, list[float], list[str]]:
    """The y range (outer ticks) and "nice" ticks with their labels spanning the finite data (a
    constant or empty series gets a small range)."""
    finite = np.concatenate([d[np.isfinite(d)] for d in data]) if data else np.zeros(0)
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        padv = max(abs(hi) * 0.05, 0.05)
        lo, hi = lo - padv, hi + padv
    step, dec = _nice_step(hi - lo, 5)
    t_lo = math.floor(lo / step + 1e-9) * step
    t_hi = math.ceil(hi / step - 1e-9) * step
    if t_hi <= t_lo:
        t_hi = t_lo + step
    yticks = [t_lo + i * step for i in range(int(round((t_hi - t_lo) / step)) + 1)]
    ytick_txt = [f"{t:.{dec}f}" for t in yticks]
    return t_lo, t_hi, yticks, ["0" if s.strip("-0.") == "" else s for s in ytick_txt]


def _x_ticks(labels: Sequence[str] | None, n: int, plot_w: int, H: int) -> _XTicks:
    """Horizontal tick labels if they fit side by side, else rotated by 90 degrees (only given
    ``labels``; block indices stay horizontal) and thinned."""
    lh = _line_height(_FS_TICK)
    tick_text = [str(s) for s in labels] if labels is not None else [str(i) for i in range(n)]
    dx = (plot_w - 16) / max(1, n - 1) if n > 1 else plot_w
    max_tw = max(_text_size(s, _FS_TICK)[0] for s in tick_text) if tick_text else 0
    rotate = labels is not None and max_tw + 6 > dx
    if rotate:
        tick_text = [_fit_text(s, _FS_TICK, int(H * 0.3)) for s in tick_text]
        extent = max(_text_size(s, _FS_TICK)[0] for s in tick_text)
        every = max(1, math.ceil((lh + 2) / max(dx, 1e-9)))
    else:
        extent = lh
        every = max(1, math.ceil((max_tw + 8) / max(dx, 1e-9)))
    return _XTicks(tick_text, rotate, every, extent)


def _draw_axes(img: Image.Image, draw: ImageDraw.ImageDraw, plot: _LinePlot, yticks: list[float],
               ytick_txt: list[str], xt: _XTicks) -> None:
    """Horizontal grid lines with y ticks and values, both axes, x ticks and labels."""
    x0, y0, pw, ph = plot.x0, plot.y0, plot.pw, plot.ph
    for t, s in zip(yticks, ytick_txt):
        yy = int(round(plot.py(t)))
        draw.line((x0, yy, x0 + pw, yy), fill=_GRID)
        draw.line((x0 - 4, yy, x0 - 1, yy), fill=_AXIS)
        _put_text(img, (x0 - 6, yy), s, _FS_TICK, _TEXT, "rm")
    draw.line((x0 - 1, y0, x0 - 1, y0 + ph), fill=_AXIS)
    draw.line((x0 - 1, y0 + ph, x0 + pw, y0 + ph), fill=_AXIS)
    for i in range(0, plot.n, xt.every):
        xx = int(round(plot.px(i)))
        draw.line((xx, y0 + ph + 1, xx, y0 + ph + 3), fill=_AXIS)
        if i < len(xt.text):
            _put_text(img, (xx, y0 + ph + 5), xt.text[i], _FS_TICK, _TEXT, "mt", angle=90 if xt.rotate else 0)


def _draw_series(draw: ImageDraw.ImageDraw, plot: _LinePlot, data: list[np.ndarray]) -> None:
    """One polyline per series (NaN breaks it) with a marker on every finite point."""
    for si, d in enumerate(data):
        col = _PALETTE[si % len(_PALETTE)]
        pts = [(plot.px(i), plot.py(v)) if np.isfinite(v) else None for i, v in enumerate(d)]
        seg: list[tuple[float, float]] = []
        for p in pts + [None]:
            if p is None:
                if len(seg) >= 2:
                    draw.line(seg, fill=col, width=2)
                seg = []
            else:
                seg.append(p)
        for p in pts:
            if p is not None:
                _draw_marker(draw, p[0], p[1], si, col)


def _draw_line_legend(img: Image.Image, draw: ImageDraw.ImageDraw, placed: list[_LegendEntry]) -> None:
    lh = _line_height(_FS_TICK)
    for lx, ly, txt, col, i in placed:
        cy = ly + lh / 2
        draw.line((lx, cy, lx + 16, cy), fill=col, width=2)
        _draw_marker(draw, lx + 8, cy, i, col)
        _put_text(img, (lx + 22, ly), txt, _FS_TICK, _TEXT, "lt")


def stats_along_depth(
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (640, 280),
    labels: Sequence[str] | None = None,
) -> Image.Image:
    """Line chart of per-depth statistics, one polyline per series.

    x is the block index along depth (tick labels from ``labels`` when given,
    rotated by 90 degrees and thinned when they would not fit side by side);
    y is autoscaled to "nice" ticks.  Series get distinct colours from a fixed
    palette (tab10) and distinct markers, listed in a legend row under the
    title.  NaN values leave gaps in the line.

    Returns:
        RGB image of exactly ``size``.
    """
    W, H = _check_size(size)
    if W < 160 or H < 120:
        raise ValueError(f"size must be at least (160, 120), got {size!r}")
    names = [str(k) for k in series.keys()]
    data = [np.asarray(list(v), dtype=np.float64).reshape(-1) for v in series.values()]
    n = max([d.size for d in data] + [len(labels) if labels is not None else 0, 1])
    lh = _line_height(_FS_TICK)
    img = Image.new("RGB", (W, H), _WHITE)
    draw = ImageDraw.Draw(img)
    y = 4
    if title:
        _put_text(img, (W / 2, y), _fit_text(title, _FS_TITLE, W - 8), _FS_TITLE, _BLACK, "mt")
        y += _line_height(_FS_TITLE) + 4
    placed, y = _place_legend(names, W, y)
    top = y + 4
    t_lo, t_hi, yticks, ytick_txt = _y_ticks(data)
    left = 6 + max(_text_size(s, _FS_TICK)[0] for s in ytick_txt) + 8 + ((lh + 4) if ylabel else 0)
    right = 12
    xt = _x_ticks(labels, n, W - left - right, H)
    xlabel = "" if labels is not None else "block index (depth)"
    bottom = 4 + xt.extent + 4 + ((lh + 4) if xlabel else 0)
    pw, ph = W - left - right, H - top - bottom
    if pw < 20 or ph < 20:
        raise ValueError(f"size {size!r} leaves no room for the plot")
    plot = _LinePlot(left, top, pw, ph, n, t_lo, t_hi)
    _draw_axes(img, draw, plot, yticks, ytick_txt, xt)
    if xlabel:
        _put_text(img, (left + pw / 2, H - 3), xlabel, _FS_TICK, _MUTED, "mb")
    if ylabel:
        _put_text(img, (4, top + ph / 2), _fit_text(ylabel, _FS_TICK, ph), _FS_TICK, _MUTED, "lm", angle=90)
    _draw_series(draw, plot, data)
    _draw_line_legend(img, draw, placed)
    return img
