"""Tests for attnviz.render: figure-free rendering of attention results."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.render import (  # noqa: E402
    COLORMAPS,
    channel_bar_chart,
    colormap_lut,
    depth_overview,
    heatmap,
    image_grid,
    normalize_map,
    overlay,
    stats_along_depth,
    to_png_bytes,
    upsample_map,
)
from attnviz.render import text as render_text  # noqa: E402
from attnviz.render.colormaps import _PALETTE  # noqa: E402

torch = pytest.importorskip("torch")
F = torch.nn.functional

WHITE = np.array([255, 255, 255], dtype=np.uint8)


def _arr(img: Image.Image) -> np.ndarray:
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    return np.asarray(img)


def _mask_of(img: Image.Image, color) -> np.ndarray:
    return np.all(_arr(img) == np.array(color, dtype=np.uint8), axis=-1)


def _expected_index(attn_map, size, mode="minmax") -> np.ndarray:
    """round(v * 255) of the normalized, upsampled map (float32 arithmetic)."""
    v = normalize_map(upsample_map(attn_map, size), mode).astype(np.float32)
    return np.floor(v * np.float32(255.0) + np.float32(0.5)).astype(np.int64)


# --------------------------------------------------------------------------- #
# colour tables
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", COLORMAPS)
def test_colormap_lut_matches_matplotlib(name):
    import matplotlib

    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    cmap = matplotlib.colormaps[name]
    for i, x in [(0, 0.0), (255, 1.0), (128, 128 / 255)]:
        expected = np.rint(np.asarray(cmap(x))[:3] * 255).astype(np.uint8)
        np.testing.assert_array_equal(lut[i], expected)
    assert colormap_lut(name) is lut  # cached


def test_colormap_lut_unknown_name_lists_choices():
    with pytest.raises(ValueError) as info:
        colormap_lut("not-a-colormap")
    for name in COLORMAPS:
        assert name in str(info.value)
    with pytest.raises(ValueError):
        overlay(np.zeros((8, 8, 3), np.uint8), np.ones((2, 2)), colormap="hot_pink")


# --------------------------------------------------------------------------- #
# geometry
# --------------------------------------------------------------------------- #
def _torch_up(m: np.ndarray, w: int, h: int) -> np.ndarray:
    t = torch.from_numpy(np.asarray(m, dtype=np.float64))[None, None]  # exact reference: only our rounding counts
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()


def test_upsample_2x2_to_4x4_equals_torch():
    m = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    out = upsample_map(m, (4, 4))
    assert out.shape == (4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, _torch_up(m, 4, 4), atol=1e-6)
    # align_corners=False: the corner pixels are the corner cells themselves
    assert out[0, 0] == pytest.approx(0.0) and out[-1, -1] == pytest.approx(3.0)


@pytest.mark.parametrize("shape,size", [((7, 5), (20, 33)), ((14, 14), (448, 448)), ((3, 9), (9, 3)), ((5, 5), (5, 5))])
def test_upsample_matches_torch_any_size(shape, size):
    m = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    out = upsample_map(m, size)
    assert out.shape == (size[1], size[0])  # size is (width, height)
    np.testing.assert_allclose(out, _torch_up(m, *size), atol=1e-5)


def test_upsample_alignment_one_hot_cell():
    m = np.zeros((4, 4), dtype=np.float32)
    m[1, 3] = 1.0
    out = upsample_map(m, (64, 64))
    r, c = np.unravel_index(np.argmax(out), out.shape)
    assert 16 <= r <= 31 and 48 <= c <= 63
    # the peak rows are the centre rows of the cell's 16x16 pixel block; the
    # last column is clamped at the border (align_corners=False), so full there
    assert out[23:25, 56:64].min() == pytest.approx(out.max())
    # interior cell: the peak is the centre 2x2 pixels of its block
    m2 = np.zeros((4, 4), dtype=np.float32)
    m2[2, 1] = 1.0
    out2 = upsample_map(m2, (64, 64))
    peak = np.argwhere(out2 == out2.max())
    assert sorted(map(tuple, peak.tolist())) == [(39, 23), (39, 24), (40, 23), (40, 24)]
    assert out2[32:48, 16:32].sum() > 0.5 * out2.sum()  # most of the mass in its block


def test_upsample_squeezes_leading_dims_and_rejects_bad_shapes():
    m = np.random.default_rng(2).random((1, 1, 7, 7))
    np.testing.assert_allclose(upsample_map(m, (14, 14)), upsample_map(m[0, 0], (14, 14)))
    with pytest.raises(ValueError):
        upsample_map(np.zeros((3, 4, 5)), (8, 8))
    with pytest.raises(ValueError):
        upsample_map(np.zeros((3, 4)), (0, 8))


def test_normalize_map():
    m = np.array([[2.0, 4.0], [6.0, 10.0]])
    out = normalize_map(m)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    const = normalize_map(np.full((5, 5), 0.7))
    assert not np.isnan(const).any() and np.all(const == 0)
    np.testing.assert_allclose(normalize_map(np.array([-0.5, 0.3, 1.7]), "none"), [0.0, 0.3, 1.0], rtol=1e-6)
    with_nan = normalize_map(np.array([[np.nan, 1.0], [2.0, 3.0]]))
    assert np.isfinite(with_nan).all() and with_nan.max() == 1.0
    with pytest.raises(ValueError):
        normalize_map(m, "zscore")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# overlays
# --------------------------------------------------------------------------- #
@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))


def test_overlay_size_and_type(photo):
    amap = np.random.default_rng(4).random((7, 7))
    out = overlay(photo, amap)
    assert out.size == photo.size and out.mode == "RGB"
    arr_in = np.asarray(photo)
    assert overlay(arr_in, amap).size == (320, 240)
    # grayscale / RGBA PIL images and float arrays in [0, 1]
    assert overlay(photo.convert("L"), amap).mode == "RGB"
    assert overlay(photo.convert("RGBA"), amap).size == photo.size
    assert overlay(arr_in.astype(np.float32) / 255.0, amap).size == photo.size


def test_overlay_alpha_zero_is_identity(photo):
    out = overlay(photo, np.random.default_rng(5).random((7, 7)), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(photo))
    out_arr = overlay(np.asarray(photo), np.ones((3, 3)), alpha=0.0)
    np.testing.assert_array_equal(np.asarray(out_arr), np.asarray(photo))


@pytest.mark.parametrize("colormap,normalize", [("jet", "minmax"), ("viridis", "none"), ("turbo", "minmax")])
def test_overlay_alpha_one_is_exact_lut_colours(photo, colormap, normalize):
    amap = np.random.default_rng(6).random((7, 9))
    out = _arr(overlay(photo, amap, alpha=1.0, colormap=colormap, normalize=normalize))
    idx = _expected_index(amap, photo.size, normalize)
    np.testing.assert_array_equal(out, colormap_lut(colormap)[idx])
    # heatmap() is the same picture
    np.testing.assert_array_equal(_arr(heatmap(amap, photo.size, colormap, normalize)), out)


def test_overlay_half_alpha_is_a_blend(photo):
    amap = np.random.default_rng(7).random((7, 7))
    heat = _arr(overlay(photo, amap, alpha=1.0)).astype(np.int32)
    out = _arr(overlay(photo, amap, alpha=0.5)).astype(np.int32)
    expected = (np.asarray(photo).astype(np.int32) + heat) / 2
    assert np.abs(out - expected).max() <= 1.0


@pytest.mark.parametrize("colormap", ["inferno", "gray"])
def test_overlay_hottest_pixel_is_at_the_peak(colormap):
    m = np.zeros((7, 7), dtype=np.float32)
    m[2, 5] = 1.0
    dark = Image.new("RGB", (224, 224), (0, 0, 0))
    out = _arr(overlay(dark, m, alpha=0.7, colormap=colormap)).astype(np.int32).sum(-1)
    r, c = np.unravel_index(np.argmax(out), out.shape)
    assert 64 <= r < 96 and 160 <= c < 192  # inside cell (2, 5): 32 px per cell


def test_overlay_alpha_out_of_range(photo):
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            overlay(photo, np.ones((2, 2)), alpha=alpha)


def test_constant_and_nan_maps_give_valid_images(photo):
    out = overlay(photo, np.full((7, 7), 0.3), alpha=1.0)
    arr = _arr(out)
    assert np.all(arr == colormap_lut("jet")[0])  # constant -> zeros -> LUT[0]
    m = np.random.default_rng(8).random((7, 7))
    m[3, 3] = np.nan
    m[0, 0] = np.inf
    assert _arr(overlay(photo, m)).shape == (240, 320, 3)
    h = heatmap(np.full((4, 4), 2.0))
    assert h.size == (4, 4) and h.mode == "RGB"


def test_heatmap_default_size_is_map_size():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    h = _arr(heatmap(m, colormap="gray"))
    assert h.shape == (3, 4, 3)
    assert tuple(h[0, 0]) == (0, 0, 0) and tuple(h[2, 3]) == (255, 255, 255)


# --------------------------------------------------------------------------- #
# channel bar chart
# --------------------------------------------------------------------------- #
BLUE, RED = (0, 0, 255), (255, 0, 0)


def _bar_heights(img: Image.Image, color) -> tuple[np.ndarray, np.ndarray]:
    """(columns containing bar pixels of `color`, bar height per such column)."""
    m = _mask_of(img, color)
    cols = np.flatnonzero(m.any(axis=0))
    return cols, m[:, cols].sum(axis=0)


def test_bar_chart_size_and_not_blank():
    w = np.random.default_rng(9).random(256)
    img = channel_bar_chart(w, title="layer3.4 SE")
    assert img.size == (640, 240) and img.mode == "RGB"
    nonwhite = np.any(_arr(img) != WHITE, axis=-1).mean()
    assert nonwhite > 0.2
    assert channel_bar_chart(w, size=(400, 180)).size == (400, 180)


def test_bar_chart_tallest_bar_is_the_max_channel():
    w = np.full(32, 0.3)
    w[10] = 0.9
    img = channel_bar_chart(w, top_k=0, sort=False, color=BLUE, highlight_color=RED)
    cols, heights = _bar_heights(img, BLUE)
    span = cols.max() - cols.min() + 1
    tallest = cols[heights == heights.max()]
    slots = ((tallest - cols.min()) * 32 // span).tolist()
    assert set(slots) == {10}
    others = heights[heights < heights.max()]
    assert heights.max() / np.median(others) == pytest.approx(3.0, rel=0.05)


def test_bar_chart_sorted_heights_non_increasing():
    w = np.random.default_rng(10).random(64)
    img = channel_bar_chart(w, top_k=0, sort=True, color=BLUE)
    _, heights = _bar_heights(img, BLUE)
    assert np.all(np.diff(heights) <= 0)
    assert heights[0] > 3 * heights[-1]


def test_bar_chart_values_stay_inside_plot_area():
    ones = channel_bar_chart(np.ones(100), top_k=0, title="t", color=BLUE)
    big = channel_bar_chart(np.full(100, 5.0), top_k=0, title="t", color=BLUE)
    np.testing.assert_array_equal(_arr(ones), _arr(big))  # clipped to 1
    m = _mask_of(ones, BLUE)
    rows = np.flatnonzero(m.any(axis=1))
    title_h = 16
    assert rows.min() > title_h and rows.max() < 240 - 20  # below the title, above the x labels
    cols, heights = _bar_heights(ones, BLUE)
    assert np.all(heights == heights.max())  # all full-height bars
    neg = channel_bar_chart(np.full(100, -1.0), top_k=0, color=BLUE)
    assert not _mask_of(neg, BLUE).any()


@pytest.mark.parametrize("sort", [True, False])
def test_bar_chart_2048_channels_highlights_top(sort):
    rng = np.random.default_rng(11)
    w = rng.random(2048) * 0.8
    w[1234] = 0.99
    img = channel_bar_chart(w, top_k=3, sort=sort, color=BLUE, highlight_color=RED)
    assert img.size == (640, 240)
    hl = _mask_of(img, RED)
    assert hl.sum() > 20
    cols, _ = _bar_heights(img, BLUE)
    x0, x1 = cols.min(), cols.max() + 1
    pos = 0 if sort else 1234
    px = x0 + int((pos + 0.5) * (x1 - x0) / 2048)
    assert hl[:, max(0, px - 2) : px + 3].any()  # highlighted bar where the top channel is


def test_bar_chart_one_channel_and_edge_cases():
    img = channel_bar_chart(np.array([0.42]), top_k=5, color=BLUE, highlight_color=RED)
    assert img.size == (640, 240)
    assert _mask_of(img, RED).sum() > 100  # the single (top) bar
    assert channel_bar_chart(np.array([[0.1, 0.9]])).size == (640, 240)  # [1, C]
    assert channel_bar_chart(np.array([0.5, np.nan, 0.2])).size == (640, 240)
    with pytest.raises(ValueError):
        channel_bar_chart(np.array([]))
    with pytest.raises(ValueError):
        channel_bar_chart(np.ones(4), size=(50, 40))


# --------------------------------------------------------------------------- #
# depth overview
# --------------------------------------------------------------------------- #
def _blocks(n: int, rng=None):
    rng = rng or np.random.default_rng(12)
    counts = [256, 512, 1024, 2048]
    return [(f"layer{i % 4 + 1}.{i}", rng.random(counts[i % 4])) for i in range(n)]


def test_depth_overview_height_grows_with_blocks():
    h4 = depth_overview(_blocks(4)).height
    h8 = depth_overview(_blocks(8)).height
    h16 = depth_overview(_blocks(16), row_height=14)
    assert h8 - h4 == 4 * 14
    assert h16.height - h8 == 8 * 14
    assert h16.width == 640 and h16.mode == "RGB"
    assert depth_overview(_blocks(3), width=500).width == 500


def test_depth_overview_one_row_per_block_in_order():
    top = colormap_lut("viridis")[255]
    bottom = colormap_lut("viridis")[0]
    blocks = [("layer1.0", np.ones(256)), ("layer2.0", np.zeros(512)), ("layer3.0", np.ones(1024))]
    img = depth_overview(blocks, row_height=12)
    hi_rows = np.flatnonzero(_mask_of(img, top).sum(axis=1) > 100)
    lo_rows = np.flatnonzero(_mask_of(img, bottom).sum(axis=1) > 100)
    assert 2 * 10 <= len(hi_rows) <= 2 * 12 and 10 <= len(lo_rows) <= 12
    # ones / zeros / ones from top to bottom
    assert hi_rows.min() < lo_rows.min() and lo_rows.max() < hi_rows.max()
    assert not np.intersect1d(hi_rows, lo_rows).size


def test_depth_overview_sorting_and_empty():
    w = np.linspace(0.0, 1.0, 300)
    lut = colormap_lut("gray")
    for sort in (True, False):
        arr = _arr(depth_overview([("b", w)], colormap="gray", sort_channels=sort)).astype(int)
        # grey (R == G == B), non-white pixels; the block row is the row with most
        grey_px = (arr[..., 0] == arr[..., 1]) & (arr[..., 1] == arr[..., 2]) & (arr[..., 0] < 250)
        row_i = int(np.argmax(grey_px.sum(axis=1)))
        grey = np.flatnonzero(grey_px[row_i])
        assert grey.size > 200
        strip = arr[row_i, grey, 0]
        left, right = strip[:20].mean(), strip[-40:-20].mean()
        assert (left > right) if sort else (left < right)
    assert lut[0].tolist() == [0, 0, 0]
    empty = depth_overview([])
    assert empty.mode == "RGB" and empty.height < 100
    assert np.any(_arr(empty) != WHITE)  # the "no channel attention" message


# --------------------------------------------------------------------------- #
# line chart, grid, png
# --------------------------------------------------------------------------- #
def test_stats_along_depth_two_series_both_colours():
    n = 16
    img = stats_along_depth(
        {"SE": np.linspace(0.3, 0.8, n).tolist(), "ECA": np.linspace(0.5, 0.4, n).tolist()},
        title="mean gate per block",
        ylabel="mean",
        labels=[f"layer{i // 4 + 1}.{i % 4}" for i in range(n)],
    )
    assert img.size == (640, 280)
    c0, c1 = _PALETTE[0], _PALETTE[1]
    assert _mask_of(img, c0).sum() > 200 and _mask_of(img, c1).sum() > 200


def test_stats_along_depth_edge_cases():
    assert stats_along_depth({"a": [0.5] * 5}).size == (640, 280)  # constant
    assert stats_along_depth({"a": [1.0, float("nan"), 3.0]}, size=(320, 200)).size == (320, 200)
    assert stats_along_depth({}).size == (640, 280)
    many = stats_along_depth({"cos": list(np.random.default_rng(13).random(50))}, labels=[f"layer4.{i}" for i in range(50)])
    assert many.size == (640, 280)


def test_image_grid_layout():
    imgs = [Image.new("RGB", (100, 60), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (200, 100, 0)]]
    grid = image_grid(imgs, ["red", "green", "blue", "dark", "orange"], cols=2, cell=64)
    assert grid.mode == "RGB"
    a = _arr(grid)
    # 2 columns x 3 rows; red tile top-left, blue tile middle-left, green top-right
    w, h = grid.size
    assert a[: h // 3, : w // 2][..., 0].max() == 255 and _mask_of(grid, (255, 0, 0))[: h // 3, : w // 2].sum() > 1000
    assert _mask_of(grid, (0, 255, 0))[: h // 3, w // 2 :].sum() > 1000
    assert _mask_of(grid, (0, 0, 255))[h // 3 : 2 * h // 3, : w // 2].sum() > 1000
    assert w < 3 * 64 and h > 3 * 64
    with pytest.raises(ValueError):
        image_grid(imgs, ["only one"])


def test_to_png_bytes_roundtrip(photo):
    data = to_png_bytes(photo)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(photo))


def test_no_matplotlib_figure_is_created(monkeypatch, photo):
    import matplotlib.figure

    def boom(*args, **kwargs):
        raise AssertionError("a matplotlib figure was created")

    monkeypatch.setattr(matplotlib.figure.Figure, "__init__", boom)
    overlay(photo, np.random.default_rng(14).random((7, 7)), colormap="magma")
    channel_bar_chart(np.random.default_rng(15).random(512), title="x")
    depth_overview(_blocks(4), colormap="plasma")
    stats_along_depth({"a": [1, 2, 3]}, labels=["a", "b", "c"])


def test_fallback_bitmap_font_still_renders(monkeypatch):
    from PIL import ImageFont

    caches = [render_text._line_box, render_text._glyph, render_text._text_mask]
    bitmap = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else None
    if bitmap is None:
        pytest.skip("Pillow without load_default_imagefont")
    for c in caches:
        c.cache_clear()
    monkeypatch.setattr(render_text, "_font", lambda size: bitmap)
    try:
        img = channel_bar_chart(np.random.default_rng(16).random(40), title="fallback font")
        assert img.size == (640, 240)
        assert depth_overview(_blocks(3)).width == 640
        assert stats_along_depth({"a": [1.0, 2.0]}, labels=["x", "y"]).size == (640, 280)
    finally:
        for c in caches:
            c.cache_clear()
