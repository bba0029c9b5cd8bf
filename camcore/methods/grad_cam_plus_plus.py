"""Grad-CAM++ (Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual
Explanations for Deep Convolutional Networks", WACV 2018, https://arxiv.org/abs/1710.11063).

With an exponential output Y^c = exp(S^c), the 2nd and 3rd derivatives are powers of
the first gradient g = dS^c/dA (eq. 18), giving the closed form

    alpha^kc_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)           (eq. 19)
    w^c_k       = sum_ij alpha^kc_ij ReLU(g_ij)                (eq. 10)

The common factor exp(S^c) of eq. 10 is positive and dropped: the map is rescaled
to [0, 1] anyway. Where the denominator is 0, alpha is 0.

    >>> camcore.grad_cam_plus_plus(model, x, "top_down56", 1).shape
    (56, 56)
"""

from __future__ import annotations

import numpy as np

from camcore.methods.base import CamInputs, MethodSpec, weighted_sum


def grad_cam_plus_plus_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Channel weights of eq. 10 with the alphas of eq. 19: (K,)."""
    g2 = gradients**2
    g3 = g2 * gradients
    spatial_sum = activations.sum(axis=(0, 1), keepdims=True)
    denominator = 2.0 * g2 + spatial_sum * g3
    safe = np.where(denominator != 0.0, denominator, 1.0)
    alpha = np.where(denominator != 0.0, g2 / safe, 0.0)
    return (alpha * np.maximum(gradients, 0.0)).sum(axis=(0, 1))


def _cam(inputs: CamInputs) -> np.ndarray:
    weights = grad_cam_plus_plus_weights(inputs.activations, inputs.gradients)
    return weighted_sum(inputs.activations, weights)


SPEC = MethodSpec(
    key="grad_cam_plus_plus",
    label="Grad-CAM++",
    family="gradient",
    cam=_cam,
    needs=frozenset({"activations", "gradients"}),
    reference="Chattopadhyay et al., WACV 2018",
    definition="ReLU(Σ_k w_k A^k), w_k = Σ_ij α_ij ReLU(∂y_c/∂A^k_ij) with higher-order α (eq. 19)",
    url="https://arxiv.org/abs/1710.11063",
)
