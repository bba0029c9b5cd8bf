"""The deployed model on the Compare page: the exported ``vgg_defect.onnx`` uploaded, a layer
picked, the four gradient-free columns with their Sobel variants, the gradient methods saying
what they need, max_N and the timing chart working; bad ``.onnx`` files as clear messages,
the page still usable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from test_dashboard_apptest import assert_clean, caption_of, errors, grid_images, headline, run_app

import camcore
from camcore.methods import METHODS

GRADIENT_FREE = {"score_cam": "Score-CAM", "faster_score_cam": "Faster-Score-CAM", "ablation_cam": "Ablation-CAM",
                 "eigen_cam": "Eigen-CAM"}
NEEDS_GRADIENTS = "needs gradients — not available for ONNX models"

pytestmark = pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")


def _upload(at, name: str, data: bytes, preprocessing: str | None = "unit"):
    at.radio(key="model_source").set_value("upload").run()
    at.file_uploader(key="model_file").upload(name, data, "application/octet-stream").run()
    if preprocessing is not None and any("Preprocessing" in w.value for w in at.warning):
        at.selectbox(key="upload_preprocessing").set_value(preprocessing).run()
    return at


def test_the_exported_demo_on_the_compare_page(demo_onnx_exports):
    at = _upload(run_app({"methods": list(METHODS)}), "vgg_defect.onnx", demo_onnx_exports["vgg_defect"].read_bytes())
    assert_clean(at)
    assert not errors(at), errors(at)
    layer = next(option.split(" · ")[0] for option in at.selectbox(key="layer").options
                 if "/top_down56_1/Relu" in option)
    at.selectbox(key="layer").set_value(layer).run()
    assert_clean(at)
    assert f"layer `{layer}` (56×56×32)" in headline(at) and "**fp32** — ONNX models run at fp32" in headline(at)
    captions = [caption_of(image) for image in grid_images(at)]
    for label in GRADIENT_FREE.values():
        assert f"{label} · overlay" in captions and f"Sobel × {label}" in captions, label
        assert f"Guided {label} · needs gradients" in captions
    headers = [c.value for c in at.main.caption]
    assert headers.count(NEEDS_GRADIENTS) == sum("gradients" in spec.needs for spec in METHODS.values())
    # max_N: the Faster-Score-CAM column follows the slider
    at.slider(key="max_n").set_value(5).run()
    assert_clean(at)
    assert any(h.startswith("max_N = 5 ·") for h in (c.value for c in at.main.caption))
    # the timing chart and its precision note
    assert any(chart.key == "timing_chart" for chart in at.get("plotly_chart"))
    # the same map as the Keras model at the same layer (the page's own explainer)
    from dashboard import state

    (sha,) = at.session_state["_upload_shas"].values()
    explainer = state.get_explainer(state.upload_key(sha, "unit"))
    demo = camcore.load_demo("vgg_defect")
    from camcore.samples import load_sample, load_sample_index

    x = demo.preprocess(load_sample(load_sample_index()[0])[0])
    onnx_map = explainer.compute("score_cam", x, layer, 1).cam
    keras_map = camcore.Explainer(demo.model).compute("score_cam", x, demo.layer, 1).cam
    assert camcore.maps.map_correlation(onnx_map, keras_map) > 0.999


def _graph_with_custom_operator(data: bytes) -> bytes:
    model = onnx.load_model_from_string(data)
    node = next(n for n in model.graph.node if n.op_type == "Relu")
    node.op_type, node.domain = "FancyRelu", "com.example.ops"
    model.opset_import.append(onnx.helper.make_opsetid("com.example.ops", 1))
    return model.SerializeToString()


def _graph_without_a_spatial_tensor() -> bytes:
    """An image batch flattened at once: nothing in it has a map to explain."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["z"]),
             helper.make_node("Softmax", ["z"], ["p"])]
    graph = helper.make_graph(nodes, "flat",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 2])],
                              initializer=[numpy_helper.from_array(np.ones((192, 2), np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_bad_onnx_files_are_clear_messages_and_the_page_goes_on(demo_onnx_exports):
    good = demo_onnx_exports["vgg_defect"].read_bytes()
    cases = {
        "truncated.onnx": (good[: len(good) // 2], "is not a"),
        "custom.onnx": (_graph_with_custom_operator(good), "custom domain 'com.example.ops'"),
        "flat.onnx": (_graph_without_a_spatial_tensor(), "no layer with a spatial"),
    }
    for name, (data, message) in cases.items():
        at = _upload(run_app(), name, data, preprocessing=None)
        assert_clean(at)
        assert any("Could not load the model" in e and name in e and message in e for e in errors(at)), errors(at)
        at.radio(key="model_source").set_value("demo").run()
        assert_clean(at)
        assert not errors(at) and len(grid_images(at)) > 0


def test_the_dataset_page_evaluates_the_export_as_the_library_evaluates_the_keras_model(demo_onnx_exports, tmp_path,
                                                                                       monkeypatch):
    """The Dataset page with the uploaded export: the four gradient-free methods' rows equal the
    Keras model's (every metric within 1e-3, as tests/test_onnx_demos.py finds in the library),
    and Grad-CAM, which the export cannot serve, is left out with its reason, not a failure."""
    import tempfile

    from streamlit.testing.v1 import AppTest

    from camcore import evaluation as ev

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=300)
    at.switch_page("views/dataset.py").run()
    at.slider(key="ds_n").set_value(2).run()
    at.slider(key="ds_rate").set_value(1.0).run()
    at.radio(key="ds_model_source").set_value("upload").run()
    data = demo_onnx_exports["vgg_defect"].read_bytes()
    at.file_uploader(key="ds_model_file").set_value(("vgg_defect.onnx", data, "application/octet-stream")).run()
    at.selectbox(key="ds_upload_preprocessing").select("unit").run()
    layer = next(option for option in at.selectbox(key="ds_layer").options if "top_down56_1/Relu" in option)
    at.selectbox(key="ds_layer").select(layer).run()
    methods = [*GRADIENT_FREE, "grad_cam"]
    at.multiselect(key="ds_methods").set_value(methods).run()
    at.button(key="ds_run").click().run()
    assert not at.exception, at.exception
    page = at.session_state["ds_results"]["table"]
    page = ev.results_only(page).set_index(["image_id", "method"]).sort_index()
    assert set(page.index.get_level_values("method")) == set(GRADIENT_FREE)
    assert any(NEEDS_GRADIENTS in str(element.value) for kind in ("info", "warning", "caption", "markdown")
               for element in at.get(kind)), "Grad-CAM's reason is not on the page"

    keras_spec = ev.load_model_spec("vgg_defect", layer="top_down56")
    keras = ev.evaluate(keras_spec, ev.synthetic_items(2, seed=0, defect_rate=1.0), list(GRADIENT_FREE),
                        max_n=int(at.session_state["ds_max_n"]), metrics=list(at.multiselect(key="ds_metrics").value),
                        seed=0, workers=1)
    keras = ev.results_only(keras).set_index(["image_id", "method"]).sort_index()
    assert page.index.equals(keras.index)
    numeric = [c for c in keras.columns if keras[c].dtype.kind == "f" and c in page.columns
               and c not in ("seconds", "metric_seconds") and not c.startswith(("deletion@", "insertion@"))]
    assert len(numeric) > 10
    difference = (page[numeric] - keras[numeric]).abs().max()
    assert (difference <= 1e-3).all(), difference[difference > 1e-3]
