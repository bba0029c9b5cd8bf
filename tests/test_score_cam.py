"""Score-CAM and Faster-Score-CAM against a plain per-channel reference."""

import keras
import numpy as np
import pytest
from toy_models import linear_head_model

import camcore
from camcore.methods.score_cam import plan_channels


def same_resolution_model(channels: int = 6, seed: int = 0, dead: tuple = (), constant: dict | None = None):
    """A model whose explained layer has the input's resolution (no upsampling), with
    optionally dead (all-zero) and constant channels, and a softmax head."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((10, 10, 2), name="image")
    conv = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="feat")
    feat = conv(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="mix")(feat)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    kernel, bias = conv.get_weights()
    for k in dead:
        kernel[..., k] = 0.0
        bias[k] = 0.0
    for k, value in (constant or {}).items():
        kernel[..., k] = 0.0
        bias[k] = value
    conv.set_weights([kernel, bias])
    return model


def plain_score_cam(model, x, layer, class_index, channels=None):
    """Score-CAM written plainly: every selected channel gets its own model.predict."""
    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    activations = sub.predict(x, verbose=0)[0]
    selected = range(activations.shape[-1]) if channels is None else channels
    cam = np.zeros(activations.shape[:2])
    for k in selected:
        a = activations[..., k]
        span = a.max() - a.min()
        mask = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        probability = model.predict(x * mask[None, :, :, None], verbose=0)[0, class_index]
        cam += probability * a
    cam = np.maximum(cam, 0)
    return cam / cam.max() if cam.max() > 0 else cam, activations


def test_score_cam_equals_plain_reference_and_applies_softmax_once():
    model = same_resolution_model()
    x = np.random.default_rng(0).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    for c in range(3):
        expected, _ = plain_score_cam(model, x, "feat", c)
        np.testing.assert_allclose(camcore.score_cam(model, x, "feat", c), expected, atol=1e-5)


def test_softmax_twice_would_be_detected():
    # Weights from softmax(probabilities) are nearly uniform; the map must not look like that.
    model = same_resolution_model(seed=2)
    x = np.random.default_rng(1).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    explainer = camcore.Explainer(model)
    cam = explainer.compute("score_cam", x, "feat", 0).cam
    state = explainer.score_state(x, "feat")
    logits = state.scores
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    twice = np.exp(probs) / np.exp(probs).sum(1, keepdims=True)
    wrong = np.maximum(np.tensordot(state.activations, twice[:, 0], axes=([-1], [0])), 0)
    expected, _ = plain_score_cam(model, x, "feat", 0)
    assert not np.allclose(wrong / wrong.max(), expected, atol=1e-3)
    np.testing.assert_allclose(cam, expected, atol=1e-5)


def test_one_channel_layer_gives_the_normalized_activation():
    # One channel: CAM = ReLU(w·A)/max with w a probability > 0, i.e. A / max(A).
    model, _, _ = linear_head_model(h=6, w=6, channels=1, classes=2, seed=1)
    x = np.random.default_rng(2).uniform(0.2, 1, (1, 6, 6, 1)).astype(np.float32)
    for c in range(2):
        cam = camcore.score_cam(model, x, "feat", c)
        np.testing.assert_allclose(cam, x[0, ..., 0] / x.max(), atol=1e-6)


def test_skipping_dead_and_sharing_constant_channels_is_exact():
    model = same_resolution_model(channels=8, seed=3, dead=(1, 4), constant={2: 0.7, 6: 1.3})
    x = np.random.default_rng(3).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    explainer = camcore.Explainer(model, batch_size=3)
    result = explainer.compute("score_cam", x, "feat", 1)
    expected, activations = plain_score_cam(model, x, "feat", 1)
    plan = plan_channels(activations)
    assert plan.zero[[1, 4]].all() and plan.constant[[2, 6]].all()
    np.testing.assert_allclose(result.cam, expected, atol=1e-5)
    # 4 varying channels + 1 shared zero-mask pass + 1 activation pass
    assert result.model_passes == 4 + 1 + 1
    assert explainer.score_cam_channels_done(x, "feat") == 8


def test_faster_score_cam_uses_top_std_channels_in_order():
    model = same_resolution_model(channels=8, seed=4)
    x = np.random.default_rng(4).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    _, activations = plain_score_cam(model, x, "feat", 0, channels=[])
    order = np.argsort(-activations.reshape(-1, 8).std(0), kind="stable")
    explainer = camcore.Explainer(model)
    for n in (1, 3, 5):
        expected, _ = plain_score_cam(model, x, "feat", 2, channels=order[:n])
        np.testing.assert_allclose(
            explainer.compute("faster_score_cam", x, "feat", 2, max_n=n).cam, expected, atol=1e-5
        )
        np.testing.assert_allclose(camcore.faster_score_cam(model, x, "feat", 2, max_n=n), expected, atol=1e-5)


def test_max_n_larger_than_channel_count_is_full_score_cam():
    model = same_resolution_model(channels=5, seed=5)
    x = np.random.default_rng(5).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    explainer = camcore.Explainer(model)
    np.testing.assert_array_equal(
        explainer.compute("faster_score_cam", x, "feat", 0, max_n=1000).cam,
        explainer.compute("score_cam", x, "feat", 0).cam,
    )
    # numpy slicing clamps by itself: only the reported max_n shows that the clamp ran
    assert explainer.compute("faster_score_cam", x, "feat", 0, max_n=5 + 5).max_n == 5
    with pytest.raises(ValueError, match="max_n"):
        _ = explainer.compute("faster_score_cam", x, "feat", 0, max_n=0).cam


def test_prefix_cache_makes_max_n_changes_free():
    model = same_resolution_model(channels=8, seed=6)
    x = np.random.default_rng(6).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    explainer = camcore.Explainer(model, batch_size=2)
    seen = []
    first = explainer.compute("faster_score_cam", x, "feat", 0, max_n=3, progress=lambda d, t: seen.append((d, t)))
    assert first.model_passes == 1 + 3  # activations + 3 masked passes
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert explainer.score_cam_channels_done(x, "feat") == 3
    grow = explainer.compute("faster_score_cam", x, "feat", 0, max_n=6)
    assert grow.model_passes == 3  # only the new channels
    for n in (1, 2, 5, 6):
        again = explainer.compute("faster_score_cam", x, "feat", 0, max_n=n)
        assert again.model_passes == 0 and again.cached
    # the cached masked passes hold every class: another class is free too
    assert explainer.compute("faster_score_cam", x, "feat", 2, max_n=6).model_passes == 0


def test_channel_softmax_weighting_matches_paper_formula():
    model = same_resolution_model(channels=4, seed=7)
    x = np.random.default_rng(7).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    explainer = camcore.Explainer(model)
    cam = explainer.compute("score_cam", x, "feat", 1, weighting="channel_softmax").cam
    state = explainer.score_state(x, "feat")
    # eq. 5: softmax over channels of S^c(X∘H^k) - S^c(X_b); the baseline cancels
    baseline = explainer.scores(np.zeros_like(x))[1]
    contributions = state.scores[:, 1] - baseline
    weights = np.exp(contributions) / np.exp(contributions).sum()
    expected = np.maximum(np.tensordot(state.activations, weights, axes=([-1], [0])), 0)
    np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-5)


def test_raw_image_masking_re_preprocesses():
    model = same_resolution_model(channels=4, seed=8)
    raw = np.random.default_rng(8).uniform(0, 255, (1, 10, 10, 2)).astype(np.float32)
    x = raw / 127.5 - 1.0
    explainer = camcore.Explainer(model)
    cam = explainer.compute("score_cam", x, "feat", 0, raw_image=raw, preprocessing="symmetric").cam
    sub = keras.Model(model.inputs, model.get_layer("feat").output)
    activations = sub.predict(x, verbose=0)[0]
    expected = np.zeros((10, 10))
    for k in range(4):
        a = activations[..., k]
        mask = (a - a.min()) / (a.max() - a.min())
        masked = raw * mask[None, :, :, None] / 127.5 - 1.0
        expected += model.predict(masked, verbose=0)[0, 0] * a
    expected = np.maximum(expected, 0)
    np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-5)
    assert not np.allclose(cam, explainer.compute("score_cam", x, "feat", 0).cam, atol=1e-4)


def test_tradeoff_curve_ends_at_full_score_cam():
    model = same_resolution_model(channels=8, seed=9)
    x = np.random.default_rng(9).uniform(0, 1, (1, 10, 10, 2)).astype(np.float32)
    explainer = camcore.Explainer(model)
    rows = explainer.faster_score_cam_tradeoff(x, "feat", 0)
    assert [r["max_n"] for r in rows] == sorted(r["max_n"] for r in rows)
    assert rows[-1]["max_n"] == 8 and rows[-1]["correlation"] == pytest.approx(1.0)
    assert all(-1.0 <= r["correlation"] <= 1.0 + 1e-9 for r in rows)
    passes = [r["passes"] for r in rows]
    assert passes == sorted(passes) and passes[-1] <= 8
    # the curve reads the cache: it runs no new pass
    assert explainer.compute("faster_score_cam", x, "feat", 0, max_n=3).model_passes == 0
