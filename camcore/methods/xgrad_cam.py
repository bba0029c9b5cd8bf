"""XGrad-CAM (Fu, Hu, Dong, Guo, Gao & Li, "Axiom-based Grad-CAM: Towards Accurate
Visualization and Explanation of CNNs", BMVC 2020, https://arxiv.org/abs/2008.02312).

The channel weights that best satisfy the paper's two axioms (sensitivity and
conservation) for a layer followed by a locally linear head (eq. 13):

    w_k = sum_ij ( A^k_ij / sum_ab A^k_ab ) G^k_ij,     G^k = dy^c / dA^k
    L^c = ReLU( sum_k w_k A^k )

i.e. the gradient averaged with the activation as the weight, where Grad-CAM
averages it uniformly. Where G^k is constant over the map (a global average pooling
right after the layer) both weights are that constant.

A channel whose activations sum to zero has no such average: its weight is 0. That
covers all-zero channels (the usual case after a ReLU) and, on layers with signed
outputs, channels whose values cancel to within the float32 rounding of the sum
(|sum A^k| <= h·w·eps32·sum |A^k|); dividing by such a rounding residue would give
one channel an arbitrary, huge weight.

    >>> import numpy as np
    >>> activations = np.array([[[1.0, 0.0], [3.0, 0.0]]])   # (h=1, w=2, K=2)
    >>> gradients = np.array([[[2.0, 5.0], [6.0, 5.0]]])
    >>> xgrad_cam_weights(activations, gradients)            # (1·2 + 3·6) / 4; empty channel: 0
    array([5., 0.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from camcore.methods._checks import activations_and_gradients, as_float32
from camcore.methods.base import CamInputs, MethodSpec, weighted_sum

_FLOAT32_EPS = float(np.finfo(np.float32).eps)


def xgrad_cam_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """w_k = sum_ij (A^k_ij / sum_ab A^k_ab) G^k_ij, 0 where the sum vanishes: (K,) float32
    (Fu et al. 2020, eq. 13)."""
    a, g = activations_and_gradients(activations, gradients)
    positions = a.shape[0] * a.shape[1]
    totals = a.sum(axis=(0, 1))
    defined = np.abs(totals) > positions * _FLOAT32_EPS * np.abs(a).sum(axis=(0, 1))
    weights = np.zeros(a.shape[-1])
    weights[defined] = (a * g).sum(axis=(0, 1))[defined] / totals[defined]
    return as_float32(weights, "XGrad-CAM weights")


def _cam(inputs: CamInputs) -> np.ndarray:
    return weighted_sum(inputs.activations, xgrad_cam_weights(inputs.activations, inputs.gradients))


SPEC = MethodSpec(
    key="xgrad_cam",
    label="XGrad-CAM",
    family="gradient",
    cam=_cam,
    needs=frozenset({"activations", "gradients"}),
    reference="Fu et al., BMVC 2020",
    definition="ReLU(Σ_k w_k A^k), w_k = Σ_ij (A^k_ij / Σ_ab A^k_ab) ∂y_c/∂A^k_ij (activation-weighted mean gradient)",
    url="https://arxiv.org/abs/2008.02312",
)
