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
        references = browser.watch_cache_references(page)

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

        # Three quick moves, each interrupting the run before it: the page follows to the last.
        # With the browser's message cache on, this is where pages under load died ("Cached
        # ForwardMsg MISS"): no reference to that cache may reach the page.
        for _ in range(3):
            browser.move_max_n(page)
        browser.wait_fsc_changed(page, new_src, n + 4)
        browser.wait_idle(page)
        new_src, header = browser.fsc_state(page)
        assert header.startswith(f"max_N = {n + 4} ·")
        assert references == [], f"{len(references)} references to the browser's message cache"

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


GRID_DRAWN_AT = f"""
window.__gridDrawnAt = null;
const gridDrawn = {browser.GRID_DRAWN_JS};
const watch = () => {{
    if (gridDrawn()) {{ window.__gridDrawnAt = performance.now(); return; }}
    requestAnimationFrame(watch);
}};
requestAnimationFrame(watch);
"""


def test_a_new_page_draws_the_grid_before_fetching_the_charts_code(dashboard_url: str) -> None:
    """Plotly's code (4.7 MB) and the data frame's kept the main thread busy for seconds
    before the grid could appear: a session's first run sends the grid, and the charts only
    once the browser reports the grid drawn. So neither is fetched before the grid is on
    screen, and the charts then follow with no click."""
    from playwright.sync_api import expect

    with browser.open_browser(1600, 1000) as (_, new_page):
        page = new_page()
        page.add_init_script(GRID_DRAWN_AT)
        page.goto(dashboard_url)
        browser.wait_full_grid(page)
        drawn_at = page.evaluate("window.__gridDrawnAt")
        fetched = page.evaluate("""() => performance.getEntriesByType('resource')
            .filter(e => /\\/(PlotlyChart|DataFrame)\\.[^/]*\\.js$/.test(e.name))
            .map(e => [e.name.split('/').pop(), e.startTime])""")
        assert drawn_at is not None
        assert {name.split(".")[0] for name, _ in fetched} == {"PlotlyChart", "DataFrame"}, fetched
        assert all(start > drawn_at for _, start in fetched), (drawn_at, fetched)
        expect(page.locator(".js-plotly-plot")).to_have_count(3)  # the timing, trade-off and IoU charts
        expect(page.locator(browser.ANALYSIS_PENDING)).to_have_count(0)
