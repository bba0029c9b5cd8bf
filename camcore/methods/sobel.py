"""Image-gradient map: the "Sobel" row of the comparison grid.

The 2019 Faster-Score-CAM study on DAGM multiplies each CAM by the dilated Sobel
gradient magnitude of the input, so that the heatmap is sharpened to the edges
that a surface defect creates.
"""

from __future__ import annotations

import cv2
import numpy as np

DILATION_KERNEL = np.ones((5, 5), np.uint8)


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Grayscale float32 copy of a (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        if image.shape[-1] == 4:
            image = image[..., :3]
        if image.shape[-1] != 3:
            raise ValueError(f"image must have 1, 3 or 4 channels, got shape {image.shape}")
        image = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D or 3-D (H, W[, C]), got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def sobel_gradient(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude sqrt(Gx^2 + Gy^2) of the grayscale image, dilated with a
    5x5 kernel and scaled to [0, 1]. A flat image gives zeros.

    Returns a float32 (H, W) array.
    """
    gray = to_gray_float(image)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    # numpy rather than cv2.magnitude: OpenCV's result changes in the last bit with its
    # thread count, which made a Ray worker's rows differ from a local run's
    magnitude = cv2.dilate(np.sqrt(gx * gx + gy * gy), DILATION_KERNEL)
    peak = float(magnitude.max())
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros(gray.shape, np.float32)
    return (magnitude / peak).astype(np.float32)
