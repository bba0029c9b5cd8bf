"""The Dataset page as a new user found it (issue 25, "The Dataset page, as a new user found
it"): one AppTest per point, each written against the page before its fix and seen failing.
Points 9f (the ground-truth caption cut off) and 9g (the summary table's sideways scrolling)
need a browser's layout: tests/test_browser_dataset_layout.py.

Most tests run the page on a tiny 32-px model standing in for a demo (``state.list_demos`` /
``state.get_model`` patched), so a run takes a second."""

from __future__ import annotations

import dataclasses
import io
import re
import tempfile
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from camcore import evaluation as ev
from camcore import synth
from camcore.evaluation import background
from camcore.evaluation.background import BackgroundEvaluation
from camcore.models import from_keras
from dashboard import state

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "views" / "dataset.py")
APP = str(ROOT / "dashboard" / "app.py")
DEMO = "tiny_new_user"
SIZE = 32
METHODS = ["grad_cam", "sobel", "random"]


def tiny_model(variable_size: bool = False, favour_class_0: bool = False) -> keras.Model:
    keras.utils.set_random_seed(11)
    inp = keras.Input((None, None, 1) if variable_size else (SIZE, SIZE, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    head = keras.layers.Dense(2, activation="softmax", name="predictions")
    model = keras.Model(inp, head(h), name="tiny")
    if favour_class_0:  # top-1 is class 0 on every image, so "explain top-1" and "explain class 1" differ
        kernel, _ = head.get_weights()
        head.set_weights([kernel * 0.0, np.array([6.0, -6.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def loaded():
    return from_keras(tiny_model(), "tiny", "unit", ["clean", "defective"], key=f"demo:{DEMO}")


@pytest.fixture
def patched(monkeypatch, loaded, tmp_path):
    """The tiny model as the only demo; temporary folders under tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(state, "list_demos", lambda: [DEMO])
    monkeypatch.setattr(state, "get_model", lambda key: loaded)
    return loaded


@pytest.fixture
def page(patched):
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def _png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def flat_zip(defective: list[bool], seed: int = 3, extra: dict[str, bytes] | None = None) -> bytes:
    """images/ + masks/ of generated 32-px images, in this order of defective / clean."""
    pool = list(synth.generate(4 * len(defective) + 4, seed=seed, size=SIZE, defect_rate=0.5))
    bad = iter(s for s in pool if s.defective)
    good = iter(s for s in pool if not s.defective)
    entries: dict[str, bytes] = {}
    for number, is_defective in enumerate(defective):
        sample = next(bad if is_defective else good)
        entries[f"images/{number:02d}.png"] = _png(sample.image)
        if is_defective:
            entries[f"masks/{number:02d}.png"] = _png(sample.mask.astype(np.uint8) * 255)
    return _zip({**entries, **(extra or {})})


def upload_data(at: AppTest, name: str, data: bytes) -> AppTest:
    if at.radio(key="ds_source").value != "upload":
        at.radio(key="ds_source").set_value("upload").run()
    at.file_uploader(key="ds_data_zip").set_value((name, data, "application/zip")).run()
    assert not at.exception, at.exception
    return at


def run(at: AppTest, methods: list[str] = METHODS) -> pd.DataFrame:
    at.multiselect(key="ds_methods").set_value(methods).run()
    at.button(key="ds_run").click().run()
    assert not at.exception, at.exception
    return at.session_state["ds_results"]["table"]


def texts(at: AppTest) -> list[str]:
    """Every text the page shows (titles, markdown, captions, notices)."""
    kinds = ("title", "subheader", "header", "markdown", "caption", "info", "warning", "error", "success")
    return [str(element.value) for kind in kinds for element in at.get(kind)]


def load_results(at: AppTest, table: pd.DataFrame, name: str = "results.csv") -> AppTest:
    if at.radio(key="ds_source").value != "results":
        at.radio(key="ds_source").set_value("results").run()
    at.file_uploader(key="ds_upload").set_value((name, table.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def tiny_results(loaded) -> pd.DataFrame:
    """Results of the tiny model on 4 generated images (3 defective), three CAMs and the controls."""
    items = ev.synthetic_items(4, seed=8, size=SIZE, defect_rate=0.75)
    return ev.evaluate(ev.ModelSpec.of(loaded), items, ["grad_cam", "grad_cam_plus_plus", "xgrad_cam", "sobel",
                                                        "random"], curve_steps=3, workers=1)


# ---------------------------------------------------------------- point 1
class CancelledAfterTheFirstImage(BackgroundEvaluation):
    """A run whose user presses Cancel while the first image is evaluated."""

    def __init__(self, model, items, methods, **options):
        items = list(items)
        first = items[0]

        def load():
            self.cancel()
            return first.load()

        items[0] = dataclasses.replace(first, load=load)
        super().__init__(model, items, methods, **options)


def test_1_after_cancel_the_header_counts_the_evaluated_images(page, monkeypatch):
    monkeypatch.setattr(background, "BackgroundEvaluation", CancelledAfterTheFirstImage)
    at = upload_data(page, "line.zip", flat_zip([False, True, True, True]))  # the first image is clean
    table = run(at)
    assert ev.results_only(table)["image_id"].nunique() == 1
    (header,) = [s.value for s in at.subheader if s.value.startswith("Results:")]
    assert "1 of 4 images" in header and "4 of 4" not in header, header
    shown = texts(at)
    assert not any("No defective image in this set" in t for t in shown), shown  # the set has 3
    assert any("No defective image among the 1 evaluated" in t for t in shown), shown


# ---------------------------------------------------------------- point 2
def test_2_open_in_compare_and_back_keeps_the_data_choice_and_the_methods(patched):
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/dataset.py").run()
    assert not at.exception, at.exception
    at.multiselect(key="ds_methods").set_value(["grad_cam", "sobel"]).run()
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception
    at.switch_page("views/dataset.py").run()
    assert at.multiselect(key="ds_methods").value == ["grad_cam", "sobel"]
    at.radio(key="ds_source").set_value("results").run()
    at.switch_page("views/compare.py").run()
    at.switch_page("views/dataset.py").run()
    assert not at.exception, at.exception
    assert at.radio(key="ds_source").value == "results"


# ---------------------------------------------------------------- point 3
def test_3_methods_below_the_controls_share_one_notice_and_no_noise_at_zero(page, tiny_results):
    doctored = tiny_results.copy()
    losers = doctored["method"].isin(["grad_cam", "grad_cam_plus_plus", "xgrad_cam", "random"])
    for _, column in ev.curve_columns(doctored, "iou"):
        doctored.loc[losers & doctored[column].notna(), column] = 0.0
    doctored.loc[losers & doctored["pointing_game"].notna(), "pointing_game"] = 0.0
    doctored = doctored.drop(columns=["global_threshold", "iou_at_global", "dice_at_global"])
    summary = ev.summarize(doctored)
    assert len(ev.flagged_methods(summary)) == 3
    assert summary.loc["random", "pointing_game"] == 0.0  # the random control scored 0 %
    at = load_results(page, doctored)
    notices = [w.value for w in at.warning if "beat" in w.value]
    assert len(notices) == 1, notices
    for name in ("Grad-CAM", "Grad-CAM++", "XGrad-CAM"):
        assert name in notices[0]
    assert "Sobel" in notices[0] and "noise" not in notices[0] and "random map" not in notices[0], notices[0]

    doctored.loc[doctored["method"] == "random", "pointing_game"] = 1.0  # now the random map finds them all
    at = load_results(at, doctored, "random_wins.csv")
    (notice,) = [w.value for w in at.warning if "beat" in w.value]
    assert "no better than an edge detector (Sobel) or a random map" in notice, notice


# ---------------------------------------------------------------- point 4
def test_4_worst_by_starts_at_the_headline_for_new_results(page, loaded):
    items = ev.synthetic_items(3, seed=2, size=SIZE, defect_rate=0.0)
    clean = ev.evaluate(ev.ModelSpec.of(loaded), items, ["grad_cam", "sobel", "random"], curve_steps=3, workers=1)
    at = load_results(page, clean, "clean.csv")
    assert ev.HEADLINE_COLUMN not in at.selectbox(key="ds_worst_metric").options
    at.selectbox(key="ds_worst_metric").select("insertion_auc").run()
    items = ev.synthetic_items(3, seed=2, size=SIZE, defect_rate=1.0)
    defective = ev.evaluate(ev.ModelSpec.of(loaded), items, ["grad_cam", "sobel", "random"], curve_steps=3, workers=1)
    at = load_results(at, defective, "defective.csv")
    assert at.selectbox(key="ds_worst_metric").value == ev.HEADLINE_COLUMN


# ---------------------------------------------------------------- point 5
def test_5_an_uploaded_model_opens_in_compare_with_its_class_and_preprocessing(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model_file = tmp_path / "biased.keras"
    tiny_model(favour_class_0=True).save(model_file)
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("views/dataset.py").run()
    upload_data(at, "two.zip", flat_zip([True, True]))
    at.radio(key="ds_model_source").set_value("upload").run()
    upload = ("biased.keras", model_file.read_bytes(), "application/octet-stream")
    at.file_uploader(key="ds_model_file").set_value(upload).run()
    at.selectbox(key="ds_upload_preprocessing").select("unit").run()
    assert at.selectbox(key="ds_class").value == 1
    run(at, ["grad_cam", "sobel"])
    at.button(key="ds_open").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="upload_preprocessing").value == "unit"
    assert at.selectbox(key="class").value == 1  # the defect class of the run, not top-1 (class 0)
    assert at.selectbox(key="class").options[0].startswith("class 0")  # top-1 is class 0


# ---------------------------------------------------------------- point 6
def test_6_a_demo_model_has_a_layer_and_a_class_picker(page):
    at = upload_data(page, "two.zip", flat_zip([True, False]))
    assert at.selectbox(key="ds_layer").options == ["conv1", "conv2"]
    assert at.selectbox(key="ds_layer").value == "conv2" and at.selectbox(key="ds_class").value == 1
    at.selectbox(key="ds_layer").select("conv1").run()
    at.selectbox(key="ds_class").select(0).run()
    rows = ev.results_only(run(at))
    assert set(rows["layer"]) == {"conv1"} and set(rows["target_class"]) == {0}


# ---------------------------------------------------------------- point 7
def test_7_time_per_image_shows_the_metrics_time(page, tiny_results):
    at = load_results(page, tiny_results)
    rows = ev.results_only(tiny_results)
    import json

    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    timing = [f for f in figures if any(t.get("name") == "metrics" for t in f["data"])]
    assert len(timing) == 1, [[t.get("name") for t in f["data"]] for f in figures]
    (metrics_trace,) = [t for t in timing[0]["data"] if t.get("name") == "metrics"]
    from test_dataset_page import _values

    assert sorted(_values(metrics_trace["y"])) == pytest.approx(sorted(rows["metric_seconds"]))
    per_image = rows.groupby("image_id")[["seconds", "metric_seconds"]].sum().mean()
    caption = next(t for t in texts(at) if "per image" in t.lower() and "metrics" in t)
    assert f"{per_image['metric_seconds']:.2f} s" in caption, caption
    assert f"{per_image['seconds'] + per_image['metric_seconds']:.2f} s" in caption, caption


# ---------------------------------------------------------------- point 8
def test_8_a_wrong_size_mask_is_reported_with_its_reason(page):
    wrong = {"images/zz.png": _png(np.zeros((SIZE, SIZE), np.uint8)),
             "masks/zz.png": _png(np.zeros((16, 16), np.uint8))}
    at = upload_data(page, "flat.zip", flat_zip([True], extra=wrong))
    run(at)
    shown = [w.value for w in at.warning]
    assert not any("could not be read" in w for w in shown), shown
    assert any("masks/zz.png: mask size 16×16 differs from the size 32×32 of its image images/zz.png" in w
               for w in shown), shown


# ---------------------------------------------------------------- point 9
def test_9a_one_image_is_not_images(page):
    at = upload_data(page, "one.zip", flat_zip([True]))
    run(at)
    shown = texts(at)
    assert not any(re.search(r"\b1 images\b", t) for t in shown), [t for t in shown if "1 images" in t]
    assert any("1 image," in t for t in shown)


def test_9b_still_using_follows_a_full_stop(page):
    at = upload_data(page, "good.zip", flat_zip([True]))
    at = upload_data(at, "bad.zip", b"not a zip at all")
    (error,) = [e.value for e in at.error]
    assert error.endswith(". Still using good.zip.") and ".. Still" not in error, error


def test_9c_a_fixed_size_model_shows_its_size_not_224(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = tmp_path / "fixed.keras"
    tiny_model().save(path)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    upload_data(at, "one.zip", flat_zip([True]))
    at.radio(key="ds_model_source").set_value("upload").run()
    at.file_uploader(key="ds_model_file").set_value(
        ("fixed.keras", path.read_bytes(), "application/octet-stream")
    ).run()
    assert not at.exception, at.exception
    sizes = [n for n in at.number_input if n.key in ("ds_upload_height", "ds_upload_width")]
    assert not sizes, [(n.key, n.proto.placeholder) for n in sizes]
    assert any(f"{SIZE} × {SIZE}" in t and "fixed by the model" in t for t in texts(at)), texts(at)


def test_9d_the_max_n_box_only_with_a_max_n_method(page):
    at = page
    at.multiselect(key="ds_methods").set_value(["grad_cam", "sobel"]).run()
    assert "ds_max_n" not in [n.key for n in at.number_input]
    at.multiselect(key="ds_methods").set_value(["grad_cam", "faster_score_cam", "sobel"]).run()
    assert "ds_max_n" in [n.key for n in at.number_input]


def test_9e_flat_rows_at_the_top_get_no_class_name_images(page):
    nested = {"images/scratch/x.png": _png(np.full((SIZE, SIZE), 128, np.uint8))}
    at = upload_data(page, "flat.zip", flat_zip([True, False], extra=nested))
    rows = ev.results_only(run(at))
    classes = rows.groupby("image_id")["class_name"].first().fillna("").to_dict()
    assert classes == {"images/00.png": "", "images/01.png": "", "images/scratch/x.png": "scratch"}, classes
