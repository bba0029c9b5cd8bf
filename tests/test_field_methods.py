"""LayerCAM, XGrad-CAM, HiResCAM, Eigen-CAM, Ablation-CAM and multi-layer fusion against
plain references: python loops for the per-method math, and tf.GradientTape on tiny
models cut by hand at the explained layer for the public functions (``test_api_*``)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_models import linear_head_model, nested_backbone_model, small_convnet, strided_convnet

import camcore
from camcore.methods.ablation_cam import MIN_SCORE_MAGNITUDE, ablation_cam_weights
from camcore.methods.eigen_cam import eigen_cam_map
from camcore.methods.fusion import fuse_maps
from camcore.methods.hires_cam import hires_cam_map
from camcore.methods.layer_cam import layer_cam_map
from camcore.methods.xgrad_cam import xgrad_cam_weights

GRADIENT_METHODS = ("layer_cam", "xgrad_cam", "hires_cam")
ALL_METHODS = (*GRADIENT_METHODS, "eigen_cam", "ablation_cam")


# ------------------------------------------------------------------ plain references
def relu_scaled(cam):
    cam = np.maximum(np.asarray(cam, np.float64), 0.0)
    return cam / cam.max() if cam.max() > 0 else np.zeros_like(cam)


def plain_layer_cam(a, g):
    h, w, k = a.shape
    cam = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for c in range(k):
                cam[i, j] += max(float(g[i, j, c]), 0.0) * float(a[i, j, c])
    return cam


def plain_hires_cam(a, g):
    h, w, k = a.shape
    cam = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for c in range(k):
                cam[i, j] += float(g[i, j, c]) * float(a[i, j, c])
    return cam


def plain_xgrad_weights(a, g):
    h, w, k = a.shape
    weights = np.zeros(k)
    for c in range(k):
        total = 0.0
        for i in range(h):
            for j in range(w):
                total += float(a[i, j, c])
        if total == 0.0:
            continue
        for i in range(h):
            for j in range(w):
                weights[c] += float(a[i, j, c]) / total * float(g[i, j, c])
    return weights


def plain_weighted_sum(a, weights):
    h, w, k = a.shape
    cam = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for c in range(k):
                cam[i, j] += float(weights[c]) * float(a[i, j, c])
    return cam


def plain_eigen_cam(a, iterations=2000):
    """First principal component by power iteration on the covariance (all in python
    loops), then the projection and the sign rule; the data must have a clear top
    component and a non-zero correlation with the channel mean."""
    h, w, k = a.shape
    rows = [[float(a[i, j, c]) for c in range(k)] for i in range(h) for j in range(w)]
    n = len(rows)
    means = [sum(row[c] for row in rows) / n for c in range(k)]
    covariance = [[0.0] * k for _ in range(k)]
    for row in rows:
        for p in range(k):
            for q in range(k):
                covariance[p][q] += (row[p] - means[p]) * (row[q] - means[q])
    v = [1.0 + 0.1 * c for c in range(k)]
    for _ in range(iterations):
        product = [sum(covariance[p][q] * v[q] for q in range(k)) for p in range(k)]
        norm = sum(value * value for value in product) ** 0.5
        v = [value / norm for value in product]
    residual = [sum(covariance[p][q] * v[q] for q in range(k)) - norm * v[p] for p in range(k)]
    assert max(abs(r) for r in residual) < 1e-9 * norm, "power iteration did not converge"
    projection = [sum((row[c] - means[c]) * v[c] for c in range(k)) for row in rows]
    channel_mean = [sum(row) / k for row in rows]
    centre = sum(channel_mean) / n
    agreement = sum(p * (m - centre) for p, m in zip(projection, channel_mean))
    assert abs(agreement) > 1e-6, "the sign must be decided by the correlation here"
    sign = 1.0 if agreement > 0 else -1.0
    return sign * np.array(projection).reshape(h, w)


def plain_ablation_weights(score, ablated):
    return [(score - s) / max(abs(score), MIN_SCORE_MAGNITUDE) for s in ablated]


def plain_bilinear(cam, height, width):
    """OpenCV's INTER_LINEAR: half-pixel centres, edges clamped."""
    src_h, src_w = cam.shape
    out = np.zeros((height, width))

    def source(d, src, dst):
        s = (d + 0.5) * src / dst - 0.5
        s0 = int(np.floor(s))
        f = s - s0
        if s0 < 0:
            s0, f = 0, 0.0
        if s0 >= src - 1:
            s0, f = src - 1, 0.0
        return s0, min(s0 + 1, src - 1), f

    for y in range(height):
        y0, y1, fy = source(y, src_h, height)
        for x in range(width):
            x0, x1, fx = source(x, src_w, width)
            top = (1 - fx) * cam[y0, x0] + fx * cam[y0, x1]
            bottom = (1 - fx) * cam[y1, x0] + fx * cam[y1, x1]
            out[y, x] = (1 - fy) * top + fy * bottom
    return out


def plain_fuse(maps, height, width):
    total = np.zeros((height, width))
    for cam in maps:
        up = plain_bilinear(np.asarray(cam, np.float64), height, width)
        total += relu_scaled(up)
    return relu_scaled(total / len(maps))


def random_case(seed, h=5, w=4, k=6):
    """Signed activations and gradients with an all-zero channel (1), a constant channel
    (2) and a channel whose gradients are all negative (3)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(h, w, k))
    g = rng.normal(size=(h, w, k))
    a[..., 1] = 0.0
    a[..., 2] = 0.7
    g[..., 3] = -np.abs(g[..., 3])
    return a.astype(np.float32), g.astype(np.float32)


# ------------------------------------------------------------------- pure functions
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_cam_map_matches_plain_loops(seed):
    a, g = random_case(seed)
    cam = layer_cam_map(a, g)
    assert cam.shape == (5, 4) and cam.dtype == np.float32 and np.isfinite(cam).all()
    np.testing.assert_allclose(cam, plain_layer_cam(a, g), rtol=1e-5, atol=1e-6)
    nonneg = np.abs(a)  # after a ReLU: the typical layer
    np.testing.assert_allclose(layer_cam_map(nonneg, g), plain_layer_cam(nonneg, g), rtol=1e-5, atol=1e-6)


def test_layer_cam_drops_negative_gradients_and_hires_cam_keeps_them():
    a, g = random_case(3)
    a = np.abs(a)
    assert not layer_cam_map(a, -np.abs(g)).any()
    np.testing.assert_allclose(layer_cam_map(a, g), hires_cam_map(a, np.maximum(g, 0.0)), rtol=1e-6)
    assert (hires_cam_map(a, -np.abs(g)) <= 0).all() and hires_cam_map(a, -np.abs(g)).min() < 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hires_cam_map_matches_plain_loops(seed):
    a, g = random_case(seed)
    cam = hires_cam_map(a, g)
    assert cam.shape == (5, 4) and cam.dtype == np.float32 and np.isfinite(cam).all()
    np.testing.assert_allclose(cam, plain_hires_cam(a, g), rtol=1e-5, atol=1e-6)


def test_hires_cam_is_grad_cam_times_positions_when_the_gradient_is_constant():
    # A GAP + Dense head after the layer: G^k = W_kc / (h·w) everywhere, so
    # sum_k G^k A^k = sum_k mean(G^k) A^k, Grad-CAM's weighted sum.
    a, _ = random_case(4)
    per_channel = np.random.default_rng(5).normal(size=6)
    g = np.broadcast_to(per_channel, a.shape).astype(np.float32)
    np.testing.assert_allclose(hires_cam_map(a, g), plain_weighted_sum(a, per_channel), rtol=1e-5, atol=1e-6)


def test_single_channel_maps():
    rng = np.random.default_rng(6)
    a = rng.uniform(0, 1, (3, 4, 1)).astype(np.float32)
    g = rng.normal(size=(3, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(layer_cam_map(a, g), np.maximum(g[..., 0], 0) * a[..., 0], rtol=1e-6)
    np.testing.assert_allclose(hires_cam_map(a, g), g[..., 0] * a[..., 0], rtol=1e-6)
    expected = (a[..., 0] * g[..., 0]).sum() / a[..., 0].sum()
    np.testing.assert_allclose(xgrad_cam_weights(a, g), [expected], rtol=1e-5)
    np.testing.assert_allclose(eigen_cam_map(a), a[..., 0] - a[..., 0].mean(), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xgrad_cam_weights_match_plain_loops(seed):
    a, g = random_case(seed)
    weights = xgrad_cam_weights(a, g)
    assert weights.shape == (6,) and weights.dtype == np.float32 and np.isfinite(weights).all()
    assert weights[1] == 0.0  # all-zero channel
    np.testing.assert_allclose(weights, plain_xgrad_weights(a, g), rtol=1e-5, atol=1e-6)
    nonneg = np.abs(a)
    np.testing.assert_allclose(xgrad_cam_weights(nonneg, g), plain_xgrad_weights(nonneg, g), rtol=1e-5, atol=1e-6)


def test_xgrad_cam_weight_is_the_gradient_where_it_is_constant():
    a, _ = random_case(7)
    a = np.abs(a)
    per_channel = np.random.default_rng(8).normal(size=6)
    g = np.broadcast_to(per_channel, a.shape).astype(np.float32)
    expected = per_channel.copy()
    expected[1] = 0.0  # all-zero channel: no activation-weighted mean
    np.testing.assert_allclose(xgrad_cam_weights(a, g), expected, rtol=1e-5)


def test_xgrad_cam_channel_cancelling_to_rounding_gets_zero_weight():
    # 0.1 + 0.2 - 0.3 is 0, but in float32 it sums to ~7e-9: dividing by that would give
    # the channel a weight ~1e8. A real small sum (channel 1) is divided normally.
    a = np.array([[[0.1, 1.0], [0.2, -0.5], [-0.3, 0.0]]], np.float32)  # (1, 3, 2)
    g = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], np.float32)
    assert a[..., 0].astype(np.float64).sum() != 0.0
    weights = xgrad_cam_weights(a, g)
    assert weights[0] == 0.0
    np.testing.assert_allclose(weights[1], (1.0 * 2.0 - 0.5 * 4.0) / 0.5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigen_cam_map_matches_plain_reference(seed):
    a, _ = random_case(seed, h=6, w=5, k=5)
    for data in (a, np.abs(a)):  # signed, and non-negative as after a ReLU
        cam = eigen_cam_map(data)
        assert cam.shape == (6, 5) and cam.dtype == np.float32 and np.isfinite(cam).all()
        np.testing.assert_allclose(cam, plain_eigen_cam(data), atol=1e-5)


def test_eigen_cam_map_with_more_channels_than_positions():
    # h·w = 6 < K = 9: the projection comes from the (h·w)² Gram matrix instead.
    a = np.abs(np.random.default_rng(19).normal(size=(2, 3, 9))).astype(np.float32)
    np.testing.assert_allclose(eigen_cam_map(a), plain_eigen_cam(a), atol=1e-5)


@pytest.mark.parametrize("loadings, sign", [([1.0, 2.0, 0.5], 1.0), ([1.0, -3.0, 0.5], -1.0)])
def test_eigen_cam_rank_one_activations_give_the_centred_pattern(loadings, sign):
    # A^k = s_k m + c_k: the centred data is (m - mean m) s^T, its first component is
    # ±s/|s| and the projection ±|s| (m - mean m). The channel mean is mean(s) m + const,
    # so the sign rule keeps +|s| (m - mean m) when mean(s) > 0 and flips it otherwise.
    m = np.array([[0.0, 1.0, 4.0], [2.0, 0.5, 0.0]])
    offsets = [0.3, 1.0, 2.0]
    a = np.stack([s * m + c for s, c in zip(loadings, offsets)], axis=-1).astype(np.float32)
    expected = sign * np.linalg.norm(loadings) * (m - m.mean())
    np.testing.assert_allclose(eigen_cam_map(a), expected, atol=1e-5)


def test_eigen_cam_tie_is_broken_by_the_largest_value():
    # Two opposite channels: the channel mean is exactly constant (2.5), no correlation
    # to decide the sign. The component is (1, -1)/√2, the projection ±√2 (A1 - 2);
    # its largest magnitude (at the 5) is made positive.
    first = np.array([[0.0, 1.0], [2.0, 5.0]])
    a = np.stack([first, 5.0 - first], axis=-1).astype(np.float32)
    np.testing.assert_allclose(eigen_cam_map(a), np.sqrt(2.0) * (first - 2.0), atol=1e-5)
    np.testing.assert_allclose(eigen_cam_map(a[..., ::-1]), np.sqrt(2.0) * (first - 2.0), atol=1e-5)


def test_eigen_cam_degenerate_activations_give_zeros():
    cases = {
        "all zero": np.zeros((4, 4, 3), np.float32),
        "constant channels": np.broadcast_to(np.array([0.1, 0.7, 3.3], np.float32), (4, 4, 3)),
        "1x1 map": np.array([[[1.0, 2.0, 3.0]]], np.float32),
    }
    for name, a in cases.items():
        cam = eigen_cam_map(a)
        assert cam.shape == a.shape[:2] and cam.dtype == np.float32, name
        assert np.isfinite(cam).all() and not cam.any(), name
    # A constant channel beside a varying one changes nothing.
    varying = np.random.default_rng(9).uniform(0, 1, (4, 4, 1)).astype(np.float32)
    with_constant = np.concatenate([varying, np.full((4, 4, 1), 0.1, np.float32)], axis=-1)
    np.testing.assert_allclose(eigen_cam_map(with_constant), eigen_cam_map(varying), atol=1e-6)


def test_eigen_cam_invariances():
    a = np.abs(random_case(10, h=6, w=5, k=5)[0])
    cam = eigen_cam_map(a)
    assert cam.any()
    shifts = np.arange(5, dtype=np.float32)
    np.testing.assert_allclose(eigen_cam_map(a + shifts), cam, atol=1e-5)  # centring removes per-channel offsets
    np.testing.assert_allclose(eigen_cam_map(a[..., ::-1]), cam, atol=1e-5)  # channel order
    np.testing.assert_allclose(eigen_cam_map(3.0 * a), 3.0 * cam, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(eigen_cam_map(-a), -cam, atol=1e-5)  # the sign follows the activations


def test_ablation_cam_weights_match_plain_loops():
    rng = np.random.default_rng(11)
    for score in (3.2, -1.7, 0.4):
        ablated = score + rng.normal(size=8)
        weights = ablation_cam_weights(score, ablated)
        assert weights.shape == (8,) and weights.dtype == np.float32
        np.testing.assert_allclose(weights, plain_ablation_weights(score, ablated), rtol=1e-6)


def test_ablation_cam_weights_positive_score_is_the_papers_relative_drop():
    weights = ablation_cam_weights(4.0, np.array([3.0, 4.0, 5.0, 0.0]))
    np.testing.assert_array_equal(weights, np.array([0.25, 0.0, -0.25, 1.0], np.float32))


def test_ablation_cam_unchanged_channel_gets_exactly_zero():
    score = np.float32(0.123456789)
    weights = ablation_cam_weights(score, np.array([score, score, 0.0], np.float32))
    assert weights[0] == 0.0 and weights[1] == 0.0 and weights[2] > 0


def test_ablation_cam_negative_score_keeps_the_sign_of_the_drop():
    # Score -2: removing channel 0 lowers it to -3 (evidence for the class), removing
    # channel 1 raises it to -1. Dividing by y^c itself would swap the signs.
    np.testing.assert_allclose(ablation_cam_weights(-2.0, [-3.0, -1.0]), [0.5, -0.5])
    # Class 0 of a 1-unit sigmoid head has score -z: its weights are the opposite of class 1's.
    z, z_ablated = 1.5, np.array([0.5, 2.0, 1.5])
    np.testing.assert_allclose(ablation_cam_weights(-z, -z_ablated), -ablation_cam_weights(z, z_ablated))


@pytest.mark.parametrize("score", [0.0, 1e-12, -1e-9])
def test_ablation_cam_score_near_zero_is_finite_and_proportional_to_the_drop(score):
    ablated = np.array([-0.5, 0.25, score])
    weights = ablation_cam_weights(score, ablated)
    assert np.isfinite(weights).all() and weights[2] == 0.0
    np.testing.assert_allclose(weights, (score - ablated) / MIN_SCORE_MAGNITUDE, rtol=1e-6)


def test_methods_refuse_bad_inputs():
    a, g = random_case(12)
    broken = a.copy()
    broken[0, 0, 0] = np.nan
    for fn in (layer_cam_map, hires_cam_map, xgrad_cam_weights):
        with pytest.raises(ValueError):
            fn(broken, g)
        with pytest.raises(ValueError):
            fn(a, g[:, :, :3])
        with pytest.raises(ValueError):
            fn(a[..., 0], g[..., 0])
    with pytest.raises(ValueError):
        eigen_cam_map(broken)
    with pytest.raises(ValueError):
        ablation_cam_weights(np.inf, [1.0])
    with pytest.raises(ValueError):
        ablation_cam_weights(1.0, [[1.0]])


def test_fuse_maps_matches_plain_bilinear_reference():
    rng = np.random.default_rng(13)
    for size, shapes in (((8, 8), [(2, 2), (4, 4), (8, 8)]), ((8, 12), [(2, 3), (3, 5), (8, 12)])):
        maps = [rng.uniform(0, 3, shape).astype(np.float32) for shape in shapes]
        maps[1][0, 0] = -1.0  # a raw value below zero counts as zero
        fused = fuse_maps(maps, size)
        assert fused.shape == size and fused.dtype == np.float32
        np.testing.assert_allclose(fused, plain_fuse(maps, *size), atol=1e-6)
        assert fused.min() >= 0.0 and fused.max() == pytest.approx(1.0)


def test_fuse_maps_all_zero_maps():
    m = np.array([[0.0, 1.0], [3.0, 0.5]], np.float32)
    # A zero map halves the mean everywhere; the final scaling undoes that.
    expected = relu_scaled(plain_bilinear(m, 4, 4))
    np.testing.assert_allclose(fuse_maps([np.zeros((4, 4)), m], (4, 4)), expected, atol=1e-6)
    zeros = fuse_maps([np.zeros((2, 2)), np.zeros((4, 4))], (4, 4))
    assert zeros.shape == (4, 4) and np.isfinite(zeros).all() and not zeros.any()


def test_fuse_maps_of_one_map_at_its_size_is_the_scaled_map():
    m = np.array([[0.0, 2.0, 1.0]], np.float32)
    np.testing.assert_array_equal(fuse_maps([m], (1, 3)), np.array([[0.0, 1.0, 0.5]], np.float32))


def test_fuse_maps_weighs_layers_equally_whatever_their_raw_scale():
    left = np.array([[1.0, 0.0]], np.float32)
    right = np.array([[0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(fuse_maps([left, 1000.0 * right], (1, 2)), [[1.0, 1.0]])


def test_fuse_maps_refuses_bad_arguments():
    with pytest.raises(ValueError):
        fuse_maps([], (4, 4))
    with pytest.raises(ValueError):
        fuse_maps([np.zeros((2, 2, 1))], (4, 4))
    with pytest.raises(ValueError):
        fuse_maps([np.full((2, 2), np.nan)], (4, 4))
    with pytest.raises(ValueError):
        fuse_maps([np.ones((2, 2))], (0, 4))


# -------------------------------------------------- end to end: camcore.<method>(...)
class Split:
    """A model cut by hand at the explained layer: ``before`` maps the input to the
    layer's activations A, ``after`` continues to the dense head, applied here without
    its softmax / sigmoid (the score every method explains). A 1-unit head's class
    scores are (-z, z)."""

    def __init__(self, before, after, dense, single_unit=False):
        self.before, self.after, self.dense, self.single_unit = before, after, dense, single_unit

    def activations(self, x):
        h = tf.constant(x)
        for layer in self.before:
            h = layer(h)
        return h

    def scores(self, a):
        h = tf.convert_to_tensor(a, tf.float32)
        for layer in self.after:
            h = layer(h)
        z = tf.matmul(h, self.dense.kernel) + self.dense.bias
        return tf.concat([-z, z], axis=-1) if self.single_unit else z

    def tensors(self, x, class_index):
        """(A, G, scores, class) for one image, G = d score_c / dA by tf.GradientTape."""
        a = self.activations(x)
        with tf.GradientTape() as tape:
            tape.watch(a)
            scores = self.scores(a)[0]
            c = int(np.argmax(scores.numpy())) if class_index is None else class_index
            target = scores[c]
        g = tape.gradient(target, a)
        return a.numpy()[0], g.numpy()[0], scores.numpy(), c


def reference_map(method, split, x, class_index):
    a, g, scores, c = split.tensors(x, class_index)
    if method == "layer_cam":
        raw = plain_layer_cam(a, g)
    elif method == "xgrad_cam":
        raw = plain_weighted_sum(a, plain_xgrad_weights(a, g))
    elif method == "hires_cam":
        raw = plain_hires_cam(a, g)
    elif method == "eigen_cam":
        raw = plain_eigen_cam(a)
    elif method == "ablation_cam":
        raw = plain_weighted_sum(a, plain_ablation_weights(float(scores[c]), ablated_scores(split, a, c)))
    else:
        raise ValueError(method)
    return relu_scaled(raw)


def ablated_scores(split, a, c):
    """y^c with channel k of the layer set to zero, one plain pass per channel."""
    scores = []
    for k in range(a.shape[-1]):
        ablated = a.copy()
        ablated[..., k] = 0.0
        scores.append(float(split.scores(ablated[None])[0, c]))
    return scores


# The engine's compiled float32 passes and the eager reference round differently
# (observed: < 3e-7 on these models).
ATOL = 1e-5


def convnet_split(model, layer):
    conv1, conv2 = model.get_layer("conv1"), model.get_layer("conv2")
    gap, dense = model.get_layer("gap"), model.get_layer("predictions")
    if layer == "conv1":
        return Split([conv1], [conv2, gap], dense)
    return Split([conv1, conv2], [gap], dense)


def assert_split_is_the_model(split, model, x):
    probabilities = tf.nn.softmax(split.scores(split.activations(x))).numpy()
    np.testing.assert_allclose(probabilities, model.predict(x, verbose=0), atol=1e-6)


def check_map(cam, shape):
    assert cam.shape == shape and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0


@pytest.fixture(scope="module")
def strided():
    model = strided_convnet(size=16, channels=6, seed=1)
    x = np.random.default_rng(14).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    return model, x


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("layer, shape", [("conv1", (8, 8)), ("conv2", (4, 4))])
def test_api_matches_tape_reference(strided, method, layer, shape):
    model, x = strided
    split = convnet_split(model, layer)
    assert_split_is_the_model(split, model, x)
    fn = getattr(camcore, method)
    for c in range(3):
        cam = fn(model, x, layer, c)
        check_map(cam, shape)
        np.testing.assert_allclose(cam, reference_map(method, split, x, c), atol=ATOL)
    assert cam.any(), "the case should not be trivially empty"


@pytest.mark.parametrize("method", ALL_METHODS)
def test_api_default_class_is_top_one(strided, method):
    model, x = strided
    top = int(np.argmax(model.predict(x, verbose=0)[0]))
    fn = getattr(camcore, method)
    np.testing.assert_array_equal(fn(model, x, "conv1"), fn(model, x, "conv1", top))


def test_api_eigen_cam_is_class_agnostic(strided):
    model, x = strided
    maps = [camcore.eigen_cam(model, x, "conv1", c) for c in range(3)]
    assert maps[0].any()
    for cam in maps[1:]:
        np.testing.assert_array_equal(cam, maps[0])


def test_api_ablation_cam_through_a_nonlinear_head():
    # conv1 → ReLU → conv2 (ReLU) → GAP → Dense: the score drop of an ablated channel is
    # not the first-order estimate sum_ij G^k A^k, so gradients could not stand in for it.
    model = small_convnet(size=12, channels=5, seed=2)
    x = np.random.default_rng(15).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    split = convnet_split(model, "conv1")
    a, g, scores, c = split.tensors(x, 1)
    drops = float(scores[c]) - np.array(ablated_scores(split, a, c))
    first_order = (g * a).sum(axis=(0, 1))
    assert np.abs(drops - first_order).max() > 1e-2 * np.abs(drops).max(), "head must be nonlinear here"
    for c in range(3):
        cam = camcore.ablation_cam(model, x, "conv1", c)
        check_map(cam, (12, 12))
        np.testing.assert_allclose(cam, reference_map("ablation_cam", split, x, c), atol=ATOL)


def test_api_ablation_cam_on_a_linear_head_is_closed_form():
    # z_c = sum_k W_kc mean(A^k) + b_c: zeroing channel k drops z_c by W_kc mean(A^k).
    model, kernel, bias = linear_head_model(h=4, w=5, channels=3, classes=3, seed=3)
    x = np.random.default_rng(16).uniform(0, 1, (1, 4, 5, 3)).astype(np.float32)
    a = x[0].astype(np.float64)
    means = a.mean(axis=(0, 1))
    for c in range(3):
        score = means @ kernel[:, c] + bias[c]
        weights = kernel[:, c] * means / abs(score)
        expected = relu_scaled(np.tensordot(a, weights, axes=([-1], [0])))
        np.testing.assert_allclose(camcore.ablation_cam(model, x, "feat", c), expected, atol=1e-5)


def test_api_all_zero_activations_give_zero_maps_not_nan():
    inp = keras.Input((8, 8, 1))
    feat = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, activation="relu", name="feat")(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(feat))
    model = keras.Model(inp, out)
    x = np.zeros((1, 8, 8, 1), np.float32)
    for method in ALL_METHODS:
        for c in (None, 0, 1):
            cam = getattr(camcore, method)(model, x, "feat", c)
            assert cam.shape == (8, 8) and cam.dtype == np.float32, method
            assert np.isfinite(cam).all() and not cam.any(), method


def test_api_single_unit_sigmoid_class_zero_is_the_complement():
    # z = sum_k W_k mean(A^k) + b with A = x; class 1's score is z, class 0's is -z, so
    # G = ±W_k/(h·w) everywhere and an ablated channel drops the score by ±W_k mean(A^k).
    model, kernel, bias = linear_head_model(h=3, w=4, channels=4, classes=1, activation="sigmoid", seed=4)
    x = np.random.default_rng(17).uniform(0.1, 1, (1, 3, 4, 4)).astype(np.float32)
    w = kernel[:, 0].astype(np.float64)
    assert (w > 0).any() and (w < 0).any(), "LayerCAM's ReLU on the gradient needs both signs"
    a = x[0].astype(np.float64)
    means = a.mean(axis=(0, 1))
    z = float(means @ w + bias[0])
    for c, sign in ((1, 1.0), (0, -1.0)):
        gradient = sign * w / 12.0
        expected = {
            "layer_cam": relu_scaled(np.tensordot(a, np.maximum(gradient, 0.0), axes=([-1], [0]))),
            "xgrad_cam": relu_scaled(np.tensordot(a, gradient, axes=([-1], [0]))),
            "hires_cam": relu_scaled(np.tensordot(a, gradient, axes=([-1], [0]))),
            "ablation_cam": relu_scaled(np.tensordot(a, sign * w * means / abs(z), axes=([-1], [0]))),
        }
        for method, reference in expected.items():
            cam = getattr(camcore, method)(model, x, "feat", c)
            check_map(cam, (3, 4))
            np.testing.assert_allclose(cam, reference, atol=1e-5, err_msg=f"{method} class {c}")
    np.testing.assert_array_equal(camcore.eigen_cam(model, x, "feat", 0), camcore.eigen_cam(model, x, "feat", 1))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_api_nested_backbone_layer_by_path(method):
    model = nested_backbone_model(size=10, channels=5, seed=5)
    x = np.random.default_rng(18).uniform(0, 1, (1, 10, 10, 3)).astype(np.float32)
    inner = model.get_layer("inner")
    split = Split(
        [inner.get_layer("conv1"), inner.get_layer("conv2")],
        [inner.get_layer("conv3"), model.get_layer("gap")],
        model.get_layer("predictions"),
    )
    assert_split_is_the_model(split, model, x)
    for c in range(3):
        cam = getattr(camcore, method)(model, x, "inner/conv2", c)
        check_map(cam, (10, 10))
        np.testing.assert_allclose(cam, reference_map(method, split, x, c), atol=ATOL)


@pytest.mark.parametrize("method", (*GRADIENT_METHODS, "eigen_cam"))
def test_api_layer_list_fuses_at_input_resolution(strided, method):
    model, x = strided
    fn = getattr(camcore, method)
    for c in (None, 2):
        fused = fn(model, x, ["conv1", "conv2"], c)
        check_map(fused, (16, 16))
        singles = [fn(model, x, layer, c) for layer in ("conv1", "conv2")]
        np.testing.assert_allclose(fused, fuse_maps(singles, (16, 16)), atol=1e-6)
        assert fused.max() == pytest.approx(1.0)
    references = [reference_map(method, convnet_split(model, layer), x, 2) for layer in ("conv1", "conv2")]
    np.testing.assert_allclose(fn(model, x, ["conv1", "conv2"], 2), plain_fuse(references, 16, 16), atol=ATOL)


def test_api_ablation_cam_refuses_a_layer_list(strided):
    model, x = strided
    with pytest.raises(ValueError):
        camcore.ablation_cam(model, x, ["conv1", "conv2"], 0)
