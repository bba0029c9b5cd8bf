"""What only a browser's layout shows of the Dataset page a new user tried (issue 25, point 9):
the summary table fits the page without sideways scrolling, and after Open in Compare the
input column's captions ("Ground truth …") are not cut off. Measured in headless Chromium at
1280 × 900, a laptop's window. Without Chromium the test is skipped, unless
``CAMSTUDIO_REQUIRE_BROWSER=1``."""

from __future__ import annotations

import re
from pathlib import Path

import browser_helpers as browser
import pytest

pytestmark = pytest.mark.browser

# [scrollWidth, clientWidth] of each data frame's scroller (glide-data-grid's .dvn-scroller)
TABLE_WIDTHS = """() => [...document.querySelectorAll('[data-testid=stDataFrame]')].map(frame => {
    const scroller = frame.querySelector('.dvn-scroller');
    return scroller ? [scroller.scrollWidth, scroller.clientWidth] : null;
})"""
# [caption, the text's width, the caption's width] of the grid's input column
INPUT_CAPTIONS = """() => {
    const column = document.querySelector('.st-key-grid [data-testid=stColumn]');
    return [...column.querySelectorAll('[data-testid=stImageCaption]')].map(caption => {
        const range = document.createRange();
        range.selectNodeContents(caption.querySelector('p') || caption);
        return [caption.innerText, range.getBoundingClientRect().width, caption.clientWidth];
    });
}"""


def test_the_summary_fits_and_the_ground_truth_caption_is_whole(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with browser.open_browser(1280, 900) as (_, new_page):
        page = new_page()
        page.goto(dashboard_url)
        page.locator("[data-testid=stSidebarNav] a", has_text="Dataset").click(timeout=120_000)
        expect(page.get_by_role("heading", name="Dataset evaluation")).to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        for name, key in (("^Images", "Home"), ("^Share of defective images", "End")):
            slider = page.get_by_role("slider", name=re.compile(name))
            slider.focus()
            slider.press(key)  # 2 images, both defective: the default methods on the default demo
            browser.wait_idle(page)
        page.get_by_role("button", name="Run evaluation").click()
        expect(page.get_by_role("heading", name="Summary")).to_be_visible(timeout=300_000)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        page.screenshot(path=str(tmp_path / "dataset.png"), full_page=True)
        widths = [w for w in page.evaluate(TABLE_WIDTHS) if w is not None]
        assert widths and all(scroll <= client + 1 for scroll, client in widths), widths

        page.get_by_role("button", name="Open in Compare").click()
        browser.wait_full_grid(page)
        captions = page.evaluate(INPUT_CAPTIONS)
        page.screenshot(path=str(tmp_path / "compare.png"))
        assert any(text.startswith("Ground truth") for text, _, _ in captions), captions
        cut = [(text, round(width), box) for text, width, box in captions if width > box + 0.5]
        assert not cut, cut
