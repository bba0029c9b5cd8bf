"""Grad-CAM and Grad-CAM++ against hand-computed values."""

import keras
import numpy as np
from toy_models import linear_head_model, small_convnet

import camcore


def relu_scaled(cam):
    cam = np.maximum(cam, 0.0)
    return cam / cam.max() if cam.max() > 0 else np.zeros_like(cam)


def test_grad_cam_weights_are_dense_weights_over_hw():
    model, kernel, _ = linear_head_model(h=4, w=5, channels=3, classes=3)
    x = np.random.default_rng(1).uniform(0, 1, (1, 4, 5, 3)).astype(np.float32)
    explainer = camcore.Explainer(model)
    for c in range(3):
        _, gradients, _ = explainer.activations_and_gradients(x, "feat", c)
        np.testing.assert_allclose(gradients, np.broadcast_to(kernel[:, c] / 20.0, (4, 5, 3)), rtol=1e-5)
        expected = relu_scaled(np.tensordot(x[0], kernel[:, c] / 20.0, axes=([-1], [0])))
        np.testing.assert_allclose(camcore.grad_cam(model, x, "feat", c), expected, atol=1e-6)


def test_cam_uses_logit_not_probability():
    # With a softmax head, d p_c / dA = p_c (dz_c/dA - sum_j p_j dz_j/dA): a different
    # direction from the logit gradient. The default must follow the logit.
    model, kernel, bias = linear_head_model(h=3, w=3, channels=3, classes=3, seed=3)
    x = np.random.default_rng(2).uniform(0, 1, (1, 3, 3, 3)).astype(np.float32)
    c = 0
    logit_cam = relu_scaled(np.tensordot(x[0], kernel[:, c], axes=([-1], [0])))
    z = x[0].mean(axis=(0, 1)) @ kernel + bias
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    prob_weights = p[c] * (kernel[:, c] - kernel @ p)
    prob_cam = relu_scaled(np.tensordot(x[0], prob_weights, axes=([-1], [0])))
    assert not np.allclose(logit_cam, prob_cam, atol=1e-2), "test needs a case where they differ"

    np.testing.assert_allclose(camcore.grad_cam(model, x, "feat", c), logit_cam, atol=1e-5)
    as_probability = camcore.Explainer(model, target="probability").compute("grad_cam", x, "feat", c).cam
    np.testing.assert_allclose(as_probability, prob_cam, atol=1e-5)


def test_single_unit_sigmoid_class_zero_is_the_complement():
    model, kernel, _ = linear_head_model(h=3, w=3, channels=2, classes=1, activation="sigmoid", seed=4)
    x = np.random.default_rng(3).uniform(0, 1, (1, 3, 3, 2)).astype(np.float32)
    explainer = camcore.Explainer(model)
    assert explainer.n_classes == 2
    for c, sign in ((1, 1.0), (0, -1.0)):
        expected = relu_scaled(np.tensordot(x[0], sign * kernel[:, 0], axes=([-1], [0])))
        np.testing.assert_allclose(explainer.compute("grad_cam", x, "feat", c).cam, expected, atol=1e-5)
    p = float(model.predict(x, verbose=0)[0, 0])
    np.testing.assert_allclose(explainer.predict(x), [1 - p, p], atol=1e-6)


def test_multi_unit_sigmoid_uses_pre_sigmoid_score():
    model, kernel, _ = linear_head_model(h=3, w=3, channels=3, classes=2, activation="sigmoid", seed=5)
    x = np.random.default_rng(4).uniform(0, 1, (1, 3, 3, 3)).astype(np.float32)
    explainer = camcore.Explainer(model)
    assert explainer.adapter.head.kind == "sigmoid"
    expected = relu_scaled(np.tensordot(x[0], kernel[:, 1], axes=([-1], [0])))
    np.testing.assert_allclose(explainer.compute("grad_cam", x, "feat", 1).cam, expected, atol=1e-5)
    np.testing.assert_allclose(explainer.predict(x), model.predict(x, verbose=0)[0], atol=1e-6)


def grad_cam_plus_plus_reference(activations, gradients):
    """Eq. 19 and 10 of Chattopadhyay et al., written with plain loops."""
    h, w, k = activations.shape
    weights = np.zeros(k)
    for channel in range(k):
        total = activations[:, :, channel].sum()
        for i in range(h):
            for j in range(w):
                g = float(gradients[i, j, channel])
                denominator = 2 * g**2 + total * g**3
                alpha = g**2 / denominator if denominator != 0 else 0.0
                weights[channel] += alpha * max(g, 0.0)
    cam = np.zeros((h, w))
    for channel in range(k):
        cam += weights[channel] * activations[:, :, channel]
    return relu_scaled(cam)


def test_grad_cam_plus_plus_matches_plain_reference():
    model = small_convnet(size=12, channels=5)
    x = np.random.default_rng(5).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    explainer = camcore.Explainer(model)
    for c in range(3):
        activations, gradients, _ = explainer.activations_and_gradients(x, "conv2", c)
        expected = grad_cam_plus_plus_reference(activations.astype(np.float64), gradients.astype(np.float64))
        np.testing.assert_allclose(explainer.compute("grad_cam_plus_plus", x, "conv2", c).cam, expected, atol=1e-5)


def test_both_gradient_cams_share_one_forward_backward():
    model = small_convnet(size=12)
    x = np.random.default_rng(6).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    explainer = camcore.Explainer(model)
    first = explainer.compute("grad_cam", x, "conv2", 1)
    second = explainer.compute("grad_cam_plus_plus", x, "conv2", 1)
    assert first.model_passes == 1 and not first.cached
    assert second.model_passes == 0 and second.cached


def test_all_zero_activations_give_zero_maps_not_nan():
    inp = keras.Input((8, 8, 1))
    feat = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, activation="relu", name="feat")(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(feat))
    model = keras.Model(inp, out)
    x = np.zeros((1, 8, 8, 1), np.float32)
    explainer = camcore.Explainer(model)
    for method in ("grad_cam", "grad_cam_plus_plus", "score_cam", "faster_score_cam"):
        cam = explainer.compute(method, x, "feat", 0, max_n=2).cam
        assert cam.shape == (8, 8) and cam.dtype == np.float32
        assert np.isfinite(cam).all() and not cam.any(), method


def test_default_class_costs_no_extra_forward_pass():
    model = small_convnet(size=12)
    x = np.random.default_rng(9).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    explainer = camcore.Explainer(model)
    result = explainer.compute("grad_cam", x, "conv2")
    assert result.model_passes == 1
    top = int(np.argmax(model.predict(x, verbose=0)[0]))
    again = explainer.compute("grad_cam", x, "conv2", top)
    assert again.cached, "the top-1 gradient must be cached under its class index"
    np.testing.assert_array_equal(result.cam, again.cam)


def test_default_class_is_top_one_and_explicit_class_is_honoured():
    model, kernel, _ = linear_head_model(h=3, w=3, channels=3, classes=3, seed=7)
    x = np.random.default_rng(8).uniform(0, 1, (1, 3, 3, 3)).astype(np.float32)
    top = int(np.argmax(model.predict(x, verbose=0)[0]))
    explainer = camcore.Explainer(model)
    np.testing.assert_array_equal(
        explainer.compute("grad_cam", x, "feat").cam, explainer.compute("grad_cam", x, "feat", top).cam
    )
    other = (top + 1) % 3
    expected = relu_scaled(np.tensordot(x[0], kernel[:, other], axes=([-1], [0])))
    np.testing.assert_allclose(explainer.compute("grad_cam", x, "feat", other).cam, expected, atol=1e-5)
