"""export.figures: the names, sizes and pixels of every figure of a real inspection, also when
several threads draw at once (overlays are drawn in worker threads while the charts are drawn)."""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import attnviz
from attnviz import export, render
from attnviz.preprocess import PreparedImage


def _fresh(cbam_result: attnviz.Inspection) -> attnviz.Inspection:
    """The same cbam_result with an empty view cache."""
    p = cbam_result.prepared
    return dataclasses.replace(cbam_result, prepared=PreparedImage(tensor=p.tensor, image=p.image, geometry=p.geometry))


def _one_by_one(cbam_result: attnviz.Inspection, **style) -> dict[str, np.ndarray]:
    """Every figure drawn alone in this thread, from the public pieces."""
    view = cbam_result.view(448)
    out = {"input.png": view}
    if cbam_result.gradcam is not None:
        out["gradcam.png"] = render.overlay(view, cbam_result.gradcam, normalize="none", **style)
    for b in cbam_result.spatial_blocks:
        out[f"spatial_{b.name}.png"] = render.overlay(view, b.spatial, normalize="minmax", **style)
    for b in cbam_result.channel_blocks:
        out[f"channels_{b.name}.png"] = export.channel_chart(cbam_result, b.name)
    out["depth_overview.png"] = export.depth_overview(cbam_result)
    return {k: np.asarray(v) for k, v in out.items()}


def test_figures_names_and_pixels(cbam_result):
    style = {"alpha": 0.4, "colormap": "viridis"}
    figs = export.figures(_fresh(cbam_result), **style)
    expected = _one_by_one(_fresh(cbam_result), **style)
    # overlays first (depth order), then one chart per channel gate and the overview
    assert list(figs) == list(expected)
    assert len([k for k in figs if k.startswith("spatial_")]) == len(cbam_result.spatial_blocks) > 0
    view_size = cbam_result.view(448).size
    for name, image in figs.items():
        assert image.mode == "RGB", name
        if not name.startswith(("channels_", "depth_")):
            assert image.size == view_size, name
        np.testing.assert_array_equal(np.asarray(image), expected[name], err_msg=name)


def test_figures_from_several_threads_match(cbam_result):
    expected = {k: np.asarray(v) for k, v in export.figures(_fresh(cbam_result)).items()}
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: export.figures(_fresh(cbam_result)), range(8)))
    for figs in runs:
        assert list(figs) == list(expected)
        for name, image in figs.items():
            np.testing.assert_array_equal(np.asarray(image), expected[name], err_msg=name)
