"""export.figures: the names, sizes and pixels of every figure of a real inspection, also when
several threads draw at once (overlays are drawn in worker threads while the charts are drawn)."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import attnviz
from attnviz import export, render
from attnviz.preprocess import PreparedImage
from attnviz.synthetic import generate

CBAM = "shapes_cbam_resnet"


@pytest.fixture(scope="module")
def result() -> attnviz.Inspection:
    if CBAM not in attnviz.variants():
        pytest.skip("built-in CBAM checkpoint missing")
    loaded = attnviz.load_model(CBAM)
    return attnviz.inspect(generate(5, seed=3, size=loaded.preprocess.input_size).image, loaded)


def _fresh(result: attnviz.Inspection) -> attnviz.Inspection:
    """The same result with an empty view cache."""
    p = result.prepared
    return dataclasses.replace(result, prepared=PreparedImage(tensor=p.tensor, image=p.image, geometry=p.geometry))


def _one_by_one(result: attnviz.Inspection, **style) -> dict[str, np.ndarray]:
    """Every figure drawn alone in this thread, from the public pieces."""
    view = result.view(448)
    out = {"input.png": view}
    if result.gradcam is not None:
        out["gradcam.png"] = render.overlay(view, result.gradcam, normalize="none", **style)
    for b in result.spatial_blocks:
        out[f"spatial_{b.name}.png"] = render.overlay(view, b.spatial, normalize="minmax", **style)
    for b in result.channel_blocks:
        out[f"channels_{b.name}.png"] = export.channel_chart(result, b.name)
    out["depth_overview.png"] = export.depth_overview(result)
    return {k: np.asarray(v) for k, v in out.items()}


def test_figures_names_and_pixels(result):
    style = {"alpha": 0.4, "colormap": "viridis"}
    figs = export.figures(_fresh(result), **style)
    expected = _one_by_one(_fresh(result), **style)
    # overlays first (depth order), then one chart per channel gate and the overview
    assert list(figs) == list(expected)
    assert len([k for k in figs if k.startswith("spatial_")]) == len(result.spatial_blocks) > 0
    view_size = result.view(448).size
    for name, image in figs.items():
        assert image.mode == "RGB", name
        if not name.startswith(("channels_", "depth_")):
            assert image.size == view_size, name
        np.testing.assert_array_equal(np.asarray(image), expected[name], err_msg=name)


def test_figures_from_several_threads_match(result):
    expected = {k: np.asarray(v) for k, v in export.figures(_fresh(result)).items()}
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: export.figures(_fresh(result)), range(8)))
    for figs in runs:
        assert list(figs) == list(expected)
        for name, image in figs.items():
            np.testing.assert_array_equal(np.asarray(image), expected[name], err_msg=name)
