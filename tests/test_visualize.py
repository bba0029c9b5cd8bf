"""Drawing maps: overlays, the emphasized view, saliency, grids and PNG export."""

import cv2
import numpy as np
import pytest

from camcore.visualize import (
    COLORMAPS,
    DIVERGING_ANCHORS,
    colorize,
    colorize_signed,
    compose_grid,
    difference_overlay,
    draw_outline,
    emphasize,
    map_to_rgb,
    overlay,
    png_bytes,
    saliency_to_rgb,
    to_rgb,
)


def gray_image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(60, 200, (size, size), dtype=np.uint8)


def blob_cam(h=8, w=8):
    cam = np.zeros((h, w), np.float32)
    cam[2:6, 2:6] = 1.0
    return cam


def test_colormaps_listed_with_jet_first():
    assert list(COLORMAPS)[0] == "jet"
    assert {"jet", "turbo", "inferno", "viridis", "magma"} <= set(COLORMAPS)
    with pytest.raises(ValueError, match="colormap"):
        colorize(np.zeros((4, 4)), "no-such-map")


def test_to_rgb_accepts_gray_rgb_rgba_and_float():
    gray = gray_image(16)
    rgb = to_rgb(gray)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], gray)
    np.testing.assert_array_equal(rgb[..., 2], gray)
    rgba = np.dstack([rgb, np.full((16, 16), 7, np.uint8)])
    np.testing.assert_array_equal(to_rgb(rgba), rgb)
    unit = to_rgb(np.full((16, 16), 1.0, np.float32))
    assert unit.dtype == np.uint8 and (unit == 255).all()


def test_colorize_jet_ramp_runs_blue_to_red():
    ramp = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (4, 1))
    colored = colorize(ramp, "jet")
    assert colored.shape == (4, 256, 3) and colored.dtype == np.uint8
    low, high = colored[0, 0].astype(int), colored[0, -1].astype(int)
    assert low[2] > 100 and low[0] < 30  # blue end (RGB order, not OpenCV's BGR)
    assert high[0] > 100 and high[2] < 30  # red end
    # jet's hue falls monotonically from blue (240°) to red (0°); a BGR/RGB swap
    # would make it rise
    hue = cv2.cvtColor(colored[:1], cv2.COLOR_RGB2HSV_FULL)[0, :, 0].astype(int) * 360 / 256
    assert hue[0] > 200 and hue[-1] < 10
    assert (np.diff(hue) <= 3).all()


def test_colorize_clips_and_survives_nan():
    cam = np.array([[np.nan, -1.0], [2.0, 0.5]] * 4, np.float32).reshape(8, 2)
    colored = colorize(cam)
    np.testing.assert_array_equal(colored[0, 0], colorize(np.zeros((1, 1)))[0, 0])
    np.testing.assert_array_equal(colored[1, 0], colorize(np.ones((1, 1)))[0, 0])


def test_overlay_alpha_endpoints_and_resolution():
    image = gray_image(64)
    cam = blob_cam()
    plain = overlay(image, cam, alpha=0.0)
    assert plain.shape == (64, 64, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(plain, to_rgb(image))
    pure = overlay(image, cam, "viridis", alpha=1.0)
    from camcore.methods.combine import upsample

    np.testing.assert_array_equal(pure, colorize(upsample(cam, (64, 64)), "viridis"))
    half = overlay(image, cam, alpha=0.5).astype(int)
    assert not np.array_equal(half, plain) and not np.array_equal(half, pure)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_overlay_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        overlay(gray_image(16), blob_cam(), alpha=alpha)


def test_emphasize_dims_outside_and_keeps_inside_colored():
    image = gray_image(64)
    cam = blob_cam()
    out = emphasize(image, cam, threshold=0.5, alpha=0.6)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    rgb = to_rgb(image)
    outside = np.zeros((64, 64), bool)
    outside[:8, :] = True  # far from the blob (rows 16..47 after upsampling)
    assert out[outside].mean() < 0.6 * rgb[outside].mean()
    # outside is gray: all channels equal
    np.testing.assert_array_equal(out[outside][:, 0], out[outside][:, 1])
    # the inside carries the heat overlay, not a gray copy of the image
    inside = out[28:36, 28:36].astype(int)
    assert np.abs(inside[..., 0] - inside[..., 2]).mean() > 20
    np.testing.assert_array_equal(out[28:36, 28:36], overlay(image, cam, alpha=0.6)[28:36, 28:36])


def test_emphasize_draws_a_boundary_and_validates_threshold():
    image = np.full((64, 64), 128, np.uint8)
    out = emphasize(image, blob_cam(), threshold=0.5)
    white = (out == 255).all(axis=-1)
    assert white.any()  # the outline
    rows, cols = np.nonzero(white)
    assert 10 <= rows.min() and rows.max() <= 53 and 10 <= cols.min() and cols.max() <= 53
    with pytest.raises(ValueError, match="threshold"):
        emphasize(image, blob_cam(), threshold=1.2)


def test_draw_outline_changes_only_pixels_near_the_boundary():
    rgb = to_rgb(gray_image(64))
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True  # → rows/cols 16..47 at 64×64
    out = draw_outline(rgb, mask, color=(0, 255, 0), thickness=2)
    assert out is not rgb and out.shape == rgb.shape
    changed = (out != rgb).any(axis=-1)
    assert changed.any()
    boundary = np.zeros((64, 64), np.uint8)
    boundary[16:48, 16:48] = 1
    edge = boundary - cv2.erode(boundary, np.ones((3, 3), np.uint8))
    near = cv2.dilate(edge, np.ones((3, 3), np.uint8)).astype(bool)  # ±1 px: a 2-px line
    assert not changed[~near].any()
    assert (out[changed] == [0, 255, 0]).all()


def test_draw_outline_empty_mask_returns_unchanged_copy():
    rgb = to_rgb(gray_image(32))
    out = draw_outline(rgb, np.zeros((32, 32), bool))
    np.testing.assert_array_equal(out, rgb)
    assert not np.shares_memory(out, rgb)  # a copy the caller may draw on


def test_saliency_to_rgb_zero_is_mid_gray_and_signed_values_spread():
    zero = saliency_to_rgb(np.zeros((16, 16, 3), np.float32))
    assert zero.shape == (16, 16, 3) and zero.dtype == np.uint8
    assert np.unique(zero).tolist() == [128]
    one_channel = saliency_to_rgb(np.linspace(-1, 1, 256, dtype=np.float32).reshape(16, 16, 1))
    assert one_channel.shape == (16, 16, 3)
    np.testing.assert_array_equal(one_channel[..., 0], one_channel[..., 2])
    assert one_channel[0, 0, 0] < 128 < one_channel[-1, -1, 0]
    nan = saliency_to_rgb(np.full((8, 8, 3), np.nan, np.float32))
    assert np.unique(nan).tolist() == [128]


def test_map_to_rgb_gray_colormap_and_normalization():
    zero = map_to_rgb(np.zeros((8, 8), np.float32))
    assert zero.shape == (8, 8, 3) and (zero == 0).all()
    big = map_to_rgb(np.array([[0.0, 5.0], [10.0, 2.5]] * 4, np.float32).reshape(8, 2))
    assert big[1, 0].tolist() == [255, 255, 255] and big[0, 1, 0] == 128
    colored = map_to_rgb(np.ones((8, 8), np.float32), "jet")
    np.testing.assert_array_equal(colored, colorize(np.ones((8, 8)), "jet"))


def test_compose_grid_size_titles_and_empty_cells():
    a = to_rgb(gray_image(64))
    rows = [[("Grad-CAM", a), ("Score-CAM", a), ("Faster-Score-CAM", a)], [("image", a), ("empty", None)]]
    grid = compose_grid(rows, tile=96, title_height=20)
    assert grid.shape == (2 * (96 + 20), 3 * 96, 3) and grid.dtype == np.uint8
    title_strip = grid[:20, :96]
    assert (title_strip < 128).any() and (title_strip == 255).mean() > 0.5  # dark text on white
    enlarged = cv2.resize(a, (96, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(grid[20:116, :96], enlarged)
    assert (grid[116 + 20 :, 96:192] == 255).all()  # None cell stays white
    assert (grid[116:, 192:] == 255).all()  # missing cell in the short row
    with pytest.raises(ValueError):
        compose_grid([])


def test_png_bytes_round_trip():
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[3, 4] = (1, 2, 3)
    data = png_bytes(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), rgb)


def test_grid_titles_spell_ui_symbols_in_ascii():
    from camcore.visualize import _fit_title

    assert _fit_title("Sobel × Grad-CAM · overlay", 1000, 0.45) == "Sobel x Grad-CAM - overlay"


def test_the_diverging_scale_is_white_at_zero_and_its_anchors_at_the_ends():
    values = np.array([[-1.0, -0.5, 0.0, 0.5, 1.0, -7.0, 7.0, np.nan]], np.float32)
    colored = colorize_signed(values).astype(int)
    np.testing.assert_array_equal(colored[0, :5], DIVERGING_ANCHORS.astype(int))
    np.testing.assert_array_equal(colored[0, 2], [255, 255, 255])
    np.testing.assert_array_equal(colored[0, 5], colored[0, 0])  # clipped to -1
    np.testing.assert_array_equal(colored[0, 6], colored[0, 4])  # clipped to +1
    np.testing.assert_array_equal(colored[0, 7], [255, 255, 255])  # NaN counts as no difference
    # between anchors: linear, e.g. halfway from white to the +0.5 anchor
    halfway = (np.array([255.0, 255, 255]) + DIVERGING_ANCHORS[3]) / 2
    np.testing.assert_allclose(colorize_signed(np.array([[0.25]]))[0, 0], halfway, atol=0.51)


def test_the_diverging_scale_is_red_for_positive_and_blue_for_negative_growing_with_size():
    ramp = np.linspace(0.0, 1.0, 21, dtype=np.float32)[None, :]
    up, down = colorize_signed(ramp).astype(int)[0], colorize_signed(-ramp).astype(int)[0]
    redness, blueness = up[:, 0] - up[:, 2], down[:, 2] - down[:, 0]
    assert redness[0] == 0 and blueness[0] == 0
    assert (np.diff(redness[:11]) > 0).all() and (np.diff(blueness[:11]) > 0).all()  # up to ±0.5: more colour
    assert (redness[1:] > 0).all() and (blueness[1:] > 0).all()


def test_difference_overlay_shows_the_image_where_the_maps_agree():
    image = gray_image(32)
    difference = np.zeros((8, 8), np.float32)
    difference[:4, :4] = 0.8  # A higher in the top-left quarter
    difference[4:, 4:] = -0.8  # B higher in the bottom-right one
    drawn = difference_overlay(image, difference, alpha=0.5)
    assert drawn.shape == (32, 32, 3) and drawn.dtype == np.uint8
    np.testing.assert_array_equal(drawn[20:24, 0:4], to_rgb(image)[20:24, 0:4])  # no difference: the image
    np.testing.assert_array_equal(drawn[2, 2], colorize_signed(np.array([[0.8]]))[0, 0])  # full opacity from 0.5
    np.testing.assert_array_equal(drawn[30, 30], colorize_signed(np.array([[-0.8]]))[0, 0])
    np.testing.assert_array_equal(difference_overlay(image, difference, alpha=0.0), to_rgb(image))
    # half the full-opacity difference at the default alpha: halfway between image and colour
    half = difference_overlay(image, np.full((32, 32), 0.25, np.float32), alpha=0.5)
    expected = 0.5 * to_rgb(image).astype(float) + 0.5 * colorize_signed(np.array([[0.25]]))[0, 0]
    np.testing.assert_allclose(half, expected, atol=0.51)
