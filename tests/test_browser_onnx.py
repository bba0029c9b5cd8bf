"""The deployed model in a real headless Chromium: the exported ``vgg_defect.onnx`` uploaded
on the Compare page, its preprocessing and a layer picked; the four gradient-free default and
extra columns render with their Sobel variants, the gradient columns say what they need, no
console error. Without Chromium the test is skipped, unless ``CAMSTUDIO_REQUIRE_BROWSER=1``."""

from __future__ import annotations

import browser_helpers as browser
import pytest

NEEDS_GRADIENTS = "needs gradients — not available for ONNX models"


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")
def test_upload_the_onnx_export_and_see_what_it_can_explain(dashboard_url: str, demo_onnx_exports) -> None:
    from playwright.sync_api import expect

    with browser.open_browser(1600, 1000) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(dashboard_url)
        browser.wait_full_grid(page)
        page.get_by_text("Upload a model", exact=True).click()
        browser.wait_idle(page)
        uploader = page.locator("[data-testid=stFileUploader]").filter(has_text="Model file")
        uploader.locator("input[type=file]").set_input_files(str(demo_onnx_exports["vgg_defect"]))
        expect(page.get_by_text("choose its Preprocessing", exact=False)).to_be_visible(timeout=120_000)
        browser.wait_idle(page)
        page.get_by_role("combobox", name="Preprocessing").click()
        page.get_by_role("option", name="unit: scale 0..255 to [0, 1]").click()
        browser.wait_idle(page)
        page.get_by_role("combobox", name="Layer", exact=True).click()
        page.keyboard.type("top_down56_1/Relu")  # the list shows a dozen of the export's ~60 tensors at a time
        page.get_by_role("option", name="vgg_defect_1/top_down56_1/Relu:0 · 56×56×32").click()
        browser.wait_idle(page)
        expect(page.get_by_text("layer vgg_defect_1/top_down56_1/Relu:0", exact=False)).to_be_visible(timeout=60_000)
        # the default columns: Grad-CAM and Grad-CAM++ say what they need, the two Score-CAMs render
        expect(page.get_by_text(NEEDS_GRADIENTS).first).to_be_visible(timeout=120_000)
        assert page.get_by_text(NEEDS_GRADIENTS).count() == 2
        for caption in ("Score-CAM · overlay", "Faster-Score-CAM · overlay", "Sobel × Score-CAM",
                        "Sobel × Faster-Score-CAM", "Guided Score-CAM · needs gradients"):
            expect(page.locator("[data-testid=stImage]", has_text=caption).first).to_be_visible(timeout=180_000)
        images = page.locator("[data-testid=stImage] img")
        assert images.count() >= 12 and all(
            page.evaluate("(img) => img.complete && img.naturalWidth > 0", images.nth(i).element_handle())
            for i in range(images.count())
        )
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)  # the timing chart
        assert not problems, problems
