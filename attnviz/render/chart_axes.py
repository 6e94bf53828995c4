"""Pieces the charts share: "nice" tick steps, spreading n items over pixel columns, and the
framed 0..1 colorbar of the depth overview and the profile heat map (one drawing, so a value
reads the same in both)."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .colormaps import _AXIS, _TEXT, _to_index
from .text import _put_text

_CB_W = 12  # colorbar width in px


def _as_1d(weights: np.ndarray) -> np.ndarray:
    """Gate values of any shape (numpy or torch) as a flat float64 array."""
    w = weights
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(w, dtype=np.float64).reshape(-1)


def _nice_step(span: float, max_ticks: int) -> tuple[float, int]:
    """A 1/2/5 x 10^e step giving at most ``max_ticks`` intervals over ``span``;
    also returns the number of decimals needed to print multiples of it."""
    raw = max(span, 1e-12) / max(1, max_ticks)
    e = math.floor(math.log10(raw))
    for mant in (1, 2, 5, 10):
        if mant * 10.0**e >= raw * (1 - 1e-9):
            break
    if mant == 10:
        mant, e = 1, e + 1
    return mant * 10.0**e, max(0, -e)


def _column_ranges(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel column: first item index and item count (for n items spread
    over ``width`` columns; every column gets >= 1 item)."""
    x = np.arange(width, dtype=np.int64)
    starts = (x * n) // width
    ends = np.maximum(((x + 1) * n) // width, starts + 1)
    return starts, ends - starts


def _resample_row(values: np.ndarray, width: int) -> np.ndarray:
    """Area-average (many items) or nearest (few items) ``values`` to ``width``."""
    n = values.size
    if n == width:
        return values.astype(np.float32)
    starts, counts = _column_ranges(n, width)
    if n > width:
        return (np.add.reduceat(values, starts) / counts).astype(np.float32)
    return values[starts].astype(np.float32)


def _draw_colorbar(canvas: np.ndarray, lut: np.ndarray, x: int, top: int, h: int) -> None:
    """A vertical ``_CB_W`` px colour scale at column ``x``, rows ``top .. top+h-1`` (1 at the
    top), framed by a 1 px axis-coloured line."""
    grad = lut[_to_index(np.linspace(1.0, 0.0, h, dtype=np.float32))]
    canvas[top : top + h, x : x + _CB_W] = grad[:, None, :]
    canvas[top - 1 : top + h + 1, [x - 1, x + _CB_W]] = _AXIS
    canvas[[top - 1, top + h], x - 1 : x + _CB_W + 1] = _AXIS


def _label_colorbar(img: Image.Image, x: int, top: int, h: int, font_size: int) -> None:
    """The "1" / "0.5" / "0" labels right of a colorbar drawn by :func:`_draw_colorbar`."""
    lx = x + _CB_W + 4
    _put_text(img, (lx, top), "1", font_size, _TEXT, "lt")
    _put_text(img, (lx, top + h / 2), "0.5", font_size, _TEXT, "lm")
    _put_text(img, (lx, top + h), "0", font_size, _TEXT, "lb")
