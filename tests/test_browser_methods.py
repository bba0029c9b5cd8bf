"""Every registered method as a column, in a real headless Chromium (1600×1000)."""

from __future__ import annotations

from pathlib import Path

import browser_helpers as browser
import pytest

from camcore.methods import METHODS
from dashboard.components.grid import ROWS

pytestmark = pytest.mark.browser


def test_all_methods_selected_show_every_column_without_console_errors(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    url = dashboard_url
    with browser.open_browser(1600, 1000) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(url)
        browser.wait_full_grid(page)
        browser.select_all_methods(page)
        images = page.locator(f"{browser.GRID} [data-testid=stImage] img")
        # 9 methods in two rows of columns, each led by the input column; a tile per grid row
        expect(images).to_have_count(len(ROWS) * (len(METHODS) + 2))
        for spec in METHODS.values():
            expect(page.get_by_text(f"{spec.label} · overlay", exact=True)).to_be_visible()
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "all_methods.png"), full_page=True)
        assert not problems, problems
