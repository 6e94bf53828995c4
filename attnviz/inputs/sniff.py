"""What a file is, from its first bytes, before any decoder sees it.

:func:`image_format` names the one allow-listed decoder a file may be handed to (PNG, JPEG,
WebP, GIF, BMP, TIFF) from its signature, or ``None``; the file extension plays no part.
:func:`polyglot` says when bytes that start like an image also read as something else (a PDF,
PostScript, an HTML/SVG page, a script, a zip archive): such files are refused too.
:func:`describe` words what a refused file looks like (EPS, PDF, SVG, ICO, HEIC, ...).

Only signatures are read here: no format plugin is tried, so PostScript never reaches
Ghostscript and an ICO never reaches the icon decoder.
"""
from __future__ import annotations

import zipfile
from typing import BinaryIO

#: Bytes read from the start of a file to decide what it is.
HEAD_BYTES = 1024

#: PIL format id -> the signatures (prefixes) that identify it.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),  # classic and BigTIFF
}

#: Markers that, within the first HEAD_BYTES of an image, make it something else as well
#: (PDF readers look for %PDF- anywhere in the first kilobyte; browsers sniff HTML the same way).
_POLYGLOT_MARKERS = (
    (b"%pdf-", "a PDF document"),
    (b"%!ps", "a PostScript program"),
    (b"<script", "an HTML page with a script"),
    (b"<html", "an HTML page"),
    (b"<svg", "an SVG drawing"),
    (b"<?php", "a PHP script"),
)

_ISO_BRANDS = {
    **dict.fromkeys(("heic", "heix", "hevc", "heim", "heis", "mif1", "msf1"),
                    "HEIC/HEIF images are not supported; convert it to JPEG or PNG"),
    **dict.fromkeys(("avif", "avis"), "AVIF images are not supported; convert it to JPEG or PNG"),
}

_NOT_IMAGES = (  # (signature at offset 0, what it is)
    (b"%!PS-Adobe", "looks like PostScript/EPS, which is never opened"),
    (b"%!", "looks like PostScript, which is never opened"),
    (b"\xc5\xd0\xd3\xc6", "looks like a DOS EPS (PostScript) file, which is never opened"),
    (b"%PDF", "looks like a PDF document"),
    (b"\x00\x00\x01\x00", "looks like a Windows icon (ICO)"),
    (b"\x00\x00\x02\x00", "looks like a Windows cursor (CUR)"),
    (b"8BPS", "looks like a Photoshop document (PSD)"),
    (b"PK\x03\x04", "looks like a zip archive"),
    (b"\x1f\x8b", "looks like a gzip archive"),
    (b"\x80\x02", "looks like a Python pickle"),
    (b"\xff\x0a", "looks like a JPEG XL image, which is not supported; convert it to JPEG or PNG"),
    (b"\x00\x00\x00\x0cJXL ", "looks like a JPEG XL image, which is not supported; convert it to JPEG or PNG"),
    (b"\x76\x2f\x31\x01", "looks like an OpenEXR image, which is not supported"),
)


def image_format(head: bytes) -> str | None:
    """The allow-listed PIL format whose signature ``head`` starts with, or ``None``."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for fmt, prefixes in SIGNATURES.items():
        if head.startswith(prefixes):
            return fmt
    return None


def webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas width and height from a WebP's first chunk (VP8X, VP8L or VP8), or None.

    Checked before the decoder opens the file: libwebp's animation decoder allocates its whole
    canvas when it is created, before Pillow could compare the size against any limit."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    return None


def polyglot(head: bytes) -> str | None:
    """What else the first bytes of an image are (a PDF, PostScript, HTML, SVG, PHP), or None."""
    low = head[:HEAD_BYTES].lower()
    return next((what for marker, what in _POLYGLOT_MARKERS if marker in low), None)


def zip_tail(fp: BinaryIO) -> bool:
    """True when the file also ends like a zip archive (an image+zip polyglot such as a GIFAR).
    Reads at most the last 64 kB; leaves the position at 0."""
    try:
        return zipfile.is_zipfile(fp)
    except Exception:  # noqa: BLE001 - an unreadable tail is not a zip
        return False
    finally:
        fp.seek(0)


def describe(head: bytes) -> str:
    """A short guess at what data that is not an allow-listed image is, for error messages."""
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for prefix, what in _NOT_IMAGES:
        if h.startswith(prefix):
            return f"not a supported image ({what})"
    low = h[:512].lower()
    if b"<svg" in low:
        return "not a supported image (looks like an SVG vector drawing)"
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low:
        return "not a supported image (looks like an HTML page)"
    if low.startswith(b"<"):
        return "not a supported image (looks like XML/HTML text)"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1", "replace").strip()
        return _ISO_BRANDS.get(brand, "not a supported image (looks like a video/ISO media file)")
    sample = head[:HEAD_BYTES]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "not a supported image (looks like a text file)"
    return "not a supported image (unrecognised or unsupported format)"


__all__ = ["HEAD_BYTES", "SIGNATURES", "describe", "image_format", "polyglot", "webp_size", "zip_tail"]
