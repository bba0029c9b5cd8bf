"""The backend protocol: a model the engine knows only through activations and batched
forward passes (a toy of a few NumPy lines, no TensorFlow) gets the gradient-free methods
through ``Explainer.compute``; the methods it cannot serve say what they need."""

from __future__ import annotations

import numpy as np
import pytest

import camcore
from camcore.backends import Backend, LayerInfo, masks_from_maps
from camcore.methods import METHODS, available_methods

SIZE, CHANNELS, CLASSES = 8, 4, 3


class ToyBackend(Backend):
    """feat_k = ReLU(w_k · x + b_k) per pixel (K channels at the input's resolution), then
    global average pooling and a linear head: scores = mean(feat) @ W + c."""

    kind = "toy"
    input_shape = (SIZE, SIZE, 1)
    n_classes = CLASSES
    layers = [LayerInfo("feat", "Toy", SIZE, SIZE, CHANNELS)]

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w, self.b = rng.normal(size=CHANNELS), rng.normal(size=CHANNELS) * 0.1
        self.head, self.bias = rng.normal(size=(CHANNELS, CLASSES)), rng.normal(size=CLASSES)
        self.forwarded = 0

    def _features(self, batch: np.ndarray) -> np.ndarray:
        return np.maximum(batch * self.w + self.b, 0.0)  # (B, H, W, K)

    def activations(self, x, layer):
        return self._features(x)[0].astype(np.float32), self.forward(x)[0]

    def forward(self, batch, precision="fp32"):
        self.forwarded += len(batch)
        return (self._features(batch).mean(axis=(1, 2)) @ self.head + self.bias).astype(np.float32)


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, SIZE, SIZE, 1)).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_score_cam(backend: ToyBackend, x: np.ndarray, class_index: int, channels=None) -> np.ndarray:
    """Score-CAM written out (Wang et al. 2020, eq. 3-5, softmax applied once to the logits):
    at the input's resolution no upsampling, so each mask is the channel min-max normalized."""
    features = backend._features(x)[0]
    weights = np.zeros(CHANNELS)
    for k in range(CHANNELS) if channels is None else channels:
        a = features[..., k]
        span = a.max() - a.min()
        mask = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        logits = (backend._features(x * mask[None, :, :, None]).mean(axis=(1, 2)) @ backend.head + backend.bias)[0]
        weights[k] = _softmax(logits)[class_index] if span > 0 or a.max() != 0 else 0.0
    cam = np.maximum(features @ weights, 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def test_gradient_free_methods_run_on_a_backend_with_activations_and_forwards_only():
    backend = ToyBackend()
    explainer = camcore.Explainer(backend)
    x = _x()
    assert available_methods(backend) == ["score_cam", "faster_score_cam", "eigen_cam"]
    for class_index in range(CLASSES):
        cam = explainer.compute("score_cam", x, "feat", class_index).cam
        np.testing.assert_allclose(cam, reference_score_cam(backend, x, class_index), atol=1e-5)
    eigen = explainer.compute("eigen_cam", x, "feat").cam
    assert eigen.shape == (SIZE, SIZE) and 0.0 <= eigen.min() and eigen.max() == pytest.approx(1.0)
    fast = explainer.compute("faster_score_cam", x, "feat", 0, max_n=2)
    assert fast.max_n == 2 and fast.cached  # the full run's masked passes cover it
    # the class scores and probabilities come through the same backend
    probabilities = explainer.predict(x)
    np.testing.assert_allclose(probabilities, _softmax(backend.forward(x)[0]), rtol=1e-5)


def test_gradient_methods_say_they_need_gradients_instead_of_failing():
    explainer = camcore.Explainer(ToyBackend())
    for key, spec in METHODS.items():
        reason = explainer.unavailable_reason(key)
        if "gradients" in spec.needs:
            assert reason == "needs gradients — not available for toy models", key
            with pytest.raises(ValueError, match="not available for this model: needs gradients"):
                explainer.compute(key, _x(), "feat", 0)
        elif key == "ablation_cam":
            assert "from the layer to the scores" in reason
        else:
            assert reason is None, key
    with pytest.raises(ValueError, match="needs gradients"):
        explainer.guided_backprop(_x(), 0)


def test_auto_precision_on_a_backend_without_bf16_is_fp32_and_measures_nothing(monkeypatch):
    import camcore.autoprecision as auto

    monkeypatch.setattr(auto, "probe", lambda *a, **k: pytest.fail("a fp32-only backend was probed"))
    explainer = camcore.Explainer(ToyBackend(), precision="auto")
    assert explainer.verdict(_x(), "feat").precision == "fp32"


def test_default_masks_match_the_keras_backends_resize_then_normalize():
    """The NumPy masks (for backends without a compiled masked pass) equal TensorFlow's
    bilinear upsampling followed by the min-max normalization, as the Keras pass builds them."""
    import tensorflow as tf

    maps = np.random.default_rng(3).normal(size=(3, 7, 5)).astype(np.float32)
    maps[2] = 1.5  # a constant map gives an all-zero mask
    up = tf.image.resize(maps[..., None], (28, 20), method="bilinear").numpy()[..., 0]
    low, high = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    expected = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
    np.testing.assert_allclose(masks_from_maps(maps, (28, 20)), expected, atol=1e-5)


def test_a_toy_model_format_loads_through_the_one_loader(tmp_path):
    """A registered file format is read wherever a model file is: bytes, paths, uploads."""
    from camcore import models
    from camcore.loading import load_model

    def read(data: bytes, filename: str) -> ToyBackend:
        if not data.startswith(b"toy:"):
            raise ValueError(f"{filename} is not a toy model")
        return ToyBackend(int(data[4:]))

    def describe(model, name, preprocessing, class_names, input_size, *, source, key):
        return models.from_backend(model, name, preprocessing, class_names, input_size, source=source, key=key(None))

    models.register_model_format(models.ModelFormat("Toy", (".toy",), read, describe))
    try:
        assert ".toy" in models.model_extensions()
        loaded = load_model(b"toy:3", filename="m.toy", preprocessing="unit")
        assert isinstance(loaded.model, ToyBackend) and loaded.layer == "feat" and loaded.input_size == (SIZE, SIZE)
        (tmp_path / "n.toy").write_bytes(b"toy:4")
        from_path = load_model(tmp_path / "n.toy", preprocessing="unit")
        assert from_path.key.startswith("file:") and from_path.model.w.tolist() == ToyBackend(4).w.tolist()
        with pytest.raises(ValueError, match="not a toy model"):
            load_model(b"junk", filename="m.toy", preprocessing="unit")
        with pytest.raises(camcore.NeedsPreprocessing):
            load_model(b"toy:3", filename="m.toy")
        x = loaded.preprocess(np.full((SIZE, SIZE), 128, np.uint8))
        assert camcore.Explainer(loaded.model).compute("score_cam", x, loaded.layer, 0).cam.shape == (SIZE, SIZE)
    finally:
        models.unregister_model_format(".toy")
    with pytest.raises(ValueError, match="expected a model file"):
        load_model(b"toy:3", filename="m.toy", preprocessing="unit")


def test_the_compare_page_runs_a_backend_model_and_says_what_it_cannot(monkeypatch):
    """A toy model file uploaded on the Compare page: the gradient-free columns render, the
    gradient columns and the guided row say "needs gradients", nothing fails."""
    from test_dashboard_apptest import assert_clean, caption_of, errors, grid_images, run_app

    from camcore import models
    from dashboard.components.grid import ROWS

    def describe(model, name, preprocessing, class_names, input_size, *, source, key):
        return models.from_backend(model, name, preprocessing, class_names, input_size, source=source, key=key(None))

    models.register_model_format(models.ModelFormat("Toy", (".toy",), lambda data, name: ToyBackend(int(data[4:])),
                                                    describe))
    try:
        at = run_app({"methods": ["grad_cam", "score_cam", "faster_score_cam", "eigen_cam"]})
        at.radio(key="model_source").set_value("upload").run()
        at.file_uploader(key="model_file").upload("model.toy", b"toy:5", "application/octet-stream").run()
        at.selectbox(key="upload_preprocessing").set_value("unit").run()
        assert_clean(at)
        assert not errors(at), errors(at)
        captions = [caption_of(image) for image in grid_images(at)]
        for method in ("Score-CAM", "Faster-Score-CAM", "Eigen-CAM"):
            assert f"{method} · overlay" in captions and f"Sobel × {method}" in captions, method
            assert f"Guided {method} · needs gradients" in captions
        assert "Grad-CAM · overlay" not in captions
        headers = [c.value for c in at.main.caption]
        assert "needs gradients — not available for toy models" in headers
        placeholders = [h.body for h in at.main.get("html")]
        assert sum("Grad-CAM · not available" in body for body in placeholders) == 1
        assert len(grid_images(at)) == len(ROWS) * 4  # the input column and three methods drawn
    finally:
        models.unregister_model_format(".toy")
