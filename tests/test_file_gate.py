"""The file gate decides before decoding: special files are refused unread, the format comes from
the bytes and only its one decoder runs (EPS never reaches Ghostscript), bombs are refused from
the header, multi-frame files cost frame 0 only; the header checks are fuzzed with hypothesis."""
from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from attnviz.inputs import ImageLoadError, load_image
from attnviz.inputs import gate as G
from attnviz.inputs import sniff

from .corpus import IMAGES, make_corpus
from .test_hostile_inputs import within
from .corpus_kinds import PATHS
from .corpus_makers import gif_frames, one_bit_png, tiff_pages

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("gate"))


@pytest.fixture
def opened(monkeypatch):
    """Every path the gate opens (os.open in attnviz.inputs.gate)."""
    seen: list[str] = []
    real = os.open

    def spy(path, flags, *args):
        seen.append(os.fsdecode(path))
        return real(path, flags, *args)

    monkeypatch.setattr(G.os, "open", spy)
    return seen


@pytest.mark.parametrize("special", ["fifo.png", "dev_zero.png", "socket.png", "a_directory.png"])
def test_special_files_are_refused_at_once_without_being_opened(corpus, opened, special):
    path = corpus[special][0]
    t0 = time.perf_counter()
    err = within(5, _error_of, path)  # a blocking open (a FIFO) fails the test instead of hanging it
    assert time.perf_counter() - t0 < 1.0
    assert err.startswith(f"{special}: is ") and "not a" in err
    assert not opened  # refused by what stat says, never opened


def _error_of(source) -> str:
    try:
        load_image(source)
    except ImageLoadError as e:
        return str(e)
    return "ok"


def test_dev_zero_and_a_fifo_by_their_own_names(tmp_path):
    assert _error_of("/dev/zero").startswith("zero: is a character device, not a regular file")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert _error_of(fifo).startswith("pipe: is a FIFO (named pipe)")


@pytest.mark.parametrize("case", PATHS, ids=[c.name for c in PATHS])
def test_impossible_paths_are_refused_by_name(tmp_path, opened, case):
    err = _error_of(case.make(tmp_path))
    assert case.gets in err and "\n" not in err and "accepted: PNG" in err, err
    assert not opened


def test_a_path_swapped_for_a_fifo_after_the_check_is_refused_on_the_open_descriptor(tmp_path, monkeypatch):
    path = tmp_path / "swap.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    real_check = G.check_file

    def check_then_swap(p, **kw):
        st_ = real_check(p, **kw)
        path.unlink()
        os.mkfifo(path)  # the race a hostile folder could win
        return st_

    monkeypatch.setattr(G, "check_file", check_then_swap)
    err = _error_of(path)
    assert err.startswith("swap.png: is a FIFO"), err  # O_NONBLOCK open, then fstat: no hang


@pytest.fixture
def plugins_tried(monkeypatch):
    """The PIL format plugins asked to open a file, and the decoders created."""
    tried: list[str] = []
    decoders: list[str] = []
    for fmt, (factory, accept) in list(Image.OPEN.items()):
        def spy(fp, filename, *a, _fmt=fmt, _factory=factory):
            tried.append(_fmt)
            return _factory(fp, filename, *a)
        monkeypatch.setitem(Image.OPEN, fmt, (spy, accept))
    real = Image._getdecoder

    def decoder(mode, name, *args):
        decoders.append(name)
        return real(mode, name, *args)

    monkeypatch.setattr(Image, "_getdecoder", decoder)
    return tried, decoders


def test_only_the_sniffed_decoder_runs_and_refused_files_reach_none(corpus, plugins_tried, monkeypatch):
    from PIL import EpsImagePlugin

    ran: list = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: ran.append(a))
    tried, decoders = plugins_tried
    before_decoding = ("EPS", "PostScript", "ICO", "cursor", "Photoshop", "HEIC", "AVIF", "polyglot", "PDF", "SVG",
                       "HTML", "text", "video", "unrecognised", "decompression bomb", "regular file", "no such",
                       "directory", "cannot access", "empty", "limit")
    for name, (path, expected) in corpus.items():
        tried.clear()
        decoders.clear()
        err = _error_of(path)
        head = path.read_bytes()[:16] if path.is_file() and os.path.getsize(path) < 2**30 else b""
        fmt = sniff.image_format(head)
        assert set(tried) <= ({fmt} if fmt else set()), (name, tried)  # never another plugin
        if expected == "error" and any(w in err for w in before_decoding):
            assert not decoders, (name, decoders)  # refused before any pixel decoder was made
    assert not ran  # Ghostscript never ran


class Counting(io.FileIO):
    """A file that counts the bytes read and the seeks made through it."""

    read_bytes = seeks = 0

    def read(self, n=-1):
        data = super().read(n)
        Counting.read_bytes += len(data)
        return data

    def readinto(self, b):
        n = super().readinto(b)
        Counting.read_bytes += n or 0
        return n

    def seek(self, *args):
        Counting.seeks += 1
        return super().seek(*args)


def _cost(path: Path, plugins_tried, monkeypatch) -> tuple[int, int, int]:
    """(bytes read, seeks, decoders made) to load ``path``."""
    _tried, decoders = plugins_tried
    decoders.clear()
    Counting.read_bytes = Counting.seeks = 0
    monkeypatch.setattr(G.os, "fdopen", lambda fd, mode: io.BufferedReader(Counting(fd, "rb")))
    image = load_image(path)
    assert image.mode == "RGB"
    return Counting.read_bytes, Counting.seeks, len(decoders)


@pytest.mark.parametrize("kind, one, many", [
    ("gif", lambda: gif_frames(1, side=32), lambda: gif_frames(2500, side=32)),
    ("tiff", lambda: tiff_pages(1, side=32), lambda: tiff_pages(1500, side=32)),
])
def test_multi_frame_files_cost_frame_0_only(tmp_path, plugins_tried, monkeypatch, kind, one, many):
    p1, pn = tmp_path / f"one.{kind}", tmp_path / f"many.{kind}"
    p1.write_bytes(one())
    pn.write_bytes(many())
    read1, seeks1, dec1 = _cost(p1, plugins_tried, monkeypatch)
    readn, seeksn, decn = _cost(pn, plugins_tried, monkeypatch)
    print(kind, pn.stat().st_size, (read1, seeks1, dec1), (readn, seeksn, decn))
    assert pn.stat().st_size > 10 * readn  # most of the file is never read
    assert readn <= read1 + 2 * 65536  # at most one more read buffer and the zip-tail check
    assert seeksn <= seeks1 and decn == dec1 == 1  # no more seeks, one frame decoded


def test_one_bit_bomb_is_refused_from_its_header(tmp_path, plugins_tried):
    data = one_bit_png(30_000, 30_000)
    assert len(data) < 150_000  # 900 megapixels in ~110 kB
    path = tmp_path / "bilevel.png"
    path.write_bytes(data)
    _tried, decoders = plugins_tried
    t0 = time.perf_counter()
    err = _error_of(path)
    assert "bilevel.png: image is 30000x30000 (900 megapixels)" in err and time.perf_counter() - t0 < 1
    assert _error_of(data).startswith("uploaded image: image is 30000x30000")
    assert not decoders


def test_size_limits_for_files_and_uploads(tmp_path):
    png = (tmp_path / "x.png")
    Image.new("RGB", (8, 8)).save(png)
    assert "more than the limit of 20 bytes" in str(pytest.raises(ImageLoadError, load_image, png, max_bytes=20).value)
    err = str(pytest.raises(ImageLoadError, load_image, png.read_bytes(), max_bytes=20).value)
    assert err.startswith("uploaded image: upload is") and "more than the limit" in err
    assert load_image(png).size == (8, 8)


def test_every_kind_listed_in_the_corpus_has_its_file(corpus):
    assert len({name for name, *_ in IMAGES}) == len(IMAGES) >= 60
    absent = [name for name, (path, _) in corpus.items()
              if not os.path.lexists(path) and name != "missing.png"]  # missing.png: meant not to exist
    assert not absent, f"kinds without a file: {absent}"


# ------------------------------------------------------------------------------------------------
# fuzzing the header checks

SIGNATURES = [p for prefixes in sniff.SIGNATURES.values() for p in prefixes] + [b"RIFF\0\0\0\0WEBPVP8X", b"%!PS", b"\0\0\1\0"]


@FUZZ
@given(st.one_of(st.binary(max_size=64), st.builds(lambda s, b: s + b, st.sampled_from(SIGNATURES), st.binary(max_size=64))))
def test_fuzz_sniffing_never_fails(head):
    fmt = sniff.image_format(head)
    assert fmt is None or fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
    assert isinstance(sniff.describe(head), str) and "\n" not in sniff.describe(head)
    assert sniff.polyglot(head) is None or b"%pdf-" in head.lower() or b"<" in head or b"%!" in head
    size = sniff.webp_size(head)
    assert size is None or (0 <= size[0] <= 2**24 and 0 <= size[1] <= 2**24)


@FUZZ
@given(st.sampled_from(SIGNATURES), st.binary(max_size=200))
def test_fuzz_headers_after_a_real_signature_give_one_line_errors(signature, tail):
    err = _error_of(signature + tail)
    assert err == "ok" or (err.startswith("uploaded image: ") and "\n" not in err and "accepted" in err)


@FUZZ
@given(st.text(max_size=60))
def test_fuzz_one_line_names(name):
    shown = G.one_line(name)
    assert "\n" not in shown and "\r" not in shown and shown == shown.strip()
