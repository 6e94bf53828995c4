"""Branch-weight charts of selection attention (SK, ResNeSt): the stacked split and the per-branch
bars, checked on their pixels; and where the figures and the app use them."""
from __future__ import annotations

import numpy as np
import pytest

from attnviz import render
from attnviz.render.branches import BRANCH_COLORS, stack_plot_box


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def _branch_pixels(img, k: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """[K, H, W] masks of each branch's colour, inside the plot ``box`` (x0, y0, w, h) if given."""
    a = np.asarray(img)
    if box is not None:
        x0, y0, pw, ph = box
        a = a[y0 : y0 + ph, x0 : x0 + pw]
    return np.stack([(a == BRANCH_COLORS[i]).all(axis=2) for i in range(k)])


def _column_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    cols = np.flatnonzero(mask.any(axis=0))
    runs, start = [], cols[0]
    for a, b in zip(cols[:-1], cols[1:]):
        if b != a + 1:
            runs.append((start, a))
            start = b
    return runs + [(start, cols[-1])]


@pytest.mark.parametrize("sort", [True, False])
def test_each_column_splits_like_its_channel(sort):
    w = _softmax(np.random.default_rng(3).normal(size=(2, 8)) * 2)
    img = render.branch_stack_chart(w, title="t", sort=sort)
    px = _branch_pixels(img, 2, stack_plot_box((640, 240), title="t"))
    runs = _column_runs(px.any(axis=0))
    assert len(runs) == 8, "one stacked bar per channel, separated by gaps"
    order = np.argsort(-w[0], kind="stable") if sort else np.arange(8)
    plot_h = px.shape[1]
    for (a, b), ch in zip(runs, order):
        c = (a + b) // 2
        below, above = px[0][:, c], px[1][:, c]
        assert below.sum() + above.sum() == plot_h, "the K shares fill the column (they sum to 1)"
        assert abs(below.sum() - w[0, ch] * plot_h) <= 1, f"channel {ch}'s branch-0 share"
        if below.any() and above.any():
            assert np.flatnonzero(below).min() > np.flatnonzero(above).max(), "branch 0 at the bottom"


def test_many_channels_show_each_columns_mean_split():
    w = np.zeros((2, 2048))
    w[0, :1024] = 1.0  # left half: all branch 0; right half: all branch 1
    w[1, 1024:] = 1.0
    px = _branch_pixels(render.branch_stack_chart(w, sort=False), 2, stack_plot_box((640, 240)))
    cols0, cols1 = np.flatnonzero(px[0].any(axis=0)), np.flatnonzero(px[1].any(axis=0))
    assert cols0.max() < cols1.min() and abs(len(cols0) - len(cols1)) <= 1


def test_bar_panels_are_the_channel_charts_of_each_branch():
    w = _softmax(np.random.default_rng(5).normal(size=(3, 64)))
    img = render.branch_bar_charts(w, title="b", size=(480, 150))
    assert img.size == (480, 450)
    for k in range(3):
        panel = render.channel_bar_chart(w[k], title=f"b · branch {k}", top_k=0, size=(480, 150), sort=False,
                                         color=BRANCH_COLORS[k])
        assert np.array_equal(np.asarray(img)[150 * k : 150 * (k + 1)], np.asarray(panel))


def test_branch_figure_is_the_stack_over_the_bars():
    w = _softmax(np.random.default_rng(6).normal(size=(2, 32)))
    fig = np.asarray(render.branch_figure(w, title="x", width=520))
    stack = np.asarray(render.branch_stack_chart(w, title="x", size=(520, 240)))
    bars = np.asarray(render.branch_bar_charts(w, size=(520, 140)))
    assert np.array_equal(fig, np.concatenate([stack, bars]))


@pytest.mark.parametrize("bad", [np.ones(8), np.ones((2, 0)), np.ones((0, 4)), np.ones((2, 3, 4))])
def test_weights_that_are_not_branches_by_channels_are_refused(bad):
    with pytest.raises(ValueError, match=r"\[branches, channels\]"):
        render.branch_stack_chart(bad)


def test_figures_and_the_app_chart_draw_an_sk_block(tmp_path):
    timm = pytest.importorskip("timm")
    import attnviz
    from attnviz import app_logic, export

    model = timm.create_model("skresnet18", pretrained=False, num_classes=5).eval()
    rng = np.random.default_rng(0)
    result = attnviz.inspect(rng.integers(0, 255, (72, 72, 3), dtype=np.uint8), model, gradcam=False)
    sk = result.branch_blocks
    assert sk and all(b.channel is None for b in sk)
    charts = export.chart_figures(result)
    assert {f"branches_{b.name}.png" for b in sk} <= set(charts)
    assert app_logic.chart_blocks(result) == [b.name for b in result.blocks if b.branches is not None
                                              or b.channel is not None]
    path = app_logic.block_chart(result, sk[-1].name, tmp_path)
    assert path and path.endswith(".png")
    k = sk[-1].branches.shape[0]
    assert _branch_pixels(charts[f"branches_{sk[-1].name}.png"], k).any(axis=(1, 2)).all(), "every branch drawn"
