"""Tests for attnviz.preprocess: robust loading, exact crop geometry, tensors and views."""
from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, features

from attnviz.inputs import MAX_IMAGE_PIXELS, ImageLoadError, load_image
from attnviz.preprocess import (
    Geometry,
    PreparedImage,
    PreprocessConfig,
    compute_geometry,
    prepare,
    prepare_batch,
    to_tensor,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# ----------------------------------------------------------------------------- helpers


def save(tmp_path: Path, name: str, im: Image.Image, **kw) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def px(im: Image.Image, xy=(0, 0)) -> tuple[int, int, int]:
    return tuple(im.getpixel(xy))


def close_to(a, b, tol=3) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def denormalize(t: torch.Tensor, cfg: PreprocessConfig) -> np.ndarray:
    """[1,3,S,S] normalized → S x S x 3 float in [0, 1]."""
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    return (t[0] * std + mean).permute(1, 2, 0).numpy()


def smooth_image(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 0.5 + 0.4 * np.sin(x / w * 2 * np.pi)
    g = 0.5 + 0.4 * np.cos(y / h * 3 * np.pi)
    b = (x + y) / (w + h)
    return Image.fromarray((np.stack([r, g, b], -1) * 255).astype(np.uint8))


def square_image(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Grey image with a pure red axis-aligned square covering pixels [x0, x1) x [y0, y1)."""
    arr = np.full((h, w, 3), 128, np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = RED
    return Image.fromarray(arr)


def red_extent(rgb01: np.ndarray) -> tuple[float, float, float, float]:
    """Sub-pixel extent (left, top, right, bottom) of the red square in an image of floats in
    [0, 1]: on the middle row/column, 'redness' (R - G, 0 on grey, 1 on red) summed gives
    the width, and the profile's centroid its centre."""
    red = np.clip(rgb01[..., 0] - rgb01[..., 1], 0, 1)
    ys, xs = np.nonzero(red > 0.5)
    row, col = red[int(ys.mean())], red[:, int(xs.mean())]

    def span(profile):
        width = profile.sum()
        centre = (profile * (np.arange(profile.size) + 0.5)).sum() / width
        return centre - width / 2, centre + width / 2

    (x0, x1), (y0, y1) = span(row), span(col)
    return x0, y0, x1, y1


# ----------------------------------------------------------------------------- modes


def test_rgba_alpha_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (3, 1))
    im.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((1, 0), (10, 20, 30, 255))  # opaque
    im.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black
    out = load_image(save(tmp_path, "rgba.png", im))
    assert out.mode == "RGB" and out.size == (3, 1)
    assert px(out, (0, 0)) == WHITE
    assert px(out, (1, 0)) == (10, 20, 30)
    assert close_to(px(out, (2, 0)), (127, 127, 127), 1)


def test_la_mode(tmp_path):
    im = Image.new("LA", (2, 1))
    im.putpixel((0, 0), (50, 0))
    im.putpixel((1, 0), (50, 255))
    out = load_image(save(tmp_path, "la.png", im))
    assert out.mode == "RGB"
    assert px(out, (0, 0)) == WHITE
    assert px(out, (1, 0)) == (50, 50, 50)


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_palette_with_transparency(tmp_path, fmt):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    out = load_image(save(tmp_path, f"pal.{fmt}", im, transparency=0))
    assert out.mode == "RGB"
    assert px(out, (0, 0)) == WHITE  # transparent index → white
    assert px(out, (1, 0)) == BLUE


def test_palette_without_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    out = load_image(save(tmp_path, "pal.png", im))
    assert [px(out, (0, 0)), px(out, (1, 0))] == [RED, GREEN]


def test_cmyk(tmp_path):
    im = Image.new("CMYK", (3, 1))
    im.putpixel((0, 0), (0, 0, 0, 0))
    im.putpixel((1, 0), (255, 0, 0, 0))
    im.putpixel((2, 0), (0, 0, 0, 255))
    out = load_image(save(tmp_path, "cmyk.tif", im))
    assert [px(out, (i, 0)) for i in range(3)] == [WHITE, (0, 255, 255), (0, 0, 0)]


def test_cmyk_jpeg(tmp_path):
    out = load_image(save(tmp_path, "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0))))
    assert out.mode == "RGB" and close_to(px(out, (8, 8)), RED, 6)


def test_bilevel_and_grayscale(tmp_path):
    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 1)
    out = load_image(save(tmp_path, "bw.png", one))
    assert [px(out, (0, 0)), px(out, (1, 0))] == [(0, 0, 0), WHITE]
    out = load_image(save(tmp_path, "gray.png", Image.new("L", (2, 2), 77)))
    assert out.mode == "RGB" and px(out) == (77, 77, 77)


def test_16bit_png_scaled_by_bit_depth(tmp_path):
    arr = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    path = save(tmp_path, "deep.png", Image.fromarray(arr))
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    out = load_image(path)
    vals = [px(out, (i, 0)) for i in range(4)]
    assert vals[0] == (0, 0, 0)
    assert close_to(vals[1], (128, 128, 128), 1)
    assert vals[2] == WHITE
    assert close_to(vals[3], (4, 4, 4), 1)  # not all-white


def test_16bit_tiff_and_32bit_int_image(tmp_path):
    arr = np.array([[0, 65535]], dtype=np.uint16)
    out = load_image(save(tmp_path, "deep.tif", Image.fromarray(arr)))
    assert [px(out, (0, 0)), px(out, (1, 0))] == [(0, 0, 0), WHITE]
    # 32-bit 'I' image without declared depth holding 16-bit data → scaled as 16-bit
    im = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32))
    assert im.mode == "I"
    out = load_image(im)
    assert px(out, (0, 0)) == (0, 0, 0) and px(out, (2, 0)) == WHITE
    assert close_to(px(out, (1, 0)), (128, 128, 128), 1)


def test_float_mode_images():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    out = load_image(unit)
    assert [px(out, (i, 0))[0] for i in range(3)] == [0, 128, 255]
    big = Image.fromarray(np.array([[0.0, 2.0, 4.0, -1.0]], dtype=np.float32))
    out = load_image(big)
    assert [px(out, (i, 0))[0] for i in range(4)] == [0, 128, 255, 0]


def test_ycbcr_image():
    out = load_image(Image.new("YCbCr", (4, 4), (200, 128, 128)))
    assert out.mode == "RGB" and close_to(px(out), (200, 200, 200), 2)


# ----------------------------------------------------------------------------- arrays


def test_arrays_of_every_accepted_kind():
    f = np.array([[[-0.5, 0.5, 1.5]]], dtype=np.float64)  # clipped to [0, 1]
    assert px(load_image(f)) == (0, 128, 255)
    assert px(load_image(np.array([[0.25]], dtype=np.float32))) == (64, 64, 64)
    b = np.array([[True, False]])
    out = load_image(b)
    assert [px(out, (0, 0)), px(out, (1, 0))] == [WHITE, (0, 0, 0)]
    u16 = np.array([[[65535, 32768, 0]]], dtype=np.uint16)
    assert px(load_image(u16)) == (255, 128, 0)
    assert px(load_image(np.full((2, 3, 1), 9, np.uint8))) == (9, 9, 9)
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (1, 2, 3, 255)
    out = load_image(rgba)
    assert [px(out, (0, 0)), px(out, (1, 0))] == [WHITE, (1, 2, 3)]
    # non-contiguous views work too, and the result is (width, height)
    wide = np.zeros((10, 20, 3), np.uint8)[:, ::2]
    assert load_image(wide).size == (10, 10)


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((4, 4), np.int64),
        np.zeros((4, 4, 3), np.int8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4,), np.uint8),
        np.zeros((2, 4, 4, 3), np.uint8),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_bad_arrays_are_refused_with_what_is_accepted(arr):
    with pytest.raises(ImageLoadError) as info:
        load_image(arr)
    msg = str(info.value)
    assert info.value.source == "array" and msg.startswith("array:")
    assert "HxWx3" in msg and "uint8" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- frames, EXIF


def _two_frames(tmp_path, fmt: str, **kw) -> Path:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    path = tmp_path / f"anim.{fmt}"
    frames[0].save(path, save_all=True, append_images=frames[1:], **kw)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 2
    return path


@pytest.mark.parametrize(
    "fmt,kw",
    [("gif", {"duration": 100, "loop": 0}), ("webp", {"lossless": True, "duration": 100}),
     ("tif", {}), ("mpo", {})],
)
def test_first_frame_of_multi_frame_files(tmp_path, fmt, kw):
    if fmt == "webp" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    out = load_image(_two_frames(tmp_path, fmt, **kw))
    assert out.mode == "RGB" and out.size == (8, 8)
    assert close_to(px(out, (4, 4)), RED, 8)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:] = BLUE
    arr[:10, :10] = RED  # mark the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = save(tmp_path, f"rot.{fmt}", Image.fromarray(arr), exif=exif.tobytes())
    out = load_image(path)
    assert out.size == (20, 40)  # width and height swapped
    assert close_to(px(out, (15, 4)), RED, 20)  # stored top-left → displayed top-right
    assert close_to(px(out, (4, 4)), BLUE, 20)
    assert close_to(px(out, (15, 35)), BLUE, 20)


# ----------------------------------------------------------------------------- inputs & handles


def test_sources_path_str_bytes_pil(tmp_path):
    im = smooth_image(30, 20)
    path = save(tmp_path, "img.png", im)
    ref = np.asarray(im)
    for src in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), im):
        out = load_image(src)
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), ref)
    assert load_image(im) is not im  # caller's image is never returned or mutated


def test_no_file_handles_left_open(tmp_path):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    paths = [save(tmp_path, f"f{i}.{ext}", smooth_image(16, 12))
             for i, ext in enumerate(["png", "jpg", "gif", "tif", "bmp"])]
    before = len(os.listdir("/proc/self/fd"))
    for p in paths * 3:
        load_image(p)
    with pytest.raises(ImageLoadError):
        load_image(save(tmp_path, "trunc.png", smooth_image(64, 64)).read_bytes()[:200])
    assert len(os.listdir("/proc/self/fd")) == before


# ----------------------------------------------------------------------------- decompression bombs


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim width x height (CRC fixed)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_header_bomb_refused_before_decoding(tmp_path, monkeypatch):
    """Refused from the header alone: no pixel decoder runs (checked by counting decoder calls,
    not with a clock, which would depend on the machine)."""
    from PIL import ImageFile

    decoded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def counting_load(self):
        decoded.append(type(self).__name__)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(100_000, 100_000))
    limit_before = Image.MAX_IMAGE_PIXELS
    for src, name in ((path, "bomb.png"), (path.read_bytes(), "uploaded image")):
        with pytest.raises(ImageLoadError) as info:
            load_image(src)
        assert decoded == []
        msg = str(info.value)
        assert msg.startswith(f"{name}:") and info.value.source == name
        assert "100000x100000" in msg and f"limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels" in msg
    assert Image.MAX_IMAGE_PIXELS == limit_before


def test_bomb_between_pil_warning_and_our_limit_no_warning_leaks():
    data = _png_claiming(10_000, 10_000)  # 100 MP: PIL would only warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageLoadError) as info:
            load_image(data, max_pixels=50_000_000)
    assert "10000x10000" in str(info.value) and "50 megapixels" in str(info.value)


def test_custom_max_pixels_for_every_source(tmp_path):
    im = smooth_image(50, 40)
    path = save(tmp_path, "small.png", im)
    for src in (path, path.read_bytes(), im, np.asarray(im)):
        with pytest.raises(ImageLoadError, match="50x40.*0.001 megapixels"):
            load_image(src, max_pixels=1000)
    assert load_image(path, max_pixels=2000).size == (50, 40)


def test_max_pixels_above_pil_limit_leaves_pil_global_alone(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    path = save(tmp_path, "ok.png", smooth_image(8, 8))
    assert load_image(path, max_pixels=10**12).size == (8, 8)
    with pytest.raises(ImageLoadError):
        load_image(b"junk" * 10, max_pixels=10**12)
    assert Image.MAX_IMAGE_PIXELS == before


def test_our_limit_not_pil_global_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL: warn > 1000, refuse > 2000
    path = save(tmp_path, "mid.png", smooth_image(50, 50))  # 2500 px
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # allowed by us although above PIL's hard limit: PIL's limit is lifted temporarily
        assert load_image(path, max_pixels=10_000).size == (50, 50)
        assert Image.MAX_IMAGE_PIXELS == 1000
        warn_path = save(tmp_path, "warn.png", smooth_image(30, 40))  # 1200 px: PIL warns
        assert load_image(warn_path, max_pixels=1500).size == (30, 40)
        # refused by PIL (DecompressionBombError) and by us: still our error, with the size
        with pytest.raises(ImageLoadError, match="50x50.*0.0015 megapixels"):
            load_image(path, max_pixels=1500)
    assert Image.MAX_IMAGE_PIXELS == 1000


# ----------------------------------------------------------------------------- bad inputs


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("just some text, not pixels\n" * 5)
    (tmp_path / "page.png").write_text("<!DOCTYPE html><html><body>hi</body></html>")
    (tmp_path / "drawing.png").write_text(
        '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>')
    jpeg = encode(smooth_image(64, 48), "JPEG", quality=90)
    (tmp_path / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = encode(smooth_image(64, 48), "PNG")
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "folder.png").mkdir()
    return {
        "empty.png": tmp_path / "empty.png",
        "notes.png": tmp_path / "notes.png",
        "page.png": tmp_path / "page.png",
        "drawing.png": tmp_path / "drawing.png",
        "half.jpg": tmp_path / "half.jpg",
        "cut.png": tmp_path / "cut.png",
        "folder.png": tmp_path / "folder.png",
        "missing.jpg": tmp_path / "missing.jpg",
    }


EXPECTED_PROBLEM = {
    "empty.png": "empty",
    "notes.png": "not a supported image",
    "page.png": "HTML",
    "drawing.png": "SVG",
    "half.jpg": "truncated",
    "cut.png": "truncated",
    "folder.png": "directory",
    "missing.jpg": "no such file",
}


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path):
    for name, path in _bad_files(tmp_path).items():
        for src in (path, str(path)):
            with pytest.raises(ImageLoadError) as info:
                load_image(src)
            err = info.value
            msg = str(err)
            assert isinstance(err, ValueError)
            assert err.source == name and name in msg, msg
            assert EXPECTED_PROBLEM[name] in msg, msg
            assert "\n" not in msg
        if name in ("notes.png", "half.jpg", "empty.png"):
            assert "PNG, JPEG, WebP, GIF, BMP, TIFF" in msg


def test_bad_bytes_and_types():
    jpeg = encode(smooth_image(64, 48), "JPEG")
    for data, problem in [(b"", "empty"), (b"hello there", "not a supported image"),
                          (jpeg[:300], "truncated")]:
        with pytest.raises(ImageLoadError, match=problem) as info:
            load_image(data)
        assert info.value.source == "uploaded image"
        assert str(info.value).startswith("uploaded image:")
    with pytest.raises(ImageLoadError, match="cannot be used as an image"):
        load_image(12345)  # type: ignore[arg-type]


def test_image_load_error_pickles():
    import pickle

    err = ImageLoadError("x.png", "no such file", "PNG")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.source == "x.png"


# ----------------------------------------------------------------------------- geometry


def test_geometry_landscape_400x300():
    g = compute_geometry((400, 300), PreprocessConfig(input_size=224, resize_size=256))
    side = 300 * 224 / 256
    assert side == 262.5
    assert g.original_size == (400, 300) and g.input_size == 224
    assert g.crop_box == pytest.approx(((400 - side) / 2, (300 - side) / 2,
                                        (400 + side) / 2, (300 + side) / 2))
    assert g.crop_box == pytest.approx((68.75, 18.75, 331.25, 281.25))
    assert g.crop_side == pytest.approx(side) and g.scale == pytest.approx(224 / side)
    assert g.input_to_original(0, 0) == pytest.approx((68.75, 18.75))
    assert g.original_to_input(331.25, 281.25) == pytest.approx((224, 224))


def test_geometry_portrait_small_and_invalid():
    cfg = PreprocessConfig()
    g = compute_geometry((300, 400), cfg)
    assert g.crop_box == pytest.approx((18.75, 68.75, 281.25, 331.25))
    g = compute_geometry((100, 50), cfg)  # smaller than the input: box still inside image
    side = 50 * 224 / 256
    assert g.crop_box == pytest.approx(((100 - side) / 2, (50 - side) / 2,
                                        (100 + side) / 2, (50 + side) / 2))
    g = compute_geometry((7, 5), PreprocessConfig(input_size=224, resize_size=224))
    assert g.crop_box == (1.0, 0.0, 6.0, 5.0)
    with pytest.raises(ValueError):
        compute_geometry((100, 100), PreprocessConfig(input_size=300, resize_size=256))
    with pytest.raises(ValueError):
        compute_geometry((0, 100), cfg)


@pytest.mark.parametrize(
    "size,square",
    [
        ((400, 300), (150, 100, 200, 150)),  # landscape
        ((300, 400), (100, 150, 150, 200)),  # portrait
        ((640, 480), (300, 40, 380, 120)),  # off-centre, near the crop's top edge
        ((80, 60), (30, 20, 40, 30)),  # smaller than the input: upscaled
    ],
)
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_square_lands_where_geometry_says(size, square, interpolation):
    cfg = PreprocessConfig(interpolation=interpolation)
    prep = prepare(square_image(*size, square), cfg)
    g = prep.geometry
    assert prep.tensor.shape == (1, 3, 224, 224) and prep.tensor.dtype == torch.float32
    expected = (*g.original_to_input(square[0], square[1]),
                *g.original_to_input(square[2], square[3]))
    measured = red_extent(denormalize(prep.tensor, cfg))
    # sub-pixel exact (a rounded crop, as in torchvision, is off by ~0.5 px)
    assert measured == pytest.approx(expected, abs=0.2), (measured, expected)


def test_to_tensor_normalization_and_validation():
    cfg = PreprocessConfig(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    im = Image.new("RGB", (50, 40), (255, 0, 51))
    g = compute_geometry(im.size, cfg)
    t = to_tensor(im, g, cfg)
    assert t.shape == (1, 3, 224, 224) and t.is_contiguous()
    assert torch.allclose(t[0, :, 100, 100], torch.tensor([1.0, -1.0, 0.2]), atol=1e-5)
    with pytest.raises(ValueError):
        to_tensor(im.resize((60, 40)), g, cfg)
    with pytest.raises(ValueError):
        to_tensor(im.convert("L"), g, cfg)


# ----------------------------------------------------------------------------- view


def test_view_is_the_crop_region_matching_the_tensor():
    cfg = PreprocessConfig()
    prep = prepare(smooth_image(640, 480), cfg)
    v = prep.view()
    assert v.mode == "RGB" and v.size == (420, 420)  # crop side 420 < 448
    assert prep.view() is v  # cached
    small = np.asarray(v.resize((224, 224), Image.Resampling.BILINEAR), np.float32) / 255
    assert np.abs(small - denormalize(prep.tensor, cfg)).mean() < 0.01
    # the view's top-left / bottom-right are the crop box corners of the original
    full = np.asarray(prep.image, np.float32)
    x0, y0, x1, y1 = (int(round(c)) for c in prep.geometry.crop_box)
    view = np.asarray(v, np.float32)
    assert np.abs(view[2, 2] - full[y0 + 2, x0 + 2]).max() < 4
    assert np.abs(view[-3, -3] - full[y1 - 3, x1 - 3]).max() < 4


def test_view_sizes():
    big = prepare(smooth_image(2000, 1500))
    assert big.view().size == (448, 448)
    assert big.view(300).size == (300, 300)
    assert big.view(100).size == (224, 224)  # never smaller than the input
    assert big.view(300) is not big.view(448)
    tiny = prepare(smooth_image(60, 40))
    assert tiny.view().size == (224, 224)  # upscaled tiny crops


def test_light_copy_keeps_geometry_and_one_view_only():
    prep = prepare(smooth_image(2000, 1500))
    light = prep.light_copy(448)
    assert light.geometry == prep.geometry and light.tensor.numel() == 0
    assert light.view(448) is prep.view(448) and light.image.size == (448, 448)
    with pytest.raises(ValueError, match="max_side=448 only, not 300"):
        light.view(300)


def test_upsampled_tensor_overlays_view_exactly():
    """A map at input resolution, bilinearly upsampled (align_corners=False) to the view,
    puts the red square where the view shows it."""
    cfg = PreprocessConfig()
    prep = prepare(square_image(600, 450, (250, 120, 330, 200)), cfg)
    v = prep.view()
    side = v.size[0]
    up = F.interpolate(torch.from_numpy(denormalize(prep.tensor, cfg)).permute(2, 0, 1)[None],
                       size=(side, side), mode="bilinear", align_corners=False)
    up = up[0].permute(1, 2, 0).numpy()
    view = np.asarray(v, np.float32) / 255
    assert red_extent(up) == pytest.approx(red_extent(view), abs=1.5)


# ----------------------------------------------------------------------------- torchvision parity


@pytest.mark.parametrize("size", [(400, 300), (300, 451), (1000, 700)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_matches_torchvision(size, interpolation):
    from torchvision import transforms as T

    cfg = PreprocessConfig(interpolation=interpolation)
    mode = {"bilinear": T.InterpolationMode.BILINEAR,
            "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    ref_tf = T.Compose([T.Resize(cfg.resize_size, interpolation=mode),
                        T.CenterCrop(cfg.input_size), T.ToTensor(),
                        T.Normalize(cfg.mean, cfg.std)])
    im = smooth_image(*size)
    ours = prepare(im, cfg).tensor
    ref = ref_tf(im).unsqueeze(0)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean().item() < 0.05


# ----------------------------------------------------------------------------- batch & speed


def test_prepare_batch(tmp_path):
    sources = [smooth_image(400, 300), save(tmp_path, "p.jpg", smooth_image(200, 300)),
               np.zeros((50, 60, 3), np.uint8)]
    batch, items = prepare_batch(sources, PreprocessConfig())
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    assert len(items) == 3 and all(isinstance(it, PreparedImage) for it in items)
    assert isinstance(items[0].geometry, Geometry)
    for i, it in enumerate(items):
        assert torch.equal(batch[i], it.tensor[0])
    cfg = PreprocessConfig(input_size=96, resize_size=112)
    batch, items = prepare_batch([], cfg)
    assert batch.shape == (0, 3, 96, 96) and items == []
    with pytest.raises(ImageLoadError, match="missing.png"):
        prepare_batch([sources[0], tmp_path / "missing.png"], cfg)
