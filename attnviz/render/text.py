"""Text drawn into images without matplotlib: the DejaVu Sans font file (found through
matplotlib's data path, PIL's default font otherwise), cached glyph masks composed into line
masks, and helpers to place, measure, truncate and wrap labels.

Text is pasted as an "L" mask through PIL's C ``paste``; composing cached glyphs is ~5x cheaper
than laying out and rasterising each string, which matters at hundreds of labels per model.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colormaps import RGB, _TEXT


@lru_cache(maxsize=1)
def _font_path() -> str | None:
    """matplotlib's DejaVu Sans file, or None (PIL's default font is used then)."""
    try:
        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(path):
            return path
        from matplotlib import font_manager

        path = font_manager.findfont("DejaVu Sans", fallback_to_default=True)
        return path if path and os.path.isfile(path) else None
    except Exception:  # noqa: BLE001 - any failure -> PIL's default font
        return None


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The label font at ``size`` px, or PIL's default font when DejaVu Sans cannot be loaded."""
    path = _font_path()
    if path is not None:
        try:
            # BASIC layout: short Latin labels need no shaping, and it is faster
            return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)
        except Exception:  # noqa: BLE001
            pass
    try:
        return ImageFont.load_default(size)  # Pillow >= 10.1 (FreeType build)
    except TypeError:
        return ImageFont.load_default()


@lru_cache(maxsize=32)
def _line_box(size: int) -> tuple[int, int]:
    """(top, bottom) of a text line relative to the draw origin."""
    l, t, r, b = _font(size).getbbox("Ag|y")
    return int(t), int(b)


@lru_cache(maxsize=2048)
def _glyph(ch: str, size: int) -> tuple[np.ndarray, int, int, float]:
    """One character rendered once: (alpha array, x offset from the pen,
    y offset from the line top, advance width)."""
    font = _font(size)
    top, _ = _line_box(size)
    l, t, r, b = (int(v) for v in font.getbbox(ch))
    adv = float(font.getlength(ch))
    if r <= l or b <= t:
        return np.zeros((0, 0), np.uint8), 0, 0, adv
    mask = Image.new("L", (r - l, b - t), 0)
    ImageDraw.Draw(mask).text((-l, -t), ch, font=font, fill=255)
    return np.asarray(mask), l, t - top, adv


def _compose_text(text: str, size: int) -> Image.Image | None:
    """Text mask built from cached glyphs (no kerning, integer pen positions):
    ~5x cheaper than laying out and rasterising the whole string each time.
    ``None`` when the font cannot be used this way (bitmap fallback font)."""
    if not isinstance(_font(size), ImageFont.FreeTypeFont):
        return None
    top, bottom = _line_box(size)
    h_line = bottom - top
    placed = []
    pen = 0.0
    x_min, x_max, y_min, y_max = 10**9, -(10**9), 0, h_line
    for ch in text:
        arr, gx, gy, adv = _glyph(ch, size)
        px = int(round(pen))
        pen += adv
        if arr.size:
            x = px + gx
            placed.append((arr, x, gy))
            x_min, x_max = min(x_min, x), max(x_max, x + arr.shape[1])
            y_min, y_max = min(y_min, gy), max(y_max, gy + arr.shape[0])
    if not placed:
        return Image.new("L", (max(1, int(round(pen))), max(1, h_line)), 0)
    canvas = np.zeros((y_max - y_min, x_max - x_min), dtype=np.uint8)
    for arr, x, y in placed:
        region = canvas[y - y_min : y - y_min + arr.shape[0], x - x_min : x - x_min + arr.shape[1]]
        np.maximum(region, arr, out=region)
    if y_min < 0:  # keep the line top at row 0 where possible (crop overshoot)
        canvas = canvas[-y_min:]
    return Image.fromarray(canvas)


@lru_cache(maxsize=8192)
def _text_mask(text: str, size: int, angle: int = 0) -> Image.Image:
    """Rendered "L" mask of ``text``: line-height tall, ink width wide;
    rotated counter-clockwise by ``angle`` (multiple of 90) if asked."""
    if angle % 360:
        mask = _text_mask(text, size, 0)
        turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
        t = turn.get(angle % 360)
        return mask.transpose(t) if t is not None else mask.rotate(angle, expand=True)
    try:
        composed = _compose_text(text, size)
    except Exception:  # noqa: BLE001 - fall back to whole-string rendering
        composed = None
    if composed is not None:
        return composed
    font = _font(size)
    top, bottom = _line_box(size)
    if text:
        l, t, r, b = font.getbbox(text)
        top, bottom = min(top, int(t)), max(bottom, int(b))
    else:
        l, r = 0, 1
    w, h = max(1, int(r) - int(l)), max(1, bottom - top)
    mask = Image.new("L", (w, h), 0)
    if text:
        ImageDraw.Draw(mask).text((-int(l), -top), text, font=font, fill=255)
    return mask


def _text_size(text: str, size: int, angle: int = 0) -> tuple[int, int]:
    """(width, height) in px of ``text`` as :func:`_put_text` draws it."""
    return _text_mask(text, size, angle).size


def _put_text(
    img: Image.Image,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: RGB = _TEXT,
    anchor: str = "lt",
    angle: int = 0,
) -> tuple[int, int, int, int]:
    """Paste ``text`` at ``xy``; ``anchor`` = horizontal (l/m/r) + vertical
    (t/m/b) of the text box.  Returns the box ``(x0, y0, x1, y1)``."""
    mask = _text_mask(text, size, angle)
    w, h = mask.size
    x, y = xy
    if anchor[0] == "m":
        x -= w / 2
    elif anchor[0] == "r":
        x -= w
    if anchor[1] == "m":
        y -= h / 2
    elif anchor[1] == "b":
        y -= h
    x0, y0 = int(round(x)), int(round(y))
    img.paste(fill, (x0, y0, x0 + w, y0 + h), mask)
    return x0, y0, x0 + w, y0 + h


def _fit_text(text: str, size: int, max_w: int) -> str:
    """``text`` truncated with an ellipsis to at most ``max_w`` pixels."""
    if _text_size(text, size)[0] <= max_w:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if _text_size(text[:mid] + "…", size)[0] <= max_w:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…" if lo > 0 else "…"


def _line_height(size: int) -> int:
    """Height in px of one line of text at ``size``."""
    top, bottom = _line_box(size)
    return bottom - top


def _wrap_caption(text: str, size: int, max_w: int, max_lines: int = 2) -> list[str]:
    """``text`` word-wrapped to ``max_w`` px in at most ``max_lines`` lines (the last one
    truncated with an ellipsis)."""
    words = str(text).split()
    lines: list[str] = []
    cur = ""
    for wd in words:
        cand = f"{cur} {wd}" if cur else wd
        if _text_size(cand, size)[0] <= max_w or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = wd
    if cur:
        lines.append(cur)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return [_fit_text(s, size, max_w) for s in lines]
