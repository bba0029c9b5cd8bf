"""The Explainer's precision choice: fp32 exact and unchanged, bf16 close to it for the
forward-only passes, auto following the CPU, fallback instead of an error."""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_models import small_convnet

import camcore
import camcore.precision as precision

FORWARD_ONLY = ("score_cam", "faster_score_cam", "ablation_cam")


@pytest.fixture(scope="module")
def convnet():
    return small_convnet(size=16, channels=6, classes=3, seed=2)


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)


def test_bf16_forward_passes_stay_close_to_fp32_and_gradients_are_exact(convnet):
    exact = camcore.Explainer(convnet)
    fast = camcore.Explainer(convnet, precision="bf16")
    assert exact.precision == "fp32" and fast.precision == "bf16"
    for seed in range(3):
        x = _x(seed)
        for method in FORWARD_ONLY:
            a = exact.compute(method, x, "conv2", 1, max_n=4).cam
            b = fast.compute(method, x, "conv2", 1, max_n=4).cam
            assert camcore.metrics.map_correlation(a, b) > 0.99, method
            assert not np.array_equal(a, b) or not a.any()  # really another computation
        for method in ("grad_cam", "layer_cam", "eigen_cam"):
            np.testing.assert_array_equal(
                exact.compute(method, x, "conv2", 1).cam, fast.compute(method, x, "conv2", 1).cam
            )
    # the masked passes really ran through the bf16 copy
    assert fast.backend.bf16_model is not None and exact.backend.bf16_model is None
    assert fast.backend.bf16_model.layers[1].dtype_policy.compute_dtype == "bfloat16"


def test_fp32_path_is_the_plain_score_cam_reference(convnet):
    """precision="fp32" must stay exact: Score-CAM against a per-channel model.predict loop."""
    x = _x(7)
    explainer = camcore.Explainer(convnet, precision="fp32")
    cam = explainer.compute("score_cam", x, "conv2", 2).cam
    layer_model = keras.Model(convnet.inputs, convnet.get_layer("conv2").output)
    logits_model = keras.Model(convnet.inputs, convnet.get_layer("predictions").input)
    head = convnet.get_layer("predictions")
    kernel, bias = head.get_weights()
    activations = layer_model.predict(x, verbose=0)[0]
    weights = []
    for k in range(activations.shape[-1]):
        up = tf.image.resize(activations[None, :, :, k : k + 1], (16, 16), method="bilinear").numpy()[0, ..., 0]
        span = up.max() - up.min()
        mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
        logits = logits_model.predict(x * mask[None, :, :, None], verbose=0)[0] @ kernel + bias
        e = np.exp(logits - logits.max())
        weights.append(e[2] / e.sum())
    expected = np.maximum(activations @ np.array(weights), 0)
    expected = expected / expected.max() if expected.max() > 0 else expected
    np.testing.assert_allclose(cam, expected, atol=1e-5)


def test_auto_is_fp32_where_the_cpu_flags_rule_bf16_out(monkeypatch, convnet):
    monkeypatch.delenv("CAMSTUDIO_AUTO_PRECISION", raising=False)
    monkeypatch.setattr(precision, "detect_bf16", lambda: precision.Bf16Support(False, "no bf16 here"))
    lacking = camcore.Explainer(convnet, precision="auto")
    assert lacking.precision == "fp32" and "no bf16 here" in lacking.precision_note
    with pytest.raises(ValueError, match="fp32, bf16, auto"):
        camcore.Explainer(convnet, precision="fp16")


class _Float32Offset(keras.layers.Layer):
    """Fine in float32, a dtype error when rebuilt in bf16."""

    def call(self, inputs):
        return inputs + tf.constant(1.0, tf.float32)


def test_a_model_without_a_bf16_copy_falls_back_to_fp32():
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(_Float32Offset(name="offset")(inp))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(1).uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)
    explainer = camcore.Explainer(model, precision="bf16")
    cam = explainer.compute("score_cam", x, "conv", 1).cam
    assert explainer.precision == "fp32" and "offset" in explainer.precision_note
    assert explainer.verdict(x, "conv").source == "fallback"
    np.testing.assert_array_equal(cam, camcore.Explainer(model).compute("score_cam", x, "conv", 1).cam)


def test_bf16_explainer_is_safe_from_two_threads(convnet):
    explainer = camcore.Explainer(convnet, precision="bf16", batch_size=2)
    x = _x(11)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def work():
        try:
            barrier.wait()
            results.append(explainer.compute("score_cam", x, "conv2", 0))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    np.testing.assert_array_equal(results[0].cam, results[1].cam)
    assert sorted(r.model_passes > 0 for r in results) == [False, True]  # one ran, one reused
