"""Colour tables (matplotlib colormaps as ``[256, 3] uint8`` LUTs) and the fixed colours of the charts.

matplotlib is imported only inside :func:`colormap_lut`'s cache fill: it is the source of the
tables, no figure is ever created.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = ["COLORMAPS", "colormap_lut"]

#: Colormaps offered by the tool (any name accepted by :func:`colormap_lut`).
COLORMAPS: tuple[str, ...] = ("jet", "viridis", "inferno", "magma", "plasma", "turbo", "gray")

RGB = tuple[int, int, int]

_WHITE: RGB = (255, 255, 255)
_BLACK: RGB = (0, 0, 0)
_TEXT: RGB = (30, 30, 30)
_AXIS: RGB = (60, 60, 60)
_GRID: RGB = (225, 225, 225)
_MUTED: RGB = (90, 90, 90)

#: Fixed palette for line charts (matplotlib's "tab10" colours).
_PALETTE: tuple[RGB, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


@lru_cache(maxsize=None)
def _colormap_lut_cached(name: str) -> np.ndarray:
    import matplotlib  # only here: the colour table source, no figure is created

    cmap = matplotlib.colormaps[name]
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    lut = np.rint(np.asarray(rgba)[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colormap_lut(name: str) -> np.ndarray:
    """Return the ``[256, 3] uint8`` RGB table of matplotlib colormap ``name``.

    Entry ``i`` is ``matplotlib.colormaps[name](i / 255)`` scaled to 0..255 and
    rounded.  The table is fetched once per name and cached (read-only array).

    Raises:
        ValueError: ``name`` is not one of :data:`COLORMAPS`.
    """
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of: {', '.join(COLORMAPS)}")
    return _colormap_lut_cached(name)


@lru_cache(maxsize=None)
def _palette_bytes(name: str) -> bytes:
    return colormap_lut(name).tobytes()


def _to_index(values: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats -> uint8 LUT indices, ``round(v * 255)`` (half up)."""
    v = np.multiply(values, 255.0, dtype=np.float32)
    v += 0.5
    np.clip(v, 0.0, 255.0, out=v)
    return v.astype(np.uint8)


def _index_to_rgb_image(index: np.ndarray, colormap: str) -> Image.Image:
    """Colour a 2-D uint8 index array via a PIL palette lookup (C speed)."""
    im = Image.fromarray(np.ascontiguousarray(index, dtype=np.uint8))  # mode "L"
    im.putpalette(_palette_bytes(colormap), "RGB")  # "L" -> "P" in place
    return im.convert("RGB")


def _lighter(color: RGB, amount: float = 0.55) -> RGB:
    """``color`` moved ``amount`` of the way to white."""
    return tuple(int(round(c + (255 - c) * amount)) for c in color)  # type: ignore[return-value]
