"""AppTest of the Dataset page with a second model: the run form's model B (the Compare
sidebar's picker, keys ``ds_b_``), an in-page pair run of the two demo models, its
agreement distributions and the gallery of the images where the models disagree most;
a pair results file loaded back shows the same."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from shown_panels import assert_shown_as
from streamlit.testing.v1 import AppTest

from camcore import evaluation as ev
from camcore import visualize
from camcore.evaluation import pair_summary
from camcore.evaluation.pair import pair_maps
from camcore.evaluation.pair_table import is_pair_table
from camcore.explainer import Explainer

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "views" / "dataset.py")
METHODS = ["grad_cam", "eigen_cam", "sobel", "random"]
IMAGES = 3


def _figures(at: AppTest) -> dict[str, dict]:
    return {chart.proto.id: json.loads(chart.proto.spec) for chart in at.get("plotly_chart")}


def _figure(at: AppTest, key: str) -> dict:
    found = [figure for chart_id, figure in _figures(at).items() if chart_id.endswith(key)]
    assert len(found) == 1, list(_figures(at))
    return found[0]


def _values(data) -> np.ndarray:
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
    return np.asarray(data, dtype=float)


def _gallery(at: AppTest) -> dict[str, list]:
    """Gallery images by caption (a caption repeats once per image)."""
    found: dict[str, list] = {}
    for image in at.main.image:
        if image.captions and image.captions[0]:
            found.setdefault(image.captions[0], []).append(image.value[0])
    return found


@pytest.fixture(scope="module")
def pair_run() -> AppTest:
    """The page after an in-page run of the default demo against model B (resnet_defect, the
    form's default) on a few generated images."""
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    at.slider(key="ds_n").set_value(IMAGES).run()
    at.slider(key="ds_rate").set_value(0.7).run()
    at.multiselect(key="ds_methods").set_value(METHODS).run()
    at.toggle(key="ds_compare_b").set_value(True).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="ds_b_demo_name").value == "resnet_defect"
    assert at.selectbox(key="ds_b_layer").value == "act_last"  # model B's own layer
    at.button(key="ds_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_the_pair_run_has_both_models_and_its_agreement_distributions(pair_run):
    at = pair_run
    result = at.session_state["ds_results"]
    table = result["table"]
    assert is_pair_table(table) and result["label"].endswith("against resnet_defect (demo)")
    assert set(table["model"]) == {"demo:vgg_defect"} and set(table["b_model"]) == {"demo:resnet_defect"}
    assert table["image_id"].nunique() == IMAGES and set(table["method"]) == set(METHODS)
    assert any(m.value == "### Model A against model B" for m in at.markdown)
    violins = _figure(at, "ds_chart_agreement")["data"]
    assert [v["name"] for v in violins] == ["Grad-CAM", "Eigen-CAM"]  # the CAMs, not the controls
    rows = ev.results_only(table)
    for violin, method in zip(violins, ["grad_cam", "eigen_cam"]):
        expected = rows.loc[rows["method"] == method, "map_correlation"].to_numpy()
        np.testing.assert_allclose(np.sort(_values(violin["y"])), np.sort(expected), atol=1e-9)
    at.selectbox(key="ds_pair_metric").set_value("map_iou").run()
    assert _figure(at, "ds_chart_agreement")["layout"]["yaxis"]["title"]["text"].startswith("IoU of model A")
    assert len(at.get("plotly_chart")) == 6 + (pair_summary.top1_disagreement(table)["top1_differs"].sum() > 0)


def test_the_gallery_shows_both_overlays_of_the_least_agreeing_images(pair_run):
    at = pair_run
    table = at.session_state["ds_results"]["table"]
    gallery = _gallery(at)
    for title in ("Grad-CAM · A", "Grad-CAM · B", "Grad-CAM · A − B"):
        assert len(gallery[title]) == IMAGES, sorted(gallery)
    least = pair_summary.least_agreeing(table, "grad_cam", n=IMAGES)
    headers = [m.value for m in at.markdown if m.value.startswith("**synthetic/")]
    assert [h.split("**")[1] for h in headers] == least["image_id"].tolist()  # lowest r first
    assert all(f"r = {r:.3f}" in h for h, r in zip(headers, least["map_correlation"]))

    # the first tile row is the two models' maps of the least agreeing image, as the run made them
    row = ev.results_only(table).set_index(["image_id", "method"]).loc[(least["image_id"].iloc[0], "grad_cam")]
    loaded = ev.synthetic_image(row["source"], int(row["index"]))
    specs = [ev.load_model_spec(n) for n in ("vgg_defect", "resnet_defect")]
    found = pair_maps([Explainer(s.model) for s in specs], specs, loaded.image, "grad_cam", classes=(1, 1),
                      max_n=10, threshold=0.5, mask=loaded.mask if loaded.defective else None)
    assert found.agreement.correlation == pytest.approx(row["map_correlation"], abs=1e-6)
    rgb = visualize.to_rgb(loaded.image)
    assert_shown_as(gallery["Grad-CAM · B"][0], visualize.overlay(rgb, found.cam_b))


def test_a_pair_results_file_shows_the_pair_section(pair_run, tmp_path):
    table = pair_run.session_state["ds_results"]["table"]
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    at.radio(key="ds_source").set_value("results").run()
    at.file_uploader(key="ds_upload").set_value(("pair.csv", table.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception, at.exception
    assert any(m.value == "### Model A against model B" for m in at.markdown)
    assert "Grad-CAM · A − B" in _gallery(at)
    at.selectbox(key="ds_pair_gallery_method").set_value("eigen_cam").run()
    assert "Eigen-CAM · B" in _gallery(at) and "Grad-CAM · B" not in _gallery(at)


def test_the_run_waits_for_a_usable_model_b():
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.toggle(key="ds_compare_b").set_value(True).run()
    at.radio(key="ds_b_model_source").set_value("upload").run()
    assert not at.exception, at.exception
    assert any("Upload an image classifier" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "ds_run"]  # no run without model B
    at.toggle(key="ds_compare_b").set_value(False).run()
    assert [b for b in at.button if b.key == "ds_run"]
