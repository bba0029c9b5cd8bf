"""Evaluation metrics for saliency / class-activation maps.

Two families:

* **Localization** against a ground-truth defect mask (bool ``(H, W)``): thresholded
  IoU / Dice, IoU-vs-threshold curves, the pointing game and the energy-based pointing
  game.
* **Faithfulness** against the model, which is any callable ``predict_fn`` mapping a
  float32 batch ``(N, H, W, C)`` to class probabilities ``(N, n_classes)``: Average Drop /
  Increase in Confidence, deletion / insertion curves and ROAD.

Conventions shared by every function here:

* A map whose shape differs from the target ``(H, W)`` (e.g. a 14x14 layer-resolution CAM)
  is resized bilinearly (``cv2.INTER_LINEAR``) to ``(H, W)`` first, see :func:`resize_map`.
* Maps are expected in ``[0, 1]``; thresholds are **absolute** values on that scale, not
  quantiles. Non-finite map values raise ``ValueError`` rather than being silently dropped.
* Degenerate inputs have defined results and never produce NaN; each function documents
  its convention (an all-zero map scores IoU/Dice 0 against a non-empty mask, misses the
  pointing game, and has energy 0).

This module only needs numpy and OpenCV; it must not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

import cv2
import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_ROAD_PERCENTAGES",
    "PredictFn",
    "DropIncrease",
    "resize_map",
    "threshold_map",
    "iou",
    "dice",
    "iou_curve",
    "dice_curve",
    "best_threshold",
    "pointing_game",
    "energy_pointing_game",
    "average_drop_increase",
    "summarize_drop_increase",
    "deletion_curve",
    "insertion_curve",
    "auc",
    "noisy_linear_impute",
    "road_curve",
    "random_map",
    "control_maps",
    "flag_below_controls",
]

PredictFn = Callable[[np.ndarray], np.ndarray]
"""Batch ``(N, H, W, C)`` float32 -> class probabilities ``(N, n_classes)``."""

DEFAULT_THRESHOLDS: np.ndarray = np.linspace(0.05, 0.95, 19)
DEFAULT_THRESHOLDS.setflags(write=False)  # shared module constant: keep it immutable

DEFAULT_ROAD_PERCENTAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# ROAD's noisy linear imputation stencil (Rong et al. 2022): a removed pixel is
# the weighted mean of its 8 neighbours, 1/6 for the 4 direct and 1/12 for the 4 diagonal
# ones (the weights sum to 1 in the interior).
_ROAD_KERNEL = np.array(
    [[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=np.float64
)


# --------------------------------------------------------------------------- helpers


def _as_map(cam: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validated float64 2-D map, resized to ``shape`` when given.

    float64 so that thresholding in :func:`threshold_map` and the sorted-count shortcut
    in :func:`iou_curve` compare exactly the same numbers.
    """
    arr = np.asarray(cam)
    if arr.ndim != 2:
        raise ValueError(f"a map must be 2-D (h, w), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("a map must not be empty")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("map contains NaN or inf")
    if shape is not None and arr.shape != tuple(shape):
        arr = cv2.resize(arr, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
    return arr


def _as_mask(mask: np.ndarray) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _as_thresholds(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("thresholds must be a non-empty 1-D sequence of finite numbers")
    return arr


def _as_image(x: np.ndarray) -> np.ndarray:
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


def _class_scores(predict_fn: PredictFn, batch: np.ndarray, class_index: int) -> np.ndarray:
    """Probability of ``class_index`` for each image of ``batch``, validated."""
    out = np.asarray(predict_fn(np.ascontiguousarray(batch, dtype=np.float32)))
    if out.ndim != 2 or out.shape[0] != batch.shape[0]:
        raise ValueError(
            f"predict_fn must return (N, n_classes) = ({batch.shape[0]}, ...), got {out.shape}"
        )
    if not 0 <= class_index < out.shape[1]:
        raise IndexError(f"class_index {class_index} out of range for {out.shape[1]} classes")
    return out[:, class_index].astype(np.float64)


def _batched_scores(
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
        scores[idx] = _class_scores(predict_fn, make_batch(idx), class_index)
    return scores


def _pixel_rank(saliency: np.ndarray, descending: bool = True) -> np.ndarray:
    """``rank[i, j]`` = position of pixel (i, j) in the removal order.

    Ties keep raster (row-major) order (stable sort), so flat regions of a map - common
    after bilinear upsampling - are removed deterministically.
    """
    flat = saliency.ravel()
    order = np.argsort(-flat if descending else flat, kind="stable")
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    return rank.reshape(saliency.shape)


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


def resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return ``cam`` as float64 of shape ``shape = (H, W)``.

    If the shapes differ the map is resized with bilinear interpolation
    (``cv2.resize(..., INTER_LINEAR)``), the usual way CAMs are brought from layer to image
    resolution (Selvaraju et al. 2017, "Grad-CAM"). The same interpolation is used
    when the map is larger than ``shape``. Raises ``ValueError`` on non-2-D or non-finite
    input.
    """
    return _as_map(cam, (int(shape[0]), int(shape[1])))


# ---------------------------------------------------------------------- localization


def threshold_map(
    cam: np.ndarray, threshold: float, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Binary prediction ``cam >= threshold`` (bool), resized to ``shape`` first if given.

    ``threshold`` is **absolute** on the map's ``[0, 1]`` scale (not a quantile and not
    relative to the map's maximum), so an all-zero map yields an empty prediction for
    every ``threshold > 0``.
    """
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError("threshold must be finite")
    return _as_map(cam, shape) >= t


def _overlap_counts(
    cam: np.ndarray, mask: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """(|P_t & M|, |P_t|, |M|) for every threshold t, where P_t = {cam >= t}.

    Sorting once and binary-searching every threshold costs O(N log N + T log N) instead of
    T full passes over the image; counts equal those of ``cam >= t`` exactly because the
    comparison is done on the same float64 values.
    """
    m = _as_mask(mask)
    c = _as_map(cam, m.shape)
    all_sorted = np.sort(c, axis=None)
    in_sorted = np.sort(c[m], axis=None)
    pred = all_sorted.size - np.searchsorted(all_sorted, thresholds, side="left")
    inter = in_sorted.size - np.searchsorted(in_sorted, thresholds, side="left")
    return inter.astype(np.int64), pred.astype(np.int64), int(in_sorted.size)


def _iou_from_counts(inter: np.ndarray, pred: np.ndarray, n_mask: int) -> np.ndarray:
    union = pred + n_mask - inter
    # Empty prediction vs empty mask: perfect agreement, IoU 1 (no 0/0).
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _dice_from_counts(inter: np.ndarray, pred: np.ndarray, n_mask: int) -> np.ndarray:
    total = pred + n_mask
    return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)


def iou_curve(
    cam: np.ndarray,
    mask: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """IoU ``|P_t & M| / |P_t | M|`` of ``P_t = {cam >= t}`` vs ``mask`` for every ``t``.

    Vectorized; equals ``[iou(cam, mask, t) for t in thresholds]``. Same conventions as
    :func:`iou`. Returns float64 of the same length as ``thresholds``.
    """
    t = _as_thresholds(thresholds)
    return _iou_from_counts(*_overlap_counts(cam, mask, t))


def dice_curve(
    cam: np.ndarray,
    mask: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """Dice ``2|P_t & M| / (|P_t| + |M|)`` for every threshold ``t``; see :func:`dice`."""
    t = _as_thresholds(thresholds)
    return _dice_from_counts(*_overlap_counts(cam, mask, t))


def iou(cam: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """Intersection over union of ``{cam >= threshold}`` and the ground-truth ``mask``.

    ``IoU = |P & M| / |P | M|`` (Jaccard index; as used for CAM localization e.g. in
    Zhou et al. 2016, "Learning Deep Features for Discriminative Localization").
    ``cam`` is resized to ``mask.shape`` if needed; ``threshold`` is absolute.

    Conventions: empty prediction vs non-empty mask -> 0.0 (so an all-zero map scores 0);
    empty prediction vs empty mask -> 1.0 (nothing predicted, nothing there). Exclude
    defect-free images from localization averages if the latter is not wanted.
    """
    return float(iou_curve(cam, mask, [threshold])[0])


def dice(cam: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """Dice coefficient ``2|P & M| / (|P| + |M|)`` of ``{cam >= threshold}`` and ``mask``.

    (Dice 1945, "Measures of the amount of ecologic association between species".)
    Same resizing and empty-set conventions as :func:`iou`: 0.0 for an empty prediction
    against a non-empty mask, 1.0 when both are empty.
    """
    return float(dice_curve(cam, mask, [threshold])[0])


def best_threshold(
    cam: np.ndarray,
    mask: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> tuple[float, float]:
    """``(threshold, iou)`` maximizing IoU over ``thresholds``.

    Ties go to the first maximizing threshold in the given order (the lowest one for the
    ascending default grid). Note this is an oracle per image: it uses the ground truth,
    so report it as an upper bound, not as a deployable threshold.
    """
    t = _as_thresholds(thresholds)
    curve = _iou_from_counts(*_overlap_counts(cam, mask, t))
    k = int(np.argmax(curve))
    return float(t[k]), float(curve[k])


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy * yy + xx * xx <= radius * radius).astype(np.uint8)


def pointing_game(cam: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """Pointing-game hit: does the map's maximum fall inside the ground-truth mask?

    Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop" (ECCV): a hit
    if the maximum point lies within the object region, allowing ``tolerance`` pixels
    (they use 15). Here the mask is grown by a Euclidean disc of radius
    ``tolerance`` (default 0: the maximum must lie on a mask pixel). ``cam`` is resized to
    ``mask.shape`` first.

    Conventions: if several pixels tie for the maximum (plateaus are common after
    upsampling), *all* of them must lie in the (grown) mask - otherwise a constant map
    would hit every non-empty mask. A map whose maximum is <= 0 (e.g. all-zero) has no
    peak and returns False; an empty mask always returns False.
    """
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    m = _as_mask(mask)
    c = _as_map(cam, m.shape)
    peak = c.max()
    if peak <= 0.0 or not m.any():
        return False
    region = m
    if tolerance > 0:
        region = cv2.dilate(m.astype(np.uint8), _disc(int(tolerance))).astype(bool)
    return bool(np.all(region[c == peak]))


def energy_pointing_game(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total mass inside the mask: ``sum(cam * M) / sum(cam)``.

    Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks" (CVPR workshops), sec. 5.2, energy-based pointing game (there with a
    bounding-box mask; here any bool mask). ``cam`` is resized to ``mask.shape`` first and
    must be non-negative (``ValueError`` otherwise). An all-zero map returns 0.0.
    """
    m = _as_mask(mask)
    c = _as_map(cam, m.shape)
    if c.min() < 0.0:
        raise ValueError("energy_pointing_game needs a non-negative map")
    total = float(c.sum())
    if total <= 0.0:
        return 0.0
    return float(c[m].sum() / total)


# ---------------------------------------------------------------------- faithfulness


class DropIncrease(NamedTuple):
    """Per-image pieces of Average Drop / Increase in Confidence."""

    drop: float
    """``max(0, Y_c - O_c) / Y_c * 100`` (percent)."""
    increased: bool
    """``Y_c < O_c``."""


def average_drop_increase(
    predict_fn: PredictFn,
    x: np.ndarray,
    cam: np.ndarray,
    class_index: int,
    baseline: float = 0.0,
) -> DropIncrease:
    """Per-image Average Drop and Increase in Confidence terms.

    Chattopadhyay et al. 2018, "Grad-CAM++" (WACV), sec. 5.1 (also Wang et al. 2020,
    Score-CAM, sec. 5.1): with ``Y_c`` the class probability on the image and ``O_c`` on
    the explanation map times the image, ``E = L_c * I``, the image's contributions are
    ``drop = max(0, Y_c - O_c) / Y_c * 100`` and ``increased = Y_c < O_c``; average both
    over a data set with :func:`summarize_drop_increase`.

    ``cam`` is resized to ``x``'s ``(H, W)`` and broadcast over channels. The product is
    taken on ``x`` as given (the preprocessed input): for zero-centred preprocessing a
    zero map means "mean colour", not black. ``baseline`` generalizes the product to
    ``cam * x + (1 - cam) * baseline``; the default 0 is the paper's definition.
    If ``Y_c <= 0`` the drop is defined as 0 (there is no confidence to lose).
    Both inputs go through ``predict_fn`` in one batch of 2.
    """
    img = _as_image(x)
    c = _as_map(cam, img.shape[:2]).astype(np.float32)[..., None]
    explanation = c * img + (1.0 - c) * np.float32(baseline)
    y, o = _class_scores(predict_fn, np.stack([img, explanation]), class_index)
    drop = max(0.0, y - o) / y * 100.0 if y > 0.0 else 0.0
    return DropIncrease(drop=float(drop), increased=bool(y < o))


def summarize_drop_increase(
    results: Iterable[DropIncrease | tuple[float, bool]],
) -> dict[str, float]:
    """Data-set aggregate of :func:`average_drop_increase` results.

    Returns ``{"average_drop": mean drop in %, "increase_in_confidence": % of images whose
    confidence increased, "n_images": count}``. Lower Average Drop and higher Increase are
    better. Raises ``ValueError`` on an empty input rather than returning NaN.
    """
    rows = [(float(d), bool(inc)) for d, inc in results]
    if not rows:
        raise ValueError("no results to summarize")
    drops = np.array([d for d, _ in rows])
    increased = np.array([inc for _, inc in rows], dtype=np.float64)
    return {
        "average_drop": float(drops.mean()),
        "increase_in_confidence": float(increased.mean() * 100.0),
        "n_images": float(len(rows)),
    }


def _step_bounds(n_pixels: int, steps: int) -> np.ndarray:
    if steps < 1:
        raise ValueError("steps must be >= 1")
    # Integer arithmetic: exact, monotone, and the last bound is exactly every pixel.
    return np.arange(steps + 1, dtype=np.int64) * n_pixels // steps


def _broadcast_baseline(baseline: float | np.ndarray, img: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(baseline, dtype=np.float32), img.shape)


def deletion_curve(
    predict_fn: PredictFn,
    x: np.ndarray,
    saliency: np.ndarray,
    class_index: int,
    steps: int = 100,
    baseline: float | np.ndarray = 0.0,
    batch_size: int = 32,
) -> np.ndarray:
    """Deletion curve: class probability as the most salient pixels are removed.

    Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models" (BMVC), sec. 4.1: pixels are ordered by decreasing saliency (ties in raster
    order) and set to ``baseline`` in ``steps`` equal chunks (chunk boundaries
    ``k * H * W // steps``). Returns float64 of length ``steps + 1``: point ``k`` is the
    probability after removing the first ``k`` chunks, so point 0 is the unperturbed
    image and the last point the all-baseline image. Lower AUC (see :func:`auc`) is more
    faithful. ``saliency`` is resized to ``(H, W)``; all channels of a pixel are removed
    together. ``baseline`` is a scalar or an array broadcastable to ``(H, W, C)``, in the
    units of ``x``. The model is called once per ``batch_size`` perturbed inputs.
    """
    img = _as_image(x)
    rank = _pixel_rank(_as_map(saliency, img.shape[:2]))
    bounds = _step_bounds(rank.size, steps)
    base = _broadcast_baseline(baseline, img)

    def make_batch(idx: np.ndarray) -> np.ndarray:
        removed = rank[None] < bounds[idx, None, None]
        return np.where(removed[..., None], base[None], img[None])

    return _batched_scores(predict_fn, make_batch, bounds.size, class_index, batch_size)


def insertion_curve(
    predict_fn: PredictFn,
    x: np.ndarray,
    saliency: np.ndarray,
    class_index: int,
    steps: int = 100,
    baseline: float | np.ndarray = 0.0,
    batch_size: int = 32,
    start: Literal["baseline", "blur"] = "baseline",
    blur_sigma: float = 5.0,
) -> np.ndarray:
    """Insertion curve: class probability as the most salient pixels are revealed.

    Petsiuk et al. 2018, RISE, sec. 4.1: starting from a canvas - ``baseline``
    (default) or, with ``start="blur"``, a Gaussian blur of ``x`` with standard deviation
    ``blur_sigma`` pixels as in the paper - the pixels of ``x`` are copied in by
    decreasing saliency (ties in raster order) in ``steps`` equal chunks. Returns float64
    of length ``steps + 1``: point 0 is the bare canvas, the last point ``x`` itself.
    Higher AUC is more faithful. Batching and resizing as in :func:`deletion_curve`.
    """
    img = _as_image(x)
    rank = _pixel_rank(_as_map(saliency, img.shape[:2]))
    bounds = _step_bounds(rank.size, steps)
    if start == "baseline":
        canvas = _broadcast_baseline(baseline, img)
    elif start == "blur":
        if blur_sigma <= 0:
            raise ValueError("blur_sigma must be > 0")
        canvas = cv2.GaussianBlur(img, (0, 0), float(blur_sigma)).reshape(img.shape)
    else:
        raise ValueError(f"start must be 'baseline' or 'blur', got {start!r}")

    def make_batch(idx: np.ndarray) -> np.ndarray:
        revealed = rank[None] < bounds[idx, None, None]
        return np.where(revealed[..., None], img[None], canvas[None])

    return _batched_scores(predict_fn, make_batch, bounds.size, class_index, batch_size)


def auc(curve: Sequence[float] | np.ndarray) -> float:
    """Area under a curve sampled at equally spaced x in [0, 1], by the trapezoid rule.

    With ``n`` points, ``x_k = k / (n - 1)`` (Petsiuk et al. 2018, sec. 4.1, report the AUC
    of deletion / insertion curves over the fraction of pixels changed).
    """
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise ValueError("a curve needs at least 2 points")
    return float(np.trapezoid(y, dx=1.0 / (y.size - 1)))


# ------------------------------------------------------------------------------ ROAD


# Grids in the imputation solver are stored as (C, h + 1, w): channels share the matrix and
# are solved together, and the extra all-zero row below each channel plane separates the
# planes, so one 2-D filter2D call over the (C * (h + 1), w) view computes every channel's
# neighbour sums without mixing channels (the separator is never an unknown).


def _neighbour_sum(v: np.ndarray) -> np.ndarray:
    """Sum of ``_ROAD_KERNEL``-weighted neighbours of every pixel of a (C, h + 1, w) grid.

    Zero padding drops neighbours outside the image.
    """
    c, rows, w = v.shape
    flat = np.ascontiguousarray(v).reshape(c * rows, w)
    return cv2.filter2D(flat, -1, _ROAD_KERNEL, borderType=cv2.BORDER_CONSTANT).reshape(
        c, rows, w
    )


def _planes(a: np.ndarray) -> np.ndarray:
    """(h, w) or (h, w, C) -> (C, h + 1, w) float64 with a zero separator row."""
    a3 = a[..., None] if a.ndim == 2 else a
    h, w, c = a3.shape
    out = np.zeros((c, h + 1, w), np.float64)
    out[:, :h] = np.moveaxis(a3, -1, 0)
    return out


_STENCIL_OFFSETS = tuple(
    (dy, dx, float(_ROAD_KERNEL[dy + 1, dx + 1]))
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
)


class _ImputationGrid:
    """One level of the geometric-multigrid preconditioner for ROAD's imputation system.

    The operator is ``L = D - A`` on the unknown (removed) pixels: ``A`` holds the 1/6 and
    1/12 neighbour weights, ``D`` the in-image weight sum of each pixel, and kept pixels
    act as Dirichlet boundary. Plain CG needs on the order of one iteration per pixel of
    hole diameter (200-400 for a 50% hole at 224x224); a V-cycle preconditioner makes
    that ~10, nearly independent of the hole size (Briggs, Henson & McCormick, "A Multigrid
    Tutorial", 2nd ed., ch. 3-4).

    Coarse level: 2x2 blocks whose pixels are all unknown (so the coarse problem keeps a
    Dirichlet boundary and stays non-singular), re-discretized with the same stencil;
    bilinear prolongation ``P`` and restriction ``P^T``, with the same Jacobi sweeps
    before and after (weight 1, which damps the stencil's high frequencies by 3x): that
    keeps the preconditioner symmetric positive definite, as CG requires.
    """

    _SWEEPS = 2
    _DENSE_MAX = 64  # unknowns up to which a level is solved exactly
    _DENSE_MAX_THIN = 1024  # same, for a level too thin to coarsen further

    def __init__(self, removed: np.ndarray) -> None:
        h, w = removed.shape
        self.h, self.w = h, w
        self.mask = _planes(removed.astype(np.float64))
        weight_sum = _neighbour_sum(_planes(np.ones((h, w))))
        self.diag = weight_sum * self.mask
        self.inv_diag = np.divide(
            self.mask, weight_sum, out=np.zeros_like(self.mask), where=self.mask > 0
        )
        self.coarse: _ImputationGrid | None = None
        self.dense_inverse: np.ndarray | None = None
        self.unknown_index = np.flatnonzero(np.pad(removed, ((0, 1), (0, 0))))
        n = self.unknown_index.size
        if n <= self._DENSE_MAX:
            self.dense_inverse = np.linalg.inv(self._dense_matrix(removed))
        elif min(h, w) > 8:
            hc, wc = (h + 1) // 2, (w + 1) // 2
            padded = np.ones((2 * hc, 2 * wc), bool)
            padded[:h, :w] = removed
            coarse = padded.reshape(hc, 2, wc, 2).all(axis=(1, 3))
            # No all-unknown block means scattered unknowns next to known pixels: well
            # conditioned, smoothing alone preconditions it.
            if coarse.any():
                self.coarse = _ImputationGrid(coarse)
        elif n <= self._DENSE_MAX_THIN:
            self.dense_inverse = np.linalg.inv(self._dense_matrix(removed))

    def _dense_matrix(self, removed: np.ndarray) -> np.ndarray:
        h, w = removed.shape
        index = np.full((h, w), -1, np.int64)
        ys, xs = np.nonzero(removed)
        index[ys, xs] = np.arange(ys.size)
        matrix = np.diag(self.diag[0, :h][ys, xs])
        for dy, dx, weight in _STENCIL_OFFSETS:
            ny, nx = ys + dy, xs + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            rows, cols = np.nonzero(ok)[0], index[ny[ok], nx[ok]]
            keep = cols >= 0
            matrix[rows[keep], cols[keep]] -= weight
        return matrix

    def apply(self, v: np.ndarray) -> np.ndarray:
        """``L v`` for ``v`` that is zero off the unknowns."""
        out = _neighbour_sum(v)
        out *= self.mask
        np.subtract(self.diag * v, out, out=out)
        return out

    def _smooth(self, r: np.ndarray, e: np.ndarray, sweeps: int) -> np.ndarray:
        for _ in range(sweeps):
            e += (r - self.apply(e)) * self.inv_diag
        return e

    def _prolong(self, coarse_e: np.ndarray) -> np.ndarray:
        # Bilinear 2x interpolation between cell centres (weights 3/4 and 1/4, edge cells
        # replicated); separable, rows then columns.
        e = coarse_e[:, :-1]
        c, hc, wc = e.shape
        f = np.empty((c, 2 * hc, wc))
        even, odd = f[:, 0::2], f[:, 1::2]
        np.multiply(e, 0.75, out=even)
        even[:, 1:] += 0.25 * e[:, :-1]
        even[:, 0] += 0.25 * e[:, 0]
        np.multiply(e, 0.75, out=odd)
        odd[:, :-1] += 0.25 * e[:, 1:]
        odd[:, -1] += 0.25 * e[:, -1]
        g = np.empty((c, 2 * hc, 2 * wc))
        even, odd = g[:, :, 0::2], g[:, :, 1::2]
        np.multiply(f, 0.75, out=even)
        even[:, :, 1:] += 0.25 * f[:, :, :-1]
        even[:, :, 0] += 0.25 * f[:, :, 0]
        np.multiply(f, 0.75, out=odd)
        odd[:, :, :-1] += 0.25 * f[:, :, 1:]
        odd[:, :, -1] += 0.25 * f[:, :, -1]
        out = np.zeros((c, self.h + 1, self.w))
        np.multiply(g[:, : self.h, : self.w], self.mask[:, : self.h], out=out[:, : self.h])
        return out

    def _restrict(self, r: np.ndarray) -> np.ndarray:
        # Exact transpose of _prolong (required for a symmetric preconditioner).
        coarse = self.coarse
        if coarse is None:
            raise RuntimeError("restriction needs a coarse grid")
        hc, wc = coarse.h, coarse.w
        c = r.shape[0]
        g = np.zeros((c, 2 * hc, 2 * wc))
        g[:, : self.h, : self.w] = (r * self.mask)[:, : self.h]
        even, odd = g[:, :, 0::2], g[:, :, 1::2]
        f = 0.75 * (even + odd)
        f[:, :, :-1] += 0.25 * even[:, :, 1:]
        f[:, :, 0] += 0.25 * even[:, :, 0]
        f[:, :, 1:] += 0.25 * odd[:, :, :-1]
        f[:, :, -1] += 0.25 * odd[:, :, -1]
        even, odd = f[:, 0::2], f[:, 1::2]
        e = 0.75 * (even + odd)
        e[:, :-1] += 0.25 * even[:, 1:]
        e[:, 0] += 0.25 * even[:, 0]
        e[:, 1:] += 0.25 * odd[:, :-1]
        e[:, -1] += 0.25 * odd[:, -1]
        out = np.zeros((c, hc + 1, wc))
        out[:, :hc] = e
        return out * coarse.mask

    def precondition(self, r: np.ndarray) -> np.ndarray:
        """One symmetric V-cycle: an approximation of ``L^-1 r``."""
        if self.dense_inverse is not None:
            c = r.shape[0]
            flat = r.reshape(c, -1)
            out = np.zeros_like(flat)
            out[:, self.unknown_index] = flat[:, self.unknown_index] @ self.dense_inverse
            return out.reshape(r.shape)
        e = self._smooth(r, r * self.inv_diag, self._SWEEPS - 1)
        if self.coarse is None:
            # No coarse grid (e.g. scattered pixels): the problem is well conditioned
            # and a few more sweeps are enough.
            return self._smooth(r, e, self._SWEEPS)
        e += self._prolong(self.coarse.precondition(self._restrict(r - self.apply(e))))
        return self._smooth(r, e, self._SWEEPS)


def _solve_imputation(img: np.ndarray, rem: np.ndarray, rtol: float, max_iter: int) -> np.ndarray:
    """Solve ROAD's imputation system (see :func:`noisy_linear_impute`) with
    multigrid-preconditioned conjugate gradients.

    Returns float64 (H, W, C) holding the solution on removed pixels and 0 elsewhere.
    """
    h = img.shape[0]
    grid = _ImputationGrid(rem)
    known = _planes(img) * _planes((~rem).astype(np.float64))
    b = grid.mask * _neighbour_sum(known)

    def dot(a: np.ndarray, b_: np.ndarray) -> np.ndarray:
        return np.einsum("chw,chw->c", a, b_)

    u = np.zeros_like(b)
    r = b.copy()
    z = grid.precondition(r)
    p = z.copy()
    rz = dot(r, z)
    limit = rtol * np.sqrt(dot(b, b))
    for _ in range(max_iter):
        if np.all(np.sqrt(dot(r, r)) <= limit):
            break
        ap = grid.apply(p)
        pap = dot(p, ap)
        # A converged channel has p == 0; keep it frozen instead of dividing 0 by 0.
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)[:, None, None]
        u += alpha * p
        r -= alpha * ap
        z = grid.precondition(r)
        rz_new = dot(r, z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)[:, None, None]
        p = z + beta * p
        rz = rz_new
    return np.moveaxis(u[:, :h], 0, -1)


def noisy_linear_impute(
    image: np.ndarray,
    removed: np.ndarray,
    noise_std: float = 0.01,
    seed: int | np.random.Generator | None = None,
    *,
    rtol: float = 1e-8,
    max_iter: int = 1000,
) -> np.ndarray:
    """Replace the ``removed`` pixels of ``image`` by ROAD's noisy linear imputation.

    Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods" (ICML): every removed pixel must equal the weighted mean of its 8
    neighbours, weight 1/6 for direct and 1/12 for diagonal neighbours, which gives one
    sparse linear system per channel; known neighbours enter the right-hand side. At the
    image border, neighbours outside the image are dropped and the remaining weights
    renormalized to sum to 1. Gaussian noise ``N(0, noise_std^2)`` (in units of
    ``image``; 0.01 suits inputs scaled to about unit range - scale it for 0..255 or
    caffe-style inputs) is then added to the imputed pixels only.

    Multiplying row ``i`` by its weight sum ``d_i`` makes the system ``(D - A) u = b``
    symmetric positive definite (a Dirichlet graph Laplacian) whenever at least one pixel
    is kept, so it is solved with conjugate gradients preconditioned by a geometric
    multigrid V-cycle (numpy/OpenCV only, all channels at once; ~10 iterations, about
    0.1 s at 224x224 whatever the hole shape) until the residual is below ``rtol`` times
    the right-hand side, or for at most ``max_iter`` iterations.

    ``image`` is ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``; ``removed`` a bool
    ``(H, W)`` mask. Returns float32 with the shape of ``image``. Raises ``ValueError``
    if every pixel is removed (the system is then singular).
    """
    arr = np.asarray(image)
    out_shape = arr.shape
    if arr.ndim == 2:
        arr = arr[..., None]
    img = _as_image(arr).astype(np.float64)
    rem = _as_mask(removed)
    if rem.shape != img.shape[:2]:
        raise ValueError(f"removed mask {rem.shape} does not match image {img.shape[:2]}")
    if noise_std < 0:
        raise ValueError("noise_std must be >= 0")
    if not rem.any():
        return img.astype(np.float32).reshape(out_shape)
    if rem.all():
        raise ValueError("cannot impute: every pixel is removed")

    # Only the removed pixels and their direct neighbours enter the system, so solving
    # on the bounding box grown by one pixel is exact and much cheaper for small holes
    # (the image-border weight renormalization is unaffected: the box is clipped
    # exactly where the image ends).
    ys, xs = np.nonzero(rem)
    y0, y1 = max(int(ys.min()) - 1, 0), min(int(ys.max()) + 2, rem.shape[0])
    x0, x1 = max(int(xs.min()) - 1, 0), min(int(xs.max()) + 2, rem.shape[1])
    result = img.copy()
    box = (slice(y0, y1), slice(x0, x1))
    solution = _solve_imputation(img[box], rem[box], rtol, max_iter)
    result[box] = np.where(rem[box][..., None], solution, img[box])
    if noise_std > 0:
        rng = np.random.default_rng(seed)
        result[rem] += rng.normal(0.0, noise_std, size=(int(rem.sum()), img.shape[2]))
    return result.astype(np.float32).reshape(out_shape)


def road_curve(
    predict_fn: PredictFn,
    x: np.ndarray,
    saliency: np.ndarray,
    class_index: int,
    percentages: Sequence[float] = DEFAULT_ROAD_PERCENTAGES,
    order: Literal["morf", "lerf"] = "morf",
    noise_std: float = 0.01,
    seed: int | None = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """ROAD: class probability after Remove And Debias at each removal percentage.

    Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods" (ICML): for each ``p`` in ``percentages``, the
    ``round(p * H * W)`` pixels first in the ``order`` are removed and filled by
    :func:`noisy_linear_impute` (which avoids the class-information leak of constant
    baselines), and the model is evaluated on the imputed image (no retraining).
    ``order="morf"`` removes Most Relevant First (decreasing saliency; a faithful map
    makes the curve drop fast, lower is better), ``"lerf"`` Least Relevant First
    (increasing saliency; higher is better). Ties keep raster order. Returns float64 of
    ``len(percentages)``; percentages must lie in ``[0, 1)``. ``seed`` fixes the
    imputation noise (one generator consumed across the percentages in order).
    """
    img = _as_image(x)
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    pcts = np.asarray(percentages, dtype=np.float64)
    if pcts.ndim != 1 or pcts.size == 0 or np.any((pcts < 0) | (pcts >= 1)):
        raise ValueError("percentages must be a non-empty 1-D sequence in [0, 1)")
    rank = _pixel_rank(_as_map(saliency, img.shape[:2]), descending=(order == "morf"))
    counts = np.rint(pcts * rank.size).astype(np.int64)
    if np.any(counts >= rank.size):
        raise ValueError("a percentage rounds to removing every pixel")
    rng = np.random.default_rng(seed)
    imputed = np.stack(
        [noisy_linear_impute(img, rank < k, noise_std=noise_std, seed=rng) for k in counts]
    )
    return _batched_scores(
        predict_fn, lambda idx: imputed[idx], len(imputed), class_index, batch_size
    )


# -------------------------------------------------------------------- sanity controls


def random_map(
    shape: tuple[int, int], seed: int | None = None, sigma: float = 0.0
) -> np.ndarray:
    """Random-saliency control: float32 ``shape`` map in ``[0, 1]``.

    With ``sigma == 0`` (default) pixels are i.i.d. uniform on ``[0, 1)``. With
    ``sigma > 0`` the noise is Gaussian-smoothed (``sigma`` in pixels) to make blob-like
    maps closer in texture to upsampled CAMs, then min-max rescaled to ``[0, 1]``.
    A method that does not beat this control carries no information about the model
    (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").
    """
    rng = np.random.default_rng(seed)
    noise = rng.random((int(shape[0]), int(shape[1])), dtype=np.float32)
    if sigma <= 0:
        return noise
    smooth = cv2.GaussianBlur(noise, (0, 0), float(sigma))
    lo, hi = float(smooth.min()), float(smooth.max())
    if hi <= lo:
        return np.zeros_like(smooth)
    return ((smooth - lo) / (hi - lo)).astype(np.float32)


def control_maps(
    image: np.ndarray, seed: int | None = None, sigma: float = 0.0
) -> dict[str, np.ndarray]:
    """The two control maps for ``image`` (``(H, W[, C])``): ``{"sobel", "random"}``.

    ``"sobel"`` is :func:`camcore.methods.sobel.sobel_gradient` (an edge detector that
    ignores the model), ``"random"`` is :func:`random_map` with ``seed`` and ``sigma``.
    """
    # Imported here so that importing camcore.metrics never pulls in the methods package.
    from camcore.methods.sobel import sobel_gradient

    sobel = sobel_gradient(image)
    return {"sobel": sobel, "random": random_map(sobel.shape, seed=seed, sigma=sigma)}


def flag_below_controls(
    summary: Mapping[str, Mapping[str, float]],
    metric: str,
    higher_is_better: bool = True,
    controls: Sequence[str] = ("sobel", "random"),
) -> dict[str, bool]:
    """Flag methods that fail to strictly beat every control on ``metric``.

    ``summary[method][metric]`` is a data-set-level score (e.g. mean insertion AUC, or
    mean deletion AUC with ``higher_is_better=False``). Returns ``{method: flagged}`` for
    every non-control method; ``flagged`` is True when the method ties or loses against
    at least one control, or when its score is NaN. Raises ``KeyError`` if a control or
    a method lacks the metric.
    """
    missing = [c for c in controls if c not in summary]
    if missing:
        raise KeyError(f"controls missing from summary: {missing}")
    control_scores = [float(summary[c][metric]) for c in controls]
    flags: dict[str, bool] = {}
    for method, scores in summary.items():
        if method in controls:
            continue
        value = float(scores[metric])
        if higher_is_better:
            beats = all(value > c for c in control_scores)
        else:
            beats = all(value < c for c in control_scores)
        # NaN comparisons are False, so a NaN score (or NaN control) is flagged.
        flags[method] = not beats
    return flags
