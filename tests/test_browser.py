"""The app in a real headless browser (Debian's Chromium driven by playwright): upload an image,
run Inspect, and check the prediction, a chart and overlays are shown and are not blank.
Full-page screenshots go to ``test-artifacts/``."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) for browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shapes_image(tmp_path_factory) -> Path:
    from attnviz import synthetic

    path = tmp_path_factory.mktemp("browser") / "shapes.png"
    Image.fromarray(synthetic.generate(3, seed=21, size=160).image).save(path)
    return path


@pytest.fixture(scope="module")
def expected(app_server, shapes_image) -> dict:
    """What the app's API says for the same image (default variant)."""
    import tempfile

    from gradio_client import Client, handle_file

    saved, tempfile.tempdir = tempfile.tempdir, str(shapes_image.parent)  # gradio_client's download folders
    try:
        client = Client(app_server.url, verbose=False, download_files=str(shapes_image.parent / "downloads"))
        return client.predict(handle_file(str(shapes_image)), api_name="/inspect")[0]
    finally:
        tempfile.tempdir = saved


def _pixels(page, locator) -> np.ndarray:
    """The image an <img> shows, fetched from its src."""
    src = locator.get_attribute("src")
    assert src, "image has no src"
    body = page.request.get(src).body()
    with Image.open(io.BytesIO(body)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


def _assert_not_blank(page, locator, what: str) -> np.ndarray:
    locator.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert locator.evaluate("el => el.complete && el.naturalWidth > 0"), f"{what} did not load"
    px = _pixels(page, locator)
    assert px.std() > 5.0, f"{what} is blank (pixel std {px.std():.2f})"
    return px


def open_with_image(page, url: str, image) -> None:
    """Open the app at ``url`` and put ``image`` in the Inspect tab's input (shown, not yet run)."""
    page.goto(url, timeout=TIMEOUT_MS)
    page.locator("#inspect-run").wait_for(timeout=TIMEOUT_MS)
    page.locator("#inspect-image input[type=file]").set_input_files(str(image))
    page.locator("#inspect-image img").first.wait_for(state="visible", timeout=TIMEOUT_MS)  # the upload shows


def test_example_in_browser(app_server, browser):
    """Clicking an example (assets/, run on the built-in model) fills the views, then the downloads."""
    assets = ROOT / "assets"
    if not any(p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"} for p in assets.glob("*")):
        pytest.skip("no example images in assets/")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(app_server.url, timeout=TIMEOUT_MS)
        page.locator("#inspect-run").wait_for(timeout=TIMEOUT_MS)
        page.locator("#inspect-examples .gallery-item").first.click()
        _assert_not_blank(page, page.locator("#inspect-chart img"), "channel chart of the example")
        _assert_not_blank(page, page.locator("#inspect-gradcam img"), "Grad-CAM of the example")
        assert "ran on" in page.locator("#inspect-weights").inner_text()
        page.locator("#inspect-files").get_by_text(".npz").first.wait_for(timeout=TIMEOUT_MS)
    finally:
        page.close()


def test_block_selector_draws_that_blocks_chart(app_server, browser, shapes_image, expected):
    """Choosing another block redraws the channel chart from the kept result (no new inspection)."""
    blocks = expected["images"]["channel_charts"]
    if len(blocks) < 2:
        pytest.skip("the default model has fewer than two channel-attention blocks")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_with_image(page, app_server.url, shapes_image)
        page.locator("#inspect-run").click()
        chart = page.locator("#inspect-chart img")
        deepest = _assert_not_blank(page, chart, "channel chart of the deepest block")
        first_src = chart.get_attribute("src")
        assert page.locator("#inspect-block input").input_value() == blocks[-1]

        page.locator("#inspect-block input").click()
        page.get_by_role("option", name=blocks[0], exact=True).click()
        page.wait_for_function("src => { const im = document.querySelector('#inspect-chart img');"
                               " return im && im.src !== src && im.complete && im.naturalWidth > 0; }",
                               arg=first_src, timeout=TIMEOUT_MS)
        shallow = _assert_not_blank(page, chart, f"channel chart of {blocks[0]}")
        assert shallow.shape != deepest.shape or np.abs(shallow - deepest).mean() > 1.0
    finally:
        page.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_inspect_in_browser(app_server, browser, shapes_image, expected, theme):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_with_image(page, f"{app_server.url}?__theme={theme}", shapes_image)
        assert page.evaluate("document.body.classList.contains('dark')") == (theme == "dark")
        page.locator("#inspect-run").click()

        chart = page.locator("#inspect-chart img")
        _assert_not_blank(page, chart, "channel chart")
        top1 = expected["predictions"][0]["label"]
        label = page.locator("#inspect-label")
        label.get_by_text(top1).first.wait_for(timeout=TIMEOUT_MS)
        assert top1 in label.inner_text()
        assert expected["variant"] in page.locator("#inspect-weights").inner_text()

        gradcam = _assert_not_blank(page, page.locator("#inspect-gradcam img"), "Grad-CAM overlay")
        assert gradcam.shape[1::-1] == tuple(expected["view_size"])
        n_spatial = len(expected["images"]["spatial_maps"])
        if n_spatial:
            thumbs = page.locator("#inspect-spatial img")
            thumbs.first.wait_for(state="visible", timeout=TIMEOUT_MS)
            assert thumbs.count() == n_spatial
            overlay = _assert_not_blank(page, thumbs.first, "spatial-attention overlay")
            assert overlay.shape[1::-1] == tuple(expected["view_size"])
        # the downloads follow the views (drawn from the kept result right after them)
        for name in (".zip", ".json", ".npz"):
            page.locator("#inspect-files").get_by_text(name).first.wait_for(timeout=TIMEOUT_MS)

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / ("browser_inspect.png" if theme == "light" else f"browser_inspect_{theme}.png")
        page.screenshot(path=str(shot), full_page=True)
        with Image.open(shot) as im:
            assert np.asarray(im.convert("L"), dtype=np.float32).std() > 10
    finally:
        page.close()
