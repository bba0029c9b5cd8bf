"""The files the Compare and Dataset pages hand on (issue 25): the HTML report (one click, one
self-contained file with the settings that reproduce the page) and the settings file of
``cam-studio localize`` that puts the chosen threshold to use. Each is taken from the page's
own download button in AppTest (tests/page_downloads.py), then read back as a user would: the
report parsed, the settings parsed by ``camcore.localize_settings`` and applied to a bundled
sample with ``camcore.localize``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_report import MB, assert_self_contained

from camcore import evaluation as ev
from camcore import localize, metrics, report
from camcore.demos import list_demos, load_demo
from camcore.localize_settings import parse_settings
from camcore.samples import load_sample, load_sample_index
from dashboard import state
from dashboard.components import exports

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PAGE = str(ROOT / "dashboard" / "views" / "dataset.py")
DEMO = "vgg_defect"


@pytest.fixture(scope="module", autouse=True)
def the_demo_is_shipped() -> None:
    assert DEMO in list_demos(), f"demo model {DEMO} missing from assets/models (run `make train-demos`)"


def _defective_sample():
    info = next(i for i in load_sample_index() if i.defective)
    image, mask = load_sample(info)
    return info, image, mask


def _one(files: dict, suffix: str) -> bytes:
    (name,) = [n for n in files if n.endswith(suffix)]
    return files[name]()


def test_localize_settings_name_an_uploaded_model_by_its_file(tmp_path):
    sha = state.register_upload(b"not read here", "mine.keras")
    key = state.upload_key(sha, "unit", (48, 40))
    settings = exports.localize_settings(key, "faster_score_cam", 0.35, layer="conv", class_index=0, max_n=7,
                                         fused_layers=("conv0", "conv"))
    assert settings["model"] == "mine.keras" and settings["preprocessing"] == "unit"
    assert settings["input_size"] == [48, 40] and settings["max_n"] == 7
    assert "fused_layers" not in settings  # Faster-Score-CAM stays on its layer
    chosen = parse_settings(json.loads(exports.localize_settings_json(settings)), base=tmp_path)
    assert chosen.model == str(tmp_path / "mine.keras") and chosen.input_size == (48, 40)
    fused = exports.localize_settings(state.upload_key(sha), "grad_cam", 0.3, layer="conv", class_index=1,
                                      max_n=7, fused_layers=("conv0", "conv"))
    assert fused["fused_layers"] == ["conv0", "conv"] and "max_n" not in fused and fused["preprocessing"] is None
    forgotten = exports.localize_settings(state.upload_key("0" * 64), "grad_cam", 0.3, layer=None, class_index=None)
    assert forgotten["model"] == exports.UPLOADED_MODEL
    assert exports.localize_settings("demo:vgg_defect", "grad_cam", 0.3, layer=None, class_index=None)["model"] \
        == "demo:vgg_defect"


# ---------------------------------------------------------------- Compare page
def test_the_compare_pages_report_and_localize_settings(downloads):
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    keys = {button.key for button in at.get("download_button")}
    assert {"download_report", "download_localize"} <= keys
    assert at.selectbox(key="localize_method").value == "grad_cam"  # the first shown method

    page = _one(downloads, "_report.html").decode("utf-8")
    parsed = assert_self_contained(page)
    settings = json.loads(parsed.scripts[report.SETTINGS_ID])
    info, image, mask = _defective_sample()
    assert settings["model"] == f"demo:{DEMO}" and settings["layer"] == load_demo(DEMO).layer
    assert settings["image"].startswith(info.name) and settings["threshold"] == 0.5 and settings["max_n"] == 10
    assert settings["methods"] == ["grad_cam", "grad_cam_plus_plus", "score_cam", "faster_score_cam"]
    assert settings["precision"] == "auto" and settings["class_index"] == load_demo(DEMO).class_names.index("defective")
    (grid,) = [a for a in parsed.attributes("img") if "grid-image" in a.get("class", "")]
    assert grid["src"].startswith("data:image/png;base64,")
    assert page.count("Plotly.newPlot(") == 1  # the timing chart
    assert "Threshold table" in page and "IoU @ 0.50" in page
    assert len(page.encode()) <= 10 * MB

    text = _one(downloads, "_localize_grad_cam.json").decode()
    chosen = parse_settings(json.loads(text))
    assert (chosen.model, chosen.method, chosen.layer, chosen.threshold) == (f"demo:{DEMO}", "grad_cam",
                                                                             load_demo(DEMO).layer, 0.5)
    assert chosen.class_index == settings["class_index"] and chosen.precision == "auto"
    (found,) = localize(image, chosen)
    assert found.reported and found.regions, found.to_dict()["decision"]
    union = found.region_mask()
    assert (union & mask).any()  # the regions lie on the defect
    assert (union & mask).sum() / (union | mask).sum() == pytest.approx(metrics.localization(found.cam, mask, 0.5).iou)


# ---------------------------------------------------------------- Dataset page
@pytest.fixture(scope="module")
def vgg_results() -> pd.DataFrame:
    spec = ev.load_model_spec(DEMO)
    items = ev.synthetic_items(3, seed=4, size=64, defect_rate=1.0)
    return ev.evaluate(spec, items, ["grad_cam", "grad_cam_plus_plus", "sobel", "random"], curve_steps=3, workers=1)


def test_the_dataset_pages_report_and_localize_settings(downloads, vgg_results):
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    at.radio(key="ds_source").set_value("results").run()
    at.file_uploader(key="ds_upload").set_value(("vgg.csv", vgg_results.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception, at.exception
    best = ev.global_thresholds(vgg_results)
    mean_iou = {m: v["mean_iou"] for m, v in ev.threshold_export(vgg_results)["methods"].items()}
    winner = max(("grad_cam", "grad_cam_plus_plus"), key=mean_iou.get)
    assert at.selectbox(key="ds_localize_method").value == winner  # the best method by default

    page = _one(downloads, "camstudio_evaluation_report.html").decode("utf-8")
    parsed = assert_self_contained(page)
    assert json.loads(parsed.scripts[report.SETTINGS_ID]) == {"data": "results file", "results": "vgg.csv"}
    worst = [a for a in parsed.attributes("img") if "worst-image" in a.get("class", "")]
    assert len(worst) == 2 * 3 and all(a["src"].startswith("data:image/jpeg;base64,") for a in worst)
    assert "without their maps" not in page  # the page's own model drew them
    assert "Summary per method" in page and page.count("Plotly.newPlot(") >= 3

    for method in ("grad_cam", "grad_cam_plus_plus"):
        at.selectbox(key="ds_localize_method").select(method).run()
        chosen = parse_settings(json.loads(_one(downloads, f"localize_{method}.json")))
        assert (chosen.model, chosen.method, chosen.layer) == (f"demo:{DEMO}", method, load_demo(DEMO).layer)
        assert chosen.threshold == pytest.approx(best[method], abs=1e-4) and chosen.class_index == 1
    info, image, mask = _defective_sample()
    (found,) = localize([image], chosen)
    assert found.threshold == pytest.approx(best["grad_cam_plus_plus"], abs=1e-4)
    assert found.reported and (found.region_mask() & mask).any()
    assert np.isfinite(found.probabilities).all()
