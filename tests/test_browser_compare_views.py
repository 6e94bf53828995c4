"""The compare tabs' charts in a real headless browser at a 1400 px window: the per-image
channel heat map (Compare images) and each column's channel chart and depth overview (Compare
variants, 5 columns) are shown at about their natural size (not shrunk by more than 1.25x, so
their 11 px text stays legible) and are not blank. Screenshots go to ``test-artifacts/``."""
from __future__ import annotations

import pytest

from tests.test_browser import ARTIFACTS, TIMEOUT_MS, _assert_not_blank, browser, shapes_image  # noqa: F401

pytestmark = pytest.mark.browser

MAX_SHRINK = 1.25
# The image as drawn: object-fit "contain" scales it to fit the element's box on both axes.
_SHOWN = """el => {
  const s = Math.min(el.clientWidth / el.naturalWidth, el.clientHeight / el.naturalHeight);
  return {natural: [el.naturalWidth, el.naturalHeight], box: [el.clientWidth, el.clientHeight], scale: s};
}"""


def _assert_shown_at_natural_size(page, locator, what: str) -> dict:
    _assert_not_blank(page, locator, what)
    shown = locator.evaluate(_SHOWN)
    print(f"{what}: {shown}")  # the sizes, for whoever tunes the chart widths (pytest -s)
    assert 1.0 / shown["scale"] <= MAX_SHRINK, f"{what} is shrunk {1 / shown['scale']:.2f}x: {shown}"
    return shown


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def test_compare_images_heat_map_in_browser(app_server, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(app_server.url, timeout=TIMEOUT_MS)
        page.locator("#inspect-run").wait_for(timeout=TIMEOUT_MS)
        _open_tab(page, "Compare images")
        use = page.get_by_role("button", name="Use the example images")
        if not use.count():
            pytest.skip("no example images in assets/")
        use.click()
        page.locator("#compare-images-files").get_by_text(".png").first.wait_for(timeout=TIMEOUT_MS)
        page.locator("#compare-images-run").click()
        profile = page.locator("#compare-images-profile img")
        _assert_shown_at_natural_size(page, profile, "per-image channel heat map")
        first_src = profile.get_attribute("src")

        page.locator("#compare-images-view").get_by_text("channels in index order").click()
        page.wait_for_function("src => { const im = document.querySelector('#compare-images-profile img');"
                               " return im && im.src !== src && im.complete && im.naturalWidth > 0; }",
                               arg=first_src, timeout=TIMEOUT_MS)
        _assert_shown_at_natural_size(page, profile, "heat map in channel order")
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#compare-images-profile").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "browser_compare_images.png"), full_page=True)
    finally:
        page.close()


# 5 columns: every built-in variant (the default); 2: wide columns get wider charts, not shrunk ones
DROPPED = {5: (), 2: ("shapes_bam_resnet", "shapes_eca_resnet", "shapes_resnet")}


@pytest.mark.parametrize("n_variants", [5, 2])
def test_compare_variants_columns_in_browser(app_server, browser, shapes_image, n_variants):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(app_server.url, timeout=TIMEOUT_MS)
        page.locator("#inspect-run").wait_for(timeout=TIMEOUT_MS)
        _open_tab(page, "Compare variants")
        page.locator("#compare-image input[type=file]").set_input_files(str(shapes_image))
        page.locator("#compare-image img").first.wait_for(state="visible", timeout=TIMEOUT_MS)
        for name in DROPPED[n_variants]:
            page.get_by_label(name, exact=False).uncheck()
        page.locator("#compare-run").click()
        page.locator("#compare-col0-chart img").wait_for(state="visible", timeout=TIMEOUT_MS)
        shown = 0
        for i in range(n_variants):
            for part in ("chart", "overview"):
                img = page.locator(f"#compare-col{i}-{part} img")
                if not img.count() or not img.first.is_visible():
                    continue  # the plain ResNet has no channel chart / overview
                _assert_shown_at_natural_size(page, img.first, f"column {i} {part}")
                shown += 1
        assert shown >= 2 * n_variants - 2, f"only {shown} column charts shown"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"browser_compare_variants_{n_variants}.png"), full_page=True)
    finally:
        page.close()
