"""The app's Intervene panel over HTTP (``/intervene``) and its logic (attnviz.app_intervene)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import attnviz
from attnviz.app_intervene import build_interventions
from attnviz.intervene import ChannelKnockout

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

VARIANT = "shapes_cbam_resnet"


def test_panel_inputs_become_interventions():
    assert build_interventions(["all"], "identity", 8) == {"*": "identity"}
    assert build_interventions([], "mean", None) == {"*": "mean"}
    spec = build_interventions(["layer4.0", "layer3.0"], "bottom-k knockout", 3.0)
    assert list(spec) == ["layer4.0", "layer3.0"] and spec["layer3.0"].bottom == 3
    with pytest.raises(ValueError, match="one of identity, mean, top-k knockout, bottom-k knockout"):
        build_interventions(["all"], "off", 1)
    with pytest.raises(ValueError, match="whole number"):
        build_interventions(["all"], "top-k knockout", 2.5)


@pytest.fixture(scope="module")
def image(tmp_path_factory, app_server):
    if VARIANT not in app_server.builtin_variants():
        pytest.skip("built-in CBAM checkpoint missing")
    from attnviz.synthetic import generate

    path = tmp_path_factory.mktemp("iv") / "shape.png"
    Image.fromarray(generate(4, seed=11, size=96).image).save(path)
    return path


def test_intervene_endpoint_matches_the_library(client, app_server, image, monkeypatch):
    md, before, after, cam_before, cam_after, summary = client.predict(
        handle_file(str(image)), VARIANT, ["layer4.0"], "top-k knockout", 20, 0.5, "jet", api_name="/intervene")
    monkeypatch.setenv("ATTNVIZ_CHECKPOINTS", str(app_server.checkpoints))
    from attnviz.models.loading import clear_cache

    clear_cache()
    loaded = attnviz.load_model(VARIANT, device="cpu")
    ref = attnviz.inspect(str(image), loaded, interventions={"layer4.0": ChannelKnockout(top=20)}).intervention
    assert summary["interventions"] == {"layer4.0": "knockout top 20"}
    assert summary["top1_before"]["index"] == ref.top1_before.index
    assert summary["prob_after"] == pytest.approx(ref.prob_after, abs=1e-5)
    assert summary["kl"] == pytest.approx(ref.kl, rel=1e-3, abs=1e-6)
    assert before["label"] == ref.top1_before.label and after["label"] == ref.top1_after.label
    assert f"{ref.prob_before:.3f} → {ref.prob_after:.3f}" in md
    for path in (cam_before, cam_after):
        with Image.open(path) as im:
            assert im.size[0] >= 96 and np.asarray(im).std() > 5
    with Image.open(cam_before) as a, Image.open(cam_after) as b:
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() > 0.5
    json.dumps(summary)


@pytest.mark.parametrize("blocks,replacement,k,message", [
    (["all"], "top-k knockout", 500, r"k must be in 0\.\.16"),  # the first block has 16 channels
    (["layer9.0"], "identity", 8, r"no attention block named 'layer9\.0'; blocks: \['layer1\.0'"),
    (["all"], "off", 8, r"not in the list of choices: \[.identity., .mean., .top-k knockout."),  # gradio's Radio
    (["all"], "bottom-k knockout", -1, "whole number of channels >= 0"),
])
def test_impossible_requests_are_errors_naming_the_valid_range(client, image, blocks, replacement, k, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(image)), VARIANT, blocks, replacement, k, 0.5, "jet", api_name="/intervene")
    # the server goes on
    md, *_ = client.predict(handle_file(str(image)), VARIANT, ["all"], "mean", 0, 0.5, "jet", api_name="/intervene")
    assert "every block" in md


def test_drilldown_endpoint_shows_the_channel_and_its_gate(client, app_server, image, monkeypatch):
    md, before, after, grid = client.predict(handle_file(str(image)), VARIANT, "layer4.0", -1, 0.5, "jet",
                                             api_name="/drilldown")
    monkeypatch.setenv("ATTNVIZ_CHECKPOINTS", str(app_server.checkpoints))
    from attnviz.models.loading import clear_cache

    clear_cache()
    result = attnviz.inspect(str(image), attnviz.load_model(VARIANT, device="cpu"), gradcam=False)
    gates = result.block("layer4.0").channel
    top = int(np.argmax(gates))
    assert f"channel **{top}**: gate {gates[top]:.4f}, rank 1 of 128" in md
    for path in (before, after, grid):
        with Image.open(path) as im:
            assert np.asarray(im).std() > 5
    with pytest.raises(AppError, match=r"valid 0\.\.127"):
        client.predict(handle_file(str(image)), VARIANT, "layer4.0", 128, 0.5, "jet", api_name="/drilldown")
    with pytest.raises(AppError, match="blocks:"):
        client.predict(handle_file(str(image)), VARIANT, "layer9.0", 0, 0.5, "jet", api_name="/drilldown")
