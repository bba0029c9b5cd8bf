"""Multi-layer fusion: one map from the maps of several layers of the same image and
class (LayerCAM's motivation, Jiang et al. 2021: a fine, shallow layer outlines what
a coarse, deep layer only locates).

    F = scale( mean_l scale( upsample(M_l) ) )

with ``upsample`` bilinear to the input size (``cv2.resize(..., INTER_LINEAR)``, the
convention of :func:`camcore.maps.upsample`) and ``scale`` the division by the
maximum of :func:`camcore.maps.normalize_cam` (an all-zero map stays zeros; values
below 0 count as 0). This is pytorch-grad-cam's rule for several target layers,
with two details of the project: each map is scaled *after* upsampling, so every
layer's map peaks at exactly 1 at the size where they are averaged, and scaling
divides by the maximum instead of min-max, so zero keeps meaning "no evidence".

**Why not torch-cam's ``fuse_cams``.** torch-cam upsamples the maps and keeps their
element-wise *maximum*; for LayerCAM it first squashes each raw map with
tanh(2·M). The maximum can only grow the highlighted area: a coarse layer's blob,
spread wide by upsampling, survives whole however precisely a finer layer outlines
the object, while the mean keeps full strength only where the layers agree. And
tanh of *raw* values depends on each layer's unnormalized magnitude, which differs
between layers and models, so one layer can saturate to a flat 1 while another
hardly registers; scaling each map to [0, 1] first weighs the layers equally and
works for any method, not only LayerCAM. The final scaling brings the mean, which
peaks below 1 when the layers disagree on the peak, back to [0, 1], so thresholds
mean the same on fused and single-layer maps.

    >>> import numpy as np
    >>> coarse = np.array([[0.0, 2.0]])                  # (1, 2): right half
    >>> fine = np.array([[0.0, 0.0, 0.0, 1.0]])          # (1, 4): last quarter
    >>> fuse_maps([coarse, fine], (1, 4))                # mean of [0, .25, .75, 1] and [0, 0, 0, 1]
    array([[0.   , 0.125, 0.375, 1.   ]], dtype=float32)
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from camcore.maps import normalize_cam


def fuse_maps(maps: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Upsample each 2-D map to ``size`` = (height, width) bilinearly, scale it to [0, 1],
    average, scale the mean to [0, 1]: (height, width) float32 (pytorch-grad-cam's
    multi-layer rule; see the module docstring)."""
    if isinstance(maps, np.ndarray) or len(maps) == 0:
        raise ValueError("maps must be a non-empty sequence of 2-D maps")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"size must be a positive (height, width), got {tuple(size)}")
    total = np.zeros((height, width), np.float64)
    for index, cam in enumerate(maps):
        cam = np.ascontiguousarray(cam, dtype=np.float32)
        if cam.ndim != 2 or cam.size == 0:
            raise ValueError(f"map {index} must be a non-empty 2-D (h, w) array, got shape {cam.shape}")
        if not np.isfinite(cam).all():
            raise ValueError(f"map {index} contains NaN or infinite values")
        if cam.shape != (height, width):
            cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
        total += normalize_cam(cam)
    return normalize_cam(total / len(maps))
