"""The Compare page in a real headless Chromium: the grid, a live max_N move, the charts.

Uses the session's dashboard server (``dashboard_url`` in tests/conftest.py) and drives Debian's
Chromium (``/usr/bin/chromium`` or ``$CHROMIUM``) with Playwright. Without Chromium the
test is skipped, unless ``CAMSTUDIO_REQUIRE_BROWSER=1`` (CI), which makes it fail.
"""

from __future__ import annotations

from pathlib import Path

import browser_helpers as browser
import pytest

from camcore.methods import ORIGINAL_STUDY
from dashboard.components.grid import ROWS

pytestmark = pytest.mark.browser


def test_grid_live_max_n_and_charts(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    app_url = dashboard_url
    with browser.open_browser(1600, 1000) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))

        page.goto(app_url)
        browser.wait_full_grid(page)
        grid_images = page.locator(f"{browser.GRID} [data-testid=stImage] img")
        expect(grid_images).to_have_count(len(ROWS) * (1 + len(ORIGINAL_STUDY)))  # the input and 4 methods
        for title in ("Grad-CAM", "Grad-CAM++", "Score-CAM", "Faster-Score-CAM"):
            expect(page.get_by_text(f"{title} · overlay", exact=True)).to_be_visible()
        expect(page.locator(".js-plotly-plot")).to_have_count(3)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "compare_grid.png"))

        old_src, header = browser.fsc_state(page)
        n = browser.slider_value(page)
        assert header.startswith(f"max_N = {n} ·")
        browser.move_max_n(page)
        browser.wait_fsc_changed(page, old_src, n + 1)
        browser.wait_idle(page)
        new_src, header = browser.fsc_state(page)
        assert new_src != old_src
        assert header.startswith(f"max_N = {n + 1} ·") and "cached" in header  # no new model pass
        expect(page.locator("[data-testid=stSliderThumbValue]").first).to_have_text(str(n + 1))
        expect(page.locator(".js-plotly-plot")).to_have_count(3)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "compare_max_n.png"))

        # A second session (another image through the URL) does not disturb the first.
        other = new_page()
        other.on("pageerror", lambda error: problems.append(str(error)))
        other.goto(f"{app_url}/?texture=Grain")
        browser.wait_full_grid(other)
        expect(other.locator(browser.GRID).get_by_text("grain_defective_1", exact=False).first).to_be_visible()
        expect(other.locator("[data-testid=stSliderThumbValue]").first).to_have_text("10")
        expect(page.locator(browser.GRID).get_by_text("fractal_defective_1", exact=False).first).to_be_visible()
        assert tuple(browser.fsc_state(page)) == (new_src, header)

        assert not problems, problems
