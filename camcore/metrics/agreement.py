"""Do two maps look at the same place? Agreement figures of two saliency maps, e.g. the same
method on two models (a retrained model against the one on the line, an exported model
against its training checkpoint).

:func:`compare_maps` brings both maps to one resolution (an explicit ``size``, e.g. the input
image's; else the mask's when a mask is given; else the larger of the two; bilinear,
:func:`camcore.maps.upsample`, as the localization protocol does) and reports:

* ``correlation`` - Pearson's r of the two maps (:func:`camcore.maps.map_correlation`:
  two constant maps give 1.0 when equal and 0.0 otherwise, never NaN);
* ``iou`` - IoU of the two thresholded regions ``{a >= t}`` and ``{b >= t}`` (the
  localization protocol's absolute threshold); two empty regions agree (1.0), one empty
  region against a non-empty one scores 0.0;
* ``peak_a_in_defect`` / ``peak_b_in_defect`` - the pointing game of each map against the
  mask (:func:`camcore.metrics.localization`, its tolerance), None without a mask;
* ``difference`` - the signed map a - b at the common resolution, in [-1, 1].

    >>> a = np.array([[0.0, 1.0], [0.0, 0.5]]); b = np.array([[0.0, 1.0], [0.0, 0.0]])
    >>> agreement = compare_maps(a, b, threshold=0.4)
    >>> round(agreement.correlation, 3), agreement.iou
    (0.87, 0.5)

The evaluation of two models (``python -m camcore.evaluate --model-b``) writes these figures
per image and method as the columns :data:`AGREEMENT_COLUMNS` (:func:`agreement_values`),
described like the registry's metric columns so that the summaries and the Dataset page
read their labels, directions and summaries from one place. They are not entries of
:data:`camcore.metrics.METRICS`: a metric scores one map, these compare two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camcore.maps import map_correlation, upsample
from camcore.metrics.base import Column

__all__ = [
    "AGREEMENT_COLUMNS",
    "AGREEMENT_THRESHOLD",
    "BOTH_PEAKS_IN_DEFECT",
    "DEFAULT_AGREEMENT_THRESHOLD",
    "MAP_CORRELATION",
    "MAP_IOU",
    "PEAK_A_IN_DEFECT",
    "PEAK_B_IN_DEFECT",
    "TOP1_AGREE",
    "MapAgreement",
    "agreement_values",
    "compare_maps",
]

DEFAULT_AGREEMENT_THRESHOLD = 0.5
"""The threshold of the two regions whose IoU the evaluation of two models reports (the
Compare page's default threshold)."""

MAP_CORRELATION = Column("map_correlation", "r(A, B)", "Correlation of model A's and model B's maps", True,
                         fmt="{:.4f}", distribution=True, worst="lowest correlation of the two models' maps")
MAP_IOU = Column("map_iou", "IoU(A, B)", "IoU of model A's and model B's thresholded regions", True,
                 distribution=True, worst="lowest IoU of the two models' regions")
PEAK_A_IN_DEFECT = Column("peak_a_in_defect", "A's peak in defect %", "Model A's peak lies in the defect", True,
                          summary="rate", summary_name="peak_a_in_defect_rate", fmt="{:.0f}")
PEAK_B_IN_DEFECT = Column("peak_b_in_defect", "B's peak in defect %", "Model B's peak lies in the defect", True,
                          summary="rate", summary_name="peak_b_in_defect_rate", fmt="{:.0f}")
BOTH_PEAKS_IN_DEFECT = Column("both_peaks_in_defect", "both peaks in defect %",
                              "Both models' peaks lie in the defect", True, summary="rate",
                              summary_name="both_peaks_in_defect_rate", fmt="{:.0f}")
TOP1_AGREE = Column("top1_agree", "same top-1 %", "Both models predict the same class", True, summary="rate",
                    summary_name="top1_agree_rate", fmt="{:.0f}")
AGREEMENT_THRESHOLD = Column("agreement_threshold", "threshold", "Threshold of the two regions", None,
                             summary="first", fmt="{:.2f}")
AGREEMENT_COLUMNS: tuple[Column, ...] = (
    MAP_CORRELATION, MAP_IOU, PEAK_A_IN_DEFECT, PEAK_B_IN_DEFECT, BOTH_PEAKS_IN_DEFECT, TOP1_AGREE,
    AGREEMENT_THRESHOLD,
)
"""The per-image columns of a two-model evaluation that compare the models (the peaks only
on images with a mask, the top-1 only when both models have the same classes)."""


@dataclass(frozen=True)
class MapAgreement:
    """How far two maps agree (see the module docstring)."""

    correlation: float
    iou: float
    threshold: float
    difference: np.ndarray
    peak_a_in_defect: bool | None = None
    peak_b_in_defect: bool | None = None

    @property
    def both_peaks_in_defect(self) -> bool | None:
        if self.peak_a_in_defect is None or self.peak_b_in_defect is None:
            return None
        return self.peak_a_in_defect and self.peak_b_in_defect


def _as_unit_map(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, np.float32)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D map, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"{name} must be finite and in [0, 1] (scale it with camcore.maps.normalize_cam)")
    return array


def _common_size(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None,
                 size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        height, width = (int(v) for v in size)
        if height < 1 or width < 1:
            raise ValueError(f"size must be a positive (height, width), got {size}")
        return height, width
    if mask is not None:
        return tuple(np.asarray(mask).shape[:2])
    return max(a.shape, b.shape, key=lambda shape: shape[0] * shape[1])


def compare_maps(map_a: np.ndarray, map_b: np.ndarray, threshold: float = 0.5,
                 mask: np.ndarray | None = None, size: tuple[int, int] | None = None) -> MapAgreement:
    """The agreement of two maps in [0, 1] of any resolutions; ``mask`` (any resolution,
    binary) adds whether each map's peak lies in the defect. The maps meet at ``size``
    (height, width) when given (e.g. the input image's), else at the mask's resolution,
    else at the larger map's."""
    a, b = _as_unit_map(map_a, "map_a"), _as_unit_map(map_b, "map_b")
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    common = _common_size(a, b, mask, size)
    a, b = upsample(a, common), upsample(b, common)
    on_a, on_b = a >= threshold, b >= threshold
    union = int(np.count_nonzero(on_a | on_b))
    iou = 1.0 if union == 0 else float(np.count_nonzero(on_a & on_b)) / union
    peaks: tuple[bool | None, bool | None] = (None, None)
    if mask is not None:
        from camcore.metrics.localization import localization

        peaks = (localization(a, mask, threshold).pointing_hit, localization(b, mask, threshold).pointing_hit)
    return MapAgreement(correlation=map_correlation(a, b), iou=iou, threshold=threshold,
                        difference=(a - b).astype(np.float32), peak_a_in_defect=peaks[0], peak_b_in_defect=peaks[1])


def agreement_values(agreement: MapAgreement) -> dict[str, float]:
    """``agreement`` as the columns of :data:`AGREEMENT_COLUMNS` (peaks only with a mask;
    the top-1 column is the images', not the maps')."""
    values = {MAP_CORRELATION.name: float(agreement.correlation), MAP_IOU.name: float(agreement.iou),
              AGREEMENT_THRESHOLD.name: float(agreement.threshold)}
    if agreement.peak_a_in_defect is not None:
        values[PEAK_A_IN_DEFECT.name] = float(agreement.peak_a_in_defect)
        values[PEAK_B_IN_DEFECT.name] = float(bool(agreement.peak_b_in_defect))
        values[BOTH_PEAKS_IN_DEFECT.name] = float(bool(agreement.both_peaks_in_defect))
    return values
