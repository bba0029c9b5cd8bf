"""Score-CAM on a layer coarser than the input (so its masks are upsampled) and on
sigmoid heads, against a plain reference written here; the max_n clamp.

Score-CAM (Wang et al. 2020, sec. 4, eq. 3-5): each channel's map is upsampled to the
input size, min-max normalized and used as a mask; the channel weight is the model's
probability of the class for the masked input (the authors' released code).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_models import pooled_model

import camcore

SIZE, POOL = 16, 4


def bilinear_resize(a, size):
    """Bilinear resize with half-pixel centres (TensorFlow's ``tf.image.resize`` and
    OpenCV's INTER_LINEAR when upsampling): output pixel o samples the input at
    (o + 0.5) * in / out - 0.5, clamped to the border pixels."""
    def axis(n_in, n_out):
        position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, position - low

    (y0, y1, fy), (x0, x1, fx) = axis(a.shape[0], size[0]), axis(a.shape[1], size[1])
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


def nearest_resize(a, size):
    return np.repeat(np.repeat(a, size[0] // a.shape[0], axis=0), size[1] // a.shape[1], axis=1)


def class_probability(model, batch, class_index):
    """The model's own probability of ``class_index``; a 1-unit sigmoid's class 0 is 1 - p."""
    out = model.predict(batch, verbose=0)
    if out.shape[1] == 1:
        return out[:, 0] if class_index == 1 else 1.0 - out[:, 0]
    return out[:, class_index]


def masked_inputs(model, x, layer, resize):
    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    activations = sub.predict(x, verbose=0)[0].astype(np.float64)
    masks = []
    for k in range(activations.shape[-1]):
        up = resize(activations[..., k], x.shape[1:3])
        span = up.max() - up.min()
        masks.append((up - up.min()) / span if span > 0 else np.zeros_like(up))
    return activations, x * np.stack(masks)[..., None].astype(np.float32)


def combine(activations, weights):
    cam = np.maximum(np.tensordot(activations, weights, axes=([-1], [0])), 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def plain_score_cam(model, x, layer, class_index, resize=bilinear_resize):
    activations, batch = masked_inputs(model, x, layer, resize)
    return combine(activations, class_probability(model, batch, class_index))


def test_reference_resize_is_tensorflows_bilinear():
    a = np.random.default_rng(0).uniform(0, 1, (4, 4))
    tf_up = tf.image.resize(a[None, ..., None], (SIZE, SIZE), method="bilinear").numpy()[0, ..., 0]
    np.testing.assert_allclose(bilinear_resize(a, (SIZE, SIZE)), tf_up, atol=1e-6)


@pytest.mark.parametrize("class_index", [0, 2])
def test_score_cam_upsamples_masks_bilinearly(class_index):
    model = pooled_model("softmax", 3, size=SIZE, pool=POOL, seed=1)
    x = np.random.default_rng(1).uniform(0, 1, (1, SIZE, SIZE, 2)).astype(np.float32)
    assert camcore.Explainer(model).adapter.layer_info("pooled").shape[:2] == (SIZE // POOL, SIZE // POOL)
    expected = plain_score_cam(model, x, "pooled", class_index)
    blocky = plain_score_cam(model, x, "pooled", class_index, resize=nearest_resize)
    assert np.abs(expected - blocky).max() > 1e-3, "the case must tell bilinear from nearest masks"
    np.testing.assert_allclose(camcore.score_cam(model, x, "pooled", class_index), expected, atol=1e-5)


@pytest.mark.parametrize("units", [1, 2])
def test_sigmoid_head_score_cam_weights_are_the_sigmoid_probabilities(units):
    # Weights are the model's own probability: elementwise sigmoid of the masked input's
    # logit. Softmax over the classes' logits is what a softmax head would give and is
    # wrong here: for one unit, softmax(-z, z)[1] = sigmoid(2z).
    model = pooled_model("sigmoid", units, size=SIZE, pool=POOL, seed=2)
    explainer = camcore.Explainer(model)
    assert explainer.adapter.head.kind == "sigmoid" and explainer.n_classes == 2
    x = np.random.default_rng(2).uniform(0, 1, (1, SIZE, SIZE, 2)).astype(np.float32)
    activations, batch = masked_inputs(model, x, "pooled", bilinear_resize)
    out = model.predict(batch, verbose=0).astype(np.float64)
    logits = np.log(out) - np.log1p(-out)
    class_logits = np.concatenate([-logits, logits], axis=1) if units == 1 else logits
    softmax = np.exp(class_logits - class_logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    for c in range(2):
        expected = combine(activations, class_probability(model, batch, c))
        wrong = combine(activations, softmax[:, c])
        assert np.abs(expected - wrong).max() > 1e-3, "the case must tell sigmoid from softmax weights"
        np.testing.assert_allclose(explainer.compute("score_cam", x, "pooled", c).cam, expected, atol=1e-5)


def test_faster_score_cam_on_a_pooled_sigmoid_layer_uses_the_top_std_channels():
    model = pooled_model("sigmoid", 1, size=SIZE, pool=POOL, channels=6, seed=3)
    x = np.random.default_rng(3).uniform(0, 1, (1, SIZE, SIZE, 2)).astype(np.float32)
    activations, batch = masked_inputs(model, x, "pooled", bilinear_resize)
    order = np.argsort(-activations.reshape(-1, 6).std(0), kind="stable")
    weights = class_probability(model, batch, 1)
    explainer = camcore.Explainer(model)
    for n in (2, 4):
        chosen = order[:n]
        expected = combine(activations[..., chosen], weights[chosen])
        np.testing.assert_allclose(
            explainer.compute("faster_score_cam", x, "pooled", 1, max_n=n).cam, expected, atol=1e-5
        )


def test_max_n_beyond_the_channel_count_is_clamped_where_it_is_reported():
    # numpy slicing clamps by itself, so only a reported max_n shows whether the clamp ran.
    model = pooled_model("softmax", 3, size=SIZE, pool=POOL, channels=5, seed=4)
    x = np.random.default_rng(4).uniform(0, 1, (1, SIZE, SIZE, 2)).astype(np.float32)
    explainer = camcore.Explainer(model)
    rows = explainer.faster_score_cam_tradeoff(x, "pooled", 0, ns=[2, 5, 9])
    assert [row["max_n"] for row in rows] == [2, 5, 5]
    assert rows[-1]["passes"] == rows[1]["passes"] <= 5
    assert explainer.compute("faster_score_cam", x, "pooled", 0, max_n=9).max_n == 5
    with pytest.raises(TypeError, match="max_n"):
        explainer.compute("faster_score_cam", x, "pooled", 0, max_n=2.5)
