"""Reading the files of a user's data set folder: what counts as an image, decoding images and
masks with messages relative to the data set, and the error every layout reader raises.

Shared by the layout readers (:mod:`camcore.evaluation.archives` for DAGM and flat folders,
:mod:`camcore.evaluation.mvtec` for MVTec AD); nothing here knows a layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
JUNK_DIRS = frozenset({"__MACOSX"})
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


class ArchiveError(ValueError):
    """An archive or folder that cannot be used as a data set; the message is for the user."""


def is_junk(parts: tuple[str, ...]) -> bool:
    """macOS / Windows metadata (``__MACOSX/``, ``._*``, ``.DS_Store``, ...), skipped everywhere."""
    return bool(parts) and (parts[0] in JUNK_DIRS or parts[-1] in JUNK_FILES or parts[-1].startswith("._"))


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("._")


def image_files(folder: Path, *, recursive: bool = True) -> list[Path]:
    """The image files under ``folder`` (none when it is missing), sorted by relative path;
    symbolic links are never followed."""
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        (p for p in found if p.is_file() and not p.is_symlink() and is_image(p)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def listing(paths: Sequence[str], limit: int = 5) -> str:
    """``a, b, c and 4 more``: a short list of names for a message."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def relative_message(message: str, root: Path) -> str:
    """A camcore message with the server folder cut out of its paths."""
    return message.replace(f"{root}{os.sep}", "").replace(str(root), ".")


def read_pixels(path: Path, shown: str) -> np.ndarray:
    """uint8 gray (H, W) or RGB (H, W, 3) pixels of ``path`` (through
    :func:`camcore.preprocess.read_image`: its pixel limit applies); errors name ``shown``."""
    from camcore.preprocess import read_image

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    try:
        return read_image(data)
    except ValueError as exc:
        raise ArchiveError(f"{shown}: {exc}") from None


def gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def read_mask(path: Path, shown: str, image_shape: tuple[int, ...], image_shown: str) -> np.ndarray:
    """The bool mask in ``path`` (a pixel > 0 in any channel is defect), of the image's size."""
    pixels = read_pixels(path, shown)
    mask = (pixels.max(axis=-1) if pixels.ndim == 3 else pixels) > 0
    if mask.shape != image_shape[:2]:
        (mh, mw), (ih, iw) = mask.shape, image_shape[:2]
        raise ArchiveError(f"{shown}: mask size {mw}×{mh} differs from the size {iw}×{ih} of its image {image_shown}")
    return mask
