"""The page's panels as the tests read them back: a column's tiles in one image element,
their pictures data URLs of JPEGs (``dashboard.components.grid.show_panels``), compared with
the pictures they show."""

from __future__ import annotations

import base64
from typing import NamedTuple

import cv2
import numpy as np


def decode(data_url: str) -> np.ndarray:
    """The RGB picture of a panel's data URL."""
    data = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def assert_shown_as(data_url: str, expected: np.ndarray) -> None:
    """The panel shows ``expected``, as a JPEG (quality 90, full color resolution): off by
    about one level on average and a few at most but for a few edge pixels, which another
    picture (another map, the colormap reversed, the other model's overlay) is not."""
    assert data_url.startswith("data:image/jpeg;base64,"), data_url[:40]
    shown = decode(data_url).astype(int)
    assert shown.shape == np.shape(expected), (shown.shape, np.shape(expected))
    error = np.abs(shown - np.asarray(expected, int))
    assert error.mean() < 2.0 and np.percentile(error, 99) < 16, (error.mean(), np.percentile(error, 99))


class Tile(NamedTuple):
    caption: str
    url: str


def tiles(area) -> list[Tile]:
    """Every captioned picture of an AppTest area (``at.main``), in page order: a column's
    tiles are one image element (``grid.show_panels``), a caption under each."""
    return [Tile(caption, url) for image in area.image for caption, url in zip(image.captions, image.value)
            if caption and caption.strip()]
