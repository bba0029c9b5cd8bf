"""AppTest of the Dataset page with the user's own data: an uploaded .zip (DAGM or flat
layout), a demo or an uploaded model, refused archives, cancelled runs, cleanup."""

from __future__ import annotations

import dataclasses
import gc
import io
import stat
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from camcore import evaluation as ev
from camcore import synth
from camcore.dagm import write_dagm
from camcore.evaluation import archives
from camcore.evaluation.background import BackgroundEvaluation
from camcore.models import from_keras
from dashboard import state

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "views" / "dataset.py")
METHODS = ["grad_cam", "sobel"]
SIZE = 32


def _tiny_model(variable_size: bool = False) -> keras.Model:
    keras.utils.set_random_seed(11)
    inp = keras.Input((None, None, 1) if variable_size else (SIZE, SIZE, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(h), name="tiny")


@pytest.fixture(scope="module")
def loaded():
    return from_keras(_tiny_model(), "tiny", "unit", ["clean", "defective"], key="demo:tiny_upload")


@pytest.fixture
def page(monkeypatch, loaded, tmp_path):
    """The page on the upload source, with the tiny model as the only demo; temporary
    folders go to tmp_path/temp so the test sees what is left behind."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(state, "list_demos", lambda: ["tiny_upload"])
    monkeypatch.setattr(state, "get_model", lambda key: loaded)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.radio(key="ds_source").set_value("upload").run()
    assert not at.exception, at.exception
    return at


def _folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "temp").iterdir())


def _zip_folder(folder: Path, wrapper: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{wrapper}{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


@pytest.fixture(scope="module")
def dagm_set(tmp_path_factory) -> tuple[bytes, dict[str, synth.Sample]]:
    """A DAGM-layout zip (inside a wrapper folder) of 4 generated 32-px images, and its samples by id."""
    root = tmp_path_factory.mktemp("dagm")
    samples = list(synth.generate(4, seed=8, size=SIZE, defect_rate=0.75))
    written = write_dagm(root, samples, split="Test")
    by_id = {w.image_path.relative_to(root).as_posix(): s for w, s in zip(written, samples)}
    return _zip_folder(root, "my_dagm/"), by_id


@pytest.fixture(scope="module")
def flat_zip() -> bytes:
    """images/ + masks/: a defective image, a clean one (no mask), one whose mask has another size."""
    samples = list(synth.generate(6, seed=9, size=SIZE, defect_rate=0.5))
    defective = next(s for s in samples if s.defective)
    clean = next(s for s in samples if not s.defective)
    return _zip({
        "images/a.png": _png(defective.image),
        "masks/a.png": _png(defective.mask.astype(np.uint8) * 255),
        "images/b.png": _png(clean.image),
        "images/c.png": _png(defective.image),
        "masks/c.png": _png(np.zeros((16, 16), np.uint8)),
    })


def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="ds_data_zip").set_value((name, data, "application/zip")).run()
    assert not at.exception, at.exception
    return at


def _run(at: AppTest) -> pd.DataFrame:
    at.multiselect(key="ds_methods").set_value(METHODS).run()
    at.button(key="ds_run").click().run()
    assert not at.exception, at.exception
    return at.session_state["ds_results"]["table"]


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_a_dagm_zip_runs_plots_downloads_and_opens_in_compare(page, dagm_set, monkeypatch):
    data, by_id = dagm_set
    at = _upload(page, "dagm.zip", data)
    masked = sum(s.defective for s in by_id.values())
    assert any(f"**dagm.zip** · DAGM layout · 4 images, {masked} with a mask" in m for m in _texts(at.markdown))
    source = at.session_state["ds_dataset"]["set"].source
    assert at.number_input(key=f"ds_upload_limit:{source}").value == 4
    table = _run(at)
    rows = ev.results_only(table)
    assert sorted(rows["image_id"].unique()) == sorted(by_id) and set(rows["method"]) == set(METHODS)
    assert rows["source"].str.startswith("upload:dagm.zip:").all()
    assert set(rows["path"]) == set(by_id)  # relative to the archive, no server path
    assert rows["defective"].sum() == masked * len(METHODS)
    assert len(at.get("plotly_chart")) == 5
    labels = [b.label for b in at.get("download_button")]
    assert labels[:4] == ["Download thresholds (JSON)", "Download results (CSV)", "Download results (Parquet)",
                          "Download report (HTML)"]
    assert labels[4].startswith("Settings for cam-studio localize: Grad-CAM at ")
    assert at.session_state["ds_results"]["label"].startswith("dagm.zip (4 of 4 images)")
    # the run is over: no progress panel left, the controls are enabled again
    assert "ds_cancel" not in [b.key for b in at.button] and not at.get("progress")
    assert not at.button(key="ds_run").disabled and not at.file_uploader(key="ds_data_zip").disabled

    switched: list[str] = []
    monkeypatch.setattr(st, "switch_page", lambda target: switched.append(target))
    at.selectbox(key="ds_worst_method").select("grad_cam").run()
    image_id = at.selectbox(key="ds_worst_image").value
    at.button(key="ds_open").click().run()
    assert not at.exception and not at.error, at.error
    assert switched == ["views/compare.py"]
    opened = at.session_state[state.OPEN_IN_COMPARE]
    sample = by_id[image_id]
    assert opened["name"] == image_id and opened["model"] == "demo:tiny_upload" and opened["layer"] == "conv2"
    np.testing.assert_array_equal(opened["image"], sample.image)
    if sample.defective:
        np.testing.assert_array_equal(opened["mask"], sample.mask)


def test_a_flat_zip_runs_and_skips_the_mismatched_mask_with_a_clear_message(page, flat_zip, tmp_path):
    at = _upload(page, "../../../etc/flat.zip", flat_zip)  # a browser may send any name: only the base is used
    assert any("**flat.zip** · images/ + masks/ · 3 images, 2 with a mask" in m for m in _texts(at.markdown))
    table = _run(at)
    rows = ev.results_only(table)
    assert rows["source"].str.startswith("upload:flat.zip:").all()
    assert sorted(rows["image_id"].unique()) == ["images/a.png", "images/b.png"]
    assert rows.groupby("image_id")["defective"].first().to_dict() == {"images/a.png": True, "images/b.png": False}
    (error,) = ev.errors(table)["error"]
    assert error == "masks/c.png: mask size 16×16 differs from the size 32×32 of its image images/c.png"
    assert f"1 image was skipped: {error}." in _texts(at.warning)
    assert len(at.get("plotly_chart")) == 5
    assert str(tmp_path) not in table.to_csv()


def _symlink_zip() -> bytes:
    info = zipfile.ZipInfo("images/link.png")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("images/a.png", b"1")
        zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


BAD_ZIPS = {
    "bomb": (
        lambda: _zip({"images/a.png": b"1", "images/zeros.png": bytes(16 * 2**20)}), "unpacks to more than 4.0 MB"
    ),
    "traversal": (lambda: _zip({"images/a.png": b"1", "../x.png": b"1"}), "points outside the folder (..)"),
    "absolute": (lambda: _zip({"/tmp/x.png": b"1"}), "has an absolute path"),
    "symlink": (_symlink_zip, "is a symbolic link"),
    "not a zip": (lambda: b"PK but not really a zip archive", "not a zip archive"),
    "no images": (lambda: _zip({"docs/readme.txt": b"hello"}), "no images found"),
    "masks not matching": (
        lambda: _zip({"images/a.png": _png(np.zeros((8, 8), np.uint8)),
                      "masks/b.png": _png(np.zeros((8, 8), np.uint8))}),
        "masks not matching: 1 mask(s) match no image: masks/b.png",
    ),
}


def test_each_bad_zip_gives_a_clear_error_and_the_page_keeps_working(page, flat_zip, tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "MAX_UNCOMPRESSED", 4 * 2**20)  # the page reads the limit at each upload
    at = page
    for case, (make, message) in BAD_ZIPS.items():
        at = _upload(at, f"{case}.zip", make())
        errors = _texts(at.error)
        assert len(errors) == 1 and errors[0].startswith(f"{case}.zip: ") and message in errors[0], (case, errors)
        assert str(tmp_path) not in errors[0], case
        assert "ds_dataset" not in at.session_state and _folders(tmp_path) == [], case
        assert "ds_run" not in [b.key for b in at.button], case
    at = _upload(at, "good.zip", flat_zip)  # the page keeps working
    assert not at.error
    assert any("**good.zip**" in m for m in _texts(at.markdown))
    assert len(_folders(tmp_path)) == 1 and at.button(key="ds_run")


def test_replacing_removing_and_ending_the_session_delete_the_unpacked_files(
    monkeypatch, loaded, dagm_set, flat_zip, tmp_path
):
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.radio(key="ds_source").set_value("upload").run()
    at = _upload(at, "dagm.zip", dagm_set[0])
    first = at.session_state["ds_dataset"]["set"].folder.path
    assert first.is_dir() and _folders(tmp_path) == [first]
    at = _upload(at, "flat.zip", flat_zip)
    second = at.session_state["ds_dataset"]["set"].folder.path
    assert not first.exists() and _folders(tmp_path) == [second]
    at = _upload(at, "bad.zip", b"nope")  # a refused archive leaves the current set in place
    assert any("Still using flat.zip." in e for e in _texts(at.error)) and second.is_dir()
    at.button(key="ds_data_remove").click().run()
    assert "ds_dataset" not in at.session_state and _folders(tmp_path) == []
    assert [u.key for u in at.get("file_uploader")] == ["ds_data_zip_1"]  # a fresh, empty uploader
    at.run()
    assert "ds_dataset" not in at.session_state and _folders(tmp_path) == []  # not unpacked again
    at.file_uploader(key="ds_data_zip_1").set_value(("flat.zip", flat_zip, "application/zip")).run()
    third = at.session_state["ds_dataset"]["set"].folder.path
    assert third.is_dir()
    del at  # the session ends: its state goes, and with it the folder (weakref finalizer)
    gc.collect()
    assert not third.exists()


def test_a_cancelled_run_shows_its_finished_images(page, loaded, dagm_set, tmp_path):
    spec = ev.ModelSpec.of(loaded)
    run = BackgroundEvaluation(spec, ev.synthetic_items(3, seed=1, size=SIZE), METHODS, curve_steps=4)
    run.cancel()  # as the Cancel button does; here before it starts: nothing finishes
    run.start()
    page.session_state["ds_active_run"] = {"run": run, "label": "three images"}
    page.run()
    assert "Cancelled before the first image was finished: no results." in _texts(page.warning)
    assert "ds_results" not in page.session_state and "ds_active_run" not in page.session_state

    gate = threading.Event()

    def held(item: ev.EvalItem):
        return dataclasses.replace(item, load=lambda: gate.wait(30) and item.load())

    first, *rest = ev.synthetic_items(3, seed=1, size=SIZE)
    run = BackgroundEvaluation(spec, [first, *map(held, rest)], METHODS, curve_steps=4).start()
    deadline = time.monotonic() + 60
    while run.done < 1:  # image 0 finished, image 1 waits at the gate
        assert time.monotonic() < deadline and not run.finished, run.error
        time.sleep(0.01)
    run.cancel()
    gate.set()
    page.session_state["ds_active_run"] = {"run": run, "label": "three images"}
    page.run()
    assert not page.exception, page.exception
    result = page.session_state["ds_results"]
    assert result["note"] == "Cancelled: 2 of 3 images were evaluated."
    assert ev.results_only(result["table"])["image_id"].nunique() == 2
    assert "Cancelled: 2 of 3 images were evaluated." in _texts(page.info)
    assert len(page.get("plotly_chart")) == 5

    broken = dataclasses.replace(spec, layer="no_such_layer")
    run = BackgroundEvaluation(broken, ev.synthetic_items(2, size=SIZE), METHODS, curve_steps=4).start()
    page.session_state["ds_active_run"] = {"run": run, "label": "broken"}
    page.run()
    (error,) = _texts(page.error)
    assert error.startswith("The evaluation stopped: ") and "no_such_layer" in error
    assert page.session_state["ds_results"]["note"] == "Cancelled: 2 of 3 images were evaluated."  # kept
    page.run()
    assert not page.error  # the notice is shown once


def test_an_uploaded_model_asks_for_its_input_size_and_preprocessing(monkeypatch, flat_zip, tmp_path):
    model_file = tmp_path / "variable.keras"
    _tiny_model(variable_size=True).save(model_file)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    switched: list[str] = []
    monkeypatch.setattr(st, "switch_page", lambda target: switched.append(target))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.radio(key="ds_source").set_value("upload").run()
    _upload(at, "flat.zip", flat_zip)
    at.radio(key="ds_model_source").set_value("upload").run()
    at.file_uploader(key="ds_model_file").set_value(
        ("variable.keras", model_file.read_bytes(), "application/octet-stream")
    ).run()
    assert any("does not fix its input size" in w for w in _texts(at.warning)), _texts(at.warning)
    assert "ds_run" not in [b.key for b in at.button]
    at.number_input(key="ds_upload_height").set_value(SIZE).run()
    at.number_input(key="ds_upload_width").set_value(SIZE).run()
    assert any("does not say how its input is scaled" in w for w in _texts(at.warning)), _texts(at.warning)
    at.selectbox(key="ds_upload_preprocessing").select("unit").run()
    assert not at.warning and not at.exception
    assert at.selectbox(key="ds_layer").value == "conv2" and at.selectbox(key="ds_class").value == 1
    table = _run(at)
    key = state.parse_model_key(ev.results_only(table)["model"].iloc[0])
    assert (key.kind, key.option, key.input_size) == ("upload", "unit", (SIZE, SIZE))
    assert len(at.get("plotly_chart")) == 5
    at.button(key="ds_open").click().run()
    assert switched == ["views/compare.py"]
    assert at.session_state[state.OPEN_IN_COMPARE]["model"] == str(key)
    # back from the Compare page the upload widget is empty: the same file is used again
    at.file_uploader(key="ds_model_file").set_value(None).run()
    assert "Using variable.keras, uploaded earlier in this session." in [c.value for c in at.caption]
    assert at.button(key="ds_run") and not any("does not" in w for w in _texts(at.warning))
