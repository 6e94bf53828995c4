"""What the page says about its models, in a real headless browser.

Offline (the shared app: HF_HUB_OFFLINE=1, empty caches) the built-in synthetic-shapes model is
the default: the notice stands above the prediction and the synthetic examples come first. A
fresh start online against a loopback stand-in for the Hugging Face Hub (``HF_ENDPOINT``,
serving timm's seresnet50 file at random init, exactly as the hub serves it) fetches it in the
background while the page already answers, shows the progress in the status line, and a new
session then opens on the ImageNet model, photos first, no notice.
"""
from __future__ import annotations

import pytest

from attnviz.models import get_variant

from .conftest import start_app
from .hub_standin import HubStandIn, timm_safetensors
from .test_browser import ARTIFACTS, TIMEOUT_MS, browser  # noqa: F401

pytestmark = pytest.mark.browser


def _first_example_src(page) -> str:
    img = page.locator("#inspect-examples .gallery-item img").first
    img.wait_for(state="visible", timeout=TIMEOUT_MS)
    return img.get_attribute("src") or ""


def test_offline_page_says_demo_models(app_server, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(app_server.url, timeout=TIMEOUT_MS)
        notice = page.locator("#inspect-notice")
        notice.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert "offline demo models trained on synthetic shapes: they know 8 shapes, not photos" in \
            notice.inner_text().lower()
        assert "python -m attnviz download cbam_resnet50" in notice.inner_text()
        label = page.locator("#inspect-label")  # the notice is above the prediction
        assert notice.bounding_box()["y"] < label.bounding_box()["y"]
        assert "/synthetic_" in _first_example_src(page)
        assert not page.locator("#preload-status").is_visible()  # nothing fetched offline
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "preload-offline-notice.png"))
    finally:
        page.close()


def test_fresh_start_switches_to_imagenet_after_prefetch(tmp_path, browser):  # noqa: F811
    se = get_variant("seresnet50")
    with HubStandIn() as hub:
        hub.add_hf(se.weights.hf_repo, se.weights.hf_filename,
                   timm_safetensors("seresnet50", tmp_path / "published" / "model.safetensors"))
        env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "ATTNVIZ_PRELOAD": "seresnet50"}
        with start_app(tmp_path, **env) as app:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                page.goto(app.url, timeout=TIMEOUT_MS)
                status = page.locator("#preload-status")
                status.wait_for(state="visible", timeout=TIMEOUT_MS)
                page.wait_for_function(
                    "() => (document.querySelector('#preload-status')?.innerText ?? '').includes('seresnet50 ready')",
                    timeout=TIMEOUT_MS)
                page.reload()  # a new session after the prefetch
                variant = page.locator("#inspect-variant input")
                variant.wait_for(timeout=TIMEOUT_MS)
                page.wait_for_function(
                    "() => (document.querySelector('#inspect-variant input')?.value ?? '').startsWith('seresnet50')",
                    timeout=TIMEOUT_MS)
                assert "ImageNet" in variant.input_value() and "not on this machine" not in variant.input_value()
                page.locator("#inspect-notice").wait_for(state="hidden", timeout=TIMEOUT_MS)
                page.wait_for_function(  # photos first
                    "() => { const img = document.querySelector('#inspect-examples .gallery-item img');"
                    " return img && !img.src.includes('/synthetic_'); }", timeout=TIMEOUT_MS)
                page.locator("#inspect-examples .gallery-item").first.click()  # runs on the ImageNet model
                page.wait_for_function("() => (document.querySelector('#inspect-weights')?.innerText ?? '')"
                                       ".includes('seresnet50 ran')", timeout=TIMEOUT_MS)
                page.wait_for_function("() => (document.querySelector('#preload-status')?.innerText ?? '')"
                                       ".includes('new sessions open on')", timeout=TIMEOUT_MS)
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "preload-imagenet-default.png"), full_page=True)
            finally:
                page.close()
            log = app.log.read_text()
    assert "preload seresnet50 ready" in log
    assert any(path.endswith("/model.safetensors") for _, path, _ in hub.requests)
