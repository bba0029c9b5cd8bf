"""AppTest coverage of the Dataset page (dashboard/views/dataset.py), on the real demo model."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from camcore import evaluation as ev
from camcore.demos import list_demos, load_demo
from dashboard import state

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "views" / "dataset.py")
DEMO = "vgg_defect"


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    """A real results table of the real default demo (6 generated 64-px images, one of
    them clean at least)."""
    spec = ev.load_model_spec(DEMO)  # fails, never skips, when the demo is missing
    assert spec.key == f"demo:{DEMO}"
    items = ev.synthetic_items(6, seed=1, size=64, defect_rate=0.7)
    return ev.evaluate(spec, items, curve_steps=4, max_n=3)


def _csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode()


def _page_with_upload(data: bytes, name: str = "results.csv") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.radio(key="ds_source").set_value("results").run()
    at.file_uploader(key="ds_upload").set_value((name, data, "text/csv")).run()
    assert not at.exception, at.exception
    return at


def _values(data) -> np.ndarray:
    """Plotly JSON arrays: a list, or a base64 typed array {"dtype", "bdata"}."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
    return np.asarray(data)


def _x_title(figure: dict) -> str | None:
    return figure["layout"].get("xaxis", {}).get("title", {}).get("text")


def _figures(at: AppTest) -> dict[str, dict]:
    return {chart.proto.id: json.loads(chart.proto.spec) for chart in at.get("plotly_chart")}


def test_loading_a_results_csv_shows_curves_thresholds_and_flags(results):
    at = _page_with_upload(_csv(results))
    figures = list(_figures(at).values())
    assert len(figures) == 5  # distribution, IoU curve, deletion, insertion, time
    best = ev.global_thresholds(results)
    iou_figure = next(f for f in figures if _x_title(f) == "threshold on the map")
    lines = [t for t in iou_figure["data"] if t["mode"] == "lines"]
    stars = [t for t in iou_figure["data"] if t["mode"] == "markers"]
    assert {t["name"] for t in lines} == {ev.METHOD_LABELS[m] for m in ev.ALL_METHODS}
    assert len(_values(lines[0]["x"])) == 19
    assert sorted(_values(s["x"])[0] for s in stars) == pytest.approx(sorted(best.values()))
    deletion = next(f for f in figures if _x_title(f) == "fraction of pixels deleted")
    assert len(_values(deletion["data"][0]["x"])) == 5  # curve_steps=4

    exported = json.loads(at.get("code")[0].value)
    assert {m: v["threshold"] for m, v in exported["methods"].items()} == pytest.approx(best)
    assert [b.label for b in at.get("download_button")][:4] == [
        "Download thresholds (JSON)", "Download results (CSV)", "Download results (Parquet)", "Download report (HTML)"
    ]

    summary = ev.summarize(results)
    flagged = [ev.METHOD_LABELS[m] for m in ev.flagged_methods(summary)]
    notices = [w.value for w in at.warning if "not beat the controls" in w.value]
    assert len(notices) == (1 if flagged else 0)  # one notice for all of them
    if flagged:
        named = flagged[0] if len(flagged) == 1 else ", ".join(flagged[:-1]) + " and " + flagged[-1]
        assert notices[0].startswith(f"**{named}** ")

    at.selectbox(key="ds_metric").select("average_drop").run()
    assert not at.exception
    box = next(iter(_figures(at).values()))
    assert box["layout"]["yaxis"]["title"]["text"].startswith("Average Drop")


def test_a_method_below_the_controls_is_flagged(results):
    doctored = results.copy()
    grad = doctored["method"] == "grad_cam"
    for _, column in ev.curve_columns(doctored, "iou"):
        doctored.loc[grad & doctored[column].notna(), column] = 0.0
    doctored.loc[grad & doctored["pointing_game"].notna(), "pointing_game"] = 0.0
    at = _page_with_upload(_csv(doctored))
    assert any(w.value.startswith("**Grad-CAM") and "not beat the controls" in w.value for w in at.warning)
    exported = json.loads(at.get("code")[0].value)
    assert exported["methods"]["grad_cam"]["below_controls"] is True


def test_parquet_upload_and_bad_files(results, tmp_path):
    path = ev.write_results(results, tmp_path / "r.parquet")
    at = _page_with_upload(path.read_bytes(), "r.parquet")
    assert len(at.get("plotly_chart")) == 5
    at = _page_with_upload(b"a,b\n1,2\n", "other.csv")
    assert any("not a camcore.evaluate results table" in e.value for e in at.error)
    assert not at.get("plotly_chart")


def test_worst_image_opens_in_compare(results, monkeypatch):
    switched: list[str] = []
    monkeypatch.setattr(st, "switch_page", lambda page: switched.append(page))
    at = _page_with_upload(_csv(results))
    at.selectbox(key="ds_worst_method").select("score_cam").run()
    worst = ev.worst_images(results, "score_cam")
    image_id = worst["image_id"].iloc[1]
    at.selectbox(key="ds_worst_image").select(image_id).run()
    at.button(key="ds_open").click().run()
    assert not at.exception, at.exception
    assert switched == ["views/compare.py"]
    opened = at.session_state[state.OPEN_IN_COMPARE]
    row = results[(results["image_id"] == image_id) & (results["method"] == "score_cam")].iloc[0]
    expected = ev.synthetic_image(row["source"], int(row["index"]))
    assert opened["name"] == image_id and opened["model"] == f"demo:{DEMO}"
    assert opened["layer"] == load_demo(DEMO).layer
    assert opened["image"].dtype == np.uint8
    np.testing.assert_array_equal(opened["image"], expected.image)
    np.testing.assert_array_equal(opened["mask"], expected.mask)


def test_dagm_results_outside_the_data_folder_are_not_opened(results, monkeypatch, tmp_path):
    monkeypatch.setenv("CAMSTUDIO_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    foreign = results.copy()
    foreign["source"] = "/etc"
    switched: list[str] = []
    monkeypatch.setattr(st, "switch_page", lambda page: switched.append(page))
    at = _page_with_upload(_csv(foreign))
    at.button(key="ds_open").click().run()
    assert any("outside the configured data folder" in e.value for e in at.error)
    assert not switched and state.OPEN_IN_COMPARE not in at.session_state


def test_in_page_run_on_a_generated_set():
    # the real default demo model, through the dashboard's own model cache, on 2 images
    assert DEMO in list_demos(), f"demo model {DEMO} missing from assets/models (run `make train-demos`)"
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ds_model").value == f"demo:{DEMO}", "the default demo model must be offered"
    at.slider(key="ds_n").set_value(2).run()
    at.slider(key="ds_rate").set_value(1.0).run()
    at.button(key="ds_run").click().run()
    assert not at.exception, at.exception
    table = at.session_state["ds_results"]["table"]
    assert table.groupby("method")["image_id"].nunique().eq(2).all()
    assert set(table["model"]) == {f"demo:{DEMO}"} and set(table["layer"]) == {load_demo(DEMO).layer}
    assert len(at.get("plotly_chart")) == 5
    # the rows describe the demo model's own predictions on these images
    demo = load_demo(DEMO)
    for image_id, rows in ev.results_only(table).groupby("image_id"):
        first = rows.iloc[0]
        image = ev.synthetic_image(first["source"], int(first["index"])).image
        p_defective = demo.model.predict(demo.preprocess(image), verbose=0)[0, demo.class_names.index("defective")]
        assert rows["p_target"].to_numpy() == pytest.approx(float(p_defective), rel=1e-4), image_id
