"""The pages' reports in a real headless Chromium (issue 25): a 3-category MVTec AD zip
evaluated through the Dataset page, then its report and the Compare page's report taken from
the pages' own download buttons and opened with the network blocked: no console error, no
request, every image decoded, every chart drawn, the settings that reproduce the page inside.
Without Chromium the test is skipped, unless ``CAMSTUDIO_REQUIRE_BROWSER=1``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import browser_helpers as browser
import numpy as np
import pytest
from test_mvtec_layout import _blob, _folder_zip, write_mvtec

from camcore import report
from camcore.localize_settings import parse_settings

pytestmark = pytest.mark.browser


def _mvtec_zip(tmp_path: Path) -> Path:
    """parts.zip: bottle (RGB), carpet and screw (gray), one good and one defective test image each."""
    rng = np.random.default_rng(9)
    root = tmp_path / "mvtec" / "parts"
    for category, shape in (("bottle", (72, 64, 3)), ("carpet", (64, 64)), ("screw", (80, 80))):
        write_mvtec(root, category, {
            "test/good/000": (rng.integers(90, 160, shape, np.uint8), None),
            "test/crack/000": (rng.integers(90, 160, shape, np.uint8), _blob(shape[:2], 30, 30, 8)),
        })
    path = tmp_path / "parts.zip"
    path.write_bytes(_folder_zip(root.parent))
    return path


def _download(page, button: str, folder: Path) -> Path:
    with page.expect_download(timeout=240_000) as started:
        page.get_by_role("button", name=button).click()
    download = started.value
    target = folder / download.suggested_filename
    download.save_as(target)
    return target


def _open_offline(new_page, path: Path) -> dict:
    """Open the report with every other request refused; what it shows and any problem."""
    page = new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    def only_the_file(route) -> None:
        if route.request.url == path.as_uri():
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_file)
    page.goto(path.as_uri())
    charts = page.locator("div.chart").count()
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {charts}",
                           timeout=60_000)
    shown = page.evaluate(f"""() => ({{
        widths: [...document.images].map(i => i.complete ? i.naturalWidth : 0),
        classes: [...document.images].map(i => i.className),
        drawn: document.querySelectorAll('.js-plotly-plot').length,
        settings: JSON.parse(document.getElementById('{report.SETTINGS_ID}').textContent),
    }})""")
    page.close()
    return {**shown, "charts": charts, "problems": problems, "requests": requests}


def test_an_mvtec_set_through_the_dataset_page_and_both_reports_offline(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    data = _mvtec_zip(tmp_path)
    with browser.open_browser(1400, 1000) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(dashboard_url)
        browser.wait_full_grid(page)
        compare = _open_offline(new_page, _download(page, "Report (HTML)", tmp_path))
        assert compare["settings"]["model"] == "demo:vgg_defect" and compare["settings"]["threshold"] == 0.5
        assert compare["classes"] == ["grid-image"] and all(w > 0 for w in compare["widths"])
        assert compare["charts"] == compare["drawn"] == 1  # the timing chart
        assert not compare["problems"] and not compare["requests"], compare

        page.locator("[data-testid=stSidebarNav] a", has_text="Dataset").click()
        expect(page.get_by_role("heading", name="Dataset evaluation")).to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        page.get_by_test_id("stRadioGroup").first.get_by_text("Upload a data set (.zip)").click()
        browser.wait_idle(page)
        page.locator("[data-testid=stFileUploader]").filter(has_text="Data set (.zip)").locator(
            "input[type=file]").set_input_files(str(data))
        expect(page.get_by_text("parts.zip · MVTec AD layout · 3 categories · 6 images, 3 with a mask")) \
            .to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        expect(page.get_by_role("combobox", name="Category")).to_be_visible()
        page.get_by_role("button", name="Run evaluation").click()
        expect(page.get_by_text(re.compile(r"Results: parts\.zip \(6 of 6 images\)"))).to_be_visible(timeout=300_000)
        expect(page.locator(".js-plotly-plot")).to_have_count(5, timeout=60_000)
        browser.wait_idle(page)
        expect(page.get_by_text("MVTec AD layout")).to_be_visible()

        localize = _download(page, re.compile(r"^Settings for cam-studio localize"), tmp_path)
        chosen = parse_settings(json.loads(localize.read_text()))
        assert chosen.model == "demo:vgg_defect" and 0 < chosen.threshold < 1

        dataset = _open_offline(new_page, _download(page, "Download report (HTML)", tmp_path))
        assert dataset["settings"]["data"] == "upload" and dataset["settings"]["layout"] == "mvtec"
        assert dataset["settings"]["archive"] == "parts.zip" and dataset["settings"]["images"] == 6
        assert dataset["classes"] and set(dataset["classes"]) == {"worst-image"}
        assert all(w > 0 for w in dataset["widths"]), dataset["widths"]
        assert dataset["charts"] == dataset["drawn"] >= 3
        assert not dataset["problems"] and not dataset["requests"], dataset
        page.screenshot(path=str(tmp_path / "dataset_mvtec.png"), full_page=True)
        assert not problems, problems
