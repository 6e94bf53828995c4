"""A corpus of odd and broken image files, generated on demand (nothing is stored in git).

``make_corpus(folder)`` returns ``{name: (path, expected)}`` where ``expected`` is ``"ok"`` for
odd-but-valid images and ``"error"`` for inputs that must be refused with a clear message.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _photo(w: int = 160, h: int = 120) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)
    return Image.fromarray(arr)


def make_corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}

    def add(name: str, expected: str, data: bytes | None = None, image: Image.Image | None = None, **save):
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        elif image is not None:
            image.save(path, **save)
        out[name] = (path, expected)

    photo = _photo()
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=90)
    png = io.BytesIO()
    photo.save(png, "PNG")

    # --- broken: must be refused, naming the file ---
    add("zero_bytes.png", "error", b"")
    add("truncated.jpg", "error", jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    add("truncated.png", "error", png.getvalue()[: len(png.getvalue()) // 2])
    add("text_named.png", "error", b"hello, I am a text file\n" * 20)
    add("svg_named.png", "error", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    add("page.html", "error", b"<!doctype html><html><body>not an image</body></html>")
    add("bomb_header.png", "error", _png_claiming(100_000, 100_000))
    add("random_bytes.jpg", "error", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    add("pdf_named.jpg", "error", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF")
    add("json_named.webp", "error", b'{"image": false}')
    directory = folder / "a_directory.png"
    directory.mkdir(exist_ok=True)
    out["a_directory.png"] = (directory, "error")
    out["missing.png"] = (folder / "missing.png", "error")

    # --- odd but valid: must give a correct result ---
    add("tiny_1x1.png", "ok", image=Image.new("RGB", (1, 1), (200, 30, 30)))
    add("strip_4000x3.png", "ok", image=Image.new("RGB", (4000, 3), (10, 200, 10)))
    add("strip_3x4000.png", "ok", image=Image.new("RGB", (3, 4000), (10, 10, 200)))
    add("gray16.png", "ok", image=Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)))
    add("float.tif", "ok", image=Image.fromarray(np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)))
    add("cmyk.jpg", "ok", image=photo.convert("CMYK"), quality=90)
    pal = Image.new("P", (64, 64))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (16, 16, 48, 48))
    add("palette_transparent.png", "ok", image=pal, transparency=0)
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    add("rgba.png", "ok", image=rgba)
    add("la.png", "ok", image=photo.convert("LA"))
    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 0, 255))]
    add("animated.gif", "ok", image=frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated.webp", "ok", image=frames[0], save_all=True, append_images=frames[1:], duration=100)
    add("multipage.tif", "ok", image=frames[0], save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    add("exif_rotated.jpg", "ok", image=_photo(160, 90), exif=exif.tobytes(), quality=90)
    add("gray.jpg", "ok", image=photo.convert("L"), quality=90)
    add("one_bit.png", "ok", image=photo.convert("1"))
    add("photo.bmp", "ok", image=photo)
    add("photo.webp", "ok", image=photo)
    return out


def make_large(folder: Path) -> Path:
    """A valid 12000 × 12000 image (144 megapixels, under the 150-megapixel limit)."""
    path = folder / "large_12000.png"
    if not path.exists():
        Image.new("RGB", (12000, 12000), (90, 120, 150)).save(path, compress_level=1)
    return path
