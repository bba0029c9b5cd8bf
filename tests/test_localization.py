"""Tests for the localization protocol, camcore.metrics.localization (no TensorFlow)."""

from __future__ import annotations

import dataclasses
import doctest
import importlib

import numpy as np
import pytest

from camcore import metrics as M
from camcore.maps import upsample

# the function camcore.metrics.localization shadows the module of the same name
localization_module = importlib.import_module("camcore.metrics.localization")


def rect_mask(shape, rows, cols):
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def peak_map(shape, row, col):
    cam = np.zeros(shape)
    cam[row, col] = 1.0
    return cam


# ---------------------------------------------------- plain reference implementation


def reference_bilinear(cam: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with pixel centres aligned (source coordinate (i + 0.5) * h / H - 0.5,
    clamped to the edge pixels), written as explicit loops."""
    h, w = cam.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        sy = min(max((i + 0.5) * h / out_h - 0.5, 0.0), h - 1.0)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = min(max((j + 0.5) * w / out_w - 0.5, 0.0), w - 1.0)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = (1 - fx) * cam[y0, x0] + fx * cam[y0, x1]
            bottom = (1 - fx) * cam[y1, x0] + fx * cam[y1, x1]
            out[i, j] = (1 - fy) * top + fy * bottom
    return out


def reference_scores(up: np.ndarray, mask: np.ndarray, threshold: float, tolerance: float):
    pred = up >= threshold
    inter, union = np.sum(pred & mask), np.sum(pred | mask)
    iou = inter / union if union else 1.0
    total = pred.sum() + mask.sum()
    dice = 2 * inter / total if total else 1.0
    peaks = np.argwhere(up == up.max())
    ys, xs = np.nonzero(mask)
    hit = bool(up.max() > 0 and ys.size) and all(
        np.min((ys - py) ** 2 + (xs - px) ** 2) <= tolerance**2 for py, px in peaks
    )
    energy = up[mask].sum() / up.sum() if up.sum() > 0 else 0.0
    return iou, dice, hit, energy


# ---------------------------------------------------------------- closed-form cases


def test_perfect_map_at_mask_resolution():
    mask = rect_mask((20, 30), (3, 11), (5, 20))
    result = M.localization(mask.astype(np.float64), mask, 0.5)
    assert result == M.Localization(iou=1.0, dice=1.0, pointing_hit=True, energy_pointing=1.0)
    # every pixel of the plateau at 1.0 is inside the mask: a hit even with tolerance 0
    assert M.localization(mask.astype(np.float64), mask, 0.5, tolerance=0).pointing_hit is True


def test_two_rectangles_hand_computed():
    # mask 4x4 = 16 px; prediction 4x6 = 24 px; overlap rows 2:4 x cols 2:4 = 4 px
    mask = rect_mask((10, 10), (0, 4), (0, 4))
    cam = np.zeros((10, 10))
    cam[2:6, 2:8] = 0.8
    result = M.localization(cam, mask, 0.5)
    assert result.iou == pytest.approx(4 / 36)
    assert result.dice == pytest.approx(8 / 40)
    assert result.energy_pointing == pytest.approx(4 / 24)
    # the 24-pixel plateau reaches (5, 7): sqrt(2^2 + 4^2) = 4.47 px from the mask corner
    assert result.pointing_hit is True  # default tolerance 15
    assert M.localization(cam, mask, 0.5, tolerance=4).pointing_hit is False
    assert M.localization(cam, mask, 0.5, tolerance=4.48).pointing_hit is True
    # the threshold is inclusive and absolute
    assert M.localization(cam, mask, 0.8).iou == pytest.approx(4 / 36)
    assert M.localization(cam, mask, 0.81).iou == 0.0


def test_coarse_map_is_upsampled_to_the_mask_closed_form():
    # 2x2 -> 8x8: separable weights a = (1, 1, .875, .625, .375, .125, 0, 0)
    cam = np.array([[1.0, 0.0], [0.0, 0.0]])
    mask = rect_mask((8, 8), (0, 4), (0, 4))
    result = M.localization(cam, mask, 0.5)
    # >= 0.5 inside the quadrant except its inner corner (0.625^2 < 0.5), nothing outside
    assert result.iou == pytest.approx(15 / 16)
    assert result.dice == pytest.approx(30 / 31)
    # energy: (sum of a over the first four)^2 / (sum of a)^2 = 3.5^2 / 4^2
    assert result.energy_pointing == pytest.approx(3.5**2 / 4**2, abs=1e-6)
    assert result.pointing_hit is True


# --------------------------------------------------------- against a plain reference


@pytest.mark.parametrize("threshold", [0.2, 0.45, 0.6])
def test_coarse_map_matches_reference_upsample_and_counting(threshold):
    rng = np.random.default_rng(3)
    cam = rng.random((7, 5))  # non-integer scale factors in both directions
    yy, xx = np.mgrid[:40, :31]
    mask = (yy - 25) ** 2 / 60 + (xx - 19) ** 2 / 20 < 1
    up = reference_bilinear(cam, 40, 31)
    hits = []
    for tolerance in (0.0, 3.0, 15.0):
        result = M.localization(cam, mask, threshold, tolerance=tolerance)
        iou, dice, hit, energy = reference_scores(up, mask, threshold, tolerance)
        assert result.iou == pytest.approx(iou, rel=1e-9)
        assert result.dice == pytest.approx(dice, rel=1e-9)
        assert result.energy_pointing == pytest.approx(energy, abs=1e-6)
        assert result.pointing_hit is hit
        hits.append(hit)
    # the case is not degenerate: a partial overlap, and a peak off the mask but near it
    assert 0.02 < iou < 0.95
    assert hits == [False, False, True]


def test_map_is_resized_with_the_grids_upsample():
    rng = np.random.default_rng(11)
    mask = rect_mask((24, 36), (5, 15), (10, 30))
    for shape in [(6, 9), (48, 72), (24, 36)]:  # coarser, finer, same
        cam = rng.random(shape)
        displayed = upsample(cam, mask.shape)  # what the comparison grid shows
        assert M.localization(cam, mask, 0.5) == M.localization(displayed, mask, 0.5)


# -------------------------------------------------------------------- pointing game


def test_tolerance_edge_is_inclusive_and_euclidean():
    mask = rect_mask((64, 64), (20, 23), (20, 23))  # rows / cols 20..22
    on_edge = peak_map((64, 64), 21, 22 + 15)  # 15 px right of the mask
    assert M.localization(on_edge, mask, 0.5).pointing_hit is True  # default 15 px
    assert M.localization(on_edge, mask, 0.5, tolerance=14.99).pointing_hit is False
    beyond = peak_map((64, 64), 21, 22 + 16)
    assert M.localization(beyond, mask, 0.5).pointing_hit is False
    # diagonal: (9, 12) from the corner is exactly 15 px, (9, 13) is 15.8 px
    assert M.localization(peak_map((64, 64), 22 + 9, 22 + 12), mask, 0.5).pointing_hit is True
    assert M.localization(peak_map((64, 64), 22 + 9, 22 + 13), mask, 0.5).pointing_hit is False
    # an irrational distance exactly at the tolerance still counts as within it
    corner = peak_map((64, 64), 23, 23)
    assert M.localization(corner, mask, 0.5, tolerance=np.sqrt(2)).pointing_hit is True
    assert M.localization(corner, mask, 0.5, tolerance=1.414).pointing_hit is False
    assert M.POINTING_TOLERANCE == 15


def test_pointing_distance_matches_brute_force():
    rng = np.random.default_rng(5)
    mask = np.zeros((48, 40), bool)
    mask[10:14, 5:9] = True
    mask[30, 33] = True
    ys, xs = np.nonzero(mask)
    for _ in range(40):
        py, px = int(rng.integers(48)), int(rng.integers(40))
        distance = float(np.sqrt(np.min((ys - py) ** 2 + (xs - px) ** 2)))
        cam = peak_map(mask.shape, py, px)
        assert M.localization(cam, mask, 0.5, tolerance=distance).pointing_hit is True
        if distance > 0:
            below = distance - 1e-3
            assert M.localization(cam, mask, 0.5, tolerance=below).pointing_hit is False


def test_every_tied_maximum_must_be_within_tolerance():
    mask = rect_mask((40, 40), (2, 6), (2, 6))
    plateau = np.zeros((40, 40))
    plateau[3:5, 3:6] = 0.7
    assert M.localization(plateau, mask, 0.5, tolerance=0).pointing_hit is True
    # the first maximum in raster order is inside, a tied one far away is not: a miss
    plateau[39, 39] = 0.7
    assert np.unravel_index(np.argmax(plateau), plateau.shape) == (3, 3)
    assert M.localization(plateau, mask, 0.5).pointing_hit is False
    # a constant map points nowhere, although its first argmax (0, 0) is 2.8 px away
    assert M.localization(np.full((40, 40), 0.5), mask, 0.2).pointing_hit is False
    # ... unless the whole image lies within the tolerance of the mask
    assert M.localization(np.full((8, 8), 0.5), rect_mask((8, 8), (3, 5), (3, 5)), 0.2).pointing_hit


# ------------------------------------------------------------------- degenerate cases


def test_all_zero_map_gives_defined_numbers():
    mask = rect_mask((16, 16), (4, 8), (4, 8))
    zero = np.zeros((4, 4))
    result = M.localization(zero, mask, 0.5)
    assert result == M.Localization(iou=0.0, dice=0.0, pointing_hit=False, energy_pointing=0.0)
    assert M.localization(zero, mask, 0.5, tolerance=100).pointing_hit is False
    ious, dices = M.localization_curves(zero, mask)
    assert np.all(ious == 0.0) and np.all(dices == 0.0)
    assert M.best_threshold(zero, mask) == (pytest.approx(0.05), 0.0)
    # threshold 0 turns every pixel on: IoU = |M| / N
    assert M.localization(zero, mask, 0.0).iou == pytest.approx(16 / 256)


def test_empty_mask_convention():
    empty = np.zeros((8, 8), bool)
    nothing = M.localization(np.zeros((8, 8)), empty, 0.5)
    # nothing predicted and nothing there: agreement; no peak and no mass inside
    assert nothing == M.Localization(iou=1.0, dice=1.0, pointing_hit=False, energy_pointing=0.0)
    something = M.localization(np.ones((8, 8)), empty, 0.5)
    assert something == M.Localization(iou=0.0, dice=0.0, pointing_hit=False, energy_pointing=0.0)
    ious, dices = M.localization_curves(np.zeros((8, 8)), empty, [0.1, 0.9])
    np.testing.assert_array_equal(ious, [1.0, 1.0])
    np.testing.assert_array_equal(dices, [1.0, 1.0])


def test_mask_rule_for_integer_and_float_masks():
    cam = np.zeros((6, 6))
    cam[1:3, 1:4] = 0.9
    as_bool = rect_mask((6, 6), (1, 3), (1, 5))
    expected = M.localization(cam, as_bool, 0.5)
    assert expected.iou == pytest.approx(6 / 8)
    assert M.localization(cam, as_bool.astype(np.uint8) * 255, 0.5) == expected
    assert M.localization(cam, as_bool.astype(np.int64), 0.5) == expected
    soft = as_bool * 0.5 + 0.49 * ~as_bool  # 0.5 is on, 0.49 is off
    assert M.localization(cam, soft, 0.5) == expected


def test_invalid_inputs_raise():
    mask = rect_mask((8, 8), (0, 4), (0, 4))
    for bad in (np.full((4, 4), 1.5), np.full((4, 4), -0.1), np.full((4, 4), np.nan)):
        with pytest.raises(ValueError):
            M.localization(bad, mask, 0.5)
    with pytest.raises(ValueError):
        M.localization_curves(np.full((4, 4), 2.0), mask)
    with pytest.raises(ValueError):
        M.localization(np.zeros((2, 2, 2)), mask, 0.5)
    with pytest.raises(ValueError):
        M.localization(np.zeros((4, 4)), mask, float("nan"))
    with pytest.raises(ValueError):
        M.localization(np.zeros((4, 4)), mask, 0.5, tolerance=-1)
    with pytest.raises(ValueError):
        M.localization(np.zeros((4, 4)), np.zeros((2, 2, 2), bool), 0.5)


# ----------------------------------------------------------------- curves and best


def test_curves_equal_pointwise_localization_at_each_threshold():
    rng = np.random.default_rng(7)
    cam = rng.random((14, 14))
    yy, xx = np.mgrid[:56, :56]
    mask = (yy - 20) ** 2 + (xx - 30) ** 2 < 150
    up = upsample(cam, mask.shape).astype(np.float64)
    # unsorted, and including values that occur in the upsampled map exactly (ties with >=)
    thresholds = np.concatenate([[0.9, 0.1, 0.5], up.ravel()[[3, 100, 2000]], [0.0, 1.0]])
    ious, dices = M.localization_curves(cam, mask, thresholds)
    assert ious.shape == dices.shape == thresholds.shape
    for t, iou, dice in zip(thresholds, ious, dices):
        point = M.localization(cam, mask, t)
        assert (iou, dice) == (point.iou, point.dice)
    assert len(set(ious.round(12))) > 3  # the case is not degenerate
    default_ious, _ = M.localization_curves(cam, mask)
    assert default_ious.shape == M.DEFAULT_THRESHOLDS.shape


def test_best_threshold_follows_the_protocol():
    mask = rect_mask((20, 20), (9, 13), (9, 13))  # 16 px
    cam = np.full((5, 5), 0.3)
    cam[2, 2] = 1.0  # a coarse map: its upsampled peak covers the mask partly
    ious, _ = M.localization_curves(cam, mask)
    t, best = M.best_threshold(cam, mask)
    k = int(np.argmax(ious))
    assert (t, best) == (float(M.DEFAULT_THRESHOLDS[k]), float(ious[k]))
    assert 0.0 < best < 1.0
    # ties go to the first threshold in the given order: the upsampled peak is a 2x2
    # plateau at 0.3 + 0.7 * 0.875^2 = 0.836, selected alike by 0.8 and 0.81
    assert M.best_threshold(cam, mask, thresholds=[0.8, 0.81]) == (0.8, pytest.approx(4 / 16))
    assert M.best_threshold(cam, mask, thresholds=[0.81, 0.8]) == (0.81, pytest.approx(4 / 16))


def test_result_is_a_frozen_dataclass_of_plain_types():
    result = M.localization(np.array([[0.2, 0.9]]), np.array([[False, True]]), 0.5)
    assert type(result.iou) is float and type(result.dice) is float
    assert type(result.pointing_hit) is bool and type(result.energy_pointing) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.iou = 0.0  # type: ignore[misc]


def test_module_docstring_example_runs():
    failures, tried = doctest.testmod(localization_module)
    assert tried > 0 and failures == 0
