"""HiResCAM (Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful
explanations of convolutional neural networks", 2020, https://arxiv.org/abs/2011.08891).

    M^c = ReLU( sum_k G^k ⊙ A^k ),     G^k = dy^c / dA^k

The gradient is kept position by position, signs included, instead of being
averaged per channel as in Grad-CAM. When the head after the layer is a global
average pooling followed by a dense layer, y^c is linear in A and the sum is exactly
each position's contribution to the score (the paper's faithfulness argument); the
gradient is then constant per channel and HiResCAM equals Grad-CAM times h·w, which
the [0, 1] scaling removes. Unlike LayerCAM the negative gradients stay: evidence
against the class subtracts.

:func:`hires_cam_map` returns the sum before the outer ReLU; the engine applies the
ReLU and the [0, 1] scaling.

    >>> import numpy as np
    >>> activations = np.array([[[1.0, 2.0], [3.0, 0.0]]])   # (h=1, w=2, K=2)
    >>> gradients = np.array([[[0.5, -1.0], [2.0, 4.0]]])
    >>> hires_cam_map(activations, gradients)                 # 0.5·1 - 1·2, 2·3 + 4·0
    array([[-1.5,  6. ]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from camcore.methods._checks import activations_and_gradients, as_float32
from camcore.methods.base import CamInputs, MethodSpec


def hires_cam_map(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """sum_k G^k ⊙ A^k: (h, w) float32, before the outer ReLU (Draelos & Carin 2020)."""
    a, g = activations_and_gradients(activations, gradients)
    return as_float32((g * a).sum(axis=-1), "HiResCAM map")


def _cam(inputs: CamInputs) -> np.ndarray:
    return hires_cam_map(inputs.activations, inputs.gradients)


SPEC = MethodSpec(
    key="hires_cam",
    label="HiResCAM",
    family="gradient",
    cam=_cam,
    needs=frozenset({"activations", "gradients"}),
    reference="Draelos & Carin, arXiv 2020",
    definition="ReLU(Σ_k ∂y_c/∂A^k ⊙ A^k): the gradient kept per position, signs included",
    url="https://arxiv.org/abs/2011.08891",
)
