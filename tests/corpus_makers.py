"""Byte-level makers of the hostile and odd files in tests/corpus.py (each in milliseconds)."""
from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk right after IHDR (within the first kilobyte)."""
    return png[:33] + png_chunk(kind, data) + png[33:]


@functools.cache
def one_bit_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: 30000x30000 is 112 MB of pixels and ~110 kB on disk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\0" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    block = row * 1000
    parts = [z.compress(block) for _ in range(height // 1000)] + [z.compress(row * (height % 1000)), z.flush()]
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def _gif_parts(side: int) -> tuple[bytes, bytes]:
    """(header with colour table, one frame's blocks) of a GIF of noise."""
    noise = np.random.default_rng(side).integers(0, 4, (side, side), dtype=np.uint8)
    im = Image.fromarray(noise, "P")
    im.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0, 255, 255, 255] + [0] * 756)
    buf = io.BytesIO()
    im.save(buf, "GIF")
    data = buf.getvalue()
    flags = data[10]
    start = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    return data[:start], data[start:-1]


@functools.cache
def gif_frames(n: int, side: int = 16) -> bytes:
    """A valid GIF of ``n`` identical frames of noise (built by repeating one frame's bytes)."""
    head, frame = _gif_parts(side)
    return head + frame * n + b";"


def gif_with_comment(comment: bytes) -> bytes:
    """A valid one-frame GIF with a comment extension before its frame."""
    head, frame = _gif_parts(16)
    return head + b"\x21\xfe" + bytes([len(comment)]) + comment + b"\x00" + frame + b";"


@functools.cache
def tiff_pages(n: int, side: int = 8, data: bytes | None = None) -> bytes:
    """A little-endian grayscale TIFF of ``n`` pages ``side`` x ``side`` (a strip each), made by
    hand so 1500 pages take milliseconds; ``data`` (shared by every page) may be short, to
    make a page that claims more than it holds."""
    strip = data if data is not None else bytes(range(256)) * (side * side // 256) + bytes(side * side % 256)
    out = bytearray(b"II*\x00" + struct.pack("<I", 0))
    strips = []
    for _ in range(n if data is None else 1):
        strips.append(len(out))
        out += strip
    if data is not None:
        strips *= n
    first = len(out)
    struct.pack_into("<I", out, 4, first)
    for i, offset in enumerate(strips):
        tags = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, offset),
                (277, 3, 1), (278, 4, side), (279, 4, len(strip))]
        ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, kind, 1, v) for t, kind, v in tags)
        nxt = len(out) + len(ifd) + 4 if i < len(strips) - 1 else 0
        out += ifd + struct.pack("<I", nxt)
    return bytes(out)


def ico_claiming(png: bytes, kind: int = 1) -> bytes:
    """An ICO (kind 1) or CUR (kind 2) of one image: ``png``, whatever size it claims."""
    return struct.pack("<HHH", 0, kind, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


def iso_media(brand: bytes) -> bytes:
    """The start of an ISO media file (HEIC, AVIF, MP4) with ``brand``."""
    return struct.pack(">I", 24) + b"ftyp" + brand + b"\0\0\0\0" + b"mif1" + brand + struct.pack(">I", 8) + b"free"


def dos_eps() -> bytes:
    """A DOS-binary EPS: a 30-byte header, then PostScript."""
    ps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    return b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, len(ps), 0, 0, 0, 0) + b"\xff\xff" + ps
