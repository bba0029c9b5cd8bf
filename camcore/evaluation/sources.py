"""The images an evaluation runs over: DAGM folders and generated sets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from camcore.dagm import DagmItem, load_item, read_dagm

SYNTHETIC_SIZE = 512  # DAGM 2007 images are 512 x 512


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: uint8 (H, W) or (H, W, 3), bool (H, W) mask (all False if clean)."""

    image: np.ndarray
    mask: np.ndarray
    defective: bool
    class_name: str
    detail: str = ""  # e.g. the synthetic defect kind


@dataclass(frozen=True)
class EvalItem:
    """One image to evaluate. ``id`` is stable across runs (it is what resuming
    matches on); ``source`` names the data set (DAGM root or synthetic parameters);
    ``load()`` decodes it and may raise :class:`DagmFormatError`."""

    id: str
    source: str
    index: int
    load: Callable[[], LoadedImage] = field(repr=False, compare=False)
    path: str = ""
    class_name: str | None = None
    defective: bool | None = None


def dagm_items(
    root: str | os.PathLike[str], split: str | None = None, classes: Sequence[str] | None = None
) -> list[EvalItem]:
    """Every image of a DAGM folder (see :func:`camcore.dagm.read_dagm`, which raises
    :class:`DagmFormatError` naming the file for a bad layout or index). Ids are the
    image paths relative to ``root``."""
    root = Path(root).resolve()
    entries = read_dagm(root, split=split, classes=classes)
    return [
        EvalItem(
            id=entry.image_path.relative_to(root).as_posix(),
            source=str(root),
            index=i,
            load=_dagm_loader(entry),
            path=str(entry.image_path),
            class_name=entry.class_name,
            defective=entry.defective,
        )
        for i, entry in enumerate(entries)
    ]


def _dagm_loader(entry: DagmItem) -> Callable[[], LoadedImage]:
    def load() -> LoadedImage:
        image, mask = load_item(entry)
        return LoadedImage(image, mask, entry.defective, entry.class_name)

    return load


def synthetic_source(seed: int = 0, size: int = SYNTHETIC_SIZE, defect_rate: float = 0.5) -> str:
    """The ``source`` string of a generated set (parsed back by :func:`synthetic_image`)."""
    return f"synthetic:seed={int(seed)}:size={int(size)}:defect_rate={float(defect_rate)!r}"


def _parse_synthetic_source(source: str) -> dict[str, Any]:
    parts = source.split(":")
    if parts[0] != "synthetic":
        raise ValueError(f"not a synthetic source: {source!r}")
    values = dict(part.split("=", 1) for part in parts[1:])
    return {"seed": int(values["seed"]), "size": int(values["size"]), "defect_rate": float(values["defect_rate"])}


def _synthetic_load(index: int, seed: int, size: int, defect_rate: float) -> LoadedImage:
    from camcore.synth import sample_at

    sample = sample_at(index, seed=seed, size=size, defect_rate=defect_rate)
    return LoadedImage(sample.image, sample.mask, sample.defective, sample.texture, sample.defect or "")


def synthetic_items(
    n: int, seed: int = 0, size: int = SYNTHETIC_SIZE, defect_rate: float = 0.5
) -> list[EvalItem]:
    """``n`` generated DAGM-style images (:func:`camcore.synth.generate`), produced lazily
    as they are evaluated. Sample ``i`` depends only on ``(seed, i)``, so ids
    ``synthetic/00000`` ... stay valid when ``n`` grows."""
    if n < 1:
        raise ValueError(f"need at least one synthetic image, got {n}")
    source = synthetic_source(seed, size, defect_rate)
    return [
        EvalItem(
            id=f"synthetic/{i:05d}", source=source, index=i, load=partial(_synthetic_load, i, seed, size, defect_rate)
        )
        for i in range(n)
    ]


def synthetic_image(source: str, index: int) -> LoadedImage:
    """Regenerate image ``index`` of a synthetic set from its ``source`` string (as found in
    a results table), e.g. to open it in the comparison view."""
    params = _parse_synthetic_source(source)
    return _synthetic_load(int(index), params["seed"], params["size"], params["defect_rate"])


def open_result_image(
    source: str, image_id: str, index: int, allowed_roots: Sequence[str | os.PathLike[str]] = ()
) -> LoadedImage:
    """The image of a results row: regenerated for a synthetic set, read from its DAGM
    folder otherwise - only if that folder lies inside one of ``allowed_roots`` (a results
    file must not make the caller read arbitrary paths). The image is looked up by id
    in the folder's own index, never opened by a path taken from the table."""
    if str(source).startswith("synthetic:"):
        return synthetic_image(str(source), int(index))
    root = Path(str(source)).resolve()
    allowed = [Path(a).resolve() for a in allowed_roots]
    if not any(root == a or a in root.parents for a in allowed):
        raise PermissionError(f"{root} is outside the configured data folder; its images cannot be opened here")
    for item in dagm_items(root):
        if item.id == image_id:
            return item.load()
    raise ValueError(f"{image_id} is not listed in {root}")
