"""Tests for the model-parameter randomization sanity check (camcore.metrics.sanity)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from camcore import metrics as M
from camcore.maps import normalize_cam
from camcore.methods.sobel import sobel_gradient

# ------------------------------------------------------------ plain reference formulas


def reference_average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; every group of equal values gets the mean of the positions it spans."""
    flat = list(values.ravel())
    ordered = sorted(flat)
    ranks = []
    for v in flat:
        positions = [i + 1 for i, u in enumerate(ordered) if u == v]
        ranks.append(sum(positions) / len(positions))
    return np.array(ranks)


def reference_pearson(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    sx, sy = sum(x), sum(y)
    sxy = sum(a * b for a, b in zip(x, y))
    sxx, syy = sum(a * a for a in x), sum(b * b for b in y)
    return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))


def reference_ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, radius: int = 5) -> float:
    """Wang et al. 2004, eq. 13 with Gaussian-weighted statistics, one window at a time."""
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(radius, a.shape[0] - radius):
        for j in range(radius, a.shape[1] - radius):
            wa = a[i - radius : i + radius + 1, j - radius : j + radius + 1]
            wb = b[i - radius : i + radius + 1, j - radius : j + radius + 1]
            mu_a, mu_b = np.sum(weights * wa), np.sum(weights * wb)
            var_a = np.sum(weights * (wa - mu_a) ** 2)
            var_b = np.sum(weights * (wb - mu_b) ** 2)
            cov = np.sum(weights * (wa - mu_a) * (wb - mu_b))
            values.append(
                (2 * mu_a * mu_b + c1) * (2 * cov + c2)
                / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


# ------------------------------------------------------------------------ Spearman


def test_spearman_hand_computed_with_ties():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): sum d_a d_b = 4.5, sum d_a^2 = 4.5,
    # sum d_b^2 = 5 -> 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    a = np.array([[0.1, 0.5], [0.5, 0.9]])
    b = np.array([[0.0, 0.7], [0.2, 1.0]])
    assert M.spearman_correlation(a, b) == pytest.approx(np.sqrt(0.9), rel=1e-12)


def test_spearman_matches_reference_on_tied_maps():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(9, 7)) / 3.0  # only 4 distinct values: many ties
    b = np.clip(a + rng.normal(0, 0.3, size=a.shape), 0, 1).round(1)
    expected = reference_pearson(reference_average_ranks(a), reference_average_ranks(b))
    assert M.spearman_correlation(a, b) == pytest.approx(expected, rel=1e-10)
    assert 0.2 < expected < 0.95  # a non-trivial case


def test_spearman_without_ties_is_the_textbook_formula():
    rng = np.random.default_rng(1)
    a, b = rng.random((6, 5)), rng.random((6, 5))
    d = reference_average_ranks(a) - reference_average_ranks(b)
    n = a.size
    assert M.spearman_correlation(a, b) == pytest.approx(1 - 6 * np.sum(d**2) / (n * (n**2 - 1)))


def test_spearman_invariances_and_constant_maps():
    rng = np.random.default_rng(2)
    a = rng.random((8, 8))
    assert M.spearman_correlation(a, a) == 1.0
    assert M.spearman_correlation(a, a**3) == pytest.approx(1.0)  # monotone: same ranks
    assert M.spearman_correlation(a, 1 - a) == pytest.approx(-1.0)
    zeros = np.zeros((8, 8))
    # undefined for a constant map: 1.0 only when nothing changed, else 0.0; never NaN
    assert M.spearman_correlation(zeros, zeros) == 1.0
    assert M.spearman_correlation(a, zeros) == 0.0
    assert M.spearman_correlation(zeros, a) == 0.0
    assert M.spearman_correlation(zeros, np.full((8, 8), 0.5)) == 0.0
    with pytest.raises(ValueError):
        M.spearman_correlation(a, a[:4])
    with pytest.raises(ValueError):
        M.spearman_correlation(a, np.full((8, 8), np.nan))


# ----------------------------------------------------------------------------- SSIM


def test_ssim_matches_reference_windows():
    rng = np.random.default_rng(3)
    a = rng.random((17, 14))
    b = np.clip(0.6 * a + 0.4 * rng.random((17, 14)), 0, 1)
    expected = reference_ssim(a, b)
    assert M.ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert 0.2 < expected < 0.9
    assert M.ssim(b, a) == pytest.approx(expected, rel=1e-12)
    # a blockier map, where the Gaussian weighting matters
    blocks = np.kron(rng.random((4, 4)), np.ones((5, 5)))[:17, :14]
    assert M.ssim(blocks, a) == pytest.approx(reference_ssim(blocks, a), rel=1e-9)


def test_ssim_identical_inverted_and_degenerate_maps():
    rng = np.random.default_rng(4)
    a = rng.random((20, 20))
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.ssim(a, 1 - a) < 0.0  # anti-correlated structure
    zeros = np.zeros((20, 20))
    assert M.ssim(zeros, zeros) == pytest.approx(1.0)  # the constants keep it defined
    assert np.isfinite(M.ssim(zeros, a)) and M.ssim(zeros, a) < 0.1
    with pytest.raises(ValueError):
        M.ssim(np.zeros((10, 30)), np.zeros((10, 30)))  # smaller than the 11x11 window
    with pytest.raises(ValueError):
        M.ssim(a, a[:, :15])


# ------------------------------------------------------------ randomization on models


def _convnet() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name="convnet")


@pytest.fixture(scope="module")
def convnet():
    return _convnet()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32)


def test_grad_cam_passes_and_leaves_the_model_untouched(convnet, image):
    before = [w.copy() for w in convnet.get_weights()]
    probabilities = convnet.predict(image, verbose=0)
    result = M.parameter_randomization(convnet, image, "conv2", 0, "grad_cam", seed=0)
    assert result.passed is True
    assert result.spearman < M.SANITY_THRESHOLD and result.ssim < M.SANITY_THRESHOLD
    assert result.randomized_layers == ["predictions", "conv2"]  # output down, weighted only
    assert (result.method, result.layer, result.class_index) == ("grad_cam", "conv2", 0)
    assert result.original.shape == result.randomized.shape == (16, 16)  # layer resolution
    assert not np.array_equal(result.original, result.randomized)
    np.testing.assert_array_equal(
        result.original, M.parameter_randomization(convnet, image, "conv2", 0, seed=1).original
    )
    after = convnet.get_weights()
    assert len(after) == len(before)
    for w0, w1 in zip(before, after):
        np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(convnet.predict(image, verbose=0), probabilities)


def test_seed_reproducibility(convnet, image):
    a = M.parameter_randomization(convnet, image, "conv2", 1, seed=7)
    b = M.parameter_randomization(convnet, image, "conv2", 1, seed=7)
    c = M.parameter_randomization(convnet, image, "conv2", 1, seed=8)
    np.testing.assert_array_equal(a.randomized, b.randomized)
    assert (a.spearman, a.ssim, a.passed) == (b.spearman, b.ssim, b.passed)
    assert not np.array_equal(a.randomized, c.randomized)


def test_a_model_independent_map_fails(convnet, image):
    def sobel_control(model, x, layer, class_index):
        return sobel_gradient(x[0])

    result = M.parameter_randomization(convnet, image, "conv2", 0, sobel_control)
    assert result.passed is False
    assert result.spearman == pytest.approx(1.0) and result.ssim == pytest.approx(1.0)
    assert result.method == "sobel_control"


def test_a_map_from_below_the_explained_layer_fails(convnet, image):
    # depends on the model, but only on conv1, which the cascade (down to conv2) keeps
    def conv1_energy(model, x, layer, class_index):
        features = keras.Model(model.input, model.get_layer("conv1").output)
        return normalize_cam(np.asarray(features(x))[0].sum(axis=-1))

    result = M.parameter_randomization(convnet, image, "conv2", 0, conv1_energy)
    assert result.passed is False and result.spearman == pytest.approx(1.0)
    # randomizing down to conv1 destroys it
    deeper = M.parameter_randomization(convnet, image, "conv1", 0, conv1_energy)
    assert deeper.randomized_layers == ["predictions", "conv2", "conv1"]
    assert deeper.passed is True


def test_bad_layer_or_class_raises(convnet, image):
    with pytest.raises(ValueError):
        M.parameter_randomization(convnet, image, "no_such_layer", 0)
    with pytest.raises(ValueError):
        M.parameter_randomization(convnet, image, "conv2", 5)


# ------------------------------------------------------- randomized copy, nested models


def _nested_frozen_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inner_in)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    rng = np.random.default_rng(1)
    bn = backbone.get_layer("bn")
    # non-trivial statistics so that "kept" and "re-drawn" can be told apart
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4)
    bn.set_weights([gamma, beta, rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)])
    backbone.trainable = False  # a frozen backbone is randomized too
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(2, activation="softmax", name="head"),
        ],
        name="nested",
    )


def test_randomized_copy_of_a_nested_frozen_backbone():
    model = _nested_frozen_model()
    before = [w.copy() for w in model.get_weights()]
    copy, layers = M.randomized_copy(model, "backbone/bn", seed=3)
    assert layers == ["head", "backbone/conv2", "backbone/bn"]
    original = model.get_layer("backbone")
    randomized = copy.get_layer("backbone")
    # below the explained layer: identical
    below = original.get_layer("conv1").get_weights()
    for w0, w1 in zip(below, randomized.get_layer("conv1").get_weights()):
        np.testing.assert_array_equal(w0, w1)
    # batch-norm moving statistics kept, gamma / beta re-drawn
    old_bn = {v.path.split("/")[-1]: v.numpy() for v in original.get_layer("bn").weights}
    new_bn = {v.path.split("/")[-1]: v.numpy() for v in randomized.get_layer("bn").weights}
    np.testing.assert_array_equal(old_bn["moving_mean"], new_bn["moving_mean"])
    np.testing.assert_array_equal(old_bn["moving_variance"], new_bn["moving_variance"])
    # every re-drawn tensor keeps its mean and standard deviation, with new values
    redrawn = [
        (original.get_layer("bn").gamma, randomized.get_layer("bn").gamma),
        (original.get_layer("bn").beta, randomized.get_layer("bn").beta),
        (original.get_layer("conv2").kernel, randomized.get_layer("conv2").kernel),
        (model.get_layer("head").kernel, copy.get_layer("head").kernel),
    ]
    for old, new in redrawn:
        old_values, new_values = np.asarray(old.numpy()), np.asarray(new.numpy())
        assert new_values.mean() == pytest.approx(old_values.mean(), abs=1e-6)
        assert new_values.std() == pytest.approx(old_values.std(), rel=1e-5)
        assert not np.allclose(new_values, old_values)
    # a zero tensor (the head's untrained bias) has no spread to keep: it stays zero
    np.testing.assert_array_equal(copy.get_layer("head").bias.numpy(), 0.0)
    # the user's model is untouched, frozen state included
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    assert model.get_layer("backbone").trainable is False
    with pytest.raises(ValueError):
        M.randomized_copy(model, "bn")  # nested layers are addressed by path


def test_parameter_randomization_on_a_nested_backbone():
    model = _nested_frozen_model()
    x = np.random.default_rng(1).random((1, 16, 16, 3)).astype(np.float32)
    result = M.parameter_randomization(model, x, "backbone/conv2", 1, "grad_cam", seed=1)
    assert result.randomized_layers == ["head", "backbone/conv2"]
    assert result.original.shape == result.randomized.shape == (16, 16)
    assert result.passed is True
    assert result.spearman < 0.5 and result.ssim < 0.5


def test_a_map_that_goes_blank_passes_on_spearman_alone():
    # Grad-CAM of the randomized copy is negative everywhere before its ReLU here: a blank
    # map. SSIM still rates it close to the sparse original (flat windows match).
    model = _nested_frozen_model()
    x = np.random.default_rng(0).random((1, 16, 16, 3)).astype(np.float32)
    result = M.parameter_randomization(model, x, "backbone/conv2", 0, "grad_cam", seed=0)
    assert result.original.max() == 1.0 and result.randomized.max() == 0.0
    assert result.spearman == 0.0 and result.ssim > 0.9
    assert result.passed is True
    # the exception needs exactly one blank map: two blank maps are identical and fail
    both_blank = M.parameter_randomization(
        model, x, "backbone/conv2", 0, lambda m, x_, layer, c: np.zeros((16, 16))
    )
    assert (both_blank.spearman, both_blank.passed) == (1.0, False)
