"""Agreement of two maps (camcore.compare_maps): closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import camcore
from camcore.metrics.agreement import compare_maps


def _blob(shape=(32, 32), center=(10, 10), radius=5) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.clip(1.0 - np.hypot(yy - center[0], xx - center[1]) / radius, 0.0, 1.0).astype(np.float32)


def test_identical_maps_agree_completely():
    a = _blob()
    agreement = camcore.compare_maps(a, a.copy(), threshold=0.3)
    assert agreement.correlation == pytest.approx(1.0) and agreement.iou == 1.0
    assert not agreement.difference.any()


def test_disjoint_regions_have_iou_zero():
    a, b = _blob(center=(8, 8)), _blob(center=(24, 24))
    agreement = compare_maps(a, b, threshold=0.2)
    assert agreement.iou == 0.0 and agreement.correlation < 0.0


def test_half_overlap_by_count():
    a = np.zeros((4, 4), np.float32)
    b = np.zeros((4, 4), np.float32)
    a[:, :2] = 1.0  # 8 pixels
    b[:, 1:3] = 1.0  # 8 pixels, 4 shared -> IoU 4 / 12
    assert compare_maps(a, b, threshold=0.5).iou == pytest.approx(4 / 12)


def test_a_map_against_its_negation():
    a = _blob()
    agreement = compare_maps(a, 1.0 - a, threshold=0.5)
    assert agreement.correlation == pytest.approx(-1.0)
    assert agreement.iou == 0.0  # {a >= .5} and {1 - a >= .5} share only a = .5 exactly
    np.testing.assert_allclose(agreement.difference, 2 * a - 1, atol=1e-6)


def test_constant_maps_have_defined_figures():
    zeros, ones, half = (np.full((8, 8), v, np.float32) for v in (0.0, 1.0, 0.5))
    same = compare_maps(zeros, zeros.copy(), threshold=0.5)
    assert (same.correlation, same.iou) == (1.0, 1.0)  # nothing predicted by either: they agree
    apart = compare_maps(zeros, ones, threshold=0.5)
    assert (apart.correlation, apart.iou) == (0.0, 0.0)
    both_on = compare_maps(half, ones, threshold=0.5)
    assert both_on.iou == 1.0 and np.isfinite(both_on.correlation)


def test_different_resolutions_meet_at_the_larger_one_or_the_masks():
    small = np.kron(_blob((8, 8), (3, 3), 3), np.ones((1, 1)))
    large = camcore.maps.upsample(small, (32, 32))
    agreement = compare_maps(small, large, threshold=0.3)
    assert agreement.difference.shape == (32, 32) and agreement.correlation == pytest.approx(1.0, abs=1e-6)
    mask = np.zeros((64, 64), bool)
    mask[:20, :20] = True
    with_mask = compare_maps(small, large, threshold=0.3, mask=mask)
    assert with_mask.difference.shape == (64, 64)
    assert with_mask.peak_a_in_defect is True and with_mask.both_peaks_in_defect is True
    elsewhere = np.zeros((64, 64), bool)
    elsewhere[50:, 50:] = True
    assert compare_maps(small, large, 0.3, elsewhere).both_peaks_in_defect is False
    assert agreement.peak_a_in_defect is None and agreement.both_peaks_in_defect is None


@pytest.mark.parametrize("bad", [np.full((4, 4), np.nan), np.full((4, 4), 2.0), np.zeros(4), np.zeros((0, 3))])
def test_bad_maps_are_refused(bad):
    with pytest.raises(ValueError, match="map_b"):
        compare_maps(np.zeros((4, 4)), bad)
