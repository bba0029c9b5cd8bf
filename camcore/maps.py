"""Small helpers on 2-D saliency maps, shared by the methods, the metrics and the UI.

* :func:`normalize_cam` - scale a non-negative map to ``[0, 1]`` by its maximum.
* :func:`upsample` - bilinear resize to a display / mask size, float32 in ``[0, 1]``;
  the one resize the comparison grid and the localization protocol use.
* :func:`resize_map` - bilinear resize in float64 for the legacy per-metric functions.
* :func:`as_map` - validate a map (2-D, non-empty, finite) as float64.
* :func:`map_correlation` - Pearson correlation of two maps, defined for constant maps.

Only numpy and OpenCV: importing this module never pulls in TensorFlow.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["normalize_cam", "upsample", "resize_map", "as_map", "map_correlation"]


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


def as_map(cam: np.ndarray) -> np.ndarray:
    """``cam`` as a validated float64 2-D array (a view when it already is one).

    float64 so that thresholding and sorted-count shortcuts in the metrics compare
    exactly the same numbers. Raises ``ValueError`` on a non-2-D, empty or non-finite map
    rather than letting NaN through to a score.
    """
    arr = np.asarray(cam)
    if arr.ndim != 2:
        raise ValueError(f"a map must be 2-D (h, w), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("a map must not be empty")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("map contains NaN or inf")
    return arr


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return ``cam`` as float64 of shape ``shape = (H, W)``.

    If the shapes differ the map is resized with bilinear interpolation
    (``cv2.resize(..., INTER_LINEAR)``), the usual way CAMs are brought from layer to image
    resolution (Selvaraju et al. 2017, "Grad-CAM"). The same interpolation is used
    when the map is larger than ``shape``. Unlike :func:`upsample` nothing is clipped or
    rounded to float32. Raises ``ValueError`` on non-2-D or non-finite input.
    """
    arr = as_map(cam)
    height, width = int(shape[0]), int(shape[1])
    if arr.shape == (height, width):
        return arr
    return cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps of the same shape (used to compare
    Faster-Score-CAM with full Score-CAM). Two constant maps correlate 1.0 if
    equal and 0.0 otherwise, instead of NaN."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {a.size} and {b.size} values")
    da, db = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denominator == 0.0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float((da * db).sum() / denominator)
