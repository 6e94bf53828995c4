"""The Dataset tab in a real headless browser: run an analysis of the built-in synthetic set and
check the Fig. 6 panel and the saturation chart are drawn (not blank) and the file is offered."""
from __future__ import annotations

import pytest

from tests.test_browser import ARTIFACTS, TIMEOUT_MS, _assert_not_blank, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


def test_dataset_tab_in_browser(app_server, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.goto(app_server.url, timeout=TIMEOUT_MS)
        page.get_by_role("tab", name="Dataset").click()
        page.locator("#dataset-run").wait_for(state="visible", timeout=TIMEOUT_MS)
        page.locator("#dataset-run").click()
        _assert_not_blank(page, page.locator("#dataset-excitation img"), "mean excitation by class")
        page.locator("#dataset-file").get_by_text(".npz").first.wait_for(timeout=TIMEOUT_MS)
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dataset-tab-failure.png"), full_page=True)
        raise
    finally:
        page.close()
