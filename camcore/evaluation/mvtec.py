"""The MVTec AD folder layout (Bergmann et al., CVPR 2019), as evaluation items.

One folder per category (a product: ``bottle``, ``carpet`` ...), or the category folder
itself at the top::

    <category>/train/good/000.png                   clean training images (optional: train_good)
    <category>/test/good/000.png                    clean test images
    <category>/test/<defect type>/000.png           defective test images, one folder per type
    <category>/ground_truth/<defect type>/000_mask.png   their binary masks (nonzero = defect)

Images are gray or RGB of any size (MVTec's are 700-1024 px). A mask is matched to its image
by name: ``000_mask.<ext>`` (MVTec's naming) or ``000.<ext>`` (the same stem), any image
extension; two masks for one image are refused (:class:`ArchiveError`).

Results: ``class_name`` is ``"<category>/<defect type>"`` (``"bottle/broken_large"``,
``"bottle/good"``), ``defect_kind`` the defect type (empty for good images). Every category
is evaluated unless ``category`` names one: a defect classifier is often trained per
product, but a set that holds several products is usually meant as one set (as DAGM's
ten classes are), and the category in the class name keeps them apart in every table.

A defective image without a mask cannot be scored for localization: it is listed in the
set's notes when the folder is read, and its evaluation row is an error naming the
expected mask file (the run goes on). Scoring it against an empty mask would count an
IoU of 0; counting it as clean would hide a defect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from camcore.evaluation.datafiles import ArchiveError, image_files, is_junk, listing, read_mask, read_pixels
from camcore.evaluation.sources import EvalItem, LoadedImage

TRAIN, TEST, GROUND_TRUTH, GOOD = "train", "test", "ground_truth", "good"
MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class MvtecSet:
    """The items of an MVTec-layout folder, the categories found, and notes for the user
    (defective images without a mask, masks that match no image)."""

    items: tuple[EvalItem, ...]
    categories: tuple[str, ...]
    notes: tuple[str, ...]


def _is_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def is_category(folder: Path) -> bool:
    """A folder with a ``test/`` folder of defect-type folders and a ``ground_truth/``,
    ``test/good/`` or ``train/good/`` folder (so that a flat set with an ``images/test/<kind>/``
    sub-folder is not taken for a category)."""
    test = folder / TEST
    if not _is_dir(test) or not any(_is_dir(child) for child in test.iterdir()):
        return False
    return any(_is_dir(folder / part) for part in (GROUND_TRUTH, f"{TEST}/{GOOD}", f"{TRAIN}/{GOOD}"))


def find_categories(root: Path, top_name: str | None = None) -> dict[str, Path]:
    """``{category: folder}``: ``root`` itself when it is a category (named ``top_name``, default
    its folder name), else its sub-folders that are; empty when this is no MVTec layout."""
    if is_category(root):
        return {top_name if top_name is not None else root.name: root}
    return {
        child.name: child
        for child in sorted(root.iterdir(), key=lambda p: p.name)
        if not is_junk((child.name,)) and _is_dir(child) and is_category(child)
    }


def is_training_image(item: EvalItem) -> bool:
    """Whether ``item`` is one of a category's ``train/good/`` images (added by ``train_good``):
    its path ends in ``train/good/<name>``, where a test image's ends in ``test/<type>/<name>``."""
    return item.path.split("/")[-3:-1] == [TRAIN, GOOD]


def _mask_stem(path: Path) -> str:
    stem = path.stem
    return stem[: -len(MASK_SUFFIX)] if stem.endswith(MASK_SUFFIX) else stem


def _masks_by_stem(folder: Path, root: Path) -> dict[str, Path]:
    masks: dict[str, Path] = {}
    for mask in image_files(folder, recursive=False):
        stem = _mask_stem(mask)
        if stem in masks:
            first, second = (m.relative_to(root).as_posix() for m in (masks[stem], mask))
            raise ArchiveError(
                f"masks not matching: {first} and {second} are both masks of the image {stem}.*; keep one"
            )
        masks[stem] = mask
    return masks


def _loader(root: Path, image: Path, mask: Path | None, defect_type: str, class_name: str,
            expected_mask: str) -> Callable[[], LoadedImage]:
    image_shown = image.relative_to(root).as_posix()
    defective = defect_type != GOOD

    def load() -> LoadedImage:
        if not defective:
            pixels = read_pixels(image, image_shown)
            return LoadedImage(pixels, np.zeros(pixels.shape[:2], bool), False, class_name)
        if mask is None:
            raise ArchiveError(
                f"{image_shown}: no ground-truth mask (expected {expected_mask}); a defective image "
                "without a mask cannot be scored, so it is skipped"
            )
        pixels = read_pixels(image, image_shown)
        shown = mask.relative_to(root).as_posix()
        labels = read_mask(mask, shown, pixels.shape, image_shown)
        if not labels.any():
            raise ArchiveError(f"{shown}: the mask of the defective image {image_shown} is empty")
        return LoadedImage(pixels, labels, True, class_name, defect_type)

    return load


def _category_items(root: Path, name: str, folder: Path, source: str, train_good: bool,
                    notes: list[str]) -> list[EvalItem]:
    """Items of one category: ``test/<type>/`` in type order, then ``train/good/`` if asked."""
    prefix = f"{name}/" if name else ""
    groups = [(child.name, child) for child in sorted((folder / TEST).iterdir(), key=lambda p: p.name)
              if _is_dir(child) and not is_junk((child.name,))]
    if train_good:
        groups.append((GOOD, folder / TRAIN / GOOD))
    items: list[EvalItem] = []
    for defect_type, images_dir in groups:
        masks = {} if defect_type == GOOD else _masks_by_stem(folder / GROUND_TRUTH / defect_type, root)
        images = image_files(images_dir, recursive=False)
        class_name = f"{prefix}{defect_type}"
        for image in images:
            mask = masks.pop(image.stem, None)
            expected = (folder / GROUND_TRUTH / defect_type / f"{image.stem}{MASK_SUFFIX}.png").relative_to(root)
            relative = image.relative_to(root).as_posix()
            if defect_type != GOOD and mask is None:
                notes.append(f"{relative}: no mask (expected {expected.as_posix()}); this image will be skipped")
            load = _loader(root, image, mask, defect_type, class_name, expected.as_posix())
            items.append(EvalItem(relative, source, 0, load, relative, class_name, defect_type != GOOD))
        orphans = sorted(m.relative_to(root).as_posix() for m in masks.values())
        if orphans:
            notes.append(f"{len(orphans)} mask(s) match no image of {prefix}{TEST}/{defect_type}/: {listing(orphans)}")
    return items


def mvtec_set(root: Path, source: str, *, category: str | None = None, train_good: bool = False,
              top_name: str | None = None) -> MvtecSet:
    """The MVTec-layout folder ``root`` as evaluation items (ids: paths relative to ``root``),
    every category or only ``category``; ``train_good`` adds ``train/good/`` as clean images.
    Raises :class:`ArchiveError` for an unknown category or a set without images."""
    found = find_categories(root, top_name)
    if not found:
        raise ArchiveError("no MVTec AD category found: expected <category>/test/<defect type>/ folders")
    if category is not None:
        if category not in found:
            raise ArchiveError(f"no category {category!r} in this MVTec AD set; it holds {listing(list(found), 20)}")
        found = {category: found[category]}
    notes: list[str] = []
    items: list[EvalItem] = []
    for name, folder in found.items():
        items += _category_items(root, name, folder, source, train_good, notes)
    if not items:
        raise ArchiveError(f"no images found in {', '.join(f'{n}/{TEST}/' for n in found)}")
    numbered = tuple(
        EvalItem(i.id, i.source, n, i.load, i.path, i.class_name, i.defective) for n, i in enumerate(items)
    )
    return MvtecSet(numbered, tuple(found), tuple(notes))
