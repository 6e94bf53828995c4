"""Tests for attnviz.render.profiles: the rows x channels profile heat map."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attnviz.render import colormap_lut
from attnviz.render.profiles import channel_order, profile_heatmap

VIRIDIS = colormap_lut("viridis")
MISSING = np.array([215, 215, 215], dtype=np.uint8)


def _colour(v: float) -> np.ndarray:
    return VIRIDIS[int(np.floor(v * 255 + 0.5))]


def _arr(img: Image.Image) -> np.ndarray:
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    return np.asarray(img)


def _where(img: Image.Image, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) of the strip's pixels of exactly ``colour`` (the colorbar, which holds every
    colour, sits in the last ~45 px and is left out)."""
    return np.nonzero(np.all(_arr(img)[:, : img.width - 50] == colour, axis=-1))


def _strip_span(img: Image.Image, y: int, colours: list[np.ndarray]) -> tuple[int, int]:
    """Leftmost and rightmost x on row ``y`` of any of ``colours`` (the strip, not the colorbar:
    the colorbar is 12 px at the far right, so only its own column range is excluded)."""
    row = _arr(img)[y]
    hit = np.zeros(row.shape[0], dtype=bool)
    for c in colours:
        hit |= np.all(row == c, axis=-1)
    xs = np.nonzero(hit)[0]
    return int(xs.min()), int(xs.max())


def test_rows_in_input_order_with_their_colours():
    values = [0.05, 0.3, 0.55, 0.8, 0.97]  # row i is constant: its colour tells where it went
    m = np.repeat(np.array(values)[:, None], 16, axis=1)
    img = profile_heatmap(m, [f"img{i}" for i in range(5)], mean_row=None)
    centres = []
    for v in values:
        ys, xs = _where(img, _colour(v))
        assert ys.size > 16 * 10, f"row of {v} not drawn"
        centres.append(np.median(ys))
    assert centres == sorted(centres), "rows are not top to bottom in input order"
    gaps = np.diff(centres)
    assert np.allclose(gaps, 22, atol=1)  # the default row height


def test_channels_ordered_by_mean_over_the_rows_by_default():
    # channel means: 0.2, 0.9, 0.5, 0.7 -> display order 1, 3, 2, 0
    m = np.array([[0.1, 0.95, 0.5, 0.6],
                  [0.3, 0.85, 0.5, 0.8]])
    img = profile_heatmap(m, ["a", "b"], width=400)
    ys, _ = _where(img, _colour(0.95))
    y = int(np.median(ys))  # first row
    left = {}
    for ch, v in enumerate(m[0]):
        row = np.all(_arr(img)[y] == _colour(v), axis=-1)
        left[ch] = int(np.nonzero(row)[0].min())
    assert sorted(left, key=left.get) == [1, 3, 2, 0]
    img_index = profile_heatmap(m, ["a", "b"], width=400, order="index")
    left_index = {ch: int(np.nonzero(np.all(_arr(img_index)[y] == _colour(v), axis=-1))[0].min())
                  for ch, v in enumerate(m[0])}
    assert sorted(left_index, key=left_index.get) == [0, 1, 2, 3]
    # every channel is equally wide (whole pixels), and the mean row shows the channel means
    widths = [int(np.all(_arr(img)[y] == _colour(v), axis=-1).sum()) for v in m[0]]
    assert len(set(widths)) == 1 and widths[0] > 10
    for mean in (0.2, 0.9, 0.5, 0.7):
        ys_mean, _ = _where(img, _colour(mean))
        assert ys_mean.size and ys_mean.max() > y + 2 * 22, f"mean {mean} not in the mean row under the data"


def test_channel_order_ties_and_nan():
    m = np.array([[0.5, 0.5, np.nan, 0.9], [0.5, 0.5, np.nan, 0.1]])
    assert channel_order(m).tolist() == [0, 1, 3, 2]  # ties keep index order, all-NaN last
    assert channel_order(m, "index").tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="order"):
        channel_order(m, "random")  # type: ignore[arg-type]


def test_many_channels_sorted_by_mean_separate_high_from_low():
    """2048 channels alternating 1/0 in index order: averaged per pixel they are a uniform middle
    colour in index order, but sorted by mean the left half is 1 and the right half 0."""
    row = np.tile([1.0, 0.0], 1024)
    m = np.vstack([row, row, row])
    img = profile_heatmap(m, ["x", "y", "z"], mean_row=None)
    ys, _ = _where(img, _colour(1.0))
    y = int(np.median(ys))
    x0, x1 = _strip_span(img, y, [_colour(1.0), _colour(0.0)])
    line = _arr(img)[y, x0 : x1 + 1]
    is_hi = np.all(line == _colour(1.0), axis=-1)
    is_lo = np.all(line == _colour(0.0), axis=-1)
    half = line.shape[0] // 2
    assert is_hi[: half - 2].all() and is_lo[half + 2 :].all()
    flat = profile_heatmap(m, ["x", "y", "z"], mean_row=None, order="index")
    mid = _where(flat, _colour(0.5))[0]  # area average of 1,0,1,0... is 0.5
    assert mid.size > 3 * 300


def test_labels_are_drawn_at_their_rows():
    m = np.full((3, 32), 0.5)
    img = profile_heatmap(m, ["first", "second", "third"], mean_row=None)
    turned = profile_heatmap(m, ["second", "third", "first"], mean_row=None)  # same widest label
    a, b = _arr(img).astype(int), _arr(turned).astype(int)
    ys, xs = _where(img, _colour(0.5))
    strip_x0, top = int(xs.min()), int(ys.min())
    differs = np.abs(a - b).sum(axis=-1) > 0
    assert differs[:, :strip_x0].any() and not differs[:, strip_x0:].any()  # only the label column
    for r in range(3):  # dark label ink inside each row's band
        band = a[top + r * 22 : top + (r + 1) * 22, :strip_x0]
        assert band.min() < 120, f"no label ink at row {r}"


def test_size_and_height_per_row():
    m = np.random.default_rng(0).random((4, 100))
    a = profile_heatmap(m, list("abcd"), width=640, row_height=20)
    b = profile_heatmap(np.vstack([m, m[:1]]), list("abcde"), width=640, row_height=20)
    assert a.width == b.width == 640
    assert b.height - a.height == 20
    assert profile_heatmap(m, list("abcd"), title="t").height > profile_heatmap(m, list("abcd")).height


def test_nan_cells_grey_and_bad_input_refused():
    m = np.array([[0.2, 0.4], [np.nan, np.nan]])
    img = profile_heatmap(m, ["ok", "no images"], mean_row=None)
    assert _where(img, MISSING)[0].size > 100
    with pytest.raises(ValueError, match="row labels"):
        profile_heatmap(m, ["only one"])
    with pytest.raises(ValueError):
        profile_heatmap(np.zeros((0, 4)), [])
    with pytest.raises(ValueError, match="too small"):
        profile_heatmap(m, ["a", "b"], width=60)
