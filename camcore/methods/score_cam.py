"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
Convolutional Neural Networks", CVPR-W 2020, https://arxiv.org/abs/1910.01279) and
Faster-Score-CAM.

Score-CAM weighs each activation channel by the class score the model gives to
the input masked by that channel's (upsampled, min-max normalized) map (sec. 4,
eq. 3-5). Faster-Score-CAM (the 2019 DAGM study) uses only the ``max_n``
channels whose activation maps vary most (largest standard deviation).

This module holds the weights from the masked-pass scores. The channel ranking and the
batched masked passes themselves are the masked-pass provider's
(:mod:`camcore.passes.masked`).

    >>> cam = camcore.score_cam(model, x, "top_down56", 1)                # every channel
    >>> fast = camcore.faster_score_cam(model, x, "top_down56", 1, max_n=10)
    >>> float(camcore.maps.map_correlation(cam, fast)) > 0.5
    True
"""

from __future__ import annotations

import numpy as np

from camcore.methods.base import CamInputs, MethodSpec, weighted_sum

# the channel plan belongs to the masked passes; kept importable from here
from camcore.passes.masked import ChannelPlan, clamp_max_n, plan_channels  # noqa: F401

WEIGHTINGS = ("class_softmax", "channel_softmax")


def score_cam_weights(
    channel_scores: np.ndarray,
    class_index: int,
    probability: str = "softmax",
    weighting: str = "class_softmax",
) -> np.ndarray:
    """Channel weights from masked-pass class scores (pre-activation, shape (k, n_classes)).

    ``class_softmax`` (default, the authors' released code): w_k = the model's
    probability of the class for input X∘H^k, i.e. softmax over classes of the
    masked input's logits (``probability="sigmoid"``: elementwise sigmoid, for
    sigmoid heads). Applied to logits exactly
    once: applying softmax to the model's already-softmaxed output would flatten
    the weights.

    ``channel_softmax`` (the paper's eq. 5): w_k = softmax over channels of
    C(A^k) = S^c(X∘H^k) - S^c(X_b). The baseline term is the same for every k and
    cancels inside the softmax, so the logits are used directly.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if probability not in ("softmax", "sigmoid"):
        raise ValueError(f"probability must be 'softmax' or 'sigmoid', got {probability!r}")
    scores = np.asarray(channel_scores, dtype=np.float64)
    if scores.shape[0] == 0:
        return np.zeros(0, np.float32)
    if weighting == "channel_softmax":
        target = scores[:, class_index]
        e = np.exp(target - target.max())
        return (e / e.sum()).astype(np.float32)
    if probability == "sigmoid":
        return (1.0 / (1.0 + np.exp(-scores[:, class_index]))).astype(np.float32)
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return (e[:, class_index] / e.sum(axis=1)).astype(np.float32)


def _cam_of(inputs: CamInputs, n: int) -> np.ndarray:
    channels, scores = inputs.masked_scores(n)
    if channels.size == 0:
        return np.zeros(inputs.activations.shape[:2], np.float32)
    weighting = inputs.options.get("weighting", "class_softmax")
    weights = score_cam_weights(scores, inputs.class_index, inputs.probability_kind, weighting)
    return weighted_sum(inputs.activations[..., channels], weights)


def _score_cam(inputs: CamInputs) -> np.ndarray:
    return _cam_of(inputs, inputs.activations.shape[-1])


def _faster_score_cam(inputs: CamInputs) -> np.ndarray:
    return _cam_of(inputs, inputs.max_n)


SPEC = MethodSpec(
    key="score_cam",
    label="Score-CAM",
    family="masked",
    cam=_score_cam,
    needs=frozenset({"activations", "masked_passes"}),
    reference="Wang et al., CVPR-W 2020",
    definition="ReLU(Σ_k w_k A^k), w_k = the class probability of the input masked by normalized, upsampled A^k",
    url="https://arxiv.org/abs/1910.01279",
)

FASTER_SPEC = MethodSpec(
    key="faster_score_cam",
    label="Faster-Score-CAM",
    family="masked",
    cam=_faster_score_cam,
    needs=frozenset({"activations", "masked_passes"}),
    reference="Score-CAM on the max_N channels of largest std (2019 DAGM study)",
    definition="Score-CAM restricted to the max_N channels whose activation maps have the largest std",
    uses_max_n=True,
)
