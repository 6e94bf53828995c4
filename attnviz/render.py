"""Fast, figure-free rendering of attention results to images.

Everything here draws straight into numpy arrays / PIL images; no matplotlib
figure is ever created.  matplotlib is used only as the source of colormap
tables (:func:`colormap_lut`) and of the DejaVu Sans font file, each fetched
once and cached.  All calls are designed to take about a millisecond so that a
whole model (a chart and an overlay per block plus a depth overview) renders in
a few tens of milliseconds.

Public API
----------
- :data:`COLORMAPS`, :func:`colormap_lut` -- ``[256, 3] uint8`` colour tables.
- :func:`upsample_map`, :func:`normalize_map` -- map geometry / value scaling.
- :func:`overlay`, :func:`heatmap` -- spatial attention maps as images.
- :func:`channel_bar_chart` -- one block's channel gate values.
- :func:`depth_overview` -- blocks x channels gate image for a whole model.
- :func:`stats_along_depth` -- line chart of per-depth statistics.
- :func:`image_grid`, :func:`to_png_bytes` -- composition and encoding.
"""
from __future__ import annotations

import io
import math
import os
from functools import lru_cache
from typing import Literal, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "COLORMAPS",
    "colormap_lut",
    "upsample_map",
    "normalize_map",
    "overlay",
    "heatmap",
    "channel_bar_chart",
    "depth_overview",
    "stats_along_depth",
    "image_grid",
    "to_png_bytes",
]

#: Colormaps offered by the tool (any name accepted by :func:`colormap_lut`).
COLORMAPS: tuple[str, ...] = ("jet", "viridis", "inferno", "magma", "plasma", "turbo", "gray")

NormalizeMode = Literal["minmax", "none"]
RGB = tuple[int, int, int]

_WHITE: RGB = (255, 255, 255)
_BLACK: RGB = (0, 0, 0)
_TEXT: RGB = (30, 30, 30)
_AXIS: RGB = (60, 60, 60)
_GRID: RGB = (225, 225, 225)
_MUTED: RGB = (90, 90, 90)

_MAX_BAR_PX = 48  # widest bar of the channel chart
# A map whose range is below this fraction of its magnitude counts as constant
# (float32 interpolation of a constant map leaves ~1e-7 relative noise).
_FLAT_RTOL = 1e-5

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


# --------------------------------------------------------------------------- #
# colour tables
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# map geometry and scaling
# --------------------------------------------------------------------------- #
@lru_cache(maxsize=256)
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float32 bilinear weights, align_corners=False.

    Same source-index rule as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` with an explicit output size:
    ``src = (dst + 0.5) * n_in / n_out - 0.5`` clamped at 0.
    """
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    np.maximum(src, 0.0, out=src)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    w0 = 1.0 - w1
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(mat, (rows, i0), w0)
    np.add.at(mat, (rows, i1), w1)
    out = mat.astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=256)
def _interp_matrix_t(n_in: int, n_out: int) -> np.ndarray:
    """Contiguous transpose of :func:`_interp_matrix` (``[n_in, n_out]``)."""
    out = np.ascontiguousarray(_interp_matrix(n_in, n_out).T)
    out.setflags(write=False)
    return out


def _as_2d_map(attn_map: np.ndarray) -> np.ndarray:
    m = np.asarray(attn_map)
    if hasattr(attn_map, "detach"):  # a torch tensor slipped through
        m = attn_map.detach().cpu().numpy()  # type: ignore[union-attr]
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"attention map must be 2-D [H, W] (got shape {np.shape(attn_map)})")
    m = m.astype(np.float32, copy=False)
    if not np.isfinite(m).all():
        finite = m[np.isfinite(m)]
        hi = float(finite.max()) if finite.size else 0.0
        lo = float(finite.min()) if finite.size else 0.0
        m = np.nan_to_num(m, nan=lo, posinf=hi, neginf=lo)
    return m


def _check_size(size: tuple[int, int], what: str = "size") -> tuple[int, int]:
    try:
        w, h = int(size[0]), int(size[1])
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{what} must be (width, height), got {size!r}") from exc
    if w <= 0 or h <= 0:
        raise ValueError(f"{what} must be positive (width, height), got {size!r}")
    return w, h


def upsample_map(attn_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a ``[H, W]`` map to ``size = (width, height)``.

    Uses ``align_corners=False`` semantics (pixel centres aligned, so feature
    cell ``(r, c)`` of an ``H x W`` map covers exactly image rows
    ``r*h/H .. (r+1)*h/H`` and columns ``c*w/W .. (c+1)*w/W``).  Matches
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``;
    implemented as two small cached interpolation matrices (``Ay @ M @ Ax.T``,
    evaluated with single-threaded ``np.einsum``).
    Leading singleton dimensions (``[1, 1, H, W]``) are squeezed; non-finite
    values are replaced by the finite min/max before interpolation.

    Returns:
        ``[height, width]`` float32 array.
    """
    m = _as_2d_map(attn_map)
    w, h = _check_size(size)
    H, W = m.shape
    if (H, W) == (h, w):
        return np.array(m, dtype=np.float32, copy=True)
    ay = _interp_matrix(H, h)
    # np.einsum without `optimize` runs numpy's own single-threaded loops.
    # BLAS matmul (``@``) would be as fast on an idle machine, but a threaded
    # OpenBLAS on a busy one can stall a 1 ms call for tens of milliseconds.
    if h * W <= w * H:  # contract the cheaper side first
        out = np.einsum("yw,wx->yx", np.einsum("yh,hw->yw", ay, m), _interp_matrix_t(W, w))
    else:
        out = np.einsum("yh,hx->yx", ay, np.einsum("hw,wx->hx", m, _interp_matrix_t(W, w)))
    return np.ascontiguousarray(out, dtype=np.float32)


def normalize_map(attn_map: np.ndarray, mode: NormalizeMode = "minmax") -> np.ndarray:
    """Scale a map to ``[0, 1]`` (float32, new array).

    ``"minmax"``: ``(m - min) / (max - min)``; a constant map (range below
    ``1e-5`` of its magnitude, i.e. float32 noise) gives zeros, never NaN.  ``"none"``: values are only clipped to ``[0, 1]`` -- the right choice
    for sigmoid gates, which already live there.  Non-finite values become 0.
    """
    if mode not in ("minmax", "none"):
        raise ValueError(f"normalize must be 'minmax' or 'none', got {mode!r}")
    m = np.array(attn_map, dtype=np.float32, copy=True)
    if m.size == 0:
        return m
    finite = np.isfinite(m)
    all_finite = bool(finite.all())
    if not all_finite:
        m[~finite] = np.nan
    if mode == "none":
        if not all_finite:
            m = np.nan_to_num(m, nan=0.0)
        np.clip(m, 0.0, 1.0, out=m)
        return m
    if all_finite:
        lo, hi = float(m.min()), float(m.max())
    elif finite.any():
        lo, hi = float(np.nanmin(m)), float(np.nanmax(m))
    else:
        return np.zeros_like(m)
    span = hi - lo
    if not span > _FLAT_RTOL * max(abs(hi), abs(lo)) or span == 0.0:
        return np.zeros_like(m)
    m -= lo
    m *= np.float32(1.0 / span)
    if not all_finite:
        m = np.nan_to_num(m, nan=0.0)
    np.clip(m, 0.0, 1.0, out=m)
    return m


# --------------------------------------------------------------------------- #
# overlays
# --------------------------------------------------------------------------- #
def _as_rgb_image(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.transpose(arr, (1, 2, 0))  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(f"image must be [H, W], [H, W, 3] or [H, W, 4] (got shape {np.shape(image)})")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        if np.issubdtype(arr.dtype, np.floating):  # floats are taken as [0, 1]
            a = a * 255.0
        arr = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return Image.fromarray(arr)


def _map_index(attn_map: np.ndarray, size: tuple[int, int], normalize: NormalizeMode) -> np.ndarray:
    """Upsample + normalize + ``round(v * 255)`` in one buffer (uint8 result).

    Same numbers as ``_to_index(normalize_map(upsample_map(m, size), normalize))``
    but works in place on the freshly upsampled array: large temporaries cost
    page faults that dominate at this scale.
    """
    if normalize not in ("minmax", "none"):
        raise ValueError(f"normalize must be 'minmax' or 'none', got {normalize!r}")
    m = _as_2d_map(attn_map)
    up = upsample_map(m, size)  # finite (non-finite replaced in _as_2d_map)
    if normalize == "none":
        np.clip(up, 0.0, 1.0, out=up)
        up *= np.float32(255.0)
    else:
        lo, hi = float(up.min()), float(up.max())
        span = hi - lo
        if m.min() == m.max() or not span > _FLAT_RTOL * max(abs(hi), abs(lo)) or span == 0.0:
            return np.zeros(up.shape, dtype=np.uint8)
        up -= np.float32(lo)
        up *= np.float32(1.0 / span)
        np.clip(up, 0.0, 1.0, out=up)
        up *= np.float32(255.0)
    up += np.float32(0.5)
    return up.astype(np.uint8)


def overlay(
    image: Image.Image | np.ndarray,
    attn_map: np.ndarray,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
    normalize: NormalizeMode = "minmax",
) -> Image.Image:
    """Blend a coloured spatial attention map over ``image``.

    The map is upsampled to the image size (:func:`upsample_map`), scaled by
    :func:`normalize_map`, coloured through the colormap table (index
    ``round(v * 255)``) and alpha-blended: ``out = (1 - alpha) * image +
    alpha * colour``.  ``alpha=0`` returns the image unchanged and ``alpha=1``
    exactly the colours of the map.  The blend runs in PIL's C core
    (``Image.blend``, 8-bit per channel, at most one level off exact rounding)
    since an equivalent numpy blend costs several times more.

    Args:
        image: PIL image (any mode) or array ``[H, W]`` / ``[H, W, 3|4]``
            (uint8, or floats in ``[0, 1]``).
        attn_map: ``[h, w]`` map at feature resolution.

    Returns:
        RGB image of the same size as ``image``.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]``, unknown colormap, bad shapes.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colormap_lut(colormap)  # validate early
    base = _as_rgb_image(image)
    if alpha == 0.0:
        _as_2d_map(attn_map)  # still validate the map
        return base.copy()
    heat = _index_to_rgb_image(_map_index(attn_map, base.size, normalize), colormap)
    if alpha == 1.0:
        return heat
    return Image.blend(base, heat, alpha)


def heatmap(
    attn_map: np.ndarray,
    size: tuple[int, int] | None = None,
    colormap: str = "jet",
    normalize: NormalizeMode = "minmax",
) -> Image.Image:
    """The map alone, coloured; upsampled to ``size = (width, height)`` if given
    (bilinear, align_corners=False), otherwise at its own resolution."""
    colormap_lut(colormap)
    m = _as_2d_map(attn_map)
    if size is None:
        size = (m.shape[1], m.shape[0])
    return _index_to_rgb_image(_map_index(m, size, normalize), colormap)


# --------------------------------------------------------------------------- #
# text (cached glyph masks pasted with PIL's C paste)
# --------------------------------------------------------------------------- #
@lru_cache(maxsize=1)
def _font_path() -> str | None:
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
    top, bottom = _line_box(size)
    return bottom - top


# --------------------------------------------------------------------------- #
# small numeric helpers
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# channel bar chart
# --------------------------------------------------------------------------- #
def _lighter(color: RGB, amount: float = 0.55) -> RGB:
    return tuple(int(round(c + (255 - c) * amount)) for c in color)  # type: ignore[return-value]


def _as_1d(weights: np.ndarray) -> np.ndarray:
    w = weights
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(w, dtype=np.float64).reshape(-1)


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
    vals = _as_1d(weights)
    n = vals.size
    if n == 0:
        raise ValueError("weights is empty")
    W, H = _check_size(size)
    if W < 160 or H < 100:
        raise ValueError(f"size must be at least (160, 100), got {size!r}")
    vals = np.nan_to_num(vals, nan=0.0, posinf=1.0, neginf=0.0)

    rank = np.argsort(-vals, kind="stable")  # original indices, largest first
    order = rank if sort else np.arange(n)
    shown = np.clip(vals[order], 0.0, 1.0)
    k = int(min(max(int(top_k), 0), n))
    highlight = np.zeros(n, dtype=bool)
    if k:
        if sort:
            highlight[:k] = True
        else:
            highlight[rank[:k]] = True

    fs_tick = fs_leg = int(font_size)
    fs_title = fs_tick + 3
    lh_tick = _line_height(fs_tick)

    # legend entries (right column)
    legend: list[str] = [f"#{int(i)} {vals[i]:.2f}" for i in rank[:k]]
    leg_w = 0
    if legend:
        leg_w = max(_text_size(s, fs_leg)[0] for s in legend + ["top-9"]) + 10 + 4 + 12  # swatch+pad

    # layout
    left = _text_size("0.75", fs_tick)[0] + 10
    top = (_line_height(fs_title) + 10) if title else 10
    bottom = 4 + lh_tick + 3 + lh_tick + 4
    right = (leg_w + 14) if legend else 12
    pw, ph = W - left - right, H - top - bottom
    if pw < 20 or ph < 20:
        raise ValueError(f"size {size!r} leaves no room for the plot")
    x0, y0 = left, top

    # ---- per-column bar heights and colours (vectorised) ----
    starts, counts = _column_ranges(n, pw)
    if n > pw:
        col_max = np.maximum.reduceat(shown, starts)
        col_mean = np.add.reduceat(shown, starts) / counts
        col_hl = np.maximum.reduceat(highlight.astype(np.uint8), starts).astype(bool)
        gap = np.zeros(pw, dtype=bool)
    else:
        col_max = shown[starts]
        col_mean = col_max
        col_hl = highlight[starts]
        # Bars fill the middle of their slot: a 1 px gap when slots are >= 4 px
        # wide, and at most _MAX_BAR_PX wide (a handful of channels).
        slot = pw / n
        bar_px = min(slot - 1.0 if slot >= 4 else slot, _MAX_BAR_PX)
        centre = (starts + 0.5) * slot
        gap = np.abs(np.arange(pw) + 0.5 - centre) > bar_px / 2
    h_max = np.rint(col_max * ph).astype(np.int64)
    h_mean = np.where(col_hl, h_max, np.rint(col_mean * ph).astype(np.int64))
    h_max[gap] = 0
    h_mean[gap] = 0

    # The whole chart is a palette-index array (1 byte per pixel), turned into
    # RGB by PIL's C palette conversion; far cheaper than masked RGB writes.
    P_WHITE, P_GRID, P_AXIS, P_BAR, P_LIGHT, P_HL = range(6)
    palette = np.array(
        [_WHITE, _GRID, _AXIS, color, _lighter(color), highlight_color], dtype=np.uint8
    )
    canvas = np.zeros((H, W), dtype=np.uint8)
    yticks = (0.0, 0.25, 0.5, 0.75, 1.0)
    grid_rows = [ph - int(round(t * ph)) for t in yticks[1:]]  # rows inside the plot
    depth = (ph - np.arange(ph, dtype=np.int64))[:, None]  # height above baseline of each row
    level = (depth <= h_max[None, :]).view(np.uint8) + (depth <= h_mean[None, :]).view(np.uint8)
    level += (col_hl.astype(np.uint8) * 3)[None, :]
    plot_codes = np.array([P_WHITE, P_LIGHT, P_BAR, P_WHITE, P_HL, P_HL], dtype=np.uint8)
    plot = plot_codes[level]
    for r in grid_rows:
        row = plot[r]
        row[row == P_WHITE] = P_GRID
    canvas[y0 : y0 + ph, x0 : x0 + pw] = plot

    # small markers above the highlighted bars when bars are too thin to see
    if k and not sort and pw / n < 6:
        shown_pos = np.arange(k) if sort else rank[:k]
        for p in np.unique(((shown_pos + 0.5) * pw / n).astype(np.int64)):
            p = int(min(p, pw - 1))
            tip = y0 + ph - int(h_max[p]) - 2  # just above the bar
            for d in range(4):  # downward triangle, 7 px wide at its base
                r = tip - d
                if r >= 0:
                    canvas[r, max(x0, x0 + p - d) : min(x0 + pw, x0 + p + d + 1)] = P_HL

    # axes and ticks
    canvas[y0 : y0 + ph + 1, x0 - 1] = P_AXIS
    canvas[y0 + ph, x0 - 1 : x0 + pw] = P_AXIS
    for t in yticks:
        r = y0 + ph - int(round(t * ph))
        canvas[r, x0 - 5 : x0 - 1] = P_AXIS

    # x ticks: positions in display order
    xt_step, _ = _nice_step(n, 5 if pw >= 200 else 2)  # a narrow chart: fewer, legible ticks
    xt_step = max(1, int(xt_step))
    xticks = list(range(0, n, xt_step))
    xtick_px = [x0 + int((i + 0.5) * pw / n) for i in xticks]
    for px in xtick_px:
        canvas[y0 + ph + 1 : y0 + ph + 4, px] = P_AXIS

    pimg = Image.fromarray(canvas)
    pimg.putpalette(palette.tobytes(), "RGB")
    img = pimg.convert("RGB")
    for t in yticks:
        r = y0 + ph - int(round(t * ph))
        _put_text(img, (x0 - 7, r), f"{t:g}" if t in (0.0, 1.0) else f"{t:.2f}".rstrip("0"), fs_tick, _TEXT, "rm")
    last_x1 = -(10**9)
    for i, px in zip(xticks, xtick_px):
        label = str(i)
        tw = _text_size(label, fs_tick)[0]
        if px - tw / 2 <= last_x1 + 4 or px + tw / 2 > W - 2:
            continue
        last_x1 = _put_text(img, (px, y0 + ph + 4), label, fs_tick, _TEXT, "mt")[2]
    xlabel = "channels (sorted by weight)" if sort else "channel index"
    xlabel = _fit_text(xlabel + f", n={n}", fs_tick, W - 8)
    half = _text_size(xlabel, fs_tick)[0] / 2  # centred under the plot, kept inside a narrow chart
    _put_text(img, (min(max(x0 + pw / 2, 4 + half), W - 4 - half), H - 3), xlabel, fs_tick, _MUTED, "mb")
    if title:
        _put_text(img, (W / 2, 4), _fit_text(title, fs_title, W - 8), fs_title, _BLACK, "mt")

    # legend box at the right of the plot (never overlaps bars)
    if legend:
        lh = _line_height(fs_leg) + 2
        lx0 = x0 + pw + 10
        max_lines = max(1, (ph - 6) // lh - 1)
        lines = legend if len(legend) <= max_lines else legend[: max_lines - 1] + ["…"]
        box_h = 6 + lh * (len(lines) + 1)
        draw = ImageDraw.Draw(img)
        draw.rectangle((lx0, y0, W - 4, y0 + box_h), outline=(190, 190, 190), fill=_WHITE)
        _put_text(img, (lx0 + 5, y0 + 3), f"top-{k}", fs_leg, _MUTED, "lt")
        for j, s in enumerate(lines):
            ty = y0 + 3 + lh * (j + 1)
            if s != "…":
                draw.rectangle((lx0 + 5, ty + 2, lx0 + 13, ty + lh - 4), fill=highlight_color)
            _put_text(img, (lx0 + 17, ty), s, fs_leg, _TEXT, "lt")
    return img


# --------------------------------------------------------------------------- #
# depth overview
# --------------------------------------------------------------------------- #
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
    lh = _line_height(fs)
    if not items:
        msg = "no channel attention in this model"
        w = max(width, _text_size(msg, fs)[0] + 16)
        img = Image.new("RGB", (w, max(lh + 16, 32)), _WHITE)
        _put_text(img, (w / 2, img.height / 2), msg, fs, _MUTED, "mm")
        return img

    names = [str(name) for name, _ in items]
    rows = [_as_1d(wts) for _, wts in items]
    stats: list[str] = []
    for r in rows:
        f = r[np.isfinite(r)]
        stats.append(f"{f.mean():.2f}±{f.std():.2f}" if f.size else "–")

    pad = 4
    label_w = min(max(_text_size(s, fs)[0] for s in names), max(40, width // 4)) + 8
    stats_w = (max(_text_size(s, fs)[0] for s in stats + ["mean±std"]) + 10) if show_stats else 0
    cb_w, cb_gap = 12, 10
    cb_label_w = _text_size("0.5", fs)[0] + 6
    strip_x = pad + label_w
    strip_w = width - strip_x - stats_w - cb_gap - cb_w - cb_label_w - pad
    if strip_w < 16:
        raise ValueError(f"width {width} is too small for the overview")
    stats_x = strip_x + strip_w + stats_w - 2  # right edge of the stats text
    cb_x = strip_x + strip_w + stats_w + cb_gap

    top = lh + 6
    n = len(items)
    rows_h = n * row_height
    body_h = max(rows_h, 3 * lh + 6)
    H = top + body_h + 16

    # ---- the strip: [n, strip_w] values -> colours -> rows of row_height ----
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
    canvas = np.full((H, width, 3), 255, dtype=np.uint8)
    strip = np.repeat(colors, row_height, axis=0)
    if row_height >= 6:  # thin white separators between blocks
        strip[row_height - 1 :: row_height] = 255
    canvas[top : top + rows_h, strip_x : strip_x + strip_w] = strip

    # colorbar (1 at the top)
    grad = lut[_to_index(np.linspace(1.0, 0.0, body_h, dtype=np.float32))]
    canvas[top : top + body_h, cb_x : cb_x + cb_w] = grad[:, None, :]
    canvas[top : top + body_h, cb_x - 1] = _AXIS
    canvas[top : top + body_h, cb_x + cb_w] = _AXIS
    canvas[top - 1, cb_x - 1 : cb_x + cb_w + 1] = _AXIS
    canvas[top + body_h, cb_x - 1 : cb_x + cb_w + 1] = _AXIS

    img = Image.fromarray(canvas)
    head = "channels (sorted by gate value)" if sort_channels else "channels (index order)"
    if not show_stats:
        head = "channels, sorted" if sort_channels else "channels"
    _put_text(img, (strip_x + strip_w / 2, 2), _fit_text(head, fs, strip_w), fs, _MUTED, "mt")
    if show_stats:
        _put_text(img, (stats_x, 2), "mean±std", fs, _MUTED, "rt")
    _put_text(img, (pad, 2), "block", fs, _MUTED, "lt")
    every = max(1, math.ceil((lh + 1) / row_height))  # thin labels on very short rows
    for i, (name, st) in enumerate(zip(names, stats)):
        if i % every:
            continue
        cy = top + i * row_height + (row_height - (1 if row_height >= 6 else 0)) / 2
        _put_text(img, (pad, cy), _fit_text(name, fs, label_w - 6), fs, _TEXT, "lm")
        if show_stats:
            _put_text(img, (stats_x, cy), st, fs, _TEXT, "rm")
    lx = cb_x + cb_w + 4
    _put_text(img, (lx, top), "1", fs, _TEXT, "lt")
    _put_text(img, (lx, top + body_h / 2), "0.5", fs, _TEXT, "lm")
    _put_text(img, (lx, top + body_h), "0", fs, _TEXT, "lb")
    foot = f"{n} blocks, gates on a fixed 0..1 scale"
    if show_stats:
        _put_text(img, (strip_x + strip_w / 2, H - 2), foot, fs, _MUTED, "mb")
    else:  # narrow: centred on the whole image so it is not cut at an edge
        _put_text(img, (width / 2, H - 2), _fit_text(foot, fs, width - 8), fs, _MUTED, "mb")
    return img


# --------------------------------------------------------------------------- #
# line chart along depth
# --------------------------------------------------------------------------- #
def _draw_marker(draw: ImageDraw.ImageDraw, x: float, y: float, kind: int, color: RGB, r: int = 3) -> None:
    kind %= 4
    if kind == 0:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    elif kind == 1:
        draw.rectangle((x - r, y - r, x + r, y + r), fill=color)
    elif kind == 2:
        draw.polygon([(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)], fill=color)
    else:
        draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=color)


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
    fs_title, fs_tick = 13, 10
    lh = _line_height(fs_tick)

    img = Image.new("RGB", (W, H), _WHITE)
    draw = ImageDraw.Draw(img)

    y = 4
    if title:
        _put_text(img, (W / 2, y), _fit_text(title, fs_title, W - 8), fs_title, _BLACK, "mt")
        y += _line_height(fs_title) + 4

    # legend row(s) under the title
    entries = [(nm, _PALETTE[i % len(_PALETTE)], i) for i, nm in enumerate(names)]
    x = 8
    line_y = y
    placed: list[tuple[int, int, str, RGB, int]] = []
    for nm, col, i in entries:
        txt = _fit_text(nm, fs_tick, W // 2)
        ew = 22 + _text_size(txt, fs_tick)[0] + 12
        if x + ew > W - 4 and x > 8:
            x, line_y = 8, line_y + lh + 3
        placed.append((x, line_y, txt, col, i))
        x += ew
    if placed:
        y = line_y + lh + 6
    top = y + 4

    # y range and ticks
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
    ytick_txt = ["0" if s.strip("-0.") == "" else s for s in ytick_txt]

    left = 6 + max(_text_size(s, fs_tick)[0] for s in ytick_txt) + 8
    if ylabel:
        left += lh + 4
    right = 12

    # x tick labels: horizontal if they fit, else rotated 90 degrees and thinned
    tick_text = [str(s) for s in labels] if labels is not None else [str(i) for i in range(n)]
    pw_est = W - left - right
    dx = (pw_est - 16) / max(1, n - 1) if n > 1 else pw_est
    max_tw = max(_text_size(s, fs_tick)[0] for s in tick_text) if tick_text else 0
    rotate = labels is not None and max_tw + 6 > dx
    if rotate:
        max_label_px = int(H * 0.3)
        tick_text = [_fit_text(s, fs_tick, max_label_px) for s in tick_text]
        tick_extent = max(_text_size(s, fs_tick)[0] for s in tick_text)
        every = max(1, math.ceil((lh + 2) / max(dx, 1e-9)))
    else:
        tick_extent = lh
        every = max(1, math.ceil((max_tw + 8) / max(dx, 1e-9)))
    xlabel = "" if labels is not None else "block index (depth)"
    bottom = 4 + tick_extent + 4 + ((lh + 4) if xlabel else 0)
    pw, ph = W - left - right, H - top - bottom
    if pw < 20 or ph < 20:
        raise ValueError(f"size {size!r} leaves no room for the plot")
    x0, y0 = left, top
    inner = 8

    def px(i: float) -> float:
        return x0 + pw / 2 if n == 1 else x0 + inner + i * (pw - 2 * inner) / (n - 1)

    def py(v: float) -> float:
        return y0 + ph - (v - t_lo) / (t_hi - t_lo) * ph

    # grid, axes, ticks
    for t, s in zip(yticks, ytick_txt):
        yy = int(round(py(t)))
        draw.line((x0, yy, x0 + pw, yy), fill=_GRID)
        draw.line((x0 - 4, yy, x0 - 1, yy), fill=_AXIS)
        _put_text(img, (x0 - 6, yy), s, fs_tick, _TEXT, "rm")
    draw.line((x0 - 1, y0, x0 - 1, y0 + ph), fill=_AXIS)
    draw.line((x0 - 1, y0 + ph, x0 + pw, y0 + ph), fill=_AXIS)
    for i in range(0, n, every):
        xx = int(round(px(i)))
        draw.line((xx, y0 + ph + 1, xx, y0 + ph + 3), fill=_AXIS)
        if i < len(tick_text):
            if rotate:
                _put_text(img, (xx, y0 + ph + 5), tick_text[i], fs_tick, _TEXT, "mt", angle=90)
            else:
                _put_text(img, (xx, y0 + ph + 5), tick_text[i], fs_tick, _TEXT, "mt")
    if xlabel:
        _put_text(img, (x0 + pw / 2, H - 3), xlabel, fs_tick, _MUTED, "mb")
    if ylabel:
        _put_text(img, (4, y0 + ph / 2), _fit_text(ylabel, fs_tick, ph), fs_tick, _MUTED, "lm", angle=90)

    # series
    for si, d in enumerate(data):
        col = _PALETTE[si % len(_PALETTE)]
        pts = [(px(i), py(v)) if np.isfinite(v) else None for i, v in enumerate(d)]
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

    # legend
    for lx, ly, txt, col, i in placed:
        cy = ly + lh / 2
        draw.line((lx, cy, lx + 16, cy), fill=col, width=2)
        _draw_marker(draw, lx + 8, cy, i, col)
        _put_text(img, (lx + 22, ly), txt, fs_tick, _TEXT, "lt")
    return img


# --------------------------------------------------------------------------- #
# composition and encoding
# --------------------------------------------------------------------------- #
def _wrap_caption(text: str, size: int, max_w: int, max_lines: int = 2) -> list[str]:
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


def image_grid(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    *,
    cols: int = 4,
    cell: int = 224,
) -> Image.Image:
    """Tile ``images`` row-major, ``cols`` per row, each scaled to fit a
    ``cell x cell`` square (aspect kept, centred horizontally, resting on the
    caption) with its caption (up to two
    lines, truncated with an ellipsis) underneath, on a white background."""
    images = list(images)
    captions = [str(c) for c in captions]
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    cell = int(cell)
    if cell < 8:
        raise ValueError(f"cell must be >= 8, got {cell}")
    fs = 11 if cell >= 96 else 9
    lh = _line_height(fs)
    pad = 6
    if not images:
        return Image.new("RGB", (cell + 2 * pad, cell // 4 + 2 * pad), _WHITE)
    cols = max(1, min(int(cols), len(images)))
    rows = math.ceil(len(images) / cols)
    wrapped = [_wrap_caption(c, fs, cell) for c in captions]
    cap_h = max(len(w) for w in wrapped) * (lh + 1) + 4 if any(captions) else 0
    tile_w, tile_h = cell + pad, cell + cap_h + pad
    out = Image.new("RGB", (cols * tile_w + pad, rows * tile_h + pad), _WHITE)
    for i, (im, lines) in enumerate(zip(images, wrapped)):
        r, c = divmod(i, cols)
        tx, ty = pad + c * tile_w, pad + r * tile_h
        if not isinstance(im, Image.Image):
            im = _as_rgb_image(im)
        im = im if im.mode == "RGB" else im.convert("RGB")
        scale = min(cell / im.width, cell / im.height)
        nw, nh = max(1, round(im.width * scale)), max(1, round(im.height * scale))
        if (nw, nh) != im.size:
            im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        out.paste(im, (tx + (cell - nw) // 2, ty + cell - nh))  # bottom-aligned over the caption
        for j, s in enumerate(lines):
            _put_text(out, (tx + cell / 2, ty + cell + 2 + j * (lh + 1)), s, fs, _TEXT, "mt")
    return out


def to_png_bytes(image: Image.Image) -> bytes:
    """Encode ``image`` as PNG with ``compress_level=1`` (fast)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def to_jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    """Encode ``image`` as JPEG without chroma subsampling, so heatmap colours keep their edges.

    For display of overlays: ~20x faster to encode than PNG and ~8x smaller on a 448-px photo
    overlay; downloads keep the lossless PNGs."""
    buf = io.BytesIO()
    (image if image.mode == "RGB" else image.convert("RGB")).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


# --------------------------------------------------------------------------- #
# timing: python -m attnviz.render
# --------------------------------------------------------------------------- #
def _benchmark(repeats: int = 50) -> dict[str, tuple[float, float]]:
    """(wall, CPU) milliseconds per call for the typical per-model workload."""
    import time

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))
    amap = rng.random((14, 14)).astype(np.float32)
    w2048 = 1.0 / (1.0 + np.exp(-rng.normal(size=2048)))
    blocks = [
        (f"layer{li + 1}.{bi}", 1.0 / (1.0 + np.exp(-rng.normal(size=c))))
        for li, (nb, c) in enumerate([(3, 256), (4, 512), (6, 1024), (3, 2048)])
        for bi in range(nb)
    ]
    # warm caches (colour tables, font, glyphs)
    overlay(img, amap)
    channel_bar_chart(w2048, title="warm")
    depth_overview(blocks)

    def timeit(fn) -> tuple[float, float]:
        """Median wall and CPU (process) milliseconds of `repeats` single calls;
        CPU time is the fairer number on a shared, busy machine."""
        wall, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return float(np.median(wall)) * 1e3, float(np.median(cpu)) * 1e3

    res = {
        "channel_bar_chart 2048ch": timeit(lambda: channel_bar_chart(w2048, title="layer4.2 (SE)")),
        "overlay 448x448": timeit(lambda: overlay(img, amap, alpha=0.5)),
        "depth_overview 16 blocks": timeit(lambda: depth_overview(blocks)),
    }
    counter = iter(range(10**9))

    def whole_model() -> None:
        # fresh titles and gate values every run, so text is not served from cache
        run = next(counter)
        for name, wts in blocks:
            channel_bar_chart(np.roll(wts, run), title=f"{name} (SE) run {run}")
            overlay(img, amap)
        depth_overview([(f"{name}.{run}", wts) for name, wts in blocks])

    res["whole model (16 charts + 16 overlays + overview)"] = timeit(whole_model)
    return res


if __name__ == "__main__":
    for key, (wall_ms, cpu_ms) in _benchmark().items():
        print(f"{key:>50s}: {wall_ms:7.2f} ms wall, {cpu_ms:7.2f} ms CPU (median)")
