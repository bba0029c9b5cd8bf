"""Gradient-weighted CAMs: Grad-CAM and Grad-CAM++.

Both come from the same tensors, computed once per (layer, image, class) by the
Explainer: the layer's activations ``A`` (h, w, K) and the gradient ``G`` of the
class score with respect to them. Only the channel weights differ.
"""

from __future__ import annotations

import numpy as np


def normalize_cam(cam: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its maximum; an all-zero map stays zeros.

    Zero keeps its meaning ("no evidence for the class") instead of being
    stretched away by a min-max rescale.
    """
    cam = np.asarray(cam, dtype=np.float32)
    peak = float(cam.max()) if cam.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros(cam.shape, np.float32)
    return np.clip(cam / peak, 0.0, 1.0).astype(np.float32)


def weighted_cam(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ReLU(sum_k w_k A^k), scaled to [0, 1] (Selvaraju et al. 2017, eq. 2)."""
    cam = np.tensordot(activations, weights.astype(np.float32), axes=([-1], [0]))
    return normalize_cam(np.maximum(cam, 0.0))


def grad_cam_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM channel weights w_k = 1/Z sum_ij dy^c/dA^k_ij (Selvaraju et al. 2017, eq. 1)."""
    del activations  # Grad-CAM weights depend on the gradient alone
    return gradients.mean(axis=(0, 1))


def grad_cam_plus_plus_weights(activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """Grad-CAM++ channel weights (Chattopadhyay et al. 2018, eq. 10 and 19).

    With an exponential output Y^c = exp(S^c), the 2nd and 3rd derivatives are
    powers of the first gradient g = dS^c/dA (eq. 18), giving the closed form

        alpha^kc_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3)           (eq. 19)
        w^c_k       = sum_ij alpha^kc_ij ReLU(g_ij)                (eq. 10)

    The common factor exp(S^c) of eq. 10 is positive and dropped: the map is
    rescaled to [0, 1] anyway. Where the denominator is 0, alpha is 0.
    """
    g2 = gradients**2
    g3 = g2 * gradients
    spatial_sum = activations.sum(axis=(0, 1), keepdims=True)
    denominator = 2.0 * g2 + spatial_sum * g3
    safe = np.where(denominator != 0.0, denominator, 1.0)
    alpha = np.where(denominator != 0.0, g2 / safe, 0.0)
    return (alpha * np.maximum(gradients, 0.0)).sum(axis=(0, 1))
