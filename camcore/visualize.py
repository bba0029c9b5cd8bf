"""Turning maps into pictures: heat overlays, the thresholded "emphasized" view,
guided-backprop saliency, the difference of two maps on a diverging scale, and the
side-by-side grid the dashboard downloads.

Every function returns uint8 RGB (H, W, 3). Maps are floats in [0, 1] at any
resolution; they are bilinearly upsampled to the image they are drawn on.
NumPy and OpenCV only, so the dashboard can draw without touching TensorFlow.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from camcore.maps import upsample
from camcore.preprocess import to_uint8_image

# name -> OpenCV colormap; jet first because the original study used it
COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "cividis": cv2.COLORMAP_CIVIDIS,
    "hot": cv2.COLORMAP_HOT,
}

# brightness kept outside the emphasized region: dim enough to recede, bright
# enough that the texture around a defect stays readable
_DIM = 0.35
_OUTLINE_COLOR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Gray, RGB or RGBA image (uint8, uint16 or float) → contiguous uint8 RGB (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        image = to_uint8_image(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"unsupported image shape {image.shape}: expected gray, RGB or RGBA")
    return np.ascontiguousarray(image)


def _colormap_code(colormap: str) -> int:
    code = COLORMAPS.get(str(colormap).lower())
    if code is None:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {list(COLORMAPS)}")
    return code


def _clean_map(cam: np.ndarray) -> np.ndarray:
    """A 2-D float32 map with NaN/inf removed and values clipped to [0, 1]."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim == 3 and cam.shape[-1] == 1:
        cam = cam[..., 0]
    if cam.ndim != 2 or cam.size == 0:
        raise ValueError(f"a map must be 2-D (h, w), got shape {cam.shape}")
    return np.clip(np.nan_to_num(cam, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _map_at(cam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return upsample(_clean_map(cam), (int(shape[0]), int(shape[1])))


def _check_unit(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def colorize(cam: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] map → RGB through ``colormap`` (0 is the colormap's low end)."""
    code = _colormap_code(colormap)
    levels = np.round(_clean_map(cam) * 255.0).astype(np.uint8)
    # OpenCV colormaps produce BGR
    return cv2.cvtColor(cv2.applyColorMap(levels, code), cv2.COLOR_BGR2RGB)


# A diverging scale for signed maps (e.g. one model's map minus another's): blue for
# negative, white at zero, red for positive, equally saturated at -1 and +1 so neither sign
# looks stronger. Anchors at -1, -0.5, 0, 0.5, 1 (RGB), linearly interpolated between;
# already saturated at ±0.5, where differences of two normalized maps mostly lie.
DIVERGING_ANCHORS = np.array(
    [[16, 60, 140], [40, 110, 210], [255, 255, 255], [225, 60, 45], [135, 10, 25]], np.float32
)
# |difference| at which difference_overlay reaches its full opacity
_FULL_DIFFERENCE = 0.5


def colorize_signed(values: np.ndarray) -> np.ndarray:
    """A signed map in [-1, 1] → RGB on the diverging scale :data:`DIVERGING_ANCHORS`
    (-1 blue, 0 white, +1 red); values outside are clipped, NaN counts as 0."""
    signed = np.asarray(values, dtype=np.float32)
    if signed.ndim == 3 and signed.shape[-1] == 1:
        signed = signed[..., 0]
    if signed.ndim != 2 or signed.size == 0:
        raise ValueError(f"a signed map must be 2-D (h, w), got shape {signed.shape}")
    signed = np.clip(np.nan_to_num(signed, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    position = (signed + 1.0) * 0.5 * (len(DIVERGING_ANCHORS) - 1)
    low = np.minimum(np.floor(position).astype(np.int64), len(DIVERGING_ANCHORS) - 2)
    weight = (position - low)[..., None]
    colors = DIVERGING_ANCHORS[low] * (1.0 - weight) + DIVERGING_ANCHORS[low + 1] * weight
    return np.clip(np.round(colors), 0, 255).astype(np.uint8)


def difference_overlay(image: np.ndarray, difference: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A signed map (e.g. map A - map B, in [-1, 1]) on the diverging scale over ``image``,
    at the image's resolution. Each pixel's opacity grows with |difference|: 0 where the
    maps agree (the image shows unchanged), ``min(1, 2·alpha)`` from |difference| = 0.5 up
    (so the default alpha 0.5 paints a strong difference fully; alpha 0 gives the image)."""
    alpha = _check_unit(alpha, "alpha")
    rgb = to_rgb(image)
    signed: np.ndarray = np.asarray(difference, dtype=np.float32)  # cv2.resize below returns a plain ndarray
    if signed.ndim == 3 and signed.shape[-1] == 1:
        signed = signed[..., 0]
    if signed.ndim == 2 and signed.shape != rgb.shape[:2]:
        # bilinear, like the maps; a signed map is resized directly, not clipped to [0, 1]
        signed = cv2.resize(signed, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    colors = colorize_signed(signed).astype(np.float32)
    magnitude = np.abs(np.nan_to_num(np.clip(signed, -1.0, 1.0), nan=0.0))
    weight = (np.minimum(magnitude / _FULL_DIFFERENCE, 1.0) * min(1.0, 2.0 * alpha))[..., None]
    mixed = (1.0 - weight) * rgb.astype(np.float32) + weight * colors
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _blend(rgb: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    mixed = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """The heatmap of ``cam`` blended over ``image`` at the image's resolution.

    ``alpha`` is the heatmap's opacity: 0 gives the image, 1 the pure heatmap.
    """
    alpha = _check_unit(alpha, "alpha")
    rgb = to_rgb(image)
    heat = colorize(_map_at(cam, rgb.shape), colormap)
    return _blend(rgb, heat, alpha)


def _mask_at(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be 2-D (h, w), got shape {mask.shape}")
    binary = (mask != 0).astype(np.uint8)
    height, width = int(shape[0]), int(shape[1])
    if binary.shape != (height, width):
        binary = cv2.resize(binary, (width, height), interpolation=cv2.INTER_NEAREST)
    return binary


def draw_outline(
    rgb: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int] = (0, 255, 0),
    thickness: int = 2,
) -> np.ndarray:
    """A copy of ``rgb`` with the contours of the boolean ``mask`` drawn on it.

    The mask may have any resolution (nearest-resized to the image). An empty or
    full mask has no boundary inside the image: the copy is returned unchanged.
    """
    out = to_rgb(rgb).copy()
    if isinstance(thickness, bool) or int(thickness) != thickness or int(thickness) < 1:
        raise ValueError(f"thickness must be a positive integer, got {thickness!r}")
    if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
        raise ValueError(f"color must be an (r, g, b) triple of 0..255 values, got {color!r}")
    binary = _mask_at(mask, out.shape)
    if not binary.any() or binary.all():
        return out
    contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), int(thickness), cv2.LINE_8)
    return out


def emphasize(
    image: np.ndarray,
    cam: np.ndarray,
    threshold: float,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> np.ndarray:
    """The thresholded view: heat overlay where ``cam >= threshold``, dimmed gray elsewhere.

    The region's boundary is outlined with a thin white line, so a region that
    is small or faint stays findable.
    """
    threshold = _check_unit(threshold, "threshold")
    alpha = _check_unit(alpha, "alpha")
    rgb = to_rgb(image)
    up = _map_at(cam, rgb.shape)
    inside = up >= threshold
    heat = _blend(rgb, colorize(up, colormap), alpha)
    # grayscale outside: colour then only ever means "inside the region"
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * _DIM
    dimmed = np.repeat(np.round(gray).astype(np.uint8)[..., None], 3, axis=-1)
    out = np.where(inside[..., None], heat, dimmed)
    return draw_outline(out, inside, color=_OUTLINE_COLOR, thickness=1)


def saliency_to_rgb(saliency: np.ndarray) -> np.ndarray:
    """Signed guided-backprop saliency (H, W, C) → displayable RGB.

    The usual "deprocess": centre on the mean, scale to std 0.15 around mid-gray,
    clip. One channel gives gray; an all-zero map gives uniform mid-gray.
    """
    values = np.asarray(saliency, dtype=np.float64)
    if values.ndim == 2:
        values = values[..., None]
    if values.ndim != 3 or values.shape[-1] not in (1, 3) or values.size == 0:
        raise ValueError(f"saliency must be (H, W), (H, W, 1) or (H, W, 3), got shape {values.shape}")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    values = values - values.mean()
    values = values / (values.std() + 1e-5) * 0.15 + 0.5
    out = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def map_to_rgb(map01: np.ndarray, colormap: str | None = None) -> np.ndarray:
    """A non-negative map as gray RGB (``colormap`` None) or through a colormap.

    Values above 1 are normalized by the maximum; negatives and NaN count as 0,
    so an all-zero map is black (or the colormap's low end).
    """
    values = np.asarray(map01, dtype=np.float32)
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"map must be 2-D (h, w), got shape {values.shape}")
    values = np.maximum(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    peak = float(values.max())
    if peak > 1.0:
        values = values / peak
    if colormap is not None:
        return colorize(values, colormap)
    levels = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(levels[..., None], 3, axis=-1)


_ASCII_SPELLING = str.maketrans({"×": "x", "·": "-", "–": "-", "—": "-", "≥": ">=", "≤": "<=", "…": "..."})


def _fit_title(title: str, width: int, scale: float) -> str:
    # Hershey fonts only draw ASCII; anything else would show as "?" anyway
    # OpenCV's Hershey fonts draw ASCII only: spell the UI's symbols out first.
    text = str(title).translate(_ASCII_SPELLING).encode("ascii", "replace").decode("ascii")
    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, 1)[0][0] > width:
        text = text[:-1]
    return text + "..." if text else ""


def _resize_tile(rgb: np.ndarray, tile: int) -> np.ndarray:
    if rgb.shape[:2] == (tile, tile):
        return rgb
    shrinking = rgb.shape[0] >= tile and rgb.shape[1] >= tile
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(rgb, (tile, tile), interpolation=interpolation)


def compose_grid(
    panels: Sequence[Sequence[tuple[str, np.ndarray | None]]],
    tile: int = 224,
    title_height: int = 22,
) -> np.ndarray:
    """Rows of (title, RGB image or None) → one RGB image, each tile titled above.

    The result is rows·(tile + title_height) high and cols·tile wide, where cols
    is the longest row; short rows and None cells are left white.
    """
    tile, title_height = int(tile), int(title_height)
    if tile < 8:
        raise ValueError(f"tile must be at least 8 pixels, got {tile}")
    if title_height < 0:
        raise ValueError(f"title_height must be >= 0, got {title_height}")
    rows = [list(row) for row in panels]
    cols = max((len(row) for row in rows), default=0)
    if not rows or cols == 0:
        raise ValueError("compose_grid needs at least one panel")
    cell_height = tile + title_height
    grid = np.full((len(rows) * cell_height, cols * tile, 3), 255, np.uint8)
    # scale the font with the title strip so larger exports stay legible
    scale = max(0.3, min(1.0, title_height / 40.0))
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if len(cell) != 2:
                raise ValueError(f"each panel must be a (title, image) pair, got {len(cell)} items")
            title, image = cell
            top, left = r * cell_height, c * tile
            if image is not None:
                grid[top + title_height : top + cell_height, left : left + tile] = _resize_tile(
                    to_rgb(image), tile
                )
            text = _fit_title(title or "", tile - 6, scale)
            if title_height > 0 and text:
                (_, text_h), baseline = cv2.getTextSize(text, _FONT, scale, 1)
                y = top + (title_height + text_h) // 2 - max(baseline // 2 - 1, 0)
                cv2.putText(grid, text, (left + 3, y), _FONT, scale, (30, 30, 30), 1, cv2.LINE_AA)
    return grid


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB image as PNG bytes."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(to_rgb(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return data.tobytes()
