"""Compare with a second model in a real headless Chromium: the default demo against
resnet_defect shows A's row, B's row and the difference for the four default methods, and a
max_N move redraws both models' Faster-Score-CAM."""

from __future__ import annotations

from pathlib import Path

import browser_helpers as browser
import pytest

from camcore.methods import ORIGINAL_STUDY

pytestmark = pytest.mark.browser


def test_a_second_model_side_by_side_with_live_max_n(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with browser.open_browser(1600, 1000) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(dashboard_url)
        browser.wait_full_grid(page)
        n = browser.slider_value(page)

        browser.switch_on_second_model(page)
        browser.wait_pair_grid(page, ORIGINAL_STUDY)
        for method in ORIGINAL_STUDY:
            expect(page.locator(f".st-key-pair_{method} [data-testid=stImage] img")).to_have_count(3)
            expect(page.locator(f".st-key-pair_{method} [data-testid=stTable]")).to_have_count(1)
        for title in ("Grad-CAM", "Grad-CAM++", "Score-CAM", "Faster-Score-CAM"):
            for row in ("A", "B", "A − B"):
                expect(page.get_by_text(f"{title} · {row}", exact=True)).to_be_visible()
        expect(page.get_by_text("B: resnet_defect (demo)", exact=True)).to_be_visible()
        assert browser.slider_value(page) == n  # the slider's wider range (B's 64 channels) kept max_N
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "two_models.png"))

        tiles, header = browser.pair_state(page, "faster_score_cam")
        assert header.startswith(f"max_N = {n} ·")
        browser.move_max_n(page)
        page.wait_for_function(
            """([old, n]) => {
                const box = document.querySelector('.st-key-pair_faster_score_cam');
                const images = [...box.querySelectorAll('[data-testid=stImage] img')];
                const cap = box.querySelector('[data-testid=stCaptionContainer]');
                return images.length === 3
                    && images.every((img, i) => img.getAttribute('src') !== old[i] && img.complete)
                    && cap && cap.innerText.startsWith('max_N = ' + n + ' ·');
            }""",
            arg=[tiles, n + 1],
            timeout=60_000,
            polling=20,
        )
        browser.wait_idle(page)
        _, header = browser.pair_state(page, "faster_score_cam")
        assert header == f"max_N = {n + 1} · A cached · B cached"  # each model's Score-CAM passes cover it
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        assert not problems, problems
