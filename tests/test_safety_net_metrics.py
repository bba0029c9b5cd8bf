"""Metric edge cases that mutants of camcore.metrics survived (scripts/mutation_test.py):
uneven deletion chunks, one-step curves, batches of one, a non-zero Average Drop
baseline, insertion with a low-resolution map, small-mass energy, one-pixel IoU, and the
random control's smoothing. Closed forms only; numpy, no model."""

import numpy as np
import pytest

from camcore import metrics


def removed_count(batch):
    """A "model" whose class-0 score is the number of zeroed pixels (x is all ones)."""
    removed = (batch[..., 0] == 0).reshape(len(batch), -1).sum(axis=1).astype(np.float64)
    return np.stack([removed, -removed], axis=1)


def test_deletion_chunks_are_floor_bounds_when_steps_do_not_divide_the_pixels():
    # 3x3 = 9 pixels in 4 steps: chunk k ends at floor(k * 9 / 4) = 0, 2, 4, 6, 9
    x = np.ones((1, 3, 3, 1), np.float32)
    saliency = np.arange(9, dtype=np.float64).reshape(3, 3) / 8
    curve = metrics.deletion_curve(removed_count, x, saliency, 0, steps=4, baseline=0.0)
    np.testing.assert_array_equal(curve, [0, 2, 4, 6, 9])
    one_step = metrics.deletion_curve(removed_count, x, saliency, 0, steps=1, batch_size=1)
    np.testing.assert_array_equal(one_step, [0, 9])


def test_a_batch_of_one_gives_the_same_curve():
    x = np.ones((1, 4, 5, 1), np.float32)
    saliency = np.random.default_rng(0).uniform(0, 1, (4, 5))
    default = metrics.deletion_curve(removed_count, x, saliency, 0, steps=7)
    np.testing.assert_array_equal(metrics.deletion_curve(removed_count, x, saliency, 0, steps=7, batch_size=1), default)
    with pytest.raises(ValueError):
        metrics.deletion_curve(removed_count, x, saliency, 0, steps=0)


def test_average_drop_with_a_baseline_blends_towards_it():
    # explanation = cam * x + (1 - cam) * baseline; a linear "model" reads its mean
    def mean_model(batch):
        m = batch.reshape(len(batch), -1).mean(axis=1).astype(np.float64)
        return np.stack([m, 1 - m], axis=1)

    x = np.full((1, 2, 2, 1), 0.8, np.float32)
    cam = np.array([[1.0, 0.5], [0.0, 0.25]])
    got = metrics.average_drop_increase(mean_model, x, cam, 0, baseline=0.2)
    explained = (cam * 0.8 + (1 - cam) * 0.2).mean()
    assert got.drop == pytest.approx((0.8 - explained) / 0.8 * 100)
    assert not got.increased


def test_insertion_resizes_a_low_resolution_map_to_the_image():
    x = np.random.default_rng(1).uniform(0, 1, (1, 8, 8, 1)).astype(np.float32)
    low = np.array([[0.0, 1.0], [0.5, 0.25]])

    def brightness(batch):
        m = batch.reshape(len(batch), -1).mean(axis=1).astype(np.float64)
        return np.stack([m, 1 - m], axis=1)

    full = metrics.resize_map(low, (8, 8))
    np.testing.assert_allclose(
        metrics.insertion_curve(brightness, x, low, 0, steps=5),
        metrics.insertion_curve(brightness, x, full, 0, steps=5),
    )


def test_energy_of_a_map_with_little_mass_is_its_share_inside():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    cam = np.zeros((4, 4))
    cam[0, 0], cam[3, 3] = 0.3, 0.1  # total mass 0.4 < 1
    assert metrics.energy_pointing_game(cam, mask) == pytest.approx(0.75)
    assert metrics.localization(cam, mask, 0.5).energy_pointing == pytest.approx(0.75)


def test_one_predicted_pixel_against_an_empty_mask_scores_zero():
    cam = np.zeros((4, 4))
    cam[1, 2] = 1.0
    empty = np.zeros((4, 4), bool)
    assert metrics.iou(cam, empty, 0.5) == 0.0 and metrics.dice(cam, empty, 0.5) == 0.0
    found = metrics.localization(cam, empty, 0.5)
    assert found.iou == 0.0 and found.dice == 0.0


def test_legacy_pointing_game_needs_the_peak_on_the_mask_by_default():
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = True
    cam = np.zeros((5, 5))
    cam[2, 3] = 1.0  # one pixel beside the mask
    assert not metrics.pointing_game(cam, mask)
    assert metrics.pointing_game(cam, mask, tolerance=1)


def lag_one_correlation(a, axis):
    a = a - a.mean()
    b = np.roll(a, 1, axis=axis)
    return float((a * b).mean() / (a * a).mean())


@pytest.mark.parametrize("sigma", [0.8, 4.0])
def test_random_control_is_smoothed_in_both_directions(sigma):
    smooth = metrics.random_map((128, 128), seed=3, sigma=sigma)
    noise = metrics.random_map((128, 128), seed=3)
    assert smooth.min() == 0.0 and smooth.max() == 1.0
    for axis in (0, 1):
        # i.i.d. noise has no neighbour correlation; a Gaussian blur of sigma >= 0.8 px
        # gives > 0.5 along each axis
        assert abs(lag_one_correlation(noise, axis)) < 0.05
        assert lag_one_correlation(smooth, axis) > 0.5


def test_control_maps_are_seeded():
    image = np.random.default_rng(2).integers(0, 256, (32, 40), dtype=np.uint8)
    first = metrics.control_maps(image, seed=5, sigma=2.0)
    again = metrics.control_maps(image, seed=5, sigma=2.0)
    np.testing.assert_array_equal(first["random"], again["random"])
    np.testing.assert_array_equal(first["random"], metrics.random_map((32, 40), seed=5, sigma=2.0))
    assert not np.array_equal(first["random"], metrics.control_maps(image, seed=6, sigma=2.0)["random"])
    np.testing.assert_array_equal(metrics.control_maps(image, seed=5)["random"], metrics.random_map((32, 40), seed=5))


def test_flagging_does_not_depend_on_where_the_controls_are_listed():
    summary = {
        "sobel": {"iou": 0.3},
        "good": {"iou": 0.5},
        "random": {"iou": 0.1},
        "bad": {"iou": 0.2},
    }
    assert metrics.flag_below_controls(summary, "iou") == {"good": False, "bad": True}
