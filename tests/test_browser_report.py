"""The HTML report in a real headless Chromium with the network blocked: it renders with no
console error and no request, every image decodes, every chart is drawn, and the page carries
the settings. Without Chromium the test is skipped, unless ``CAMSTUDIO_REQUIRE_BROWSER=1``."""

from __future__ import annotations

from pathlib import Path

import browser_helpers as browser
import keras
import pytest
from browser_checks import require_browser
from test_report import SETTINGS, sample_grid, timing

from camcore import evaluation as ev
from camcore import report
from camcore.report_sections import evaluation_sections, render_worst_images, row_opener

pytestmark = pytest.mark.browser


def _results(tmp_path: Path):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling2D()(h)))
    spec = ev.ModelSpec.from_model(model, "unit", key="memory:tiny")
    items = ev.synthetic_items(4, seed=8, size=64, defect_rate=0.75)
    return ev.evaluate(spec, items, ["grad_cam", "xgrad_cam", "sobel", "random"], curve_steps=3, workers=1)


def test_the_report_renders_offline_with_every_image_and_chart(tmp_path: Path) -> None:
    require_browser()
    from playwright.sync_api import expect

    sections = evaluation_sections(_results(tmp_path), worst_n=2)
    worst, notes = render_worst_images(sections.worst, row_opener())
    assert len(worst) == 4 and not notes
    path = report.write_report(tmp_path / "report.html", model="vgg_defect (demo)", layer="top_down56",
                               precision="fp32", settings=SETTINGS, grid_png=sample_grid(), timing_figure=timing(),
                               threshold_table=sections.thresholds, results=sections, worst_images=worst)
    charts = 1 + len(sections.figures)
    with browser.open_browser(1280, 900) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        requests: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))

        def only_the_file(route) -> None:
            if route.request.url == path.as_uri():
                route.continue_()
            else:  # the network is closed: anything else the page asks for is a failure
                requests.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_file)
        page.goto(path.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {charts}",
                               timeout=30_000)
        images = page.locator("img")
        expect(images).to_have_count(1 + len(worst))
        widths = page.evaluate("() => [...document.images].map(i => i.complete ? i.naturalWidth : 0)")
        assert all(w > 0 for w in widths), widths
        assert page.locator("img.grid-image").evaluate("i => i.naturalWidth") == 1280  # 5 tiles of 256 px
        expect(page.locator(".js-plotly-plot")).to_have_count(charts)
        boxes = page.locator(".js-plotly-plot .boxlayer .trace").count()
        assert boxes >= 4  # the distribution charts drew their boxes
        settings = page.evaluate(f"() => JSON.parse(document.getElementById('{report.SETTINGS_ID}').textContent)")
        assert settings == SETTINGS
        expect(page.get_by_role("heading", name="Summary per method")).to_be_visible()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert problems == [] and requests == [], (problems, requests)
