"""The weight functions alone, in closed form (mutants of them survived map-level tests,
because a map is rescaled to [0, 1] and hides a constant factor in the weights)."""

import numpy as np
import pytest

from camcore.methods.grad_cam_plus_plus import grad_cam_plus_plus_weights
from camcore.methods.score_cam import WEIGHTINGS, score_cam_weights


def test_grad_cam_plus_plus_alpha_reduces_to_one_over_two_plus_sum_times_gradient():
    # eq. 19 with exp(S) as the score: alpha = g^2 / (2 g^2 + sum(A) g^3) = 1 / (2 + sum(A) g)
    # where g != 0; the weight sums alpha * ReLU(g) over the positions. Zero and negative
    # gradients contribute nothing (their alpha is defined as 0, or ReLU removes them).
    rng = np.random.default_rng(0)
    activations = rng.uniform(0, 1, (3, 4, 5))
    gradients = rng.normal(0, 1, (3, 4, 5))
    gradients[0, :, 1] = 0.0  # a row of exactly-zero gradients: 0 / 0 must give 0, not NaN
    gradients[..., 4] = 0.0  # a channel with no gradient at all: weight 0
    weights = grad_cam_plus_plus_weights(activations, gradients)
    expected = np.zeros(5)
    for k in range(5):
        total = activations[..., k].sum()
        for g in gradients[..., k].ravel():
            if g > 0:
                expected[k] += g / (2 + total * g)
    assert weights.shape == (5,) and np.isfinite(weights).all()
    np.testing.assert_allclose(weights, expected, rtol=1e-12)
    assert weights[4] == 0.0


def plain_softmax(values):
    e = [np.exp(v - max(values)) for v in values]
    return np.array([v / sum(e) for v in e])


def test_score_cam_weights_are_the_class_probability_of_each_masked_input():
    scores = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1000.0, 999.0, 0.0]])  # huge logits: no overflow
    weights = score_cam_weights(scores, 1)
    assert weights.dtype == np.float32 and weights.shape == (3,)
    np.testing.assert_allclose(weights, [plain_softmax(row)[1] for row in scores], rtol=1e-6)
    np.testing.assert_allclose(score_cam_weights(scores, 1, "softmax"), weights)


def test_sigmoid_score_cam_weights_are_each_units_sigmoid():
    scores = np.array([[-3.0, 3.0], [0.0, 0.0], [40.0, -40.0]])
    weights = score_cam_weights(scores, 1, "sigmoid")
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, 1 / (1 + np.exp(-scores[:, 1])), rtol=1e-6)


def test_channel_softmax_weights_are_the_papers_eq_5_softmax_over_channels():
    scores = np.array([[1.0, 700.0], [2.0, 701.0], [0.0, 705.0]])  # softmax over the 3 channels, class 1
    weights = score_cam_weights(scores, 1, weighting="channel_softmax")
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, plain_softmax(scores[:, 1]), rtol=1e-6)
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)


def test_no_channel_gives_no_weight_and_an_unknown_weighting_is_named():
    empty = score_cam_weights(np.zeros((0, 3)), 0)
    assert empty.shape == (0,) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="weighting must be one of .*'per_pixel'"):
        score_cam_weights(np.zeros((2, 3)), 0, weighting="per_pixel")
    with pytest.raises(ValueError, match="probability must be 'softmax' or 'sigmoid', got 'Sigmoid'"):
        score_cam_weights(np.zeros((2, 3)), 0, "Sigmoid")
    assert "class_softmax" in WEIGHTINGS and "channel_softmax" in WEIGHTINGS
