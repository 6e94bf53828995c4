"""Spatial attention maps: geometry (bilinear upsampling), value scaling, and colouring
(:func:`overlay` on a photo, :func:`heatmap` alone).

Also holds the input coercions other parts of the package share (:func:`_check_size`,
:func:`_as_rgb_image`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image

from .colormaps import _index_to_rgb_image, colormap_lut

__all__ = ["NormalizeMode", "upsample_map", "normalize_map", "overlay", "heatmap"]

NormalizeMode = Literal["minmax", "none"]

# A map whose range is below this fraction of its magnitude counts as constant
# (float32 interpolation of a constant map leaves ~1e-7 relative noise).
_FLAT_RTOL = 1e-5


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
    """``image`` as an RGB PIL image: PIL (any mode), or an array ``[H, W]`` / ``[H, W, 3|4]`` /
    ``[3, H, W]`` of uint8 or floats in ``[0, 1]``."""
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
