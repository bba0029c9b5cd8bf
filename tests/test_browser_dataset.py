"""The Dataset page in a real headless Chromium: upload a small results file, see the curves.

Reuses the server and browser helpers of ``tests/browser_helpers.py`` (as tests/test_browser.py
does). Without Chromium the test is skipped, unless ``CAMSTUDIO_REQUIRE_BROWSER=1``,
which makes it fail.
"""

from __future__ import annotations

from pathlib import Path

import browser_helpers as browser
import keras
import pytest

from camcore import evaluation as ev


def _results_csv(tmp_path: Path) -> str:
    """A real results file: a tiny model on 5 generated 64-px images (about a second)."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 32, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h))
    spec = ev.ModelSpec.from_model(model, "unit", key="demo:vgg_defect")
    path = tmp_path / "results.csv"
    ev.evaluate(spec, ev.synthetic_items(5, seed=3, size=64, defect_rate=0.8), out=path, curve_steps=4, max_n=2)
    return str(path)


@pytest.mark.browser
def test_dataset_page_loads_results_and_draws_the_curves(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    results = _results_csv(tmp_path)
    methods = ev.read_results(results)["method"].nunique()  # the CAM methods and the controls
    url = dashboard_url
    with browser.open_browser(1400, 1000) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        # Through the app's navigation, as a user arrives from the Compare page.
        page.goto(url)
        page.locator("[data-testid=stSidebarNav] a", has_text="Dataset").click(timeout=120_000)
        expect(page.get_by_role("heading", name="Dataset evaluation")).to_be_visible(timeout=60_000)
        assert page.url.endswith("/dataset")
        browser.wait_idle(page)
        page.get_by_test_id("stRadioGroup").get_by_text("Load a results file").click()
        browser.wait_idle(page)
        page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(results)
        expect(page.locator(".js-plotly-plot")).to_have_count(5, timeout=60_000)
        browser.wait_idle(page)
        expect(page.get_by_text("Mean IoU vs threshold")).to_be_visible()
        expect(page.get_by_role("button", name="Download thresholds (JSON)")).to_be_visible()
        iou_chart = page.locator(".js-plotly-plot").nth(1)
        iou_chart.scroll_into_view_if_needed()
        # a mean curve and a best-threshold star per method
        expect(iou_chart.locator(".scatterlayer .trace")).to_have_count(2 * methods)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        assert not problems, problems
