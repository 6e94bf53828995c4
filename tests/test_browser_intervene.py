"""The Intervene and drill-down panels in a real headless browser: upload, open the panel, knock
out the top-k channels of every block, and check the deltas, both top-5 lists and both Grad-CAMs
are shown; drill down by block and channel, or by clicking a bar of the channel chart."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_browser import (  # noqa: F401 (browser, shapes_image, expected: fixtures)
    ARTIFACTS, TIMEOUT_MS, _assert_not_blank, browser, expected, open_with_image, shapes_image,
)

pytestmark = pytest.mark.browser


def test_intervene_panel_in_browser(app_server, browser, shapes_image, client):  # noqa: F811
    from gradio_client import handle_file

    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        open_with_image(page, app_server.url, shapes_image)
        page.locator("#intervene-panel").get_by_text("Intervene: switch").first.click()
        page.locator("#intervene-replacement").get_by_text("top-k knockout").click()
        k = page.locator("#intervene-k input")
        k.fill("4")
        k.press("Tab")
        page.locator("#intervene-run").click()

        deltas = page.locator("#intervene-deltas")
        deltas.get_by_text("KL(before‖after)").wait_for(timeout=TIMEOUT_MS)
        before = _assert_not_blank(page, page.locator("#intervene-gradcam-before img"), "Grad-CAM before")
        after = _assert_not_blank(page, page.locator("#intervene-gradcam-after img"), "Grad-CAM after")
        assert before.shape == after.shape

        # the same request through the API: the page shows exactly its numbers
        md, label_before, label_after, *_ = client.predict(  # the default variant, as the page's
            image=handle_file(str(shapes_image)), blocks=["all"], replacement="top-k knockout", k=4,
            api_name="/intervene")
        assert "knockout top 4" in md and md.split("KL")[1][:40] in deltas.inner_text().replace("\n", " ") + " "
        assert label_before["label"] in page.locator("#intervene-before").inner_text()
        assert label_after["label"] in page.locator("#intervene-after").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser_intervene.png"), full_page=True)
    finally:
        page.close()


def test_drilldown_panel_in_browser(app_server, browser, shapes_image):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        open_with_image(page, app_server.url, shapes_image)
        page.locator("#drilldown-panel").get_by_text("Channel drill-down").first.click()
        block = page.locator("#drilldown-block input")
        page.wait_for_function("() => { const i = document.querySelector('#drilldown-block input');"
                               " return i && i.value !== ''; }", timeout=TIMEOUT_MS)  # filled on load
        chosen = block.input_value()
        page.locator("#drilldown-run").click()
        page.locator("#drilldown-text").get_by_text("rank 1 of").wait_for(timeout=TIMEOUT_MS)
        assert chosen in page.locator("#drilldown-text").inner_text()
        _assert_not_blank(page, page.locator("#drilldown-before img"), "channel map entering the block")
        _assert_not_blank(page, page.locator("#drilldown-after img"), "channel map leaving the block")
        _assert_not_blank(page, page.locator("#drilldown-grid img"), "top-8 channel grid")
        page.screenshot(path=str(ARTIFACTS / "browser_drilldown.png"), full_page=True)
    finally:
        page.close()


def test_click_on_a_bar_drills_down_into_that_channel(app_server, browser, shapes_image, expected):  # noqa: F811
    """Inspect, then click a bar in the middle of the selected block's (sorted) chart: the
    drill-down panel opens on that bar's channel, with its rank among the block's gates."""
    import attnviz
    from attnviz.export import channel_chart_layout

    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    try:
        open_with_image(page, app_server.url, shapes_image)
        page.locator("#inspect-run").click()
        chart = page.locator("#inspect-chart img")
        _assert_not_blank(page, chart, "channel chart of the selected block")
        block = page.locator("#inspect-block input").input_value()
        result = attnviz.inspect(shapes_image, expected["variant"], gradcam=False)  # what the server drew
        layout = channel_chart_layout(result, block)
        gates = result.block(block).channel
        values, counts = np.unique(gates, return_counts=True)
        order = np.argsort(-gates, kind="stable")  # the chart's bars, left to right
        # a bar in the middle whose gate no other channel shares (saturated gates tie at 1.0)
        pos = next(p for p in range(gates.size // 2, gates.size) if counts[values == gates[order[p]]][0] == 1)
        chosen = int(order[pos])
        columns = [x for x in range(layout.x0, layout.x1) if layout.channel_at(x + 0.5) == chosen]
        x, y = (columns[0] + columns[-1] + 1) / 2, layout.y1 - 2  # the bar's foot: always inside it
        natural = page.evaluate("() => { const im = document.querySelector('#inspect-chart img');"
                                " return [im.naturalWidth, im.naturalHeight]; }")
        assert natural == [layout.width, layout.height]
        box = chart.bounding_box()
        chart.click(position={"x": x * box["width"] / layout.width, "y": y * box["height"] / layout.height})
        text = page.locator("#drilldown-text")
        text.get_by_text(f"rank {pos + 1} of").wait_for(timeout=TIMEOUT_MS)
        assert f"{block}, channel {chosen}:" in text.inner_text()
        assert page.locator("#drilldown-channel input").input_value() == str(chosen)
        _assert_not_blank(page, page.locator("#drilldown-before img"), "the clicked channel entering the block")
        page.screenshot(path=str(ARTIFACTS / "browser_drilldown_click.png"), full_page=True)
    finally:
        page.close()
