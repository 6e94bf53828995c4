"""The file gate: what may be opened as an image, and what it is.

:func:`load_image` turns whatever the user handed us (a path, uploaded bytes, a PIL image, a
numpy array) into a plain RGB :class:`PIL.Image.Image`, or raises :class:`ImageLoadError` with
a one-line message that names the source. Paths go through :mod:`attnviz.inputs.gate` (regular,
non-empty files within :data:`MAX_FILE_BYTES` only: a FIFO or a device is refused unread); the
format is decided from the bytes by :mod:`attnviz.inputs.sniff` and only that one allow-listed
decoder is tried (no other PIL plugin ever sees the file: EPS never reaches Ghostscript);
images that also read as a PDF, PostScript, HTML/SVG or a zip (polyglots) are refused;
decompression bombs are refused from the header, before any pixel is decoded. EXIF orientation
is applied, the first frame of animations / multi-page files is used, and every PIL mode is
mapped to sensible 8-bit RGB (alpha composited on white, 16-bit scaled by bit depth).

Pixels to model inputs (geometry, tensors) are :mod:`attnviz.preprocess`'s.
"""
from __future__ import annotations

import io
import os
import re
import threading
import warnings
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .sniff import HEAD_BYTES, describe, image_format, polyglot, webp_size, zip_tail
from .gate import MAX_FILE_BYTES, FileRefused, display_name, megabytes, open_file
from .gate import one_line as _one_line


MAX_IMAGE_PIXELS: int = 150_000_000
"""Images with more pixels than this (or whose header claims more) are refused as
potential decompression bombs."""

#: PIL format ids we are willing to decode (multi-picture JPEG/MPO opens via "JPEG").
_FORMATS_TEXT = "PNG, JPEG, WebP, GIF, BMP, TIFF"

_ARRAY_ACCEPTED = (
    "arrays of shape HxW, HxWx1, HxWx3 or HxWx4 with dtype uint8, uint16, bool "
    "or float (values in [0, 1])"
)

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g} megapixels"


def _accepted_images(max_pixels: int) -> str:
    return f"{_FORMATS_TEXT} images up to {_megapixels(max_pixels)}"


class ImageLoadError(FileRefused):
    """Raised when an input cannot be used as an image. str(err) is one line that names the
    source (file name, or 'uploaded image'/'array') and says what is wrong and what is accepted
    (e.g. 'PNG, JPEG, WebP, GIF, BMP, TIFF images up to N megapixels').

    Attributes: ``source`` (the name used in the message), ``problem`` (what is wrong),
    ``accepted`` (what would have been accepted, may be empty). A ``ValueError``, and a
    :class:`~attnviz.inputs.gate.FileRefused` like every refusal of the file gate.
    """


def _too_large(name: str, size: tuple[int, int] | None, max_pixels: int, pixels: int | None = None
               ) -> ImageLoadError:
    if size is not None:
        pixels = size[0] * size[1]
        what = f"image is {size[0]}x{size[1]} ({_megapixels(pixels)})"
    elif pixels is not None:
        what = f"image has {_megapixels(pixels)}"
    else:
        what = "image is too large"
    return ImageLoadError(
        name,
        f"{what}, more than the limit of {_megapixels(max_pixels)} "
        "(refused as a possible decompression bomb)",
        _accepted_images(max_pixels),
    )


# Raising PIL's global limit is only needed when the caller allows more than PIL's hard
# limit (2 * Image.MAX_IMAGE_PIXELS); it is done temporarily, under a lock, and restored.
_PIL_LIMIT_LOCK = threading.Lock()


class _PilLimits:
    """Context manager: silence PIL's DecompressionBombWarning (we check explicitly) and,
    only if needed, temporarily lift PIL's hard limit up to ``max_pixels``."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._locked = False
        self._saved: int | None = None

    def __enter__(self) -> _PilLimits:
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and self.max_pixels > 2 * limit:
            _PIL_LIMIT_LOCK.acquire()
            self._locked = True
            self._saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = self.max_pixels
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._locked:
                Image.MAX_IMAGE_PIXELS = self._saved
                _PIL_LIMIT_LOCK.release()
        finally:
            self._warn.__exit__(*exc)


def _bomb_pixels(exc: BaseException) -> int | None:
    m = re.search(r"\((\d+) pixels\)", str(exc))
    return int(m.group(1)) if m else None


def _header_size(fp, fmt: str) -> tuple[int, int] | None:
    """Width/height from the header without PIL's bomb check (only used to word the error
    after PIL refused the file); ``None`` if it cannot be read."""
    try:
        factory, _accept = Image.OPEN[fmt]
        fp.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tuple(factory(fp, "").size)  # type: ignore[return-value]
    except Exception:
        return None


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # broken EXIF must not make the image unusable
        return 1


def _sniffed_format(fp, name: str, max_pixels: int) -> str:
    """The one allow-listed format the bytes are, checked before any decoder sees them."""
    head = fp.read(HEAD_BYTES)
    fp.seek(0)
    fmt = image_format(head)
    if fmt is None:
        raise ImageLoadError(name, describe(head), _accepted_images(max_pixels))
    other = polyglot(head) or ("a zip archive" if zip_tail(fp) else None)
    if other:
        raise ImageLoadError(name, f"refused: the {fmt} file is also {other} (a polyglot file)",
                             _accepted_images(max_pixels))
    size = webp_size(head) if fmt == "WEBP" else None  # the other formats' headers: Image.open
    if size and size[0] * size[1] > max_pixels:
        raise _too_large(name, size, max_pixels)
    return fmt


def _open_checked(fp, fmt: str, name: str, max_pixels: int) -> Image.Image:
    """The decoded first frame, RGB; the pixel count is checked from the header first."""
    with Image.open(fp, formats=(fmt,)) as im:
        w, h = im.size
        if w * h > max_pixels:
            raise _too_large(name, (w, h), max_pixels)
        if w <= 0 or h <= 0:
            raise ImageLoadError(name, f"image has no pixels ({w}x{h})", _accepted_images(max_pixels))
        # Image.open leaves animations / multi-page files on their first frame; nothing reads
        # or decodes the others (tests/test_file_gate.py counts the bytes read and decoders).
        im.load()  # force full decode here so truncation/corruption is caught now
        if im.size[0] * im.size[1] > max_pixels:  # size may be refined by load()
            raise _too_large(name, im.size, max_pixels)
        return _finish(im, name)


def _decode(fp, name: str, max_pixels: int) -> Image.Image:
    """Sniff the format, open (header only), check the size, decode the first frame, to RGB."""
    fmt = _sniffed_format(fp, name, max_pixels)
    try:
        with _PilLimits(max_pixels):
            return _open_checked(fp, fmt, name, max_pixels)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large(name, _header_size(fp, fmt), max_pixels, _bomb_pixels(exc)) from exc
    except UnidentifiedImageError as exc:  # the signature is right, the header is not
        raise ImageLoadError(name, f"starts like a {fmt} file but its header is corrupt",
                             _accepted_images(max_pixels)) from exc
    except MemoryError as exc:
        raise ImageLoadError(name, "not enough memory to decode this image",
                             _accepted_images(max_pixels)) from exc
    except Exception as exc:  # OSError (truncated), SyntaxError (broken PNG), zlib, struct ...
        detail = _one_line(str(exc))[:120]
        raise ImageLoadError(
            name,
            "the file is truncated or corrupt and could not be decoded"
            + (f" [{detail}]" if detail else ""),
            _accepted_images(max_pixels),
        ) from exc


def _finish(im: Image.Image, name: str) -> Image.Image:
    """Apply EXIF orientation and convert to a new, file-independent RGB image."""
    if _orientation(im) != 1:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:
            pass  # unusable orientation data: keep the stored orientation
    return _to_rgb(im, name)


def _composite_on_white(im: Image.Image) -> Image.Image:
    try:
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    except ValueError:  # e.g. 'La': go via the non-premultiplied mode
        rgba = im.convert("LA" if im.mode.startswith("L") else "RGBa").convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, (0, 0), rgba)
    return out


def _bits_per_sample(im: Image.Image) -> int | None:
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    try:
        bits = tags.get(258)
        if isinstance(bits, (tuple, list)):
            bits = bits[0]
        bits = int(bits)
    except Exception:
        return None
    return bits if 1 <= bits <= 32 else None


def _gray_from_array(arr: np.ndarray, mode: str, bits: int | None) -> Image.Image:
    """High bit depth / float single-channel pixels → 8-bit L image."""
    if mode == "F":
        f = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(f.max()) if f.size else 0.0
        if top > 1.0:
            f = f / top
        u8 = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        a = arr.astype(np.int64, copy=False)
        if bits is None:
            if mode.startswith("I;16"):
                bits = 16
            else:  # 32-bit 'I' with unknown source depth: infer from the data
                top = int(a.max()) if a.size else 0
                bits = 8 if top <= 255 else 16 if top <= 65535 else 31
        denom = (1 << min(bits, 31)) - 1
        a = np.clip(a, 0, denom)
        u8 = ((a * 255 + denom // 2) // denom).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(u8))


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    """Any PIL mode → a NEW RGB image (never the input object, never tied to a file)."""
    mode = im.mode
    try:
        if mode.startswith("I;16") or mode in ("I", "F"):
            bits = _bits_per_sample(im) if mode == "I" else None
            gray = _gray_from_array(np.asarray(im), mode, bits)
            return gray.convert("RGB")
        if im.has_transparency_data:  # RGBA, LA, PA, P/L/RGB with tRNS / GIF transparency
            return _composite_on_white(im)
        if mode == "RGB":
            return im.copy()
        return im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, ...
    except Exception as exc:
        raise ImageLoadError(name, f"unsupported colour mode {mode!r} [{_one_line(str(exc))[:80]}]",
                             "RGB, RGBA, grayscale, palette, CMYK, YCbCr, 16-bit or float images"
                             ) from exc


def _from_array(arr: np.ndarray, max_pixels: int) -> Image.Image:
    name = "array"
    a = arr
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageLoadError(name, f"unsupported array shape {tuple(arr.shape)}", _ARRAY_ACCEPTED)
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ImageLoadError(name, f"array has no pixels (shape {tuple(arr.shape)})",
                             _ARRAY_ACCEPTED)
    if h * w > max_pixels:
        raise _too_large(name, (w, h), max_pixels)
    kind = a.dtype
    if kind == np.bool_:
        u8 = a.astype(np.uint8) * np.uint8(255)
    elif kind == np.uint8:
        u8 = a
    elif kind == np.uint16:
        u8 = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(x / 257)
    elif np.issubdtype(kind, np.floating):
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        u8 = (np.clip(f, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ImageLoadError(name, f"unsupported array dtype {kind}", _ARRAY_ACCEPTED)
    return _to_rgb(Image.fromarray(np.ascontiguousarray(u8)), name)


def _load_path(path: str | os.PathLike, max_pixels: int, max_bytes: int) -> Image.Image:
    name = display_name(path)
    with open_file(path, accepted=_accepted_images(max_pixels), max_bytes=max_bytes, error=ImageLoadError) as fh:
        return _decode(fh, name, max_pixels)


def load_image(
    source: str | os.PathLike | bytes | Image.Image | np.ndarray,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
) -> Image.Image:
    """Return an RGB PIL image.

    ``source`` may be a path (str / PathLike), raw encoded bytes (an upload), a PIL image or
    a numpy array (HxW, HxWx1, HxWx3, HxWx4; uint8, uint16, bool, or float in [0, 1]).
    EXIF orientation is applied; animated / multi-page files give their first frame;
    transparency is composited on white; 16-bit and float images are scaled to 8 bits.
    Images with more than ``max_pixels`` pixels are refused from the header, before decoding;
    files and uploads of more than ``max_bytes`` bytes, and paths that are not regular files
    (FIFOs, devices, sockets, folders), are refused before they are read.
    The returned image is always a new object with no open file behind it.

    Raises :class:`ImageLoadError` (a ``ValueError``) with a one-line message for anything
    that cannot be used.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_path(source, max_pixels, max_bytes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "uploaded image"
        size = memoryview(source).nbytes
        if size == 0:
            raise ImageLoadError(name, "upload is empty (0 bytes)", _accepted_images(max_pixels))
        if size > max_bytes:
            raise ImageLoadError(name, f"upload is {megabytes(size)}, more than the limit of {megabytes(max_bytes)}",
                                 _accepted_images(max_pixels))
        return _decode(io.BytesIO(source), name, max_pixels)
    if isinstance(source, Image.Image):
        name = "image"
        w, h = source.size
        if w * h > max_pixels:
            raise _too_large(name, (w, h), max_pixels)
        if w == 0 or h == 0:
            raise ImageLoadError(name, f"image has no pixels ({w}x{h})")
        try:
            source.load()
        except Exception as exc:
            raise ImageLoadError(
                name, f"image data could not be decoded [{_one_line(str(exc))[:120]}]",
                _accepted_images(max_pixels)) from exc
        return _finish(source, name)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    raise ImageLoadError(
        f"input of type {type(source).__name__}",
        "cannot be used as an image",
        "a file path, encoded image bytes, a PIL image or a numpy array",
    )


__all__ = ["MAX_FILE_BYTES", "MAX_IMAGE_PIXELS", "FileRefused", "ImageLoadError", "Source", "load_image"]
