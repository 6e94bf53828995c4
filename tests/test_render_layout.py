"""Tests for attnviz.render.channel_bar_layout: the channel bar chart's plot box and the channel
under each pixel, checked against the pixels channel_bar_chart draws (issue 15: a click on a
bar picks its channel)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attnviz.render import ChannelBarLayout, channel_bar_chart, channel_bar_layout

WHITE = (255, 255, 255)
GRID = (225, 225, 225)
AXIS = (60, 60, 60)
HIGHLIGHT = (200, 0, 0)


def _is(a: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(a == np.array(colour, dtype=np.uint8), axis=-1)


def _draw(w: np.ndarray, **kw) -> tuple[Image.Image, ChannelBarLayout]:
    """The chart and the layout for the same arguments."""
    img = channel_bar_chart(w, highlight_color=HIGHLIGHT, **kw)
    lay = channel_bar_layout(w, **kw)
    assert isinstance(lay, ChannelBarLayout) and (lay.width, lay.height) == img.size
    return img, lay


def _bar_pixels(img: Image.Image, lay: ChannelBarLayout) -> np.ndarray:
    """``[plot_height, plot_width]``: pixels of the plot box that are neither background nor grid."""
    a = np.asarray(img)[lay.y0 : lay.y1, lay.x0 : lay.x1]
    return ~(_is(a, WHITE) | _is(a, GRID))


def _heights(bar: np.ndarray) -> np.ndarray:
    """Per column, bar pixels counted up from the baseline until the first gap (the top-k
    markers float 2 px above their bar and are not counted)."""
    from_bottom = bar[::-1]
    return np.where(from_bottom.all(axis=0), bar.shape[0], np.argmin(from_bottom, axis=0))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1))


def _height_runs(h: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) column of each run of equal, non-zero height: one bar each."""
    out, start = [], None
    for c in range(h.size + 1):
        if start is not None and (c == h.size or h[c] != h[start]):
            out.append((start, c - 1))
            start = None
        if c < h.size and h[c] > 0 and start is None:
            start = c
    return out


@pytest.mark.parametrize("n", [1, 8, 64, 512, 2048])
@pytest.mark.parametrize("size,title,font_size,top_k", [
    ((640, 240), "block", 10, 5), ((320, 180), "", 11, 3), ((1200, 300), "layer4.2", 12, 0), ((200, 140), "x", 10, 5),
])
def test_plot_box_is_where_the_axes_and_bars_are(n, size, title, font_size, top_k):
    w = np.random.default_rng(n).permutation(np.linspace(1.0, 0.05, n))  # 1.0 even for n=1
    img, lay = _draw(w, title=title, size=size, font_size=font_size, top_k=top_k)
    a = np.asarray(img)
    axis = _is(a, AXIS)
    assert axis[lay.y0 : lay.y1 + 1, lay.x0 - 1].all(), "the y axis is the column left of the plot"
    assert axis[lay.y1, lay.x0 - 1 : lay.x1].all(), "the x axis is the row under the plot"
    assert not axis[lay.y0 - 1, lay.x0 - 1] and not axis[lay.y1, lay.x1], "the axes end at the plot box"
    assert not axis[lay.y0 : lay.y1, lay.x0 : lay.x1].any(), "no axis inside the plot box"
    h = _heights(_bar_pixels(img, lay))
    assert h.max() == lay.plot_height, "a value of 1 fills the plot height exactly"
    top_row = a[lay.y0 - 1, lay.x0 : lay.x1]
    assert _is(top_row, WHITE).all(), "nothing drawn just above the plot box"
    assert (lay.n_channels, lay.plot_width, lay.plot_height) == (n, lay.x1 - lay.x0, lay.y1 - lay.y0)


@pytest.mark.parametrize("n,width", [(1, 640), (7, 640), (8, 320), (64, 640), (64, 200), (512, 640), (512, 1200)])
def test_centre_of_each_bar_maps_back_to_its_channel(n, width):
    """Channel order, one channel at a time made tall among short ones (all values distinct):
    its bar is the one run of columns reaching 60 % of the plot, and the run's centre (and its
    ends, at any height) must give that channel back."""
    rng = np.random.default_rng(n * width)
    base = 0.1 + 0.2 * rng.permutation(n) / n
    probes = range(n) if n <= 64 else sorted({0, 1, 2, n // 2, n - 2, n - 1, *rng.integers(0, n, 40).tolist()})
    for k in probes:
        w = base.copy()
        w[k] = 0.9
        img, lay = _draw(w, title="t", size=(width, 200), sort=False, top_k=0)
        assert n <= lay.plot_width
        runs = _runs(_bar_pixels(img, lay)[int(lay.plot_height * 0.4)])  # 60 % up: the tall bar only
        assert len(runs) == 1, f"channel {k}'s bar is not drawn"
        a, b = runs[0]
        x = lay.x0 + (a + b) // 2 + 0.5
        assert lay.channel_at(x) == k
        assert lay.channel_at(x, lay.y0 + 0.3 * lay.plot_height) == k
        assert lay.channel_at(lay.x0 + a, lay.y1 - 0.5) == k and lay.channel_at(lay.x0 + b + 0.99, lay.y0) == k


@pytest.mark.parametrize("n,width", [(1, 640), (7, 320), (8, 640), (64, 640), (64, 320)])
def test_sorted_chart_maps_each_bar_to_its_channel(n, width):
    """Sorted by value, distinct heights: bar j (left to right) is the j-th largest channel."""
    w = np.random.default_rng(7 * n).permutation(np.linspace(0.2, 1.0, n))
    img, lay = _draw(w, title="sorted", size=(width, 240), sort=True, top_k=0)
    runs = _height_runs(_heights(_bar_pixels(img, lay)))
    expected = np.argsort(-w, kind="stable")
    assert len(runs) == n
    for (a, b), k in zip(runs, expected):
        assert lay.channel_at(lay.x0 + (a + b) / 2 + 0.5, lay.y1 - 1) == k


@pytest.mark.parametrize("n,width", [(512, 200), (2048, 640), (2048, 320), (4096, 1200)])
def test_shared_column_gives_the_channel_whose_bar_is_drawn(n, width):
    """More channels than columns: a probe channel above all others is the one column reaching
    90 % of the plot, and that column gives the probe back."""
    rng = np.random.default_rng(n + width)
    base = 0.1 + 0.3 * rng.permutation(n) / n
    for k in sorted({0, 1, n // 3, n // 2 + 1, n - 2, n - 1, *rng.integers(0, n, 6).tolist()}):
        w = base.copy()
        w[k] = 0.95
        img, lay = _draw(w, title=f"probe {k}", size=(width, 220), sort=False, top_k=0)
        assert n > lay.plot_width
        cols = np.nonzero(_heights(_bar_pixels(img, lay)) >= 0.9 * lay.plot_height)[0]
        assert cols.size == 1
        assert lay.channel_at(lay.x0 + cols[0] + 0.5) == k
        assert lay.channel_at(lay.x0 + cols[0] + 0.5, lay.y1 - 1) == k


@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("n,width", [(2048, 640), (700, 400), (3000, 1200)])
def test_every_column_gives_a_channel_of_its_drawn_height(n, width, sort):
    w = np.random.default_rng(3 * n).permutation(np.linspace(0.0, 1.0, n))
    img, lay = _draw(w, size=(width, 260), sort=sort, top_k=0)
    h = _heights(_bar_pixels(img, lay))
    got = np.array([lay.channel_at(lay.x0 + c + 0.5) for c in range(lay.plot_width)])
    np.testing.assert_array_equal(h, np.rint(w[got] * lay.plot_height))
    if sort:
        assert (np.diff(w[got]) <= 0).all()
    else:
        assert (np.diff(got) > 0).all(), "columns hold disjoint runs of channels, left to right"


def test_highlighted_columns_give_top_k_channels():
    w = np.random.default_rng(5).random(2048)
    img, lay = _draw(w, size=(640, 240), sort=False, top_k=5)
    base = np.asarray(img)[lay.y1 - 1, lay.x0 : lay.x1]
    cols = np.nonzero(_is(base, HIGHLIGHT))[0]
    top = set(np.argsort(-w, kind="stable")[:5].tolist())
    assert {lay.channel_at(lay.x0 + c) for c in cols} == top


def test_outside_the_plot_box_is_none():
    w = np.linspace(0.1, 0.9, 64)
    lay = channel_bar_layout(w, title="t")
    inside_y = (lay.y0 + lay.y1) / 2
    for x in (lay.x0 - 0.01, lay.x0 - 1, lay.x1, lay.x1 + 5.5, -3, lay.width + 10, float("nan")):
        assert lay.channel_at(x) is None and lay.channel_at(x, inside_y) is None
    for y in (lay.y0 - 0.01, lay.y0 - 5, lay.y1, lay.y1 + 3, -1, lay.height, float("inf")):
        assert lay.channel_at(lay.x0 + 3, y) is None
    assert lay.channel_at(lay.x0) == 63 and lay.channel_at(lay.x1 - 0.01, lay.y0) == 0  # sorted: largest first
    assert channel_bar_layout(w, sort=False).channel_at(lay.x0) == 0


def test_layout_raises_as_the_chart_does():
    with pytest.raises(ValueError, match="empty"):
        channel_bar_layout(np.zeros(0))
    with pytest.raises(ValueError, match="at least"):
        channel_bar_layout(np.ones(4), size=(100, 100))
    with pytest.raises(ValueError, match="no room"):
        channel_bar_layout(np.ones(4), size=(160, 100), font_size=30, title="t")
