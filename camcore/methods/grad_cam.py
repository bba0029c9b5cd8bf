"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, https://arxiv.org/abs/1610.02391).

    w_k = 1/Z sum_ij dy^c/dA^k_ij                  (eq. 1)
    L^c = ReLU(sum_k w_k A^k)                      (eq. 2)

y^c is the class score before the softmax (sec. 3); the engine supplies it.

    >>> import camcore
    >>> camcore.grad_cam(model, x, "top_down56", class_index=1).shape   # in [0, 1] at the layer's size
    (56, 56)
"""

from __future__ import annotations

import numpy as np

from camcore.methods.base import CamInputs, MethodSpec, weighted_sum


def grad_cam_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Channel weights w_k = mean_ij dy^c/dA^k_ij (eq. 1): (K,)."""
    del activations  # Grad-CAM weights depend on the gradient alone
    return gradients.mean(axis=(0, 1))


def _cam(inputs: CamInputs) -> np.ndarray:
    return weighted_sum(inputs.activations, grad_cam_weights(inputs.activations, inputs.gradients))


SPEC = MethodSpec(
    key="grad_cam",
    label="Grad-CAM",
    family="gradient",
    cam=_cam,
    needs=frozenset({"activations", "gradients"}),
    reference="Selvaraju et al., ICCV 2017",
    definition="ReLU(Σ_k w_k A^k) with w_k the spatial mean of ∂y_c/∂A^k",
    url="https://arxiv.org/abs/1610.02391",
)
