"""The Dataset page in a real headless Chromium with the user's own data and model: upload a
DAGM-layout zip and a .keras model, run, see the plots; a refused zip; a flat zip whose
long run is cancelled and still shows the images it finished.

Reuses ``tests/browser_helpers.py``. Without Chromium the test is skipped, unless
``CAMSTUDIO_REQUIRE_BROWSER=1``, which makes it fail.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import browser_helpers as browser
import cv2
import keras
import numpy as np
import pytest

from camcore import synth
from camcore.dagm import write_dagm

SIZE = 32
LONG_RUN = 120  # images; the cancel lands after the first few


def _model_file(tmp_path: Path) -> Path:
    """A tiny classifier that scales its own input (Rescaling), so the preprocessing is inferred."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Rescaling(1 / 255)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h))
    path = tmp_path / "tiny.keras"
    model.save(path)
    return path


def _write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def _dagm_zip(tmp_path: Path) -> Path:
    root = tmp_path / "dagm"
    write_dagm(root, synth.generate(4, seed=12, size=SIZE, defect_rate=0.75), split="Test")
    entries = {
        f"parts/{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }
    return _write_zip(tmp_path / "parts.zip", entries)


def _flat_zip(tmp_path: Path) -> Path:
    entries: dict[str, bytes] = {}
    for i, sample in enumerate(synth.generate(LONG_RUN, seed=13, size=SIZE, defect_rate=0.5)):
        entries[f"images/{i:03d}.png"] = _png(sample.image)
        if sample.defective:
            entries[f"masks/{i:03d}.png"] = _png(sample.mask.astype(np.uint8) * 255)
    return _write_zip(tmp_path / "line.zip", entries)


@pytest.mark.browser
def test_upload_a_data_set_and_a_model_run_cancel_and_see_the_plots(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    model, dagm, flat = _model_file(tmp_path), _dagm_zip(tmp_path), _flat_zip(tmp_path)
    bad = _write_zip(tmp_path / "bad.zip", {"images/a.png": b"1", "../escape.png": b"1"})
    url = dashboard_url
    with browser.open_browser(1400, 1000) as (_, new_page):
        page = new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(f"{message.text} ({message.location.get('url')})")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        # through the app's navigation: a direct /dataset URL makes the frontend probe
        # /dataset/_stcore/... first, which answers 404 (console errors that are not ours)
        page.goto(url)
        page.locator("[data-testid=stSidebarNav] a", has_text="Dataset").click(timeout=120_000)
        expect(page.get_by_role("heading", name="Dataset evaluation")).to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        page.get_by_test_id("stRadioGroup").first.get_by_text("Upload a data set (.zip)").click()
        browser.wait_idle(page)

        def upload(label: str, path: Path) -> None:
            uploader = page.locator("[data-testid=stFileUploader]").filter(has_text=label)
            uploader.locator("input[type=file]").set_input_files(str(path))

        upload("Data set (.zip)", dagm)
        expect(page.get_by_text("parts.zip · DAGM layout · 4 images")).to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        page.get_by_text("Upload a model", exact=True).click()
        browser.wait_idle(page)
        upload("Model file", model)
        expect(page.get_by_role("combobox", name="Layer")).to_be_visible(timeout=60_000)
        browser.wait_idle(page)

        page.get_by_role("button", name="Run evaluation").click()
        expect(page.locator(".js-plotly-plot")).to_have_count(5, timeout=120_000)
        browser.wait_idle(page)
        expect(page.get_by_text("Results: parts.zip (4 of 4 images), tiny.keras (upload)")).to_be_visible()
        expect(page.get_by_role("button", name="Download results (Parquet)")).to_be_visible()

        upload("Data set (.zip)", bad)
        expect(page.get_by_text("bad.zip: refused: entry '../escape.png' points outside the folder (..)",
                                exact=False)).to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        expect(page.locator(".js-plotly-plot")).to_have_count(5)  # the page keeps working

        upload("Data set (.zip)", flat)
        expect(page.get_by_text(f"line.zip · images/ + masks/ · {LONG_RUN} images")).to_be_visible(timeout=60_000)
        browser.wait_idle(page)
        limit = page.get_by_role("spinbutton", name="Images (the first N of the archive)")
        expect(limit).to_have_value("20")  # a new set starts at the default, not the last set's value
        limit.fill(str(LONG_RUN))
        limit.press("Enter")
        browser.wait_idle(page)
        page.get_by_role("button", name="Run evaluation").click()
        expect(page.get_by_text(re.compile(rf"Evaluated [1-9]\d* of {LONG_RUN} images"))).to_be_visible(timeout=120_000)
        page.get_by_role("button", name="Cancel").click()
        done = page.get_by_text(re.compile(rf"Cancelled: \d+ of {LONG_RUN} images were evaluated\."))
        expect(done).to_be_visible(timeout=120_000)
        browser.wait_idle(page)
        evaluated = int(re.search(r"Cancelled: (\d+)", done.inner_text()).group(1))
        assert 1 <= evaluated < LONG_RUN
        # the header counts the images evaluated, not those planned (issue 25, point 1)
        expect(page.get_by_text(f"Results: line.zip ({evaluated} of {LONG_RUN} images, cancelled)",
                                exact=False)).to_be_visible()
        expect(page.locator(".js-plotly-plot")).to_have_count(5)
        expect(page.get_by_role("button", name="Cancel")).to_have_count(0)  # the progress panel is gone
        expect(page.get_by_role("button", name="Run evaluation")).to_be_enabled()
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        page.screenshot(path=str(tmp_path / "dataset_upload.png"), full_page=True)
        assert not problems, problems
