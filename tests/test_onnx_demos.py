"""The demo models exported with Keras 3's ``model.export(..., format="onnx")`` explain like the
Keras models: Score-CAM, Faster-Score-CAM (max_N 10), Ablation-CAM and Eigen-CAM maps of the ONNX
file correlate r ≥ 0.999 with the Keras model's on bundled samples, class scores agree to 1e-4
relative, and the gradient methods say what they need."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import camcore
from camcore.backends.onnx import OnnxBackend
from camcore.methods import METHODS
from camcore.samples import load_sample, load_sample_index

# the Keras layer each demo explains by default, and its tensor in the export (tf2onnx names
# a layer's ops "<model>_1/<layer>_1/...": the last of them is the layer's output)
LAYER_TENSORS = {"vgg_defect": "/top_down56_1/", "resnet_defect": "/act_last_1/"}
GRADIENT_FREE = ("score_cam", "faster_score_cam", "ablation_cam", "eigen_cam")
IMAGES = 5

pytestmark = pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")


@pytest.fixture(scope="module")
def exports(demo_onnx_exports) -> dict[str, Path]:
    return demo_onnx_exports


def _onnx_layer(backend: OnnxBackend, name: str) -> str:
    return [info.path for info in backend.layers if LAYER_TENSORS[name] in info.path][-1]


@pytest.mark.parametrize("name", list(LAYER_TENSORS))
def test_the_exported_demo_explains_like_the_keras_model(exports, name):
    demo = camcore.load_demo(name)
    loaded = camcore.load_model(exports[name], preprocessing=demo.preprocessing, class_names=demo.class_names)
    backend = loaded.model
    assert isinstance(backend, OnnxBackend) and backend.layout == "NHWC" and loaded.input_size == demo.input_size
    assert backend.probability_kind == "softmax" and backend.n_classes == 2
    layer = _onnx_layer(backend, name)
    assert backend.layer_info(layer).shape == camcore.Explainer(demo.model).layer_info(demo.layer).shape
    keras_explainer, onnx_explainer = camcore.Explainer(demo.model), camcore.Explainer(backend)
    defective = [info for info in load_sample_index() if info.defective][:IMAGES]
    correlations = {method: [] for method in GRADIENT_FREE}
    for info in defective:
        x = demo.preprocess(load_sample(info)[0])
        keras_scores, onnx_scores = keras_explainer.scores(x), onnx_explainer.scores(x)
        np.testing.assert_allclose(onnx_scores, keras_scores, rtol=1e-4, atol=1e-4 * np.abs(keras_scores).max())
        for method in GRADIENT_FREE:
            ours = onnx_explainer.compute(method, x, layer, 1, max_n=10).cam
            theirs = keras_explainer.compute(method, x, demo.layer, 1, max_n=10).cam
            assert ours.std() > 0 and theirs.std() > 0, (method, info.image_path.name)
            correlations[method].append(float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]))
    for method, values in correlations.items():
        assert len(values) >= 5 and min(values) >= 0.999, (method, values)


def test_the_export_loads_everywhere_a_model_file_does(exports):
    data = exports["vgg_defect"].read_bytes()
    assert isinstance(camcore.load_model_bytes(data, "vgg_defect.onnx"), OnnxBackend)
    loaded = camcore.load_model(data, filename="vgg_defect.onnx", preprocessing="unit")
    assert loaded.key.startswith("upload:") and loaded.label == "vgg_defect.onnx (upload)"
    assert loaded.layer == loaded.model.default_layer == loaded.model.layers[-2].path  # the last spatial tensor
    explainer = camcore.Explainer(loaded.model)
    for key, spec in METHODS.items():
        if "gradients" in spec.needs:
            assert explainer.unavailable_reason(key) == "needs gradients — not available for ONNX models"
        else:
            assert explainer.unavailable_reason(key) is None
    truncated = data[: len(data) // 3]
    with pytest.raises(ValueError, match="^vgg_defect.onnx is not a (readable|valid) ONNX model"):
        camcore.load_model(truncated, filename="vgg_defect.onnx", preprocessing="unit")


def test_the_bench_rows_of_an_onnx_export(tmp_path):
    """``python -m camcore.bench --onnx``'s rows, on a small model: the export's forward against
    TF's, Score-CAM and Ablation-CAM against ONNX Runtime's floor, the Keras Score-CAM beside."""
    from argparse import Namespace

    from toy_models import small_convnet

    from camcore import bench

    model = small_convnet(size=16, channels=6)
    make_input = bench.random_input((16, 16, 3), 1.0)
    rows = bench.onnx_rows("toy", model, "conv2", make_input, Namespace(repeats=1, quick=True), str(tmp_path))
    assert [row.what for row in rows] == [
        "forward per image, ONNX Runtime", "Score-CAM (convnet_1/conv2_1/Relu:0)",
        "Score-CAM, Keras model (beside the ONNX row)", "Ablation-CAM",
    ]
    assert all(row.seconds > 0 and row.floor > 0 for row in rows)
    assert rows[0].note.endswith(("ONNX Runtime is faster here", "TF is faster here"))
    assert rows[1].note.startswith("6 masked passes") and rows[3].note.startswith("6 ablations")


def test_an_evaluation_of_the_export_gives_the_keras_models_rows(exports):
    """The four gradient-free methods evaluated on the ONNX export and on the Keras model:
    every metric within 1e-3 (the points of a deletion curve aside: where the two runtimes'
    Ablation-CAM maps differ by ~1e-6 in near-ties, one point moved by 0.004 while the curve's
    AUC moved by 0.001); the gradient methods are left out with a note, not a failure."""
    from camcore import evaluation as ev

    demo = camcore.load_demo("vgg_defect")
    onnx_loaded = camcore.load_model(exports["vgg_defect"], preprocessing=demo.preprocessing,
                                     class_names=demo.class_names)
    onnx_spec = ev.ModelSpec.of(onnx_loaded, layer=_onnx_layer(onnx_loaded.model, "vgg_defect"))
    keras_spec = ev.load_model_spec("vgg_defect")
    infos = [info for info in load_sample_index() if info.defective][:3]
    items = [
        ev.EvalItem(id=info.name, source="bundled samples", index=i,
                    load=lambda info=info: ev.LoadedImage(image=load_sample(info)[0], mask=load_sample(info)[1],
                                                          defective=True, class_name=info.texture))
        for i, info in enumerate(infos)
    ]
    assert ev.unavailable_methods(onnx_spec, ["grad_cam", "score_cam"]) == {
        "grad_cam": "needs gradients — not available for ONNX models"}
    tables = {
        name: ev.evaluate(spec, items, methods=[*GRADIENT_FREE, "grad_cam"] if name == "onnx" else GRADIENT_FREE,
                          curve_steps=4, workers=1).set_index(["image_id", "method"]).sort_index()
        for name, spec in (("keras", keras_spec), ("onnx", onnx_spec))
    }
    assert "grad_cam" not in set(tables["onnx"].index.get_level_values("method"))
    assert tables["onnx"].index.equals(tables["keras"].index)
    numeric = [c for c in tables["keras"].columns if tables["keras"][c].dtype.kind == "f"
               and c not in ("seconds", "metric_seconds") and not c.startswith(("deletion@", "insertion@"))]
    assert len(numeric) > 20 and "deletion_auc" in numeric
    difference = (tables["onnx"][numeric] - tables["keras"][numeric]).abs().max()
    assert (difference <= 1e-3).all(), difference[difference > 1e-3]
