"""Bad and odd inputs, generated on demand (nothing is stored in git), and the list of every kind.

``make_corpus(folder)`` writes the image corpus and returns ``{name: (path, expected)}`` where
``expected`` is ``"ok"`` for odd-but-valid images and ``"error"`` for inputs that must be refused
with a clear message. Each entry of :data:`IMAGES` says what the file is and what it gets (a
fragment of the one-line message, checked by the tests); :func:`all_kinds` adds the kinds of
checkpoints, dataset sources and app requests that the other test files parametrize, and
``python -m tests.corpus`` prints them all as the table in docs/ROBUSTNESS.md (a test keeps the
two equal).
"""
from __future__ import annotations

import functools
import io
import os
import socket
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .corpus_makers import (dos_eps, gif_frames, gif_with_comment, ico_claiming, iso_media, one_bit_png,
                            png_with_chunk, tiff_pages)


@dataclass(frozen=True)
class Kind:
    """One kind of bad or odd input: ``gets`` is a fragment of the message it gets ("ok": works)."""

    name: str
    what: str
    gets: str
    where: str  # the surfaces it is tried on
    test: str  # the test(s) that check it


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


def encode(image: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


@functools.cache
def _jpeg() -> bytes:
    return encode(_photo(), "JPEG", quality=90)


@functools.cache
def _png() -> bytes:
    return encode(_photo(), "PNG")


def _patched(data: bytes, at: int, packed: bytes) -> bytes:
    return data[:at] + packed + data[at + len(packed):]


def _jpeg_claiming(w: int, h: int) -> bytes:
    data = encode(Image.new("RGB", (16, 16)), "JPEG")
    sof = data.index(b"\xff\xc0")
    return _patched(data, sof + 5, struct.pack(">HH", h, w))


def _animated_webp_claiming(side: int) -> bytes:
    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    return _patched(data, 24, (side - 1).to_bytes(3, "little") * 2)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    return buf.getvalue()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))  # the socket file stays after the socket is closed
    finally:
        s.close()


def _link(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


def _sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(size)
    return make


def _image(fmt: str | None = None, source: Callable[[], Image.Image] = _photo, **save) -> Callable[[Path], None]:
    return lambda path: source().save(path, fmt, **save)


def _frames(*colours) -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), c) for c in colours]


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    _photo(160, 90).save(path, exif=exif.tobytes(), quality=90)


def _palette_transparent(path: Path) -> None:
    pal = Image.new("P", (64, 64))
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (16, 16, 48, 48))
    pal.save(path, transparency=0)


def _rgba() -> Image.Image:
    rgba = _photo().convert("RGBA")
    rgba.putalpha(128)
    return rgba


B = Callable[[Path], None]
_E, _OK = "error", "ok"
ALL = "library, CLI, app"
LC = "library, CLI"  # not a regular file: cannot be uploaded over HTTP
T_IMG = "test_robustness.py::test_library_on_every_corpus_file, ::test_cli_reports_each_broken_file_and_processes_the_rest, test_app_robustness.py::test_every_corpus_file_through_the_app"
T_IMG_LC = "test_robustness.py::test_library_on_every_corpus_file, ::test_cli_reports_each_broken_file_and_processes_the_rest"

NON_UTF8_NAME = os.fsdecode(b"latin1_caf\xe9.png")  # a name whose bytes are not UTF-8
LONG_NAME = "n" * 251 + ".png"  # 255 bytes, the longest a file name can be
MAX_FILE_BYTES = 1 << 30  # attnviz.inputs.MAX_FILE_BYTES

#: (file name, expected, what it is, what it gets, how it is made, where it is tried)
IMAGES: list[tuple[str, str, str, str, B | bytes, str]] = [
    # --- broken or hostile: refused with a one-line message naming the file ---
    ("zero_bytes.png", _E, "an empty file", "file is empty", b"", ALL),
    ("truncated.jpg", _E, "a JPEG cut in half", "truncated or corrupt", _jpeg()[: len(_jpeg()) // 2], ALL),
    ("truncated.png", _E, "a PNG cut in half", "truncated or corrupt", _png()[: len(_png()) // 2], ALL),
    ("text_named.png", _E, "a text file named .png", "looks like a text file", b"hello, I am a text file\n" * 20, ALL),
    ("svg_named.png", _E, "an SVG drawing named .png", "SVG", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', ALL),
    ("page.html", _E, "an HTML page", "HTML page", b"<!doctype html><html><body>not an image</body></html>", ALL),
    ("bomb_header.png", _E, "a PNG header claiming 100000x100000", "decompression bomb", _png_claiming(100_000, 100_000), ALL),
    ("random_bytes.jpg", _E, "4 kB of random bytes named .jpg", "unrecognised", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), ALL),
    ("pdf_named.jpg", _E, "a PDF named .jpg", "PDF document", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", ALL),
    ("json_named.webp", _E, "JSON named .webp", "text file", b'{"image": false}', ALL),
    ("eps_named.png", _E, "an EPS (PostScript) file named .png", "PostScript/EPS, which is never opened", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", ALL),
    ("postscript.jpg", _E, "a bare PostScript program named .jpg", "PostScript, which is never opened", b"%!\n/Times findfont 12 scalefont setfont\nshowpage\n", ALL),
    ("dos_eps.tif", _E, "a DOS-binary EPS named .tif", "DOS EPS", dos_eps(), ALL),
    ("ico_bomb.ico", _E, "an ICO whose PNG claims 100000x100000", "Windows icon (ICO)", ico_claiming(_png_claiming(100_000, 100_000)), ALL),
    ("cursor.cur", _E, "a Windows cursor", "Windows cursor (CUR)", ico_claiming(_png_claiming(32, 32), kind=2), ALL),
    ("photoshop.png", _E, "a Photoshop document named .png", "Photoshop", b"8BPS\x00\x01" + b"\x00" * 64, ALL),
    ("iphone.heic", _E, "a HEIC photo", "HEIC/HEIF images are not supported", iso_media(b"heic"), ALL),
    ("picture.avif", _E, "an AVIF image", "AVIF images are not supported", iso_media(b"avif"), ALL),
    ("video_named.jpg", _E, "an MP4 video named .jpg", "video/ISO media", iso_media(b"isom"), ALL),
    ("pdf_polyglot.png", _E, "a valid PNG that is also a PDF (%PDF- in a tEXt chunk)", "also a PDF document (a polyglot file)", png_with_chunk(_png(), b"tEXt", b"Comment\x00%PDF-1.4 1 0 obj"), ALL),
    ("html_polyglot.gif", _E, "a valid GIF carrying <script> in a comment", "also an HTML page with a script", gif_with_comment(b"<script>alert(1)</script>"), ALL),
    ("gifar.gif", _E, "a valid GIF with a zip (jar) appended", "also a zip archive", gif_frames(1) + _zip_bytes(), ALL),
    ("bilevel_bomb.png", _E, "a 30000x30000 1-bit PNG (~110 kB on disk)", "image is 30000x30000", one_bit_png(30_000, 30_000), ALL),
    ("bomb.gif", _E, "a GIF whose screen claims 65535x65535", "65535x65535", _patched(gif_frames(1), 6, struct.pack("<HH", 65535, 65535)), ALL),
    ("bomb.tif", _E, "a TIFF whose first page claims 100000x100000", "100000x100000", tiff_pages(1, side=100_000, data=b"\0" * 64), ALL),
    ("bomb.bmp", _E, "a BMP header claiming 100000x100000", "100000x100000", _patched(encode(Image.new("RGB", (1, 1)), "BMP"), 18, struct.pack("<ii", 100_000, 100_000)), ALL),
    ("bomb.jpg", _E, "a JPEG frame header claiming 65500x65500", "65500x65500", _jpeg_claiming(65500, 65500), ALL),
    ("bomb.webp", _E, "an animated WebP whose canvas claims 16384x16384", "16384x16384", _animated_webp_claiming(16384), ALL),
    ("signature_only.png", _E, "the 8-byte PNG signature alone", "starts like a PNG file but its header is corrupt", b"\x89PNG\r\n\x1a\n", ALL),
    ("bad_crc.png", _E, "a PNG whose header checksum is wrong", "starts like a PNG file but its header is corrupt", _patched(_png(), 29, b"\0\0\0\0"), ALL),
    ("zero_width.png", _E, "a PNG header claiming 0x16", "PNG", _png_claiming(0, 16), ALL),
    ("broken\nname.png", _E, "a text file whose name holds a newline (its message stays one line)", "looks like a text file", b"not an image\n", ALL),
    ("too_big.png", _E, "a (sparse) file over the 1 GiB limit", "more than the limit of 1,073,741,824 bytes", _sparse(MAX_FILE_BYTES + 1), LC),
    ("fifo.png", _E, "a FIFO (named pipe): reading it would block forever", "is a FIFO (named pipe), not a regular file", _fifo, LC),
    ("dev_zero.png", _E, "a link to /dev/zero (endless)", "is a character device, not a regular file", _link("/dev/zero"), LC),
    ("socket.png", _E, "a Unix socket", "is a socket, not a regular file", _socket, LC),
    ("dangling_link.png", _E, "a link to nothing", "no such file", _link("/nonexistent/attnviz/x.png"), LC),
    ("link_loop.png", _E, "a link to itself", "cannot access file", _link("link_loop.png"), LC),
    ("a_directory.png", _E, "a directory named .png", "is a directory", lambda p: p.mkdir(), LC),
    ("missing.png", _E, "a path that does not exist", "no such file", lambda p: None, LC),
    # --- odd but valid: must give a correct result ---
    ("tiny_1x1.png", _OK, "a 1x1 image", "ok", _image(source=lambda: Image.new("RGB", (1, 1), (200, 30, 30))), ALL),
    ("strip_4000x3.png", _OK, "a 4000x3 strip", "ok", _image(source=lambda: Image.new("RGB", (4000, 3), (10, 200, 10))), ALL),
    ("strip_3x4000.png", _OK, "a 3x4000 strip", "ok", _image(source=lambda: Image.new("RGB", (3, 4000), (10, 10, 200))), ALL),
    ("gray16.png", _OK, "16-bit grayscale", "ok (scaled by bit depth)", _image(source=lambda: Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))), ALL),
    ("float.tif", _OK, "32-bit float TIFF", "ok", _image(source=lambda: Image.fromarray(np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64))), ALL),
    ("cmyk.jpg", _OK, "CMYK JPEG", "ok", _image(source=lambda: _photo().convert("CMYK"), quality=90), ALL),
    ("palette_transparent.png", _OK, "palette PNG with a transparent index", "ok (composited on white)", _palette_transparent, ALL),
    ("rgba.png", _OK, "RGBA with 50 % alpha", "ok (composited on white)", _image(source=_rgba), ALL),
    ("la.png", _OK, "grayscale + alpha", "ok", _image(source=lambda: _photo().convert("LA")), ALL),
    ("animated.gif", _OK, "a 2-frame GIF", "ok (frame 0)", _image(source=lambda: _frames((255, 0, 0), (0, 0, 255))[0], save_all=True, append_images=_frames((0, 0, 255)), duration=100, loop=0), ALL),
    ("animated.webp", _OK, "a 2-frame WebP", "ok (frame 0)", _image(source=lambda: _frames((255, 0, 0))[0], save_all=True, append_images=_frames((0, 0, 255)), duration=100), ALL),
    ("multipage.tif", _OK, "a 2-page TIFF", "ok (page 0)", _image(source=lambda: _frames((255, 0, 0))[0], save_all=True, append_images=_frames((0, 0, 255))), ALL),
    ("frames_2500.gif", _OK, "a 2500-frame GIF", "ok (frame 0 only; bytes read independent of frames)", gif_frames(2500, side=32), ALL),
    ("pages_1500.tif", _OK, "a 1500-page TIFF", "ok (page 0 only; bytes read independent of pages)", tiff_pages(1500, side=32), ALL),
    ("exif_rotated.jpg", _OK, "EXIF orientation 6", "ok (rotated upright)", _exif_rotated, ALL),
    ("gray.jpg", _OK, "grayscale JPEG", "ok", _image(source=lambda: _photo().convert("L"), quality=90), ALL),
    ("one_bit.png", _OK, "a 1-bit PNG", "ok", _image(source=lambda: _photo().convert("1")), ALL),
    ("photo.bmp", _OK, "BMP", "ok", _image(source=_photo), ALL),
    ("photo.webp", _OK, "WebP", "ok", _image(source=_photo), ALL),
    ("png_named.jpg", _OK, "a PNG named .jpg", "ok (the bytes decide, not the name)", _png(), ALL),
    ("with space.png", _OK, "a name with spaces", "ok", _png(), ALL),
    ("-leading-dash.png", _OK, "a name starting with '-'", "ok (after '--' on the command line)", _png(), ALL),
    ("$(touch PWNED).png", _OK, "a name holding '$(touch PWNED)'", "ok (nothing runs)", _png(), ALL),
    ("emoji_🐱.png", _OK, "an emoji in the name", "ok", _png(), ALL),
    (LONG_NAME, _OK, "a 255-byte name", "ok (output names shortened with a hash)", _png(), ALL),
    (NON_UTF8_NAME, _OK, "a name whose bytes are not UTF-8 (latin-1 é)", "ok (named as \\xe9)", _png(), LC),
]


def make_corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str]] = {}
    for name, expected, _what, _gets, make, _where in IMAGES:
        path = folder / name
        if not os.path.lexists(path):
            if isinstance(make, bytes):
                path.write_bytes(make)
            else:
                make(path)
        out[name] = (path, expected)
    return out


def expected_message(name: str) -> str:
    """The fragment of the message that corpus file ``name`` gets."""
    return next(gets for n, _e, _w, gets, _m, _where in IMAGES if n == name)


def uploadable(name: str) -> bool:
    return next(where for n, *_rest, where in IMAGES if n == name) == ALL


def make_large(folder: Path) -> Path:
    """A valid 12000 × 12000 image (144 megapixels, under the 150-megapixel limit)."""
    path = folder / "large_12000.png"
    if not path.exists():
        Image.new("RGB", (12000, 12000), (90, 120, 150)).save(path, compress_level=1)
    return path


def image_kinds() -> list[Kind]:
    return [Kind(n, what, gets, where, T_IMG if where == ALL else T_IMG_LC) for n, _e, what, gets, _m, where in IMAGES]


def all_kinds() -> list[Kind]:
    """Every kind of bad or odd input the tests try, in the order of docs/ROBUSTNESS.md."""
    from .corpus_kinds import OTHER_KINDS

    return image_kinds() + OTHER_KINDS


def markdown_table(kinds: list[Kind] | None = None) -> str:
    kinds = all_kinds() if kinds is None else kinds
    notes = {T_IMG: "corpus¹", T_IMG_LC: "corpus²"}
    lines = [f"{len(kinds)} kinds ({sum(k.gets.startswith('ok') for k in kinds)} odd but valid, the rest refused).", "",
             "| # | input | what it is | tried on | what it gets | checked by |", "|---|---|---|---|---|---|"]
    for i, k in enumerate(kinds, 1):
        name = k.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        name = name.replace("\n", "\\n")
        if len(name) > 40:
            name = name[:20] + "…" + name[-8:]
        cells = [str(i), f"`{name}`", k.what, k.where, k.gets, notes.get(k.test, k.test)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", f"¹ {T_IMG}.", "", f"² {T_IMG_LC} (not something HTTP can carry)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m tests.corpus: the table of docs/ROBUSTNESS.md
    print(markdown_table(), end="")
