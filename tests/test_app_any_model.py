"""Any model in the app, offline. A timm model: its weights staged in the running app's Hugging
Face cache in the exact layout huggingface_hub writes (timm's own architecture at random init),
then picked by typing ``timm:NAME``: /inspect shows its SE gates, /compare puts it beside a
built-in, an unknown name is one clear error, and the Inspect tab draws it in a real browser.
The user's own model: a self-describing checkpoint uploaded to /inspect runs as itself, with its
own classes, whatever variant is chosen."""
from __future__ import annotations

import pytest
import torch

from tests.test_browser import (  # noqa: F401 (browser, shapes_image: fixtures)
    TIMEOUT_MS, _assert_not_blank, browser, open_with_image, shapes_image,
)

from .test_own_models import _described_file, _tiny_description
from .weights_support import put_in_hf_cache

TIMM_MODEL = "mobilenetv3_small_050"  # 1.6 M parameters, 9 SE modules with hard-sigmoid gates
TIMM_NAME = f"timm:{TIMM_MODEL}"


@pytest.fixture(scope="module")
def staged(app_server) -> str:
    """The model's weights in the app's own HF cache (the app reads them on first use)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(TIMM_MODEL, pretrained=False)
    put_in_hf_cache(app_server.hf_home, model.pretrained_cfg["hf_hub_id"], "model.safetensors",
                    {k: v.contiguous() for k, v in model.state_dict().items()})
    return TIMM_NAME


def test_inspect_a_timm_model_by_name(client, staged, shapes_image):
    from gradio_client import handle_file

    summary = client.predict(handle_file(str(shapes_image)), staged, api_name="/inspect")[0]
    kinds = [b["kind"] for b in summary["blocks"]]
    assert summary["variant"] == staged and len(kinds) == 9 and set(kinds) == {"se"}
    assert summary["num_classes"] == 1000 and abs(summary["total_probability"] - 1) < 1e-5


def test_compare_a_timm_model_beside_a_builtin(client, staged, shapes_image, app_server):
    from gradio_client import handle_file

    builtin = sorted(app_server.builtin_variants())[0]
    summary = client.predict(handle_file(str(shapes_image)), [builtin], "", 0.5, "jet", staged,
                             api_name="/compare")[0]
    assert set(summary["variants"]) == {builtin, staged}


def test_unknown_timm_name_is_one_clear_error(client, shapes_image):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="timm has no model 'mobilenetv3_smal'"):
        client.predict(handle_file(str(shapes_image)), "timm:mobilenetv3_smal", api_name="/inspect")


@pytest.mark.browser
def test_timm_model_typed_in_the_inspect_tab(app_server, browser, staged, shapes_image):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_with_image(page, app_server.url, shapes_image)
        box = page.locator("#inspect-variant input")
        box.fill(staged)
        box.press("Enter")
        page.locator("#inspect-run").click()
        page.locator("#inspect-weights").get_by_text(staged).first.wait_for(timeout=TIMEOUT_MS)
        _assert_not_blank(page, page.locator("#inspect-chart img"), f"SE channel chart of {staged}")
        assert page.locator("#inspect-block input").input_value().startswith("blocks.")
    finally:
        page.close()


def test_uploaded_self_describing_checkpoint_runs_as_itself(client, shapes_image, tmp_path):
    from gradio_client import handle_file

    ckpt = _described_file(tmp_path / "tiny.safetensors", _tiny_description())
    summary = client.predict(handle_file(str(shapes_image)), "shapes_cbam_resnet", 0.5, "jet",
                             handle_file(str(ckpt)), api_name="/inspect")[0]
    assert sorted(p["label"] for p in summary["predictions"]) == ["a", "b", "c"]
    assert summary["weights"].startswith("trained from random init by attnviz on /data/abc, 12 images")
    assert {b["kind"] for b in summary["blocks"]} == {"se"} and summary["input_size"] == 32
