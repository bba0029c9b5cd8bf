"""Sigmoid heads: the explained score must be the pre-sigmoid logit.

With a sigmoid head, d sigmoid(z_c)/dA = sigmoid'(z_c) dz_c/dA: the probability gradient
is the logit gradient times a positive per-class factor. Grad-CAM's weights are linear
in the gradient, so the [0, 1] rescale hides that factor; Grad-CAM++'s alpha
(Chattopadhyay et al. 2018, eq. 19) is not scale invariant, and neither is the raw
gradient. These tests compare both with hand-computed logit values.
"""

import numpy as np
import tensorflow as tf
from toy_models import linear_head_model

import camcore
from camcore.adapter import ModelAdapter

H, W = 3, 4


def relu_scaled(cam):
    cam = np.maximum(cam, 0.0)
    return cam / cam.max() if cam.max() > 0 else np.zeros_like(cam)


def grad_cam_plus_plus_reference(activations, gradients):
    """Eq. 19 (alpha) and eq. 10 (weights) of Chattopadhyay et al. 2018, with plain loops."""
    h, w, k = activations.shape
    cam = np.zeros((h, w))
    for channel in range(k):
        total = activations[:, :, channel].sum()
        weight = 0.0
        for i in range(h):
            for j in range(w):
                g = float(gradients[i, j, channel])
                denominator = 2 * g**2 + total * g**3
                alpha = g**2 / denominator if denominator != 0 else 0.0
                weight += alpha * max(g, 0.0)
        cam += weight * activations[:, :, channel]
    return relu_scaled(cam)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_model(kernel, bias):
    """x -> identity "feat" (A = x) -> GAP -> Dense(sigmoid) with the given weights."""
    channels, units = kernel.shape
    model, _, _ = linear_head_model(h=H, w=W, channels=channels, classes=units, activation="sigmoid")
    model.get_layer("predictions").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


def channel_scaled_input(scales, seed):
    """An input whose channels have clearly different means (so m_k W_k differ)."""
    x = np.random.default_rng(seed).uniform(0.0, 1.0, (1, H, W, len(scales)))
    return (x * np.asarray(scales)).astype(np.float32)


def logit_gradient(kernel_column):
    # z = sum_k W_k mean_ij A^k_ij + b  =>  dz/dA^k_ij = W_k / (h w), the same at every position
    return np.broadcast_to(kernel_column / (H * W), (H, W, kernel_column.size)).astype(np.float64)


def test_multi_unit_sigmoid_grad_cam_plus_plus_explains_the_logit():
    # Large biases saturate the sigmoid (sigmoid'(z) < 0.05): the probability
    # gradient is much smaller than the logit gradient, which changes alpha.
    kernel = np.array([[8.0, -1.0], [1.0, 6.0], [0.5, 0.7]])
    bias = np.array([2.5, 3.0])
    model = sigmoid_model(kernel, bias)
    x = channel_scaled_input([1.0, 2.0, 0.3], seed=1)
    explainer = camcore.Explainer(model)
    z = x[0].mean(axis=(0, 1)) @ kernel + bias
    for c in range(2):
        g = logit_gradient(kernel[:, c])
        expected = grad_cam_plus_plus_reference(x[0].astype(np.float64), g)
        factor = sigmoid(z[c]) * (1 - sigmoid(z[c]))
        as_probability = grad_cam_plus_plus_reference(x[0].astype(np.float64), factor * g)
        assert np.abs(expected - as_probability).max() > 0.02, "the case must tell logit from probability"
        np.testing.assert_allclose(explainer.compute("grad_cam_plus_plus", x, "feat", c).cam, expected, atol=1e-5)


def test_single_unit_sigmoid_grad_cam_plus_plus_explains_plus_and_minus_logit():
    # One unit: class 1 explains z, class 0 explains -z (the complement's logit).
    kernel = np.array([[-8.0], [-1.0], [6.0], [0.6]])
    bias = np.array([2.0])
    model = sigmoid_model(kernel, bias)
    x = channel_scaled_input([1.0, 2.5, 1.0, 2.0], seed=2)
    explainer = camcore.Explainer(model)
    assert explainer.n_classes == 2
    z = float(x[0].mean(axis=(0, 1)) @ kernel[:, 0] + bias[0])
    factor = sigmoid(z) * (1 - sigmoid(z))
    for c, sign in ((1, 1.0), (0, -1.0)):
        g = logit_gradient(sign * kernel[:, 0])
        expected = grad_cam_plus_plus_reference(x[0].astype(np.float64), g)
        as_probability = grad_cam_plus_plus_reference(x[0].astype(np.float64), factor * g)
        assert np.abs(expected - as_probability).max() > 0.02, "the case must tell logit from probability"
        np.testing.assert_allclose(explainer.compute("grad_cam_plus_plus", x, "feat", c).cam, expected, atol=1e-5)


def test_sigmoid_head_probability_target_is_the_scaled_gradient():
    # The explicit target="probability" option must still follow the probability, so the
    # two targets are told apart by the same scale-sensitive method.
    kernel = np.array([[8.0, -1.0], [1.0, 6.0], [0.5, 0.7]])
    bias = np.array([2.5, 3.0])
    model = sigmoid_model(kernel, bias)
    x = channel_scaled_input([1.0, 2.0, 0.3], seed=1)
    z = x[0].mean(axis=(0, 1)) @ kernel + bias
    explainer = camcore.Explainer(model, target="probability")
    for c in range(2):
        factor = sigmoid(z[c]) * (1 - sigmoid(z[c]))
        expected = grad_cam_plus_plus_reference(x[0].astype(np.float64), factor * logit_gradient(kernel[:, c]))
        np.testing.assert_allclose(explainer.compute("grad_cam_plus_plus", x, "feat", c).cam, expected, atol=1e-5)


def test_sigmoid_head_raw_gradient_is_the_logit_gradient():
    # The adapter's forward + target score, differentiated directly: no rescale can hide
    # a factor here.
    kernel = np.array([[8.0, -1.0], [1.0, 6.0], [0.5, 0.7]])
    bias = np.array([2.5, 3.0])
    model = sigmoid_model(kernel, bias)
    x = channel_scaled_input([1.0, 2.0, 0.5], seed=3)
    adapter = ModelAdapter(model)
    for c in range(2):
        with tf.GradientTape(watch_accessed_variables=False) as tape:

            def watch(tensor):
                tape.watch(tensor)
                return tensor

            activations, scores = adapter.forward(tf.constant(x), capture="feat", on_capture=watch)
            target = adapter.target_score(scores, tf.constant(c))
        gradient = tape.gradient(target, activations).numpy()[0]
        np.testing.assert_allclose(gradient, logit_gradient(kernel[:, c]), rtol=1e-5, atol=1e-7)
        # and the score itself is the logit, not the probability
        np.testing.assert_allclose(float(target[0]), float(x[0].mean(axis=(0, 1)) @ kernel[:, c] + bias[c]), rtol=1e-5)
