"""Guided backprop (closed form on a one-ReLU net), Sobel gradient, and their CAM variants."""

import cv2
import keras
import numpy as np
import pytest

import camcore


def test_guided_backprop_keeps_only_positive_gradients_through_relu():
    # y = sum_j v_j relu(u_j · x): plain gradient sum_j v_j [z_j > 0] u_j,
    # guided gradient sum_j relu(v_j) [z_j > 0] u_j (Springenberg et al. 2015).
    rng = np.random.default_rng(1)  # a seed where active units have both signs of v
    inp = keras.Input((3, 3, 2))
    hidden = keras.layers.Dense(5, activation="relu", use_bias=False, name="hidden")
    head = keras.layers.Dense(1, use_bias=False, name="head")
    out = head(hidden(keras.layers.Flatten()(inp)))
    model = keras.Model(inp, out)
    u = rng.normal(size=(18, 5)).astype(np.float32)
    v = np.array([[1.5], [-2.0], [0.7], [-0.3], [1.1]], np.float32)
    hidden.set_weights([u])
    head.set_weights([v])
    x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
    z = x.reshape(1, -1) @ u
    active = (z[0] > 0).astype(np.float32)
    assert active.sum() >= 2 and (active * (v[:, 0] < 0)).any(), "case must exercise both gates"
    guided = (u * (active * np.maximum(v[:, 0], 0))).sum(axis=1).reshape(3, 3, 2)
    plain = (u * (active * v[:, 0])).sum(axis=1).reshape(3, 3, 2)
    got = camcore.guided_backprop(model, x, 1)  # 1-unit linear output: class 1 is the unit
    np.testing.assert_allclose(got, guided, atol=1e-5)
    assert not np.allclose(got, plain, atol=1e-3)
    assert model.get_layer("hidden").activation.__name__ == "relu"


def test_sobel_gradient_of_a_step_edge():
    image = np.zeros((32, 32), np.uint8)
    image[:, 16:] = 200
    gradient = camcore.sobel_gradient(image)
    assert gradient.shape == (32, 32) and gradient.dtype == np.float32
    assert gradient.max() == pytest.approx(1.0)
    assert gradient.min() >= 0.0
    # raw Sobel response spans columns 15..16; the 5x5 dilation widens it by 2 each side
    assert np.all(gradient[:, 13:19] > 0.5)
    assert not gradient[:, :12].any() and not gradient[:, 20:].any()


def test_sobel_gradient_of_flat_image_is_zero_and_accepts_rgb():
    assert not camcore.sobel_gradient(np.full((16, 16), 77, np.uint8)).any()
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[4:12, 4:12] = 255
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_allclose(camcore.sobel_gradient(rgb), camcore.sobel_gradient(gray), atol=1e-2)
    with pytest.raises(ValueError):
        camcore.sobel_gradient(np.zeros((4, 4, 2)))


def test_upsample_and_variants():
    cam = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    up = camcore.upsample(cam, (8, 6))
    assert up.shape == (8, 6) and up.min() >= 0 and up.max() <= 1
    assert up[0, -1] == pytest.approx(1.0) and up[0, 0] == pytest.approx(0.0)
    saliency = np.ones((8, 6, 3), np.float32)
    np.testing.assert_allclose(camcore.guided_variant(cam, saliency), np.repeat(up[..., None], 3, -1))
    gradient = np.full((8, 6), 0.5, np.float32)
    np.testing.assert_allclose(camcore.sobel_variant(cam, gradient), 0.5 * up)
    with pytest.raises(ValueError):
        camcore.upsample(np.zeros((2, 2, 2)), (4, 4))
