"""Selection attention (SelectiveKernel, ResNeSt's split attention): softmax weights over K
kernel branches per channel, ``[K, C]``, each channel's K weights summing to 1.

Two views: :func:`branch_bar_charts`, one bar chart per branch with channels in index order
(so a channel sits at the same x in every panel), and :func:`branch_stack_chart`, every
channel's split between the branches as one stacked column.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .chart_axes import _column_ranges, _nice_step
from .charts import channel_bar_chart
from .colormaps import _AXIS, _BLACK, _GRID, _MUTED, _TEXT, _WHITE, RGB
from .grid import stack_vertical
from .maps import _check_size
from .text import _fit_text, _line_height, _put_text, _text_size

__all__ = ["BRANCH_COLORS", "branch_bar_charts", "branch_figure", "branch_stack_chart"]

#: One colour per branch (then repeated): tab10's first eight, as the other charts' blue first.
BRANCH_COLORS: tuple[RGB, ...] = (
    (76, 114, 176), (221, 132, 82), (85, 168, 104), (196, 78, 82),
    (129, 114, 179), (147, 120, 96), (218, 139, 195), (140, 140, 140),
)
_Y_TICKS = (0.0, 0.5, 1.0)


def _as_branches(weights: np.ndarray) -> np.ndarray:
    w = weights.detach().cpu().numpy() if hasattr(weights, "detach") else weights
    w = np.nan_to_num(np.asarray(w, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    if w.ndim != 2 or 0 in w.shape:
        raise ValueError(f"branch weights must be [branches, channels] with both > 0, got shape {w.shape}")
    return np.clip(w, 0.0, 1.0)


def branch_bar_charts(weights: np.ndarray, *, title: str = "", size: tuple[int, int] = (640, 160),
                      font_size: int = 10) -> Image.Image:
    """One channel bar chart per branch, stacked top to bottom, each ``size`` (channels in index
    order, no top-k legend, so every panel has the same plot box and channel ``i`` the same x)."""
    w = _as_branches(weights)
    panels = [channel_bar_chart(w[k], title=f"{title} · branch {k}" if title else f"branch {k}", top_k=0,
                                size=size, sort=False, color=BRANCH_COLORS[k % len(BRANCH_COLORS)],
                                font_size=font_size) for k in range(w.shape[0])]
    return stack_vertical(panels)


def _column_shares(w: np.ndarray, pw: int) -> tuple[np.ndarray, np.ndarray]:
    """Per plot column: each branch's share ``[K, pw]`` (the mean over the channels drawn there)
    and whether the column is a gap between bars (slots of 4 px or more keep a 1 px gap)."""
    k, n = w.shape
    starts, counts = _column_ranges(n, pw)
    if n > pw:
        return np.add.reduceat(w, starts, axis=1) / counts, np.zeros(pw, dtype=bool)
    gap = np.zeros(pw, dtype=bool)
    if pw >= 4 * n:  # a 1 px gap closes each slot of 4 px or more: the last column before the next
        gap[:-1] = starts[1:] != starts[:-1]
        gap[-1] = True
    return w[:, starts], gap


def _paint_stack(canvas: np.ndarray, shares: np.ndarray, gap: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Stacked columns into ``canvas`` (RGB) inside ``box`` = (x0, y0, pw, ph): branch 0 at the
    bottom; a pixel row belongs to the branch whose cumulative share it lies under."""
    x0, y0, pw, ph = box
    tops = np.rint(np.cumsum(shares, axis=0) * ph)  # [K, pw] height of each branch's top, px
    height = (ph - np.arange(ph))[:, None, None] - 0.5  # [ph, 1, 1] row centre above the baseline
    branch = (height > tops[None]).sum(axis=1)  # [ph, pw]: how many branches end below this row
    colors = np.array([*(BRANCH_COLORS[i % len(BRANCH_COLORS)] for i in range(shares.shape[0])), _WHITE],
                      dtype=np.uint8)
    plot = colors[np.minimum(branch, shares.shape[0])]
    plot[:, gap] = _WHITE
    for t in _Y_TICKS[1:-1]:
        r = ph - int(round(t * ph))
        row = plot[r]
        row[(row == _WHITE).all(axis=1)] = _GRID
    canvas[y0 : y0 + ph, x0 : x0 + pw] = plot


def _paint_axes_and_swatches(canvas: np.ndarray, box: tuple[int, int, int, int], k: int, fs: int) -> None:
    """The y axis left of the plot, the x axis under it, and one legend swatch per branch at the
    right of the plot (drawn into the array: the text goes on afterwards)."""
    x0, y0, pw, ph = box
    canvas[y0 : y0 + ph + 1, x0 - 1] = _AXIS
    canvas[y0 + ph, x0 - 1 : x0 + pw] = _AXIS
    lh, x = _line_height(fs) + 2, x0 + pw + 12
    for i in range(k):
        canvas[y0 + i * lh + 2 : y0 + (i + 1) * lh - 2, x : x + 9] = BRANCH_COLORS[i % len(BRANCH_COLORS)]


def _label_axes(img: Image.Image, box: tuple[int, int, int, int], n: int, fs: int, xlabel: str) -> None:
    x0, y0, pw, ph = box
    for t in _Y_TICKS:
        _put_text(img, (x0 - 6, y0 + ph - int(round(t * ph))), f"{t:g}", fs, _TEXT, "rm")
    step = max(1, int(_nice_step(n, 5 if pw >= 200 else 2)[0]))
    last = -(10**9)
    for i in range(0, n, step):
        px = x0 + int((i + 0.5) * pw / n)
        tw = _text_size(str(i), fs)[0]
        if px - tw / 2 > last + 4 and px + tw / 2 < img.width - 2:
            last = _put_text(img, (px, y0 + ph + 3), str(i), fs, _TEXT, "mt")[2]
    _put_text(img, (x0 + pw / 2, img.height - 3), _fit_text(xlabel, fs, img.width - 8), fs, _MUTED, "mb")


def _label_legend(img: Image.Image, w: np.ndarray, x: int, y: int, fs: int) -> None:
    """Beside each branch's swatch: its mean weight over the channels."""
    lh = _line_height(fs) + 2
    for k in range(w.shape[0]):
        _put_text(img, (x + 13, y + k * lh), f"branch {k}: mean {w[k].mean():.2f}", fs, _TEXT, "lt")


def stack_plot_box(size: tuple[int, int], *, title: str = "", font_size: int = 10) -> tuple[int, int, int, int]:
    """``(x0, y0, width, height)`` of :func:`branch_stack_chart`'s plot area for these arguments:
    y tick labels at the left, the title on top, x labels below, the branch legend at the right."""
    W, H = _check_size(size)
    fs = int(font_size)
    legend_w = _text_size("branch 0: mean 0.00", fs)[0] + 26
    left, top = _text_size("0.5", fs)[0] + 10, (_line_height(fs + 3) + 10) if title else 10
    pw, ph = W - left - legend_w, H - top - (2 * _line_height(fs) + 10)
    if pw < 20 or ph < 20 or W < 160 or H < 100:
        raise ValueError(f"size must be at least (160, 100) and leave room for the plot, got {size!r}")
    return left, top, pw, ph


def branch_stack_chart(weights: np.ndarray, *, title: str = "", size: tuple[int, int] = (640, 240),
                       sort: bool = True, font_size: int = 10) -> Image.Image:
    """Each channel's weights over the K branches as one stacked column (branch 0 at the
    bottom), channels sorted by branch 0's weight (``sort``) or in index order; with more
    channels than pixel columns a column shows their mean split. A legend gives each branch's
    mean weight."""
    w = _as_branches(weights)
    W, H = _check_size(size)
    fs = int(font_size)
    order = np.argsort(-w[0], kind="stable") if sort else np.arange(w.shape[1])
    left, top, pw, ph = stack_plot_box(size, title=title, font_size=fs)
    shares, gap = _column_shares(w[:, order], pw)
    canvas = np.full((H, W, 3), 255, dtype=np.uint8)
    _paint_stack(canvas, shares, gap, (left, top, pw, ph))
    _paint_axes_and_swatches(canvas, (left, top, pw, ph), w.shape[0], fs)
    img = Image.fromarray(canvas)
    xlabel = ("channels (sorted by branch 0's weight)" if sort else "channel index") + f", n={w.shape[1]}"
    _label_axes(img, (left, top, pw, ph), w.shape[1], fs, xlabel)
    _label_legend(img, w, left + pw + 12, top, fs)
    if title:
        _put_text(img, (W / 2, 4), _fit_text(title, fs + 3, W - 8), fs + 3, _BLACK, "mt")
    return img


def branch_figure(weights: np.ndarray, *, title: str = "", width: int = 640, font_size: int = 10) -> Image.Image:
    """Both views of one block's branch weights in one image: the stacked split on top, then
    one bar chart per branch (channels in index order)."""
    stack = branch_stack_chart(weights, title=title, size=(width, 240), font_size=font_size)
    bars = branch_bar_charts(weights, size=(width, 140), font_size=font_size)
    return stack_vertical([stack, bars])
