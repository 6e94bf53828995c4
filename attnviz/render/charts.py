"""The channel bar chart: one block's channel gate values as bars, the top-k highlighted.

Drawn as a palette-index array (1 byte per pixel) turned into RGB by PIL's C palette
conversion, then labelled with cached text masks: about a millisecond for 2048 channels.
Where things go is decided once, by the chart's layout (:func:`channel_bar_layout`), which
callers can ask for too: it maps a pixel of the chart back to its channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .chart_axes import _as_1d, _column_ranges, _nice_step
from .colormaps import _AXIS, _BLACK, _GRID, _MUTED, _TEXT, _WHITE, RGB, _lighter
from .maps import _check_size
from .text import _fit_text, _line_height, _put_text, _text_size

__all__ = ["ChannelBarLayout", "channel_bar_layout", "channel_bar_chart"]

_MAX_BAR_PX = 48  # widest bar of the channel chart
_Y_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
# palette indices of the chart canvas (the palette itself is built per call from the colours)
_P_WHITE, _P_GRID, _P_AXIS, _P_BAR, _P_LIGHT, _P_HL = range(6)


@dataclass(frozen=True)
class _BarValues:
    """One block's gate values, ordered and ranked for the chart."""

    vals: np.ndarray  # per channel, finite (NaN -> 0, +inf -> 1, -inf -> 0), not clipped
    rank: np.ndarray  # channel indices, largest value first (ties keep channel order)
    order: np.ndarray  # display position -> channel index
    shown: np.ndarray  # bar values in display order, clipped to [0, 1]
    highlight: np.ndarray  # per display position: one of the top-k channels
    legend: list[str]  # "#idx 0.97" per top-k channel, largest first


def _bar_values(vals: np.ndarray, top_k: int, sort: bool) -> _BarValues:
    vals = np.nan_to_num(vals, nan=0.0, posinf=1.0, neginf=0.0)
    n = vals.size
    rank = np.argsort(-vals, kind="stable")
    order = rank if sort else np.arange(n)
    k = int(min(max(int(top_k), 0), n))
    highlight = np.zeros(n, dtype=bool)
    if k:
        if sort:
            highlight[:k] = True
        else:
            highlight[rank[:k]] = True
    legend = [f"#{int(i)} {vals[i]:.2f}" for i in rank[:k]]
    return _BarValues(vals, rank, order, np.clip(vals[order], 0.0, 1.0), highlight, legend)


@dataclass(frozen=True, eq=False)
class ChannelBarLayout:
    """Where :func:`channel_bar_chart` draws its plot, and which channel each pixel column shows.

    The plot area is pixel columns ``x0 .. x1-1`` and rows ``y0 .. y1-1`` of the
    ``width x height`` image; bars stand on row ``y1`` (the x axis; the y axis is column
    ``x0-1``) and a value of 1 reaches row ``y0``.  Display position ``i`` (channel
    ``order[i]``) takes columns ``i*pw/n .. (i+1)*pw/n`` of the ``pw`` wide plot; with more
    channels than columns, consecutive positions share a column (:meth:`column_ranges`).
    ``order`` and ``shown`` are read-only.
    """

    width: int
    height: int
    x0: int
    x1: int
    y0: int
    y1: int
    order: np.ndarray  # display position -> channel index (sorted by value, or 0..n-1)
    shown: np.ndarray  # bar value per display position, clipped to [0, 1]

    def __post_init__(self) -> None:
        self.order.setflags(write=False)
        self.shown.setflags(write=False)

    @property
    def n_channels(self) -> int:
        return int(self.order.size)

    @property
    def plot_width(self) -> int:
        return self.x1 - self.x0

    @property
    def plot_height(self) -> int:
        return self.y1 - self.y0

    def column_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per plot column: first display position drawn there and how many positions share it
        (``n`` positions spread over the plot width, every column gets at least one)."""
        return _column_ranges(self.n_channels, self.plot_width)

    def channel_at(self, x: float, y: float | None = None) -> int | None:
        """The channel (index in the original channel order) drawn at pixel ``(x, y)`` of the
        chart image; None outside the plot area (``y=None``: only ``x`` is checked).

        Pixel column ``c`` covers ``c <= x < c + 1``.  A column belongs to the channel whose slot
        it lies in, from the baseline to the top of the plot: the white above a bar and the gap
        beside it pick that bar, so a click anywhere over a thin bar finds it.  Where several
        channels share a column, it is the one whose bar is drawn there: the largest of them
        (the first in display order on ties), which sets the column's height and is the one
        highlighted when the column shows a top-k channel.
        """
        if not math.isfinite(x) or (y is not None and not math.isfinite(y)):
            return None
        col = math.floor(x) - self.x0
        if not 0 <= col < self.plot_width:
            return None
        if y is not None and not self.y0 <= math.floor(y) < self.y1:
            return None
        starts, counts = self.column_ranges()
        first, count = int(starts[col]), int(counts[col])
        pos = first + int(np.argmax(self.shown[first : first + count])) if count > 1 else first
        return int(self.order[pos])


def _prepare(weights: np.ndarray, top_k: int, sort: bool, size: tuple[int, int], title: str,
             font_size: int) -> tuple[_BarValues, ChannelBarLayout]:
    """The chart's values and layout; raises on empty weights, then on a bad size."""
    vals = _as_1d(weights)
    if vals.size == 0:
        raise ValueError("weights is empty")
    W, H = _check_size(size)
    if W < 160 or H < 100:
        raise ValueError(f"size must be at least (160, 100), got {size!r}")
    values = _bar_values(vals, top_k, sort)
    return values, _plot_layout(values, W, H, title, font_size, size)


def _plot_layout(values: _BarValues, W: int, H: int, title: str, font_size: int,
                 size: tuple[int, int]) -> ChannelBarLayout:
    """Margins around the plot: y tick labels at the left, the title on top, x tick labels and
    the axis label below, the top-k legend box (as wide as its longest entry) at the right."""
    fs_tick = int(font_size)
    fs_title = fs_tick + 3
    lh_tick = _line_height(fs_tick)
    leg_w = 0
    if values.legend:  # swatch + padding beside the widest entry
        leg_w = max(_text_size(s, fs_tick)[0] for s in values.legend + ["top-9"]) + 10 + 4 + 12
    left = _text_size("0.75", fs_tick)[0] + 10
    top = (_line_height(fs_title) + 10) if title else 10
    bottom = 4 + lh_tick + 3 + lh_tick + 4
    right = (leg_w + 14) if values.legend else 12
    pw, ph = W - left - right, H - top - bottom
    if pw < 20 or ph < 20:
        raise ValueError(f"size {size!r} leaves no room for the plot")
    return ChannelBarLayout(W, H, left, left + pw, top, top + ph, values.order, values.shown)


def channel_bar_layout(
    weights: np.ndarray,
    *,
    title: str = "",
    top_k: int = 5,
    size: tuple[int, int] = (640, 240),
    sort: bool = True,
    font_size: int = 10,
) -> ChannelBarLayout:
    """The layout :func:`channel_bar_chart` uses for the same arguments (its colours aside):
    the plot box and the channel under each pixel column (:meth:`ChannelBarLayout.channel_at`),
    e.g. to turn a click on the chart image into a channel.

    It takes the weights, not just their number: with ``sort`` they decide which channel sits
    where, and the top-k legend at the right (``"#idx 0.97"``) is as wide as its text.

    Raises:
        ValueError: as :func:`channel_bar_chart` (empty weights, a size too small).
    """
    return _prepare(weights, top_k, sort, size, title, font_size)[1]


def _column_heights(layout: ChannelBarLayout, highlight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plot column: bar height in px, height of its full-colour part (the rest is the
    lighter shade), and whether it shows a top-k channel.

    With more channels than columns a column shows the max of its channels, in full colour up
    to their mean.  Otherwise bars fill the middle of their slot: a 1 px gap when slots are
    >= 4 px wide, and at most ``_MAX_BAR_PX`` wide (a handful of channels)."""
    n, pw, ph = layout.n_channels, layout.plot_width, layout.plot_height
    shown = layout.shown
    starts, counts = layout.column_ranges()
    if n > pw:
        col_max = np.maximum.reduceat(shown, starts)
        col_mean = np.add.reduceat(shown, starts) / counts
        col_hl = np.maximum.reduceat(highlight.astype(np.uint8), starts).astype(bool)
        gap = np.zeros(pw, dtype=bool)
    else:
        col_max = shown[starts]
        col_mean = col_max
        col_hl = highlight[starts]
        slot = pw / n
        bar_px = min(slot - 1.0 if slot >= 4 else slot, _MAX_BAR_PX)
        centre = (starts + 0.5) * slot
        # Under 4 px a slot has no gap: a centre band of 1-2 px would miss every column of
        # some channels (a third of 512 channels at 640 px were never drawn).
        gap = (np.abs(np.arange(pw) + 0.5 - centre) > bar_px / 2) if slot >= 4 else np.zeros(pw, dtype=bool)
    h_max = np.rint(col_max * ph).astype(np.int64)
    h_mean = np.where(col_hl, h_max, np.rint(col_mean * ph).astype(np.int64))
    h_max[gap] = 0
    h_mean[gap] = 0
    return h_max, h_mean, col_hl


def _paint_bars(canvas: np.ndarray, layout: ChannelBarLayout, h_max: np.ndarray, h_mean: np.ndarray,
                col_hl: np.ndarray) -> None:
    """Bars and horizontal grid lines into the plot area of the palette-index ``canvas``."""
    x0, y0, pw, ph = layout.x0, layout.y0, layout.plot_width, layout.plot_height
    grid_rows = [ph - int(round(t * ph)) for t in _Y_TICKS[1:]]  # rows inside the plot
    depth = (ph - np.arange(ph, dtype=np.int64))[:, None]  # height above baseline of each row
    # level: 0 above the bar, 1 in its light part, 2 in its full part; +3 for a top-k column
    level = (depth <= h_max[None, :]).view(np.uint8) + (depth <= h_mean[None, :]).view(np.uint8)
    level += (col_hl.astype(np.uint8) * 3)[None, :]
    plot_codes = np.array([_P_WHITE, _P_LIGHT, _P_BAR, _P_WHITE, _P_HL, _P_HL], dtype=np.uint8)
    plot = plot_codes[level]
    for r in grid_rows:
        row = plot[r]
        row[row == _P_WHITE] = _P_GRID
    canvas[y0 : y0 + ph, x0 : x0 + pw] = plot


def _paint_top_k_markers(canvas: np.ndarray, layout: ChannelBarLayout, h_max: np.ndarray, top_k: np.ndarray) -> None:
    """Small downward triangles above the bars of the ``top_k`` display positions (for bars
    too thin to see their colour)."""
    x0, y0, pw, ph, n = layout.x0, layout.y0, layout.plot_width, layout.plot_height, layout.n_channels
    for p in np.unique(((top_k + 0.5) * pw / n).astype(np.int64)):
        p = int(min(p, pw - 1))
        tip = y0 + ph - int(h_max[p]) - 2  # just above the bar
        for d in range(4):  # 7 px wide at its base
            r = tip - d
            if r >= 0:
                canvas[r, max(x0, x0 + p - d) : min(x0 + pw, x0 + p + d + 1)] = _P_HL


def _x_ticks(layout: ChannelBarLayout) -> tuple[list[int], list[int]]:
    """Display positions that get an x tick, and the pixel column of each (its slot's centre)."""
    n, x0, pw = layout.n_channels, layout.x0, layout.plot_width
    xt_step, _ = _nice_step(n, 5 if pw >= 200 else 2)  # a narrow chart: fewer, legible ticks
    xt_step = max(1, int(xt_step))
    xticks = list(range(0, n, xt_step))
    return xticks, [x0 + int((i + 0.5) * pw / n) for i in xticks]


def _paint_axes(canvas: np.ndarray, layout: ChannelBarLayout, xtick_px: list[int]) -> None:
    """The y axis left of the plot, the x axis under it, and their tick marks."""
    x0, y0, pw, ph = layout.x0, layout.y0, layout.plot_width, layout.plot_height
    canvas[y0 : y0 + ph + 1, x0 - 1] = _P_AXIS
    canvas[y0 + ph, x0 - 1 : x0 + pw] = _P_AXIS
    for t in _Y_TICKS:
        r = y0 + ph - int(round(t * ph))
        canvas[r, x0 - 5 : x0 - 1] = _P_AXIS
    for px in xtick_px:
        canvas[y0 + ph + 1 : y0 + ph + 4, px] = _P_AXIS


def _label_axes(img: Image.Image, layout: ChannelBarLayout, xticks: list[int], xtick_px: list[int],
                font_size: int, sort: bool) -> None:
    """Y tick values, x tick labels (skipping those that would touch the previous one or leave
    the image) and the axis label under the plot."""
    x0, y0, pw, ph, W, H = layout.x0, layout.y0, layout.plot_width, layout.plot_height, layout.width, layout.height
    for t in _Y_TICKS:
        r = y0 + ph - int(round(t * ph))
        _put_text(img, (x0 - 7, r), f"{t:g}" if t in (0.0, 1.0) else f"{t:.2f}".rstrip("0"), font_size, _TEXT, "rm")
    last_x1 = -(10**9)
    for i, px in zip(xticks, xtick_px):
        label = str(i)
        tw = _text_size(label, font_size)[0]
        if px - tw / 2 <= last_x1 + 4 or px + tw / 2 > W - 2:
            continue
        last_x1 = _put_text(img, (px, y0 + ph + 4), label, font_size, _TEXT, "mt")[2]
    xlabel = "channels (sorted by weight)" if sort else "channel index"
    xlabel = _fit_text(xlabel + f", n={layout.n_channels}", font_size, W - 8)
    half = _text_size(xlabel, font_size)[0] / 2  # centred under the plot, kept inside a narrow chart
    _put_text(img, (min(max(x0 + pw / 2, 4 + half), W - 4 - half), H - 3), xlabel, font_size, _MUTED, "mb")


def _draw_legend(img: Image.Image, layout: ChannelBarLayout, legend: list[str], font_size: int,
                 highlight_color: RGB) -> None:
    """The top-k box right of the plot (never over the bars): a head, then one swatch and
    ``"#idx value"`` per channel, cut with "…" when the plot is too short for all."""
    lh = _line_height(font_size) + 2
    lx0, y0, W = layout.x1 + 10, layout.y0, layout.width
    max_lines = max(1, (layout.plot_height - 6) // lh - 1)
    lines = legend if len(legend) <= max_lines else legend[: max_lines - 1] + ["…"]
    box_h = 6 + lh * (len(lines) + 1)
    draw = ImageDraw.Draw(img)
    draw.rectangle((lx0, y0, W - 4, y0 + box_h), outline=(190, 190, 190), fill=_WHITE)
    _put_text(img, (lx0 + 5, y0 + 3), f"top-{len(legend)}", font_size, _MUTED, "lt")
    for j, s in enumerate(lines):
        ty = y0 + 3 + lh * (j + 1)
        if s != "…":
            draw.rectangle((lx0 + 5, ty + 2, lx0 + 13, ty + lh - 4), fill=highlight_color)
        _put_text(img, (lx0 + 17, ty), s, font_size, _TEXT, "lt")


def channel_bar_chart(
    weights: np.ndarray,
    *,
    title: str = "",
    top_k: int = 5,
    size: tuple[int, int] = (640, 240),
    sort: bool = True,
    color: RGB = (76, 114, 176),
    highlight_color: RGB = (221, 82, 40),
    font_size: int = 10,
) -> Image.Image:
    """Bar chart of one block's channel gate values (sigmoid outputs in ``[0, 1]``).

    Bars are drawn directly into a numpy array: channel ``i`` (in display order)
    takes pixel columns ``i*pw/n .. (i+1)*pw/n`` of the ``pw`` wide plot area,
    its height is proportional to its value (clipped to ``[0, 1]``).  With more
    channels than columns, a column shows the max of its channels (full colour
    up to their mean, a lighter shade from mean to max).  The ``top_k``
    channels are drawn in ``highlight_color`` and listed in a legend box at the
    right as ``"#idx 0.97"`` (index in the original channel order).

    Args:
        weights: ``[C]`` gate values (any shape with C elements); 1..2048+ channels.
        title: text at the top.
        top_k: how many of the largest channels to highlight (0 for none).
        size: ``(width, height)`` of the returned image.
        sort: show channels sorted by value (descending) instead of by index.
        font_size: pixel size of tick, axis and legend text (the title is 3 px larger); 11+
            for a small chart shown at its natural size, so the text stays legible.

    Returns:
        RGB image of exactly ``size``.
    """
    values, layout = _prepare(weights, top_k, sort, size, title, font_size)
    fs = int(font_size)
    h_max, h_mean, col_hl = _column_heights(layout, values.highlight)
    canvas = np.zeros((layout.height, layout.width), dtype=np.uint8)
    _paint_bars(canvas, layout, h_max, h_mean, col_hl)
    k = len(values.legend)
    if k and not sort and layout.plot_width / layout.n_channels < 6:
        _paint_top_k_markers(canvas, layout, h_max, values.rank[:k])
    xticks, xtick_px = _x_ticks(layout)
    _paint_axes(canvas, layout, xtick_px)
    palette = np.array([_WHITE, _GRID, _AXIS, color, _lighter(color), highlight_color], dtype=np.uint8)
    pimg = Image.fromarray(canvas)
    pimg.putpalette(palette.tobytes(), "RGB")
    img = pimg.convert("RGB")
    _label_axes(img, layout, xticks, xtick_px, fs, sort)
    if title:
        _put_text(img, (layout.width / 2, 4), _fit_text(title, fs + 3, layout.width - 8), fs + 3, _BLACK, "mt")
    if values.legend:
        _draw_legend(img, layout, values.legend, fs, highlight_color)
    return img
