"""Input validation and small helpers shared by the metric families.

The module is internal to :mod:`camcore.metrics` (its names are not re-exported), but its
functions are public within the package: each metric family imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from camcore.maps import as_map, resize_map

PredictFn = Callable[[np.ndarray], np.ndarray]
"""Batch ``(N, H, W, C)`` float32 -> class probabilities ``(N, n_classes)``."""


def checked_map(cam: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validated float64 2-D map, resized bilinearly to ``shape`` when given."""
    return as_map(cam) if shape is None else resize_map(cam, shape)


def as_mask(mask: np.ndarray) -> np.ndarray:
    """A ground-truth mask as bool ``(H, W)``.

    bool masks are taken as they are, integer masks (0/1, 0/255) are on where ``> 0``,
    float masks (soft or resampled ones in ``[0, 1]``) where ``>= 0.5``.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError("mask contains NaN or inf")
        return arr >= 0.5
    if np.issubdtype(arr.dtype, np.integer):
        return arr > 0
    raise TypeError(f"a mask must be bool, integer or float, got dtype {arr.dtype}")


def as_thresholds(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """Thresholds as a float64 1-D array; ValueError if empty, not 1-D or not finite."""
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("thresholds must be a non-empty 1-D sequence of finite numbers")
    return arr


def as_image(x: np.ndarray) -> np.ndarray:
    """One model input as float32 ``(H, W, C)``; accepts ``(1, H, W, C)`` or ``(H, W, C)``."""
    arr = np.asarray(x)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"x must hold exactly one image, got batch shape {arr.shape}")
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"x must be (1, H, W, C) or (H, W, C), got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("x contains NaN or inf")
    return arr


def class_scores(predict_fn: PredictFn, batch: np.ndarray, class_index: int) -> np.ndarray:
    """Probability of ``class_index`` for each image of ``batch``, validated."""
    out = np.asarray(predict_fn(np.ascontiguousarray(batch, dtype=np.float32)))
    if out.ndim != 2 or out.shape[0] != batch.shape[0]:
        raise ValueError(
            f"predict_fn must return (N, n_classes) = ({batch.shape[0]}, ...), got {out.shape}"
        )
    if not 0 <= class_index < out.shape[1]:
        raise IndexError(f"class_index {class_index} out of range for {out.shape[1]} classes")
    return out[:, class_index].astype(np.float64)


def batched_scores(
    predict_fn: PredictFn,
    make_batch: Callable[[np.ndarray], np.ndarray],
    n: int,
    class_index: int,
    batch_size: int,
) -> np.ndarray:
    """Scores of ``n`` perturbed inputs built ``batch_size`` at a time.

    Building lazily keeps peak memory at one batch instead of all ``n`` images.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    scores = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        scores[idx] = class_scores(predict_fn, make_batch(idx), class_index)
    return scores


RANK_RESOLUTION = 1e-4
"""Saliency values closer than this share of the map's range rank as ties (see :func:`pixel_rank`)."""


def pixel_rank(saliency: np.ndarray, descending: bool = True) -> np.ndarray:
    """``rank[i, j]`` = position of pixel (i, j) in the removal order.

    Ties keep raster (row-major) order (stable sort), so flat regions of a map - common
    after bilinear upsampling - are removed deterministically. Values are first rounded to
    ``RANK_RESOLUTION`` of the map's range: the same map computed by two runtimes (TensorFlow
    and ONNX Runtime, fp32) differs by ~1e-6, and near-zero pixels flipping between 0 and
    1e-7 reordered a deletion curve by 0.1 although the maps agreed to 1.6e-6.
    """
    flat = np.asarray(saliency, np.float64).ravel()
    span = float(flat.max() - flat.min()) if flat.size else 0.0
    if span > 0.0:
        flat = np.round((flat - flat.min()) / (span * RANK_RESOLUTION))
    order = np.argsort(-flat if descending else flat, kind="stable")
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    return rank.reshape(saliency.shape)
