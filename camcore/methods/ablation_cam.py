"""Ablation-CAM (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
Convolutional Network via Gradient-free Localization", WACV 2020,
https://openaccess.thecvf.com/content_WACV_2020/html/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.html).

Each channel is weighted by how much the class score drops when that channel of
the layer is set to zero (eq. 3):

    w_k = (y^c - y^c_k) / y^c,       L^c = ReLU( sum_k w_k A^k )

with y^c the pre-softmax / pre-sigmoid class score and y^c_k the score with A^k = 0.
No gradient: it stays meaningful where the head after the layer saturates or is
far from linear. It costs one model pass per channel; the engine batches them and
skips all-zero channels, whose ablation changes nothing (it passes y^c_k = y^c, so
w_k = 0 exactly).

**Denominator.** camcore divides by ``max(|y^c|, MIN_SCORE_MAGNITUDE)`` instead of
y^c. The paper writes eq. 3 for the predicted class, whose score is positive, and
there the two agree. For a negative score (a class that is not predicted, or class 0
of a 1-unit sigmoid head, whose score is -z) dividing by y^c would flip every weight:
channels whose removal *lowers* the class score, the evidence for it, would count
against it, and classes 0 and 1 of a sigmoid head would get identical maps. For a
score near zero it would blow up. The divisor is one positive number shared by all
channels, so the map after ReLU and [0, 1] scaling is that of the raw drops
y^c - y^c_k in every case; the divisor only sets the weights' scale (the paper's
relative drop for any positive score), and the weights stay finite.

    >>> ablation_cam_weights(2.0, [1.0, 2.0, 3.0])     # score drops by half / unchanged / rises
    array([ 0.5,  0. , -0.5], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from camcore.methods._checks import as_float32
from camcore.methods.base import CamInputs, MethodSpec, weighted_sum

MIN_SCORE_MAGNITUDE = 1e-6
"""Smallest divisor: below it the relative drop is undefined, the raw drop is used
(scaled by 1 / MIN_SCORE_MAGNITUDE, which the map's [0, 1] scaling removes)."""


def ablation_cam_weights(score: float, ablated_scores: np.ndarray) -> np.ndarray:
    """w_k = (y^c - y^c_k) / max(|y^c|, MIN_SCORE_MAGNITUDE): (K,) float32 (Desai &
    Ramaswamy 2020, eq. 3; equal to it for a positive score, see the module docstring).

    ``score``: the class score y^c of the image; ``ablated_scores``: (K,) the class
    score with channel k of the layer set to zero.
    """
    score = float(score)
    ablated = np.asarray(ablated_scores, dtype=np.float64)
    if ablated.ndim != 1:
        raise ValueError(f"ablated_scores must be a (K,) vector, got shape {ablated.shape}")
    if not np.isfinite(score) or not np.isfinite(ablated).all():
        raise ValueError("the class scores contain NaN or infinite values")
    drops = score - ablated
    return as_float32(drops / max(abs(score), MIN_SCORE_MAGNITUDE), "Ablation-CAM weights")


def _cam(inputs: CamInputs) -> np.ndarray:
    scores, ablated = inputs.ablation_scores()
    c = inputs.class_index
    return weighted_sum(inputs.activations, ablation_cam_weights(scores[c], ablated[:, c]))


SPEC = MethodSpec(
    key="ablation_cam",
    label="Ablation-CAM",
    family="masked",
    cam=_cam,
    needs=frozenset({"activations", "ablation_passes"}),
    reference="Desai & Ramaswamy, WACV 2020",
    definition="ReLU(Σ_k w_k A^k), w_k = (y_c − y_c^k) / |y_c|: the relative score drop when channel k is zeroed",
    url="https://openaccess.thecvf.com/content_WACV_2020/html/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.html",
)
