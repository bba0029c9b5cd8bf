"""Localization of a saliency map against a ground-truth mask: IoU, Dice, pointing games.

The protocol
------------
:func:`localization`, :func:`localization_curves` and :func:`best_threshold` all follow one
rule, so every page that reports a localization number reports the same number:

1. **Resolution: the mask's.** The ground-truth mask is used at its native resolution and
   never resampled. The map, at any resolution (a 14x14 layer map or a 224x224 one), is
   brought to the mask's ``(H, W)`` by bilinear interpolation with
   :func:`camcore.maps.upsample`, the very resize the comparison grid displays (float32,
   clipped to ``[0, 1]``; a map already at ``(H, W)`` is only cast to float32).
2. **Values.** The map must be finite and in ``[0, 1]`` (``ValueError`` otherwise; scale it
   with :func:`camcore.maps.normalize_cam` first). The mask is binary: bool as given,
   integer masks (0/1, 0/255) are on where ``> 0``, float masks where ``>= 0.5``.
3. **Prediction.** A pixel is "on" when ``map >= threshold``; the threshold is absolute on
   the ``[0, 1]`` scale, not a quantile nor a fraction of the map's maximum (so
   ``threshold <= 0`` turns every pixel on and an all-zero map predicts nothing for any
   ``threshold > 0``).
4. **IoU / Dice** of the "on" set ``P`` and the mask ``M``: ``|P & M| / |P | M|`` and
   ``2|P & M| / (|P| + |M|)``. An empty ``P`` against a non-empty ``M`` scores 0; an
   empty ``P`` against an empty ``M`` scores 1 (nothing predicted, nothing there), so
   leave defect-free images out of a localization average if that is not wanted.
5. **Pointing game** (Zhang et al. 2016, "Top-down Neural Attention by Excitation
   Backprop", ECCV): a hit when the map's maximum lies within ``tolerance`` pixels
   (Euclidean distance in mask pixels, inclusive) of a mask pixel; default
   :data:`POINTING_TOLERANCE` = 15 px, the paper's tolerance. When several pixels tie
   for the maximum (plateaus are common after upsampling), **every** one of them must be
   within the tolerance: taking the first argmax would make the result depend on the
   raster order, and taking any maximum would let a constant map hit every mask. A map
   whose maximum is 0 (all-zero) has no peak and misses; an empty mask is always missed.
6. **Energy-based pointing game** (Wang et al. 2020, "Score-CAM", sec. 5.2): the share of
   the map's mass inside the mask, ``sum(map * M) / sum(map)``; 0 for an all-zero map or
   an empty mask (never NaN).

Legacy per-metric functions
---------------------------
:func:`iou`, :func:`dice`, :func:`iou_curve`, :func:`dice_curve`, :func:`threshold_map`,
:func:`pointing_game` and :func:`energy_pointing_game` predate the protocol. They share
its counting, mask rule and conventions (4-6) but resample the map in float64 with
:func:`camcore.maps.resize_map` without the ``[0, 1]`` check, and ``pointing_game``'s
tolerance defaults to 0. New code should call :func:`localization`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from camcore.maps import as_map, upsample
from camcore.metrics._common import as_mask, as_thresholds, checked_map
from camcore.metrics.base import Column, Curve, Metric, MetricInputs

__all__ = [
    "DEFAULT_THRESHOLDS",
    "POINTING_TOLERANCE",
    "Localization",
    "localization",
    "localization_curves",
    "best_threshold",
    "threshold_map",
    "iou",
    "dice",
    "iou_curve",
    "dice_curve",
    "pointing_game",
    "energy_pointing_game",
    "protocol_row",
    "METRIC",
    "POINTING_GAME",
    "ENERGY_POINTING_GAME",
    "GLOBAL_THRESHOLD",
    "IOU_AT_GLOBAL",
    "DICE_AT_GLOBAL",
    "ORACLE_THRESHOLD",
    "ORACLE_IOU",
    "IOU_CURVE",
]

DEFAULT_THRESHOLDS: np.ndarray = np.linspace(0.05, 0.95, 19)
DEFAULT_THRESHOLDS.setflags(write=False)  # shared module constant: keep it immutable

POINTING_TOLERANCE: int = 15
"""Pointing-game tolerance in mask pixels (Zhang et al. 2016 use 15)."""


@dataclass(frozen=True)
class Localization:
    """One map scored against one mask at one threshold under the protocol above."""

    iou: float
    dice: float
    pointing_hit: bool
    energy_pointing: float


# ---------------------------------------------------------------- shared arithmetic


def _overlap_counts(
    c: np.ndarray, m: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """(|P_t & M|, |P_t|, |M|) for every threshold t, where P_t = {c >= t}.

    ``c`` and ``m`` are already at the same shape. Sorting once and binary-searching every
    threshold costs O(N log N + T log N) instead of T full passes over the image; the
    counts equal those of ``c >= t`` exactly because the same float64 values are compared.
    """
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


def _pointing_hit(c: np.ndarray, m: np.ndarray, tolerance: float) -> bool:
    """Every pixel at the map's maximum lies within ``tolerance`` px of a mask pixel."""
    tol = float(tolerance)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError("tolerance must be a finite number >= 0")
    peak = c.max()
    if peak <= 0.0 or not m.any():
        return False
    peaks = c == peak
    if np.all(m[peaks]):
        return True  # no distance needed (also the whole answer when tolerance is 0)
    # Exact Euclidean distance of every pixel to the nearest mask pixel (OpenCV's
    # DIST_MASK_PRECISE is the exact transform, not the 3x3 / 5x5 chamfer approximation).
    distance = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # Squared pixel distances are integers: rounding them undoes the float32 error of the
    # transform, and the float64 square root of that integer is what a caller computes
    # for a distance, so a peak exactly at the tolerance (15 px, sqrt(2) ...) counts as in.
    exact = np.sqrt(np.rint(distance[peaks].astype(np.float64) ** 2))
    return bool(np.all(exact <= tol))


def _energy(c: np.ndarray, m: np.ndarray) -> float:
    if c.min() < 0.0:
        raise ValueError("the energy-based pointing game needs a non-negative map")
    total = float(c.sum())
    if total <= 0.0:
        return 0.0
    return float(c[m].sum() / total)


def _finite_threshold(threshold: float) -> float:
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError("threshold must be finite")
    return t


# -------------------------------------------------------------------- the protocol


def _map_at_mask(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(map at the mask's resolution as float64, bool mask): rules 1-2 of the protocol."""
    m = as_mask(mask)
    c = as_map(cam)
    if c.min() < 0.0 or c.max() > 1.0:
        raise ValueError(
            f"the map must lie in [0, 1], got [{c.min():.4g}, {c.max():.4g}]; "
            "scale it with camcore.maps.normalize_cam first"
        )
    # float64 after the float32 upsample so that thresholds are compared without
    # rounding them to float32.
    return upsample(c, m.shape).astype(np.float64), m


def localization(
    cam: np.ndarray,
    mask: np.ndarray,
    threshold: float,
    *,
    tolerance: float = POINTING_TOLERANCE,
) -> Localization:
    """IoU, Dice, pointing-game hit and energy pointing of ``cam`` against ``mask``.

    Follows the module's protocol: the map is upsampled bilinearly to the mask's
    resolution, a pixel is on when ``map >= threshold`` (absolute, in ``[0, 1]``), the
    pointing game allows ``tolerance`` mask pixels (Zhang et al. 2016) and requires every
    tied maximum to be within it, energy is ``sum(map * M) / sum(map)`` (Wang et al. 2020,
    Score-CAM, sec. 5.2). Degenerate inputs give defined numbers, never NaN.

    >>> import numpy as np
    >>> mask = np.zeros((8, 8), bool); mask[:4, :4] = True
    >>> localization(np.array([[1.0, 0.0], [0.0, 0.0]]), mask, 0.5).pointing_hit
    True
    """
    t = _finite_threshold(threshold)
    c, m = _map_at_mask(cam, mask)
    inter, pred, n_mask = _overlap_counts(c, m, np.array([t]))
    return Localization(
        iou=float(_iou_from_counts(inter, pred, n_mask)[0]),
        dice=float(_dice_from_counts(inter, pred, n_mask)[0]),
        pointing_hit=_pointing_hit(c, m, tolerance),
        energy_pointing=_energy(c, m),
    )


def localization_curves(
    cam: np.ndarray,
    mask: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, Dice) float64 arrays over ``thresholds``, in the given order.

    Element ``k`` equals ``localization(cam, mask, thresholds[k])``'s ``iou`` / ``dice``
    (same protocol), computed with one sort instead of one pass per threshold.
    """
    t = as_thresholds(thresholds)
    c, m = _map_at_mask(cam, mask)
    counts = _overlap_counts(c, m, t)
    return _iou_from_counts(*counts), _dice_from_counts(*counts)


def best_threshold(
    cam: np.ndarray,
    mask: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> tuple[float, float]:
    """``(threshold, iou)`` maximizing the protocol's IoU over ``thresholds``.

    Ties go to the first maximizing threshold in the given order (the lowest one for the
    ascending default grid). Note this is an oracle per image: it uses the ground truth,
    so report it as an upper bound, not as a deployable threshold.
    """
    t = as_thresholds(thresholds)
    curve, _ = localization_curves(cam, mask, t)
    k = int(np.argmax(curve))
    return float(t[k]), float(curve[k])


# ------------------------------------------------------- legacy per-metric functions


def threshold_map(
    cam: np.ndarray, threshold: float, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Binary prediction ``cam >= threshold`` (bool), resized to ``shape`` first if given.

    ``threshold`` is **absolute** on the map's ``[0, 1]`` scale (not a quantile and not
    relative to the map's maximum), so an all-zero map yields an empty prediction for
    every ``threshold > 0``.
    """
    return checked_map(cam, shape) >= _finite_threshold(threshold)


def _legacy_inputs(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = as_mask(mask)
    return checked_map(cam, m.shape), m


def iou_curve(
    cam: np.ndarray,
    mask: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """IoU ``|P_t & M| / |P_t | M|`` of ``P_t = {cam >= t}`` vs ``mask`` for every ``t``.

    Vectorized; equals ``[iou(cam, mask, t) for t in thresholds]``. Same conventions as
    :func:`iou`. Returns float64 of the same length as ``thresholds``.
    """
    t = as_thresholds(thresholds)
    return _iou_from_counts(*_overlap_counts(*_legacy_inputs(cam, mask), t))


def dice_curve(
    cam: np.ndarray,
    mask: np.ndarray,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """Dice ``2|P_t & M| / (|P_t| + |M|)`` for every threshold ``t``; see :func:`dice`."""
    t = as_thresholds(thresholds)
    return _dice_from_counts(*_overlap_counts(*_legacy_inputs(cam, mask), t))


def iou(cam: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """Intersection over union of ``{cam >= threshold}`` and the ground-truth ``mask``.

    ``IoU = |P & M| / |P | M|`` (Jaccard index; as used for CAM localization e.g. in
    Zhou et al. 2016, "Learning Deep Features for Discriminative Localization").
    ``cam`` is resized to ``mask.shape`` in float64 if needed; ``threshold`` is absolute.

    Conventions: empty prediction vs non-empty mask -> 0.0 (so an all-zero map scores 0);
    empty prediction vs empty mask -> 1.0 (nothing predicted, nothing there). Exclude
    defect-free images from localization averages if the latter is not wanted.
    """
    return float(iou_curve(cam, mask, [_finite_threshold(threshold)])[0])


def dice(cam: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """Dice coefficient ``2|P & M| / (|P| + |M|)`` of ``{cam >= threshold}`` and ``mask``.

    (Dice 1945, "Measures of the amount of ecologic association between species".)
    Same resizing and empty-set conventions as :func:`iou`: 0.0 for an empty prediction
    against a non-empty mask, 1.0 when both are empty.
    """
    return float(dice_curve(cam, mask, [_finite_threshold(threshold)])[0])


def pointing_game(cam: np.ndarray, mask: np.ndarray, tolerance: float = 0) -> bool:
    """Pointing-game hit: does the map's maximum fall inside the ground-truth mask?

    Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop" (ECCV): a hit
    if the maximum point lies within the object region, allowing ``tolerance`` pixels
    (they use 15; :func:`localization` defaults to that). Here the tolerance is a
    Euclidean distance in mask pixels, default 0: the maximum must lie on a mask pixel.
    ``cam`` is resized to ``mask.shape`` first.

    Conventions: if several pixels tie for the maximum (plateaus are common after
    upsampling), *all* of them must lie within the tolerance - otherwise a constant map
    would hit every non-empty mask. A map whose maximum is <= 0 (e.g. all-zero) has no
    peak and returns False; an empty mask always returns False.
    """
    c, m = _legacy_inputs(cam, mask)
    return _pointing_hit(c, m, tolerance)


def energy_pointing_game(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total mass inside the mask: ``sum(cam * M) / sum(cam)``.

    Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks" (CVPR workshops), sec. 5.2, energy-based pointing game (there with a
    bounding-box mask; here any mask). ``cam`` is resized to ``mask.shape`` first and
    must be non-negative (``ValueError`` otherwise). An all-zero map returns 0.0.
    """
    return _energy(*_legacy_inputs(cam, mask))


# ------------------------------------------------------------ the registry entry

POINTING_GAME = Column(
    "pointing_game", "pointing game %", "Pointing game (the map's peak in the defect)", True,
    summary="rate", fmt="{:.1f}", worst="pointing game misses", beat_controls="pointing game",
)
ENERGY_POINTING_GAME = Column(
    "energy_pointing_game", "energy PG", "Energy pointing game", True, distribution=True,
    worst="lowest energy pointing game",
)
GLOBAL_THRESHOLD = Column(
    "global_threshold", "best thr.", "Best global threshold (maximizes the mean IoU over the set)", None,
    summary="first", summary_name="best_threshold", fmt="{:.2f}", per_image=False,
)
IOU_AT_GLOBAL = Column(
    "iou_at_global", "IoU@best", "IoU at the best global threshold", True, summary_name="iou_at_best",
    distribution=True, worst="lowest IoU at the best global threshold", beat_controls="mean IoU", per_image=False,
)
DICE_AT_GLOBAL = Column(
    "dice_at_global", "Dice@best", "Dice at the best global threshold", True, summary_name="dice_at_best",
    distribution=True, per_image=False,
)
ORACLE_THRESHOLD = Column("oracle_threshold", "oracle thr.", "Best per-image threshold, an oracle", None, summary="")
ORACLE_IOU = Column("oracle_iou", "oracle IoU", "Best per-image IoU, an oracle", True, distribution=True)
IOU_CURVE = Curve("iou", "threshold on the map", "mean IoU")


def protocol_row(cam: np.ndarray, mask: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """The localization columns of one map (:data:`METRIC`): pointing game and energy
    pointing game, the per-image best threshold and its IoU (first maximum of the IoU
    curve, an oracle), and the IoU curve over ``thresholds``, all by the module's protocol."""
    grid = as_thresholds(thresholds)
    curve, _ = localization_curves(cam, mask, grid)
    best = int(np.argmax(curve))
    found = localization(cam, mask, float(grid[best]))
    row = {
        POINTING_GAME.name: float(found.pointing_hit),
        ENERGY_POINTING_GAME.name: found.energy_pointing,
        ORACLE_THRESHOLD.name: float(grid[best]),
        ORACLE_IOU.name: float(curve[best]),
    }
    row.update({IOU_CURVE.column(t): float(v) for t, v in zip(grid, curve)})
    return row


def _compute(inputs: MetricInputs) -> dict[str, float]:
    if inputs.mask is None:
        raise ValueError("localization needs a defect mask")
    return protocol_row(inputs.cam, inputs.mask, inputs.thresholds)


METRIC = Metric(
    key="localization",
    label="Localization",
    columns=(POINTING_GAME, ENERGY_POINTING_GAME, GLOBAL_THRESHOLD, IOU_AT_GLOBAL, DICE_AT_GLOBAL,
             ORACLE_THRESHOLD, ORACLE_IOU),
    compute=_compute,
    curves=(IOU_CURVE,),
    needs_mask=True,
    help="pointing game, energy pointing game, IoU per threshold, the best per-image and global "
    "thresholds (defective images; the map at its own resolution against the mask at the image's)",
)
"""The localization protocol as a registry entry. The global-threshold columns are filled
over the whole set by :func:`camcore.evaluation.add_global_threshold`."""
