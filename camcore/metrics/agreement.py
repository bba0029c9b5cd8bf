"""Do two maps look at the same place? Agreement figures of two saliency maps, e.g. the same
method on two models (a retrained model against the one on the line, an exported model
against its training checkpoint).

:func:`compare_maps` brings both maps to one resolution (the mask's when a mask is given,
else the larger of the two; bilinear, :func:`camcore.maps.upsample`, as the localization
protocol does) and reports:

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camcore.maps import map_correlation, upsample

__all__ = ["MapAgreement", "compare_maps"]


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


def compare_maps(map_a: np.ndarray, map_b: np.ndarray, threshold: float = 0.5,
                 mask: np.ndarray | None = None) -> MapAgreement:
    """The agreement of two maps in [0, 1] of any resolutions; ``mask`` (any resolution,
    binary) adds whether each map's peak lies in the defect."""
    a, b = _as_unit_map(map_a, "map_a"), _as_unit_map(map_b, "map_b")
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if mask is not None:
        size = np.asarray(mask).shape[:2]
    else:
        size = max(a.shape, b.shape, key=lambda shape: shape[0] * shape[1])
    a, b = upsample(a, size), upsample(b, size)
    on_a, on_b = a >= threshold, b >= threshold
    union = int(np.count_nonzero(on_a | on_b))
    iou = 1.0 if union == 0 else float(np.count_nonzero(on_a & on_b)) / union
    peaks: tuple[bool | None, bool | None] = (None, None)
    if mask is not None:
        from camcore.metrics.localization import localization

        peaks = (localization(a, mask, threshold).pointing_hit, localization(b, mask, threshold).pointing_hit)
    return MapAgreement(correlation=map_correlation(a, b), iou=iou, threshold=threshold,
                        difference=(a - b).astype(np.float32), peak_a_in_defect=peaks[0], peak_b_in_defect=peaks[1])
