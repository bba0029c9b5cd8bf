"""Bring layer-resolution CAMs to image resolution and combine them with the
image-space maps: guided variants (× guided backprop, Selvaraju et al. 2017,
sec. 3 "Guided Grad-CAM") and Sobel variants (× dilated image gradient, the
2019 Faster-Score-CAM study on DAGM)."""

from __future__ import annotations

import numpy as np

from camcore.maps import upsample

__all__ = ["guided_variant", "sobel_variant", "upsample"]


def guided_variant(cam: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Guided-X = guided-backprop saliency (H, W, C) × CAM upsampled to (H, W)."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.ndim != 3:
        raise ValueError(f"saliency must be (H, W, C), got shape {saliency.shape}")
    return saliency * upsample(cam, saliency.shape[:2])[..., None]


def sobel_variant(cam: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Sobel-X = image-gradient magnitude (H, W) in [0, 1] × CAM upsampled to (H, W)."""
    gradient = np.asarray(gradient, dtype=np.float32)
    if gradient.ndim != 2:
        raise ValueError(f"gradient must be (H, W), got shape {gradient.shape}")
    return gradient * upsample(cam, gradient.shape)
