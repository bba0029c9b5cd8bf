"""Tests for camcore.metrics: hand-computed cases, no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcore import metrics as M
from camcore.metrics import road

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


def rect_mask(shape, rows, cols):
    mask = np.zeros(shape, bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


class MeanModel:
    """Two-class "model": P(class 1) = mean of every input value, P(class 0) = 1 - that.

    Records the batch sizes it was called with, so batching can be checked.
    """

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.ndim == 4
        self.batch_sizes.append(batch.shape[0])
        p = batch.reshape(batch.shape[0], -1).mean(axis=1).astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)


# 16 pixels with values 0/15 .. 15/15; mean 0.5 = 120/240.
RAMP16 = (np.arange(16, dtype=np.float32) / 15).reshape(4, 4, 1)


# ------------------------------------------------------------------------ localization


def test_perfect_map_scores_one_at_any_threshold():
    mask = rect_mask((20, 30), (3, 11), (5, 20))
    cam = mask.astype(np.float64)
    for t in (1e-6, 0.3, 0.5, 0.999, 1.0):
        assert M.iou(cam, mask, t) == 1.0
        assert M.dice(cam, mask, t) == 1.0
    np.testing.assert_array_equal(M.iou_curve(cam, mask), np.ones(len(M.DEFAULT_THRESHOLDS)))


def test_inverted_map_misses_and_has_no_energy():
    mask = rect_mask((20, 30), (3, 11), (5, 20))
    cam = 1.0 - mask.astype(np.float64)
    assert M.pointing_game(cam, mask) is False
    assert M.energy_pointing_game(cam, mask) == 0.0
    assert M.iou(cam, mask, 0.5) == 0.0


def test_all_zero_map_is_defined_and_not_nan():
    mask = rect_mask((16, 16), (4, 8), (4, 8))
    cam = np.zeros((16, 16))
    assert M.iou(cam, mask, 0.5) == 0.0
    assert M.dice(cam, mask, 0.5) == 0.0
    curve = M.iou_curve(cam, mask)
    assert np.all(np.isfinite(curve)) and np.all(curve == 0.0)
    assert np.all(M.dice_curve(cam, mask) == 0.0)
    assert M.best_threshold(cam, mask) == (pytest.approx(0.05), 0.0)
    assert M.pointing_game(cam, mask) is False
    assert M.pointing_game(cam, mask, tolerance=20) is False
    assert M.energy_pointing_game(cam, mask) == 0.0


def test_empty_mask_conventions():
    empty = np.zeros((8, 8), bool)
    zero = np.zeros((8, 8))
    # nothing predicted, nothing there: agreement
    assert M.iou(zero, empty, 0.5) == 1.0
    assert M.dice(zero, empty, 0.5) == 1.0
    # something predicted, nothing there
    assert M.iou(np.ones((8, 8)), empty, 0.5) == 0.0
    assert M.pointing_game(np.ones((8, 8)), empty) is False
    assert M.energy_pointing_game(np.ones((8, 8)), empty) == 0.0


def test_two_rectangles_exact_iou_and_dice():
    # mask: 4x4 = 16 px; prediction: 4x6 = 24 px; overlap rows 2:4 x cols 2:4 = 4 px.
    mask = rect_mask((10, 10), (0, 4), (0, 4))
    cam = np.zeros((10, 10))
    cam[2:6, 2:8] = 0.8
    assert M.iou(cam, mask, 0.5) == pytest.approx(4 / 36)
    assert M.dice(cam, mask, 0.5) == pytest.approx(2 * 4 / 40)
    # the threshold is inclusive ...
    assert M.iou(cam, mask, 0.8) == pytest.approx(4 / 36)
    # ... and absolute: above the map's maximum nothing is predicted
    assert M.iou(cam, mask, 0.81) == 0.0


def test_threshold_map_is_absolute_and_inclusive():
    cam = np.array([[0.2, 0.5, 0.8]])
    np.testing.assert_array_equal(M.threshold_map(cam, 0.5), [[False, True, True]])
    # a relative (fraction-of-max) threshold would select the 0.4 pixel here
    weak = np.array([[0.1, 0.4]])
    assert not M.threshold_map(weak, 0.5).any()
    assert M.threshold_map(weak, 0.5).dtype == bool
    assert M.threshold_map(np.ones((2, 2)), 0.5, shape=(6, 4)).shape == (6, 4)


def test_iou_and_dice_curves_agree_with_pointwise():
    rng = np.random.default_rng(7)
    cam = rng.random((14, 14))
    yy, xx = np.mgrid[:56, :56]
    mask = (yy - 20) ** 2 + (xx - 30) ** 2 < 150
    up = M.resize_map(cam, mask.shape)
    # unsorted, and including values that occur in the map exactly (ties with >=)
    thresholds = np.concatenate([[0.9, 0.1, 0.5], up.ravel()[[3, 100, 2000]], [0.0, 1.0]])
    curve = M.iou_curve(cam, mask, thresholds)
    dcurve = M.dice_curve(cam, mask, thresholds)
    assert curve.shape == thresholds.shape
    for t, value, dvalue in zip(thresholds, curve, dcurve):
        pred = up >= t
        inter, union = np.sum(pred & mask), np.sum(pred | mask)
        assert value == M.iou(cam, mask, t) == pytest.approx(inter / union)
        dice = 2 * inter / (pred.sum() + mask.sum())
        assert dvalue == M.dice(cam, mask, t) == pytest.approx(dice)
    assert len(set(curve.round(12))) > 3  # the case is not degenerate


def test_best_threshold_on_graded_map():
    mask = rect_mask((20, 20), (8, 12), (8, 12))  # 16 px
    cam = np.full((20, 20), 0.3)
    cam[6:14, 6:14] = 0.62  # ring of 64 - 16 = 48 px
    cam[mask] = 1.0
    t, best = M.best_threshold(cam, mask)
    assert t == pytest.approx(0.65) and best == 1.0  # first grid value above the ring
    t, best = M.best_threshold(cam, mask, thresholds=[0.2, 0.5])
    assert t == 0.5 and best == pytest.approx(16 / 64)
    t, best = M.best_threshold(cam, mask, thresholds=[0.2])
    assert t == 0.2 and best == pytest.approx(16 / 400)


def test_low_resolution_map_is_upsampled_bilinearly():
    # 2x2 -> 8x8 with cell-centre-aligned bilinear interpolation: separable weights.
    cam = np.array([[1.0, 0.0], [0.0, 0.0]])
    a = np.array([1, 1, 0.875, 0.625, 0.375, 0.125, 0, 0])
    np.testing.assert_allclose(M.resize_map(cam, (8, 8)), np.outer(a, a), atol=1e-12)
    mask = rect_mask((8, 8), (0, 4), (0, 4))
    # >= 0.5 inside the quadrant except its inner corner (0.625^2 < 0.5), nothing outside
    assert M.iou(cam, mask, 0.5) == pytest.approx(15 / 16)
    assert M.pointing_game(cam, mask) is True


def test_resize_map_keeps_orientation_for_non_square_shapes():
    cam = np.zeros((3, 5))
    cam[0, 4] = 1.0  # top-right
    up = M.resize_map(cam, (6, 10))
    assert up.shape == (6, 10)
    assert np.unravel_index(np.argmax(up), up.shape) == (0, 9)
    with pytest.raises(ValueError):
        M.resize_map(np.full((3, 3), np.nan), (6, 6))
    with pytest.raises(ValueError):
        M.iou(np.zeros((2, 2, 2)), np.zeros((2, 2), bool), 0.5)


def test_pointing_game_tolerance_is_a_euclidean_disc():
    mask = rect_mask((32, 32), (10, 13), (10, 13))  # rows/cols 10..12
    cam = np.zeros((32, 32))
    cam[11, 16] = 1.0  # 4 px right of the mask edge (col 12)
    assert M.pointing_game(cam, mask) is False
    assert M.pointing_game(cam, mask, tolerance=3) is False
    assert M.pointing_game(cam, mask, tolerance=4) is True
    diag = np.zeros((32, 32))
    diag[15, 15] = 1.0  # sqrt(3^2 + 3^2) = 4.24 px from the corner (12, 12)
    assert M.pointing_game(diag, mask, tolerance=4) is False
    assert M.pointing_game(diag, mask, tolerance=5) is True
    with pytest.raises(ValueError):
        M.pointing_game(cam, mask, tolerance=-1)


def test_pointing_game_with_tied_maxima():
    mask = rect_mask((10, 10), (2, 5), (2, 5))
    assert M.pointing_game(np.ones((10, 10)), mask) is False  # a flat map points nowhere
    plateau = np.zeros((10, 10))
    plateau[2:4, 2:5] = 0.7  # all maxima inside
    assert M.pointing_game(plateau, mask) is True
    plateau[9, 9] = 0.7  # one tied maximum outside
    assert M.pointing_game(plateau, mask) is False


def test_energy_pointing_game_hand_computed():
    cam = np.array(
        [
            [1.0, 0.5, 0.0, 0.0],
            [0.5, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 2.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    mask = rect_mask((4, 4), (0, 2), (0, 2))
    assert M.energy_pointing_game(cam, mask) == pytest.approx(3.0 / 6.0)
    mask[3, 3] = True
    assert M.energy_pointing_game(cam, mask) == pytest.approx(4.0 / 6.0)
    with pytest.raises(ValueError):
        M.energy_pointing_game(-cam, mask)


# ------------------------------------------------------------------------ faithfulness


def test_average_drop_and_increase_hand_computed():
    model = MeanModel()
    x = np.full((1, 4, 4, 3), 0.8, np.float32)
    cam = np.full((2, 2), 0.5)  # low resolution: upsampled to 4x4 (still 0.5)
    # class 1: Y = 0.8, O = mean(0.5 * 0.8) = 0.4 -> drop 50 %, no increase
    r1 = M.average_drop_increase(model, x, cam, class_index=1)
    assert r1.drop == pytest.approx(50.0) and r1.increased is False
    assert model.batch_sizes == [2]  # image and explanation in one call
    # class 0: Y = 0.2, O = 0.6 -> drop 0, increase
    r0 = M.average_drop_increase(model, x[0], cam, class_index=0)
    assert r0.drop == 0.0 and r0.increased is True
    drop, increased = r1  # unpacks as a 2-tuple
    assert (drop, increased) == (r1.drop, False)
    summary = M.summarize_drop_increase([r1, r0])
    assert summary["average_drop"] == pytest.approx(25.0)
    assert summary["increase_in_confidence"] == pytest.approx(50.0)
    assert summary["n_images"] == 2


def test_average_drop_with_spatial_map_and_zero_confidence():
    model = MeanModel()
    x = np.full((4, 6, 1), 0.6, np.float32)
    cam = np.zeros((4, 6))
    cam[:, :2] = 1.0  # keeps a third of the image: O = 0.2, Y = 0.6
    r = M.average_drop_increase(model, x, cam, class_index=1)
    assert r.drop == pytest.approx((0.6 - 0.2) / 0.6 * 100)
    # Y = 0: no confidence to lose, defined as drop 0 (not NaN)
    r = M.average_drop_increase(model, np.zeros((4, 6, 1), np.float32), cam, class_index=1)
    assert r.drop == 0.0 and r.increased is False
    with pytest.raises(ValueError):
        M.summarize_drop_increase([])


def test_deletion_curve_on_mean_model_is_exact():
    model = MeanModel()
    curve = M.deletion_curve(model, RAMP16, RAMP16[..., 0], class_index=1, steps=4, batch_size=2)
    # removes the 4 largest values first: 15..12, then 11..8, then 7..4, then 3..0
    np.testing.assert_allclose(curve, np.array([120, 66, 28, 6, 0]) / 240, atol=1e-6)
    assert M.auc(curve) == pytest.approx(1 / 6, abs=1e-6)
    assert model.batch_sizes == [2, 2, 1]  # 5 points, batched


def test_deletion_ties_follow_raster_order():
    flat = np.full((4, 4), 0.5)
    curve = M.deletion_curve(MeanModel(), RAMP16[None], flat, class_index=1, steps=4)
    # removes pixels 0..3 (values 0..3) first
    np.testing.assert_allclose(curve, np.array([120, 114, 92, 54, 0]) / 240, atol=1e-6)


def test_deletion_ties_follow_raster_order_on_a_large_tied_map():
    # Few distinct saliency values on many pixels: numpy's default (unstable) sort would
    # scramble the ties; the reference uses Python's stable sort on raster indices.
    rng = np.random.default_rng(8)
    x = rng.random((48, 48, 1)).astype(np.float32)
    saliency = rng.integers(0, 3, size=(48, 48)).astype(np.float64)
    curve = M.deletion_curve(MeanModel(), x, saliency, class_index=1, steps=6)
    values = x.ravel().astype(np.float64)
    order = sorted(range(values.size), key=lambda i: -saliency.ravel()[i])
    expected = []
    for k in range(7):
        kept = values.copy()
        kept[order[: k * values.size // 6]] = 0.0
        expected.append(kept.mean())
    np.testing.assert_allclose(curve, expected, atol=1e-6)


def test_deletion_baseline_and_low_resolution_saliency():
    saliency = np.array([[0.0, 1.0], [0.0, 0.0]])  # right half of the top row scores highest
    x = np.full((4, 4, 2), 0.5, np.float32)
    curve = M.deletion_curve(MeanModel(), x, saliency, class_index=1, steps=2, baseline=1.0)
    expected = M.deletion_curve(
        MeanModel(), x, M.resize_map(saliency, (4, 4)), class_index=1, steps=2, baseline=1.0
    )
    np.testing.assert_allclose(curve, expected)
    np.testing.assert_allclose(curve, [0.5, 0.75, 1.0])


def test_insertion_is_complement_of_deletion_for_a_linear_model():
    model = MeanModel()
    rng = np.random.default_rng(3)
    x = rng.random((6, 5, 3)).astype(np.float32)
    saliency = rng.random((6, 5))
    deletion = M.deletion_curve(model, x, saliency, 1, steps=7, batch_size=3)
    insertion = M.insertion_curve(model, x, saliency, 1, steps=7, batch_size=3)
    assert insertion.shape == deletion.shape == (8,)
    np.testing.assert_allclose(insertion + deletion, float(x.mean()), atol=1e-6)
    assert insertion[0] == pytest.approx(0.0) and insertion[-1] == pytest.approx(x.mean())
    assert M.auc(insertion) + M.auc(deletion) == pytest.approx(x.mean(), abs=1e-6)
    ramp = M.insertion_curve(model, RAMP16, RAMP16[..., 0], 1, steps=4)
    np.testing.assert_allclose(ramp, np.array([0, 54, 92, 114, 120]) / 240, atol=1e-6)


def test_insertion_from_blurred_image():
    def top_left(batch):
        p = batch[:, 0, 0, 0].astype(np.float64)
        return np.stack([1 - p, p], axis=1)

    x = np.zeros((16, 16, 1), np.float32)
    x[::2, ::2] = 1.0  # x[0, 0] = 1, its blur is much lower
    saliency = np.zeros((16, 16))
    saliency[8:, 8:] = 1.0  # top-left pixel revealed last
    curve = M.insertion_curve(top_left, x, saliency, 1, steps=4, start="blur", blur_sigma=2.0)
    blurred = cv2.GaussianBlur(x, (0, 0), 2.0)
    assert curve[0] == pytest.approx(float(blurred[0, 0]), abs=1e-6)
    assert 0.05 < curve[0] < 0.9
    assert curve[-1] == 1.0
    with pytest.raises(ValueError):
        M.insertion_curve(top_left, x, saliency, 1, start="noise")  # type: ignore[arg-type]


def test_auc_trapezoid():
    assert M.auc([0.0, 1.0]) == pytest.approx(0.5)
    assert M.auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert M.auc([0.0, 1.0, 0.0]) == pytest.approx(0.5)
    assert M.auc([1.0, 0.0, 0.0, 0.0, 0.0]) == pytest.approx(0.125)
    with pytest.raises(ValueError):
        M.auc([1.0])


def test_predict_fn_output_is_validated():
    with pytest.raises(ValueError):
        M.deletion_curve(lambda b: np.zeros(len(b)), RAMP16, RAMP16[..., 0], 0, steps=2)
    with pytest.raises(IndexError):
        M.deletion_curve(MeanModel(), RAMP16, RAMP16[..., 0], 5, steps=2)


# -------------------------------------------------------------------------------- ROAD


def dense_reference_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The paper's equations written out directly and solved densely: each removed pixel
    is the weighted mean (1/6 direct, 1/12 diagonal) of its in-image neighbours."""
    h, w, c = image.shape
    ys, xs = np.nonzero(removed)
    index = -np.ones((h, w), int)
    index[ys, xs] = np.arange(len(ys))
    a = np.zeros((len(ys), len(ys)))
    b = np.zeros((len(ys), c))
    for i, (y, x) in enumerate(zip(ys, xs)):
        total = 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ny, nx = y + dy, x + dx
                if (dy, dx) == (0, 0) or not (0 <= ny < h and 0 <= nx < w):
                    continue
                weight = 1 / 12 if dy and dx else 1 / 6
                total += weight
                if removed[ny, nx]:
                    a[i, index[ny, nx]] -= weight
                else:
                    b[i] += weight * image[ny, nx]
        a[i, i] += total
    out = image.astype(np.float64).copy()
    out[ys, xs] = np.linalg.solve(a, b)
    return out


def test_road_imputation_reproduces_a_linear_ramp():
    yy, xx = np.mgrid[:40, :48].astype(np.float64)
    ramp = np.stack([0.1 + 0.01 * yy + 0.005 * xx, 0.9 - 0.02 * xx, 0.3 + 0.0 * yy], axis=-1)
    removed = np.zeros((40, 48), bool)
    removed[5:30, 10:40] = True  # large hole: exercises the coarse grids
    rng = np.random.default_rng(0)
    removed[1:-1, 1:-1] |= rng.random((38, 46)) < 0.5  # scattered, interior only
    out = M.noisy_linear_impute(ramp.astype(np.float32), removed, noise_std=0.0)
    assert out.dtype == np.float32 and out.shape == ramp.shape
    np.testing.assert_allclose(out, ramp, atol=1e-5)
    # and a single removed pixel, 2-D input
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    out2 = M.noisy_linear_impute(ramp[:5, :5, 0].astype(np.float32), single, noise_std=0.0)
    assert out2.shape == (5, 5) and out2[2, 3] == pytest.approx(ramp[2, 3, 0], abs=1e-6)


def test_road_imputation_border_weights_are_renormalized():
    yy, xx = np.mgrid[:6, :7].astype(np.float32)
    # corner (0, 0) of r + c: neighbours 1 (1/6), 1 (1/6), 2 (1/12) over weight 5/12
    corner = np.zeros((6, 7), bool)
    corner[0, 0] = True
    out = M.noisy_linear_impute(yy + xx, corner, noise_std=0.0)
    assert out[0, 0] == pytest.approx(6 / 5, abs=1e-6)  # 1/2 without renormalization
    # top edge of a vertical ramp a*r: (a/6 + 2 * a/12) / (2/3) = a/2
    edge = np.zeros((6, 7), bool)
    edge[0, 3] = True
    out = M.noisy_linear_impute(3.0 * yy, edge, noise_std=0.0)
    assert out[0, 3] == pytest.approx(1.5, abs=1e-6)
    # a constant image stays constant along the whole border
    border = np.ones((6, 7), bool)
    border[1:-1, 1:-1] = False
    out = M.noisy_linear_impute(np.full((6, 7, 2), 0.7, np.float32), border, noise_std=0.0)
    np.testing.assert_allclose(out, 0.7, atol=1e-6)


def test_road_solver_matches_the_dense_system():
    rng = np.random.default_rng(1)
    image = rng.random((36, 40, 3))
    removed = np.zeros((36, 40), bool)
    removed[:20, 12:38] = True  # touches the top border
    removed |= rng.random((36, 40)) < 0.15
    expected = dense_reference_imputation(image, removed)
    out = M.noisy_linear_impute(image[None].astype(np.float32), removed, noise_std=0.0)
    assert out.shape == (1, 36, 40, 3)
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_road_solver_converges_in_few_iterations_on_a_large_hole():
    # A CAM-shaped MoRF hole at 50 %: plain CG needs hundreds of iterations here, the
    # multigrid-preconditioned one about ten.
    rng = np.random.default_rng(4)
    image = cv2.GaussianBlur(rng.random((128, 128, 3)).astype(np.float32), (0, 0), 2.0)
    yy, xx = np.mgrid[:128, :128]
    removed = (yy - 60) ** 2 + (xx - 70) ** 2 < 0.5 * 128 * 128 / np.pi
    converged = M.noisy_linear_impute(image, removed, noise_std=0.0)
    quick = M.noisy_linear_impute(image, removed, noise_std=0.0, max_iter=15)
    np.testing.assert_allclose(quick, converged, atol=1e-4)


def test_multigrid_transfer_operators_are_adjoint():
    # Private API: CG needs a symmetric preconditioner, which requires the restriction
    # to be the exact transpose of the prolongation (odd sizes included).
    rng = np.random.default_rng(5)
    removed = np.ones((37, 29), bool)  # unknowns on every image edge
    removed[18, 14] = False
    grid = road._ImputationGrid(removed)
    coarse = grid.coarse
    assert coarse is not None
    e = rng.normal(size=(2, coarse.h + 1, coarse.w)) * coarse.mask
    r = rng.normal(size=(2, grid.h + 1, grid.w)) * grid.mask
    assert np.sum(grid._prolong(e) * r) == pytest.approx(np.sum(e * grid._restrict(r)), rel=1e-12)
    r2 = rng.normal(size=r.shape) * grid.mask
    assert np.sum(grid.precondition(r) * r2) == pytest.approx(
        np.sum(r * grid.precondition(r2)), rel=1e-10
    )


def test_road_noise_only_on_removed_pixels_and_seeded():
    rng = np.random.default_rng(2)
    image = rng.random((50, 50, 1)).astype(np.float32)
    removed = rng.random((50, 50)) < 0.8
    clean = M.noisy_linear_impute(image, removed, noise_std=0.0)
    noisy = M.noisy_linear_impute(image, removed, noise_std=0.1, seed=5)
    np.testing.assert_array_equal(noisy[~removed], image[~removed])
    residual = (noisy - clean)[removed]
    assert residual.std() == pytest.approx(0.1, rel=0.1)
    np.testing.assert_array_equal(noisy, M.noisy_linear_impute(image, removed, 0.1, seed=5))
    assert not np.array_equal(noisy, M.noisy_linear_impute(image, removed, 0.1, seed=6))
    with pytest.raises(ValueError):
        M.noisy_linear_impute(image, np.ones((50, 50), bool), 0.0)


def test_road_morf_removes_the_salient_square_lerf_the_background():
    image = np.zeros((20, 20, 1), np.float32)
    image[8:12, 8:12] = 1.0  # 16 of 400 px
    saliency = image[..., 0].astype(np.float64)
    model = MeanModel()
    morf = M.road_curve(model, image, saliency, 1, percentages=(0.04, 0.5), noise_std=0.0)
    lerf = M.road_curve(
        model, image, saliency, 1, percentages=(0.04, 0.5), order="lerf", noise_std=0.0
    )
    # MoRF first takes exactly the square, which is imputed from its zero surroundings
    np.testing.assert_allclose(morf, [0.0, 0.0], atol=1e-6)
    # LeRF first takes 16 background pixels of the top row, imputed as 0: nothing changes
    assert lerf[0] == pytest.approx(16 / 400, abs=1e-6)
    # at 50 % LeRF has removed only background, partly next to the square, which
    # imputation brightens: the mean rises above the original 16/400
    assert lerf[1] > 16 / 400 + 1e-3
    assert M.road_curve(model, image, saliency, 1).shape == (9,)
    with pytest.raises(ValueError):
        M.road_curve(model, image, saliency, 1, percentages=(1.0,))
    with pytest.raises(ValueError):
        M.road_curve(model, image, saliency, 1, order="random")  # type: ignore[arg-type]


# --------------------------------------------------------------------- sanity controls


def test_random_map():
    a = M.random_map((12, 9), seed=1)
    assert a.shape == (12, 9) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() < 1.0
    np.testing.assert_array_equal(a, M.random_map((12, 9), seed=1))
    assert not np.array_equal(a, M.random_map((12, 9), seed=2))
    smooth = M.random_map((32, 32), seed=1, sigma=2.0)
    assert smooth.min() == 0.0 and smooth.max() == pytest.approx(1.0)
    # smoothing correlates neighbours
    assert np.abs(np.diff(smooth, axis=1)).mean() < np.abs(np.diff(a, axis=1)).mean()


def test_control_maps():
    image = np.zeros((20, 24, 3), np.float32)
    image[5:15, 6:18] = 1.0
    maps = M.control_maps(image, seed=0)
    assert set(maps) == {"sobel", "random"}
    assert maps["sobel"].shape == maps["random"].shape == (20, 24)
    assert maps["sobel"].max() == pytest.approx(1.0) and maps["sobel"][0, 0] == 0.0


def test_flag_below_controls():
    summary = {
        "grad_cam": {"insertion_auc": 0.6, "deletion_auc": 0.10},
        "score_cam": {"insertion_auc": 0.3, "deletion_auc": 0.30},
        "ties_random": {"insertion_auc": 0.4, "deletion_auc": 0.20},
        "nan_method": {"insertion_auc": float("nan"), "deletion_auc": float("nan")},
        "sobel": {"insertion_auc": 0.35, "deletion_auc": 0.25},
        "random": {"insertion_auc": 0.4, "deletion_auc": 0.20},
    }
    expected = {"grad_cam": False, "score_cam": True, "ties_random": True, "nan_method": True}
    assert M.flag_below_controls(summary, "insertion_auc") == expected
    assert M.flag_below_controls(summary, "deletion_auc", higher_is_better=False) == expected
    # only the listed controls count
    only_sobel = M.flag_below_controls(summary, "insertion_auc", controls=("sobel",))
    assert only_sobel["ties_random"] is False
    with pytest.raises(KeyError):
        M.flag_below_controls({"grad_cam": {"x": 1.0}, "random": {"x": 0.0}}, "x")


def test_metrics_module_does_not_import_tensorflow():
    code = (
        "import sys, camcore.metrics; "
        "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
