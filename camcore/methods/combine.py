"""Bring layer-resolution CAMs to image resolution and combine them with the
image-space maps: guided variants (× guided backprop, Selvaraju et al. 2017,
sec. 3 "Guided Grad-CAM") and Sobel variants (× dilated image gradient, the
2019 Faster-Score-CAM study on DAGM)."""

from __future__ import annotations

import cv2
import numpy as np


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D map to ``size`` = (height, width), kept in [0, 1]."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"cam must be 2-D (h, w), got shape {cam.shape}")
    height, width = int(size[0]), int(size[1])
    if cam.shape == (height, width):
        return cam.copy()
    resized = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


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
