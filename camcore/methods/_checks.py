"""Argument checks shared by the per-method math (LayerCAM, XGrad-CAM, HiResCAM,
Eigen-CAM, Ablation-CAM).

The math runs in float64: sums over hundreds of channels and the SVD of Eigen-CAM
lose visible precision in float32. Results come back as float32, the engine's
map type. A non-finite input is refused rather than turned into a NaN map, so a
broken model pass shows up as an error naming the method's input.
"""

from __future__ import annotations

import numpy as np

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def activation_maps(activations: np.ndarray, name: str = "activations") -> np.ndarray:
    """``activations`` as a finite (h, w, K) float64 array; ValueError otherwise."""
    arr = np.asarray(activations, dtype=np.float64)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty (h, w, K) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return arr


def activations_and_gradients(activations: np.ndarray, gradients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as finite float64 (h, w, K) arrays of the same shape; ValueError otherwise."""
    a = activation_maps(activations)
    g = activation_maps(gradients, "gradients")
    if a.shape != g.shape:
        raise ValueError(f"activations {a.shape} and gradients {g.shape} must have the same shape")
    return a, g


def as_float32(values: np.ndarray, name: str) -> np.ndarray:
    """float32 copy of finite float64 ``values``; ValueError instead of an overflow to inf."""
    if values.size and float(np.abs(values).max()) > _FLOAT32_MAX:
        raise ValueError(f"{name} exceed the float32 range; the layer's values are too large to map")
    return values.astype(np.float32)
