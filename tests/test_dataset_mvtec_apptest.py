"""An MVTec AD zip on the Dataset page (AppTest): the layout named, its remarks in one notice,
the category picker and train/good, and a 3-category set evaluated exactly as the library
evaluates the same images; the page's report of that run carries its settings."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_dataset_new_user import DEMO, loaded, texts  # noqa: F401 - loaded is a fixture
from test_mvtec_layout import _blob, _folder_zip, write_mvtec
from test_report import assert_self_contained, parse

from camcore import evaluation as ev
from camcore.evaluation import archives, mvtec
from camcore.metrics import default_metric_keys, registered_columns
from camcore.report import SETTINGS_ID
from dashboard import state

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "views" / "dataset.py")
METHODS = ["grad_cam", "sobel", "random"]


@pytest.fixture(scope="module")
def mvtec_zip(tmp_path_factory) -> bytes:
    """Three categories: bottle (RGB 40x48), carpet (gray 36x36, a defect without its mask),
    screw (gray 32x32, masks named like their images); train/good in bottle and carpet."""
    rng = np.random.default_rng(7)
    rgb = lambda: rng.integers(0, 256, (40, 48, 3), np.uint8)  # noqa: E731
    gray = lambda size: rng.integers(0, 256, (size, size), np.uint8)  # noqa: E731
    root = tmp_path_factory.mktemp("mvtec") / "parts"
    write_mvtec(root, "bottle", {
        "train/good/000": (rgb(), None), "test/good/000": (rgb(), None),
        "test/broken_large/000": (rgb(), _blob((40, 48), 10, 12, 5)),
        "test/contamination/000": (rgb(), _blob((40, 48), 20, 20, 6)),
    })
    write_mvtec(root, "carpet", {
        "train/good/000": (gray(36), None), "test/good/000": (gray(36), None),
        "test/hole/000": (gray(36), _blob((36, 36), 8, 8, 3)), "test/hole/001": (gray(36), None),
    })
    write_mvtec(root, "screw", {
        "test/good/000": (gray(32), None), "test/scratch_head/000": (gray(32), _blob((32, 32), 16, 10, 4)),
    }, mask_names="stem")
    return _folder_zip(root.parent)  # everything inside the wrapper folder parts/


@pytest.fixture
def page(monkeypatch, loaded, tmp_path, mvtec_zip):  # noqa: F811 - loaded is the imported fixture
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(state, "list_demos", lambda: [DEMO])
    monkeypatch.setattr(state, "get_model", lambda key: loaded)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.radio(key="ds_source").set_value("upload").run()
    at.file_uploader(key="ds_data_zip").set_value(("parts.zip", mvtec_zip, "application/zip")).run()
    assert not at.exception, at.exception
    return at


def _run(at: AppTest) -> pd.DataFrame:
    at.multiselect(key="ds_methods").set_value(METHODS).run()
    at.button(key="ds_run").click().run()
    assert not at.exception, at.exception
    return at.session_state["ds_results"]["table"]


def test_the_set_is_named_as_mvtec_with_one_notice_and_its_categories(page):
    shown = texts(page)
    assert "**parts.zip** · MVTec AD layout · 3 categories · 8 images, 5 with a mask (+ 2 in train/good)" in shown
    notices = [w.value for w in page.warning]
    assert len(notices) == 1 and notices[0].startswith("carpet/test/hole/001.png: no mask"), notices
    assert page.selectbox(key="ds_category").options == ["all 3 categories", "bottle", "carpet", "screw"]
    assert page.checkbox(key="ds_train_good").label == "Add train/good as clean images (2)"
    page.selectbox(key="ds_category").select("screw").run()
    assert page.checkbox(key="ds_train_good").disabled  # screw has no train/good
    dataset = page.session_state["ds_dataset"]["set"]
    assert page.number_input(key=f"ds_upload_limit:{dataset.source}:screw:0").max == 2


def test_three_categories_evaluate_as_the_library_does(page, loaded):  # noqa: F811
    table = _run(page)
    rows = ev.results_only(table)
    assert set(rows["class_name"]) == {"bottle/good", "bottle/broken_large", "bottle/contamination", "carpet/good",
                                       "carpet/hole", "screw/good", "screw/scratch_head"}
    assert not rows["image_id"].str.contains("/train/").any()
    (error,) = ev.errors(table)["error"]
    assert error.startswith("carpet/test/hole/001.png: no ground-truth mask")
    assert "1 image was skipped: carpet/test/hole/001.png: no ground-truth mask" in " ".join(texts(page))

    dataset: archives.UploadedDataset = page.session_state["ds_dataset"]["set"]
    items = [i for i in dataset.items if not mvtec.is_training_image(i)]
    direct = ev.evaluate(ev.ModelSpec.of(loaded), items, METHODS, metrics=list(default_metric_keys()), seed=0,
                         workers=1)
    columns = [c.name for _, c in registered_columns() if c.name in rows.columns and c.name not in
               ("seconds", "metric_seconds")]
    key = ["image_id", "method"]
    ours = rows.set_index(key).sort_index()[columns]
    theirs = ev.results_only(direct).set_index(key).sort_index()[columns]
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, atol=1e-9)


def test_a_category_with_its_train_good_images_and_the_report_says_so(page, downloads):
    page.selectbox(key="ds_category").select("carpet").run()
    page.checkbox(key="ds_train_good").check().run()
    table = _run(page)
    ids = set(ev.results_only(table)["image_id"])
    assert ids == {"carpet/test/good/000.png", "carpet/test/hole/000.png", "carpet/train/good/000.png"}
    header = next(s.value for s in page.subheader if s.value.startswith("Results:"))
    assert header.startswith("Results: parts.zip, carpet with train/good (4 of 4 images)"), header

    (name,) = [n for n in downloads if n.endswith("report.html")]
    html = downloads[name]().decode()
    parsed = assert_self_contained(html)
    settings = json.loads(parsed.scripts[SETTINGS_ID])
    assert settings == {"data": "upload", "archive": "parts.zip", "layout": "mvtec", "category": "carpet",
                        "train_good": True, "images": 4, "model": f"demo:{DEMO}", "layer": "conv2", "class_index": 1,
                        "methods": METHODS, "max_n": ev.DEFAULT_MAX_N, "metrics": list(default_metric_keys()),
                        "precision": "fp32"}
    worst = [a for a in parse(html).attributes("img") if "worst-image" in a.get("class", "")]
    assert len(worst) == 1 and "without their maps" not in html  # grad_cam's one defective image, with its map
