"""Faithfulness of a map to the model: does the model's confidence follow the map?

The model is any callable ``predict_fn`` mapping a float32 batch ``(N, H, W, C)`` to class
probabilities ``(N, n_classes)``. A map whose shape differs from the image's ``(H, W)`` is
resized bilinearly in float64 (:func:`camcore.maps.resize_map`) first.

* Average Drop / Increase in Confidence (Chattopadhyay et al. 2018, "Grad-CAM++").
* Deletion / insertion curves and their area (Petsiuk et al. 2018, "RISE").

ROAD (remove-and-debias) lives in :mod:`camcore.metrics.road`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import cv2
import numpy as np

from camcore.metrics._common import (
    PredictFn,
    as_image,
    batched_scores,
    checked_map,
    class_scores,
    pixel_rank,
)
from camcore.metrics.base import Column, Curve, Metric, MetricInputs

__all__ = [
    "PredictFn",
    "DropIncrease",
    "average_drop_increase",
    "summarize_drop_increase",
    "deletion_curve",
    "insertion_curve",
    "auc",
    "AVERAGE_DROP",
    "INCREASED_CONFIDENCE",
    "DELETION_AUC",
    "INSERTION_AUC",
    "DELETION_CURVE",
    "INSERTION_CURVE",
    "DROP_INCREASE_METRIC",
    "DELETION_METRIC",
    "INSERTION_METRIC",
]


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
    img = as_image(x)
    c = checked_map(cam, img.shape[:2]).astype(np.float32)[..., None]
    explanation = c * img + (1.0 - c) * np.float32(baseline)
    y, o = class_scores(predict_fn, np.stack([img, explanation]), class_index)
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
    img = as_image(x)
    rank = pixel_rank(checked_map(saliency, img.shape[:2]))
    bounds = _step_bounds(rank.size, steps)
    base = _broadcast_baseline(baseline, img)

    def make_batch(idx: np.ndarray) -> np.ndarray:
        removed = rank[None] < bounds[idx, None, None]
        return np.where(removed[..., None], base[None], img[None])

    return batched_scores(predict_fn, make_batch, bounds.size, class_index, batch_size)


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
    img = as_image(x)
    rank = pixel_rank(checked_map(saliency, img.shape[:2]))
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

    return batched_scores(predict_fn, make_batch, bounds.size, class_index, batch_size)


def auc(curve: Sequence[float] | np.ndarray) -> float:
    """Area under a curve sampled at equally spaced x in [0, 1], by the trapezoid rule.

    With ``n`` points, ``x_k = k / (n - 1)`` (Petsiuk et al. 2018, sec. 4.1, report the AUC
    of deletion / insertion curves over the fraction of pixels changed).
    """
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1 or y.size < 2:
        raise ValueError("a curve needs at least 2 points")
    return float(np.trapezoid(y, dx=1.0 / (y.size - 1)))



# ---------------------------------------------------------- the registry entries

AVERAGE_DROP = Column("average_drop", "Avg Drop % ↓", "Average Drop %", False, fmt="{:.1f}", distribution=True,
                      worst="highest Average Drop")
INCREASED_CONFIDENCE = Column("increased_confidence", "Increase % ↑", "Increase in Confidence", True,
                              summary="rate", summary_name="increase_in_confidence", fmt="{:.1f}")
DELETION_AUC = Column("deletion_auc", "deletion AUC ↓", "Deletion AUC", False, distribution=True,
                      worst="highest deletion AUC")
INSERTION_AUC = Column("insertion_auc", "insertion AUC ↑", "Insertion AUC", True, distribution=True,
                       worst="lowest insertion AUC")
DELETION_CURVE = Curve("deletion", "fraction of pixels deleted", "class probability (lower AUC is better)")
INSERTION_CURVE = Curve("insertion", "fraction of pixels inserted", "class probability (higher AUC is better)")


def curve_row(curve: Curve, area: Column, values: np.ndarray, xs: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``{area: AUC of values}`` plus one column per point of ``curve`` (x from ``xs``)."""
    row = {area.name: auc(values)}
    row.update({curve.column(x): float(v) for x, v in zip(xs, values)})
    return row


def _drop_increase(inputs: MetricInputs) -> dict[str, float]:
    found = average_drop_increase(inputs.predict_fn, inputs.x, inputs.saliency, inputs.class_index)
    return {AVERAGE_DROP.name: found.drop, INCREASED_CONFIDENCE.name: float(found.increased)}


def _fractions(steps: int) -> np.ndarray:
    return np.arange(steps + 1) / steps


def _deletion(inputs: MetricInputs) -> dict[str, float]:
    values = deletion_curve(inputs.predict_fn, inputs.x, inputs.saliency, inputs.class_index, steps=inputs.steps,
                            baseline=inputs.blurred)
    return curve_row(DELETION_CURVE, DELETION_AUC, values, _fractions(inputs.steps))


def _insertion(inputs: MetricInputs) -> dict[str, float]:
    # the canvas is the blurred image, as in Petsiuk et al. (start="blur" on the same sigma)
    values = insertion_curve(inputs.predict_fn, inputs.x, inputs.saliency, inputs.class_index, steps=inputs.steps,
                             baseline=inputs.blurred)
    return curve_row(INSERTION_CURVE, INSERTION_AUC, values, _fractions(inputs.steps))


DROP_INCREASE_METRIC = Metric(
    key="drop_increase", label="Average Drop / Increase in Confidence",
    columns=(AVERAGE_DROP, INCREASED_CONFIDENCE), compute=_drop_increase,
    help="the class probability on the map times the image (Chattopadhyay et al. 2018)",
)
DELETION_METRIC = Metric(
    key="deletion", label="Deletion", columns=(DELETION_AUC,), curves=(DELETION_CURVE,), compute=_deletion,
    help="most salient pixels replaced by the blurred image step by step (Petsiuk et al. 2018)",
)
INSERTION_METRIC = Metric(
    key="insertion", label="Insertion", columns=(INSERTION_AUC,), curves=(INSERTION_CURVE,), compute=_insertion,
    help="most salient pixels revealed on the blurred image step by step (Petsiuk et al. 2018)",
)
