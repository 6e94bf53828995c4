"""Tests for attnviz.app_compare_views: what the compare tabs draw, at the size shown."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from attnviz import app_compare_views as CV
from attnviz.analysis.class_heatmap import class_profiles
from attnviz.analysis.stats import BlockStats
from attnviz.render import colormap_lut

VIRIDIS = colormap_lut("viridis")


def _gates(rows: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((rows, channels)) > 0.5) * 0.9 + rng.random((rows, channels)) * 0.1


def _count(img: Image.Image, v: float) -> int:
    arr = np.asarray(img)[:, : img.width - 50]  # leave out the colorbar
    return int(np.all(arr == VIRIDIS[int(np.floor(v * 255 + 0.5))], axis=-1).sum())


def test_profile_view_is_a_heat_map_with_a_row_per_image():
    m = _gates(8, 128)
    names = [f"image{i}.png" for i in range(8)]
    by_mean = CV.profile_view(m, names, "layer4.0", "cbam")
    by_index = CV.profile_view(m, names, "layer4.0", "cbam", "index")
    assert by_mean.size == by_index.size and by_mean.width == CV.PROFILE_WIDTH
    assert not np.array_equal(np.asarray(by_mean), np.asarray(by_index))  # the order changed
    one_more = CV.profile_view(np.vstack([m, m[:1]]), names + ["again.png"], "layer4.0", "cbam")
    assert one_more.height - by_mean.height == 22  # one heat-map row per image


def test_lines_only_for_up_to_three_images():
    m = _gates(8, 300)
    lines = CV.profile_view(m[:3], ["a", "b", "c"], "layer3.1", "se", "lines")
    assert lines.size == (CV.PROFILE_WIDTH, 300)
    assert _count(lines, 1.0) < 50  # a line chart, not the heat map's colours
    many = CV.profile_view(m, [str(i) for i in range(8)], "layer3.1", "se", "lines")
    assert many.size == CV.profile_view(m, [str(i) for i in range(8)], "layer3.1", "se").size
    with pytest.raises(ValueError, match="view"):
        CV.profile_view(m, [str(i) for i in range(8)], "b", "se", "pie")


def test_keep_profiles_is_float32():
    kept = CV.keep_profiles(["a", "b"], {"layer1.0": "se"}, {"layer1.0": _gates(2, 16)})
    assert kept["mats"]["layer1.0"].dtype == np.float32 and kept["names"] == ["a", "b"]


class _Analysis:
    """The part of :class:`attnviz.analysis.Analysis` that ``class_profiles`` reads (the same
    heat map as the images' profiles, rows = classes)."""

    model = "shapes_se_resnet"
    classes = ["circle", "square", "cross"]

    def __init__(self, means: np.ndarray, count: np.ndarray) -> None:
        self._b = BlockStats("layer4.0", "se", 4, count, means, np.zeros_like(means))

    def block(self, name: str) -> BlockStats:
        assert name == "layer4.0"
        return self._b

    def profiles(self, name: str) -> np.ndarray:
        return np.where(self._b.count[:, None] > 0, self._b.mean, np.nan)


def test_class_profiles_rows_are_the_classes_with_images():
    means = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    img = class_profiles(_Analysis(means, np.array([3, 0, 1])), "layer4.0")
    assert _count(img, 1.0) > 100 and _count(img, 0.0) > 100
    assert _count(img, 0.5) == 0  # "square" has no images: no row for it
    pooled = 0.75  # (3 * 1.0 + 1 * 0.0) / 4: the "all images" row
    assert _count(img, pooled) > 100


def test_column_width_fits_five_columns_at_1400px():
    widths = [CV.column_width(n) for n in range(1, 6)]
    assert widths == sorted(widths, reverse=True)
    assert CV.column_width(5) <= 230  # a column is ~230 px wide there (tests/test_browser_compare_views.py)
    assert CV.column_width(2) >= 500


def test_column_chart_and_overview_are_drawn_at_the_column_width(cbam_result, tmp_path):
    block = cbam_result.channel_blocks[-1].name
    for n in (2, 5):
        w = CV.column_width(n)
        with Image.open(CV.column_chart(cbam_result, block, tmp_path / str(n), w)) as chart:
            assert chart.width == w and np.asarray(chart.convert("L")).std() > 10
        with Image.open(CV.column_overview(cbam_result, tmp_path / str(n), w)) as overview:
            assert overview.width == w and np.asarray(overview.convert("L")).std() > 10
    assert CV.column_chart(cbam_result, "no.such.block", tmp_path, 215) is None
    assert CV.column_chart(cbam_result, None, tmp_path, 215) is None
