"""Defect regions of a thresholded map, in the pixels of the original image.

A map at any resolution (a CAM at its layer's) is upsampled bilinearly to the image's
height × width (:func:`camcore.maps.upsample`, the resize of the comparison grid and of the
localization protocol), a pixel is on when the map is ≥ the threshold (the rule of
:func:`camcore.metrics.localization`, so the union of the regions is exactly the region
that protocol scores), and each 8-connected group of on pixels is one :class:`Region`:
its outer contour and bounding box, its area, the peak and mean map value inside it.

NumPy and OpenCV only: importing this module never pulls in TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from camcore.maps import upsample

CONNECTIVITY = 8
REGION_COLOR = (255, 0, 255)  # magenta: stands out on jet overlays and on gray textures


@dataclass(frozen=True)
class Region:
    """One connected region of ``map >= threshold``, in image pixels.

    ``contour``: the outer boundary as (x, y) vertices (OpenCV's simple chain: straight runs
    keep their end points); ``bbox``: (x, y, width, height) of the on pixels; ``area``: the
    number of on pixels; ``peak`` / ``mean``: the map's maximum / mean over them; ``centroid``:
    their mean (x, y).
    """

    contour: tuple[tuple[int, int], ...]
    bbox: tuple[int, int, int, int]
    area: int
    peak: float
    mean: float
    centroid: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: lists and plain floats (map values rounded to 6 digits)."""
        return {
            "bbox": list(self.bbox),
            "area": self.area,
            "peak": round(self.peak, 6),
            "mean": round(self.mean, 6),
            "centroid": [round(v, 2) for v in self.centroid],
            "contour": [list(point) for point in self.contour],
        }


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return threshold


def map_at_image(cam: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """The [0, 1] map bilinearly upsampled to the image's (height, width), float32."""
    return upsample(np.nan_to_num(np.asarray(cam, np.float32)), (int(image_shape[0]), int(image_shape[1])))


def on_pixels(cam: np.ndarray, image_shape: tuple[int, ...], threshold: float) -> np.ndarray:
    """bool (H, W): where the map, at the image's size, is ≥ ``threshold``."""
    return map_at_image(cam, image_shape) >= _check_threshold(threshold)


def _region(component: np.ndarray, values: np.ndarray, stats: np.ndarray, centroid: np.ndarray) -> Region:
    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outer = max(contours, key=len)  # one 8-connected component has one outer boundary
    x, y, width, height, area = (int(v) for v in stats)
    inside = values[component]
    return Region(
        contour=tuple((int(px), int(py)) for px, py in outer.reshape(-1, 2)),
        bbox=(x, y, width, height),
        area=area,
        peak=float(inside.max()),
        mean=float(inside.mean()),
        centroid=(float(centroid[0]), float(centroid[1])),
    )


def find_regions(
    cam: np.ndarray, image_shape: tuple[int, ...], threshold: float, *, min_area: int = 0
) -> list[Region]:
    """The regions of ``cam >= threshold`` at the image's size (see the module docstring),
    strongest first (by peak, then area); regions of fewer than ``min_area`` pixels are
    dropped. An all-zero map has none."""
    values = map_at_image(cam, image_shape)
    on = (values >= _check_threshold(threshold)).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(on, connectivity=CONNECTIVITY)
    regions = [
        _region(labels == k, values, stats[k], centroids[k])
        for k in range(1, count)
        if stats[k, cv2.CC_STAT_AREA] >= max(int(min_area), 1)
    ]
    return sorted(regions, key=lambda r: (-r.peak, -r.area, r.bbox))


def regions_mask(regions: list[Region] | tuple[Region, ...], image_shape: tuple[int, ...]) -> np.ndarray:
    """bool (H, W): the regions' contours filled (holes inside a region count as inside)."""
    canvas = np.zeros((int(image_shape[0]), int(image_shape[1])), np.uint8)
    for region in regions:
        cv2.drawContours(canvas, [np.asarray(region.contour, np.int32).reshape(-1, 1, 2)], -1, 1, cv2.FILLED)
    return canvas.astype(bool)


def draw_regions(rgb: np.ndarray, regions: list[Region] | tuple[Region, ...],
                 color: tuple[int, int, int] = REGION_COLOR) -> np.ndarray:
    """A copy of the uint8 RGB image with each region's contour, bounding box and number."""
    out = np.ascontiguousarray(rgb, np.uint8).copy()
    thickness = max(1, round(max(out.shape[:2]) / 400))
    for number, region in enumerate(regions, start=1):
        x, y, width, height = region.bbox
        cv2.drawContours(out, [np.asarray(region.contour, np.int32).reshape(-1, 1, 2)], -1, color, thickness)
        cv2.rectangle(out, (x, y), (x + width - 1, y + height - 1), (255, 255, 255), thickness)
        cv2.putText(out, str(number), (x, max(y - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thickness,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def region_pixels(cam: np.ndarray, image_shape: tuple[int, ...], threshold: float, *, min_area: int = 0) -> np.ndarray:
    """bool (H, W): the pixels of :func:`find_regions`' regions (``map >= threshold`` without
    the regions smaller than ``min_area``), holes left out as the protocol leaves them."""
    on = on_pixels(cam, image_shape, threshold)
    if min_area <= 1:
        return on
    count, labels, stats, _ = cv2.connectedComponentsWithStats(on.astype(np.uint8), connectivity=CONNECTIVITY)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= int(min_area)
    return keep[labels]
