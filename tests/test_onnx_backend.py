"""The ONNX backend against NumPy: small graphs built with ``onnx.helper`` (tests/onnx_graphs.py)
give the Score-CAM and Ablation-CAM maps, and the pre-softmax scores, that the same network
written in NumPy gives; layouts, fixed batches, old opsets and the heads exports end in are
each read right."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphs as g
import pytest

import camcore
from camcore.backends.onnx import OnnxBackend, OnnxGraph, OnnxPass
from camcore.methods import METHODS, available_methods

GRADIENT_METHODS = [key for key, spec in METHODS.items() if "gradients" in spec.needs]


def _x(seed: int = 1, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, g.SIZE, g.SIZE, g.IN_CHANNELS)).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _normalized(cam: np.ndarray) -> np.ndarray:
    cam = np.maximum(cam, 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def _layer_maps(x: np.ndarray, p: g.Weights, layer: str) -> tuple[np.ndarray, callable]:
    """(A (K, H, W) of ``layer`` for the image, the logits of the graph's part after it)."""
    relu = g.relu_map(x.transpose(0, 3, 1, 2), p)
    if layer == "relu":
        return relu[0], lambda a: g.head_from_relu(a, p)
    return g.conv_same(relu, p.w2, p.b2)[0], lambda a: g.head_from_conv2(a, p)


def reference_score_cam(x: np.ndarray, p: g.Weights, layer: str, class_index: int) -> np.ndarray:
    """Score-CAM (Wang et al. 2020, eq. 3-5; softmax of the masked logits): each channel min-max
    normalized is the mask (the layers keep the input's resolution: no upsampling)."""
    maps, _ = _layer_maps(x, p, layer)
    weights = []
    for a in maps:
        span = a.max() - a.min()
        mask = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        weights.append(_softmax(g.logits(x * mask[None, :, :, None].astype(np.float32), p)[0])[class_index])
    return _normalized(np.tensordot(np.array(weights), maps, axes=1))


def reference_ablation_cam(x: np.ndarray, p: g.Weights, layer: str, class_index: int) -> np.ndarray:
    """Ablation-CAM (Desai & Ramaswamy 2020, eq. 3): w_k = (y_c - y_c^k) / |y_c|."""
    maps, head = _layer_maps(x, p, layer)
    score = head(maps[None])[0, class_index]
    weights = []
    for k in range(len(maps)):
        ablated = maps.copy()
        ablated[k] = 0.0
        weights.append((score - head(ablated[None])[0, class_index]) / max(abs(score), 1e-6))
    return _normalized(np.tensordot(np.array(weights), maps, axes=1))


def _backend(model, **kwargs) -> OnnxBackend:
    return OnnxBackend(model.SerializeToString(), **kwargs)


@pytest.fixture(scope="module")
def weights() -> g.Weights:
    return g.weights(seed=7)


def test_an_nchw_graph_gives_the_numpy_scores_layers_and_maps(weights):
    backend = _backend(g.convnet(weights))
    x = _x()
    assert backend.layout == "NCHW" and backend.input_shape == (g.SIZE, g.SIZE, g.IN_CHANNELS)
    assert [(i.path, i.class_name, i.shape) for i in backend.layers] == [
        ("conv1", "Conv", (10, 10, 4)), ("relu", "Relu", (10, 10, 4)), ("conv2", "Conv", (10, 10, 5)),
        ("pooled", "GlobalAveragePool", (1, 1, 5)),
    ]
    assert backend.default_layer == "conv2"  # the last spatial tensor before the pooling
    assert backend.n_classes == g.CLASSES and backend.probability_kind == "softmax"
    # pre-softmax: the Softmax node's input, not the graph's output
    np.testing.assert_allclose(backend.scores(x), g.logits(x, weights)[0], rtol=1e-5, atol=1e-5)
    activations, _ = backend.activations(x, "relu")
    np.testing.assert_allclose(activations, g.relu_map(x.transpose(0, 3, 1, 2), weights)[0].transpose(1, 2, 0),
                               atol=1e-5)
    explainer = camcore.Explainer(backend, batch_size=2)
    for layer in ("relu", "conv2"):
        for c in range(g.CLASSES):
            np.testing.assert_allclose(explainer.compute("score_cam", x, layer, c).cam,
                                       reference_score_cam(x, weights, layer, c), atol=1e-4, err_msg=f"{layer} {c}")
            np.testing.assert_allclose(explainer.compute("ablation_cam", x, layer, c).cam,
                                       reference_ablation_cam(x, weights, layer, c), atol=1e-4, err_msg=f"{layer} {c}")


def test_nhwc_input_and_nhwc_tensors_are_seen_channels_last(weights):
    """An NHWC input (a Transpose into the first Conv) and a tensor that is NHWC inside the graph:
    the engine's activations are (h, w, K) either way, and the maps are the NCHW graph's."""
    backend = _backend(g.convnet(weights, layout="NHWC", nhwc_tensor=True))
    x = _x(2)
    assert backend.layout == "NHWC"
    paths = [i.path for i in backend.layers]
    assert {"relu", "relu_nhwc", "scaled_nhwc", "back_nchw", "conv2"} <= set(paths)
    nchw, _ = backend.activations(x, "relu")
    nhwc, _ = backend.activations(x, "scaled_nhwc")
    np.testing.assert_array_equal(nchw, nhwc)
    np.testing.assert_allclose(backend.scores(x), g.logits(x, weights)[0], rtol=1e-5, atol=1e-5)
    explainer = camcore.Explainer(backend, batch_size=3)
    for c in range(g.CLASSES):
        np.testing.assert_allclose(explainer.compute("score_cam", x, "scaled_nhwc", c).cam,
                                   reference_score_cam(x, weights, "relu", c), atol=1e-4)
        np.testing.assert_allclose(explainer.compute("ablation_cam", x, "scaled_nhwc", c).cam,
                                   reference_ablation_cam(x, weights, "relu", c), atol=1e-4)


def test_the_layout_comes_from_the_graph_and_else_from_the_shape(weights):
    # a 4×4×3 input: its shape cannot tell; the Transpose into the first Conv does
    small = _backend(g.convnet(weights, layout="NHWC", size=4))
    assert small.layout == "NHWC" and small.input_shape == (4, 4, 3)
    # a Reshape before the first Conv hides the graph's word: the 3-value axis is the channels'
    reshaped = _backend(g.convnet(weights, reshape_first=True))
    assert reshaped.layout == "NCHW"
    x = _x(9)
    np.testing.assert_allclose(reshaped.scores(x), g.logits(x, weights)[0], rtol=1e-5, atol=1e-5)
    # a tensor only layout-keeping operators reach (ReLU, then a ReduceMean keeping H, W)
    reduced = _backend(g.convnet(weights, reduce_pool=True))
    assert reduced.default_layer == "conv2_relu"
    conv2 = g.conv_same(g.relu_map(x.transpose(0, 3, 1, 2), weights), weights.w2, weights.b2)
    activations, scores = reduced.activations(x, "conv2_relu")
    np.testing.assert_allclose(activations, np.maximum(conv2, 0)[0].transpose(1, 2, 0), atol=1e-5)
    np.testing.assert_allclose(scores, np.maximum(conv2, 0).mean(axis=(2, 3))[0] @ weights.w3 + weights.b3,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_in_reshape", [False, True], ids=["flatten", "reshape-with-batch-1"])
def test_a_graph_with_a_fixed_batch_of_one(weights, batch_in_reshape):
    """Fixed batch 1: freed where batches give each image's rows (Flatten); one image per pass
    where the batch is written into a Reshape. The scores are right either way."""
    backend = _backend(g.convnet(weights, batch=1, batch_in_reshape=batch_in_reshape))
    assert backend.runs_batched is (not batch_in_reshape)
    batch = _x(3, batch=5)
    np.testing.assert_allclose(backend.forward(batch), g.logits(batch, weights), rtol=1e-5, atol=1e-5)
    x = batch[:1]
    cam = camcore.Explainer(backend, batch_size=4).compute("score_cam", x, "conv2", 1).cam
    np.testing.assert_allclose(cam, reference_score_cam(x, weights, "conv2", 1), atol=1e-4)


def test_an_opset_9_graph_with_its_weights_among_the_inputs(weights):
    model = g.convnet(weights, opset=9, weights_as_inputs=True)
    assert len(model.graph.input) == 7  # the image and six weights
    backend = _backend(model)
    x = _x(4)
    np.testing.assert_allclose(backend.scores(x), g.logits(x, weights)[0], rtol=1e-5, atol=1e-5)
    cam = camcore.Explainer(backend).compute("ablation_cam", x, "relu", 2).cam
    np.testing.assert_allclose(cam, reference_ablation_cam(x, weights, "relu", 2), atol=1e-4)


def test_the_heads_exports_end_in(weights):
    x = _x(5)
    z = g.logits(x, weights)[0]
    sigmoid = _backend(g.convnet(weights, head="sigmoid"))
    assert sigmoid.probability_kind == "sigmoid"
    np.testing.assert_allclose(sigmoid.scores(x), z, rtol=1e-5, atol=1e-5)
    linear = _backend(g.convnet(weights, head="none"))
    assert linear.probability_kind == "softmax"
    np.testing.assert_allclose(linear.scores(x), z, rtol=1e-5, atol=1e-5)
    # a Softmax over the pooled (1, classes, 1, 1): the pooled values are the scores
    pooled = _backend(g.convnet(weights, head="softmax4d"))
    conv2 = g.conv_same(g.relu_map(x.transpose(0, 3, 1, 2), weights), weights.w2, weights.b2)
    assert pooled.n_classes == g.OUT and pooled.scores_tensor == "pooled"
    np.testing.assert_allclose(pooled.scores(x), conv2.mean(axis=(2, 3))[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(camcore.Explainer(pooled).predict(x), _softmax(conv2.mean(axis=(2, 3))[0]), rtol=1e-5)
    # one sigmoid unit z: scores (-z, z), probabilities (1 - p, p), as for Keras models
    single = _backend(g.convnet(g.weights(seed=7, classes=1), head="sigmoid"))
    z1 = g.logits(x, g.weights(seed=7, classes=1))[0, 0]
    assert single.n_classes == 2 and single.probability_kind == "sigmoid"
    np.testing.assert_allclose(single.scores(x), [-z1, z1], rtol=1e-5, atol=1e-5)


def test_ablation_runs_the_layers_before_the_tensor_once_per_image(monkeypatch):
    """A branch leaving before conv2 joins after it: the tail from conv2 is fed that branch's
    tensor beside the gated activations, batched, and the head runs once for all batches."""
    p = g.weights(seed=3, features=g.OUT + g.MID)
    backend = _backend(g.side_branch_net(p))
    calls: list[tuple[str, ...]] = []
    real_run = OnnxPass.run

    def counted(self, rows, shared=None, outputs=None):
        calls.append(tuple(self.outputs))
        return real_run(self, rows, shared, outputs)

    monkeypatch.setattr(OnnxPass, "run", counted)
    x = _x(6)
    relu = g.relu_map(x.transpose(0, 3, 1, 2), p)
    conv2 = g.conv_same(relu, p.w2, p.b2)
    explainer = camcore.Explainer(backend, batch_size=2)
    for c in range(g.CLASSES):
        score = g.side_branch_logits_from_conv2(conv2, relu, p)[0, c]
        drops = []
        for k in range(g.OUT):
            ablated = conv2.copy()
            ablated[:, k] = 0
            drops.append((score - g.side_branch_logits_from_conv2(ablated, relu, p)[0, c]) / abs(score))
        expected = _normalized(np.tensordot(np.array(drops), conv2[0], axes=1))
        np.testing.assert_allclose(explainer.compute("ablation_cam", x, "conv2", c).cam, expected, atol=1e-4)
    head = ("conv2", "logits", "context")
    assert calls.count(head) == 1  # the activations' pass; every ablation batch reused it
    assert calls.count(("logits",)) == 1 + 3  # the tail's check on the ungated tensor, then 5 channels by 2
    assert backend._passes[("tail", "conv2")].batched is True


def test_gradient_methods_say_they_need_gradients(weights):
    backend = _backend(g.convnet(weights))
    explainer = camcore.Explainer(backend)
    assert available_methods(backend) == ["score_cam", "faster_score_cam", "eigen_cam", "ablation_cam"]
    for key in GRADIENT_METHODS:
        assert explainer.unavailable_reason(key) == "needs gradients — not available for ONNX models"
        expected = "not available for this model: needs gradients — not available for ONNX models"
        with pytest.raises(ValueError, match=expected):
            explainer.compute(key, _x(), "conv2", 0)
    with pytest.raises(ValueError, match="needs gradients"):
        explainer.guided_backprop(_x(), 0)
    with pytest.raises(ValueError, match="fp32 only"):
        backend.forward(_x(), "bf16")


def test_metadata_gives_preprocessing_and_class_names(weights):
    model = g.convnet(weights)
    onnx.helper.set_model_props(model, {"preprocessing": "symmetric", "class_names": '["ok", "scratch", "dent"]'})
    loaded = camcore.load_model(model.SerializeToString(), filename="tagged.onnx")
    assert loaded.preprocessing == "symmetric" and loaded.class_names == ("ok", "scratch", "dent")
    assert loaded.layer == "conv2" and loaded.key.startswith("upload:") and isinstance(loaded.model, OnnxBackend)
    plain = g.convnet(weights).SerializeToString()
    with pytest.raises(camcore.NeedsPreprocessing):
        camcore.load_model(plain, filename="plain.onnx")
    named = camcore.load_model(plain, filename="plain.onnx", preprocessing="unit", class_names=["a", "b", "c"])
    assert named.class_names == ("a", "b", "c")


def test_a_graph_of_any_input_size_asks_for_one(weights, tmp_path):
    data = g.convnet(weights, size="H").SerializeToString()
    graph = camcore.load_model_bytes(data, "free.onnx")
    assert isinstance(graph, OnnxGraph) and graph.variable_size
    with pytest.raises(camcore.NeedsInputSize):
        camcore.load_model(data, filename="free.onnx", preprocessing="unit")
    loaded = camcore.load_model(data, filename="free.onnx", preprocessing="unit", input_size=(12, 12))
    assert loaded.input_size == (12, 12) and loaded.key.endswith(":unit:12x12")
    assert loaded.model.layer_info("conv2").shape == (12, 12, g.OUT)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.model.scores(x), g.logits(x, weights)[0], rtol=1e-5, atol=1e-5)
    (tmp_path / "free.onnx").write_bytes(data)
    from_disk = camcore.load_model(tmp_path / "free.onnx", preprocessing="unit", input_size=(16, 16))
    assert from_disk.model.input_shape == (16, 16, 3)


def test_an_onnx_model_object_goes_straight_to_the_explainer(weights):
    x = _x(8)
    cam = camcore.Explainer(g.convnet(weights)).compute("score_cam", x, "conv2", 0).cam
    np.testing.assert_allclose(cam, reference_score_cam(x, weights, "conv2", 0), atol=1e-4)
