"""Put a tuned threshold to use: defect regions for new images.

The Compare and Dataset pages choose a method, a layer and a threshold on the map (e.g.
Grad-CAM at ``top_down56``, threshold 0.30 for ``vgg_defect``); this module turns that choice
(a settings file, :mod:`camcore.localize_settings`) into, per image, the model's class
decision and the defect regions in the image's own pixels (:mod:`camcore.regions`)::

    >>> import camcore
    >>> found = camcore.localize(["part1.png", image_array], {"model": "vgg_defect",
    ...     "method": "grad_cam", "layer": "top_down56", "threshold": 0.30})
    >>> len(found), found[0].to_dict()["decision"], len(found[0].regions) >= 1
    (2, 'defective', True)

``camcore.localize`` is this module, and calling it calls :func:`localize` (so both
``camcore.localize(...)`` and ``camcore.localize.settings_json(...)`` work). A
:class:`Localizer` loads the model once for many images. The command line::

    cam-studio localize --settings s.json IMAGES_OR_FOLDERS... --out regions.json [--overlays DIR]

Regions are reported for the images the model assigns to the explained class
(``regions_for: "predicted"``, the default): on an image it calls clean, a map scaled to
[0, 1] by its own maximum still has a peak of 1 and would always draw a region.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from camcore.localize_settings import (
    LocalizeSettings,
    SettingsError,
    parse_settings,
    read_settings,
    settings_json,
    write_settings,
)
from camcore.regions import Region, draw_regions, find_regions, region_pixels

if TYPE_CHECKING:
    from camcore.explainer import Explainer
    from camcore.models import LoadedModel

__all__ = [
    "Localization", "LocalizeSettings", "Localizer", "SettingsError", "localize", "main", "overlay_image",
    "parse_settings", "read_settings", "settings_json", "write_settings",
]


@dataclass(frozen=True)
class Localization:
    """One image's class decision and defect regions.

    ``probabilities`` follow ``class_names``; ``predicted`` is the most probable class,
    ``class_index`` the explained one. ``regions`` (image pixels, strongest first) are empty
    when ``reported`` is False: the settings ask for regions of predicted defects only and the
    model predicted another class. ``cam`` is the method's map at its own resolution.
    """

    name: str
    image_size: tuple[int, int]  # (height, width) of the original image
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    predicted: int
    class_index: int
    threshold: float
    min_area: int
    reported: bool
    regions: tuple[Region, ...]
    seconds: float
    cam: np.ndarray = field(repr=False, compare=False)

    @property
    def decision(self) -> str:
        """The predicted class's name."""
        return self.class_names[self.predicted]

    def region_mask(self) -> np.ndarray:
        """bool (H, W): the reported regions' pixels (all False when none are reported)."""
        if not self.reported:
            return np.zeros(self.image_size, bool)
        return region_pixels(self.cam, self.image_size, self.threshold, min_area=self.min_area)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the per-image entry of ``cam-studio localize``'s output)."""
        return {
            "image": self.name,
            "height": self.image_size[0],
            "width": self.image_size[1],
            "decision": self.decision,
            "predicted_class": self.predicted,
            "probabilities": {name: round(p, 6) for name, p in zip(self.class_names, self.probabilities)},
            "explained_class": self.class_index,
            "regions_reported": self.reported,
            "regions": [region.to_dict() for region in self.regions],
            "seconds": round(self.seconds, 4),
        }


def _class_names(loaded: "LoadedModel", n_classes: int) -> tuple[str, ...]:
    names = tuple(str(n) for n in loaded.class_names)
    return names if len(names) == n_classes else tuple(f"class {i}" for i in range(n_classes))


def load_for(settings: LocalizeSettings) -> "LoadedModel":
    """The settings' model (:func:`camcore.load_model`); :class:`SettingsError` naming the
    field when the model, its preprocessing or its input size is the problem."""
    from camcore.loading import load_model
    from camcore.models import NeedsInputSize, NeedsPreprocessing

    try:
        return load_model(settings.model, preprocessing=settings.preprocessing, input_size=settings.input_size)
    except NeedsPreprocessing as exc:
        raise SettingsError(f"settings field 'preprocessing': {exc}") from None
    except NeedsInputSize as exc:
        raise SettingsError(f"settings field 'input_size': {exc}") from None
    except (FileNotFoundError, ValueError) as exc:
        raise SettingsError(f"settings field 'model': {exc}") from None


class Localizer:
    """The settings' model and explainer, loaded once; call it on each image."""

    def __init__(self, settings: Mapping[str, Any] | LocalizeSettings, *, model: "LoadedModel | None" = None,
                 explainer: "Explainer | None" = None) -> None:
        from camcore.explainer import Explainer
        from camcore.methods import METHODS

        self.settings = parse_settings(settings)
        self.model = load_for(self.settings) if model is None else model
        self.explainer = explainer or Explainer(self.model.model, precision=self.settings.precision)
        explainer = self.explainer  # the model facts, whatever backend serves the model
        layer = self.settings.layer or self.model.layer
        fused = self.settings.fused_layers if METHODS[self.settings.method].fusable else ()
        for name, value in (("layer", layer), *(("fused_layers", f) for f in fused)):
            try:
                explainer.layer_info(value)
            except ValueError as exc:
                raise SettingsError(f"settings field {name!r}: {exc}") from None
        self.layer: str | tuple[str, ...] = fused if fused else layer
        self.class_names = _class_names(self.model, explainer.n_classes)
        wanted = self.settings.class_index
        if wanted is None:
            wanted = self.class_names.index("defective") if "defective" in self.class_names else 1
        try:
            self.class_index = explainer.check_class(wanted)
        except ValueError as exc:
            raise SettingsError(f"settings field 'class_index': {exc}") from None

    def __call__(self, image: Any, name: str = "") -> Localization:
        """Localize one image (uint8 gray/RGB array, image bytes or a file path)."""
        start = time.perf_counter()
        pixels = _pixels(image)
        settings = self.settings
        x = self.explainer.prepare(self.model.preprocess(pixels))
        probabilities = np.asarray(self.explainer.predict(x), np.float64)
        predicted = int(np.argmax(probabilities))
        cam = self.explainer.compute(settings.method, x, self.layer, self.class_index, settings.max_n).cam
        reported = settings.regions_for == "all" or predicted == self.class_index
        size = (int(pixels.shape[0]), int(pixels.shape[1]))
        regions = find_regions(cam, size, settings.threshold, min_area=settings.min_area) if reported else []
        return Localization(
            name=name or (str(image) if isinstance(image, (str, os.PathLike)) else ""),
            image_size=size, class_names=self.class_names, probabilities=tuple(map(float, probabilities)),
            predicted=predicted, class_index=self.class_index, threshold=settings.threshold,
            min_area=settings.min_area, reported=reported, regions=tuple(regions),
            seconds=time.perf_counter() - start, cam=np.asarray(cam, np.float32),
        )

    def describe(self) -> dict[str, Any]:
        """The model part of the output: what ran, for the record."""
        return {
            "name": self.model.name, "key": self.model.key, "layer": self.layer if isinstance(self.layer, str)
            else list(self.layer), "class_names": list(self.class_names), "explained_class": self.class_index,
            "input_size": list(self.model.input_size), "preprocessing": self.model.preprocessing,
            "precision": self.settings.precision,
        }


def _pixels(image: Any) -> np.ndarray:
    from camcore.preprocess import read_image, to_uint8_image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            return read_image(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return read_image(bytes(image))
    return to_uint8_image(np.asarray(image))


def localize(images: Any, settings: Mapping[str, Any] | LocalizeSettings | str | os.PathLike[str], *,
             model: "LoadedModel | None" = None, explainer: "Explainer | None" = None) -> list[Localization]:
    """Class decision and defect regions for each of ``images`` (one image or a sequence of
    uint8 gray/RGB arrays, image bytes or file paths) with ``settings`` (a mapping, a
    :class:`LocalizeSettings` or the path of a settings file). ``model`` / ``explainer``
    reuse ones already loaded. Raises :class:`SettingsError` for bad settings."""
    if isinstance(settings, (str, os.PathLike)):
        settings = read_settings(settings)
    localizer = Localizer(settings, model=model, explainer=explainer)
    single = isinstance(images, (str, os.PathLike, bytes, bytearray)) or (
        isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object)
    return [localizer(image) for image in ([images] if single else images)]


def overlay_image(image: np.ndarray, found: Localization, *, colormap: str = "jet", alpha: float = 0.4) -> np.ndarray:
    """uint8 RGB at the image's size: the map's heat overlay, each reported region's contour,
    box and number, and a top band with the decision."""
    import cv2

    from camcore.visualize import overlay, to_rgb

    picture = draw_regions(overlay(to_rgb(image), found.cam, colormap, alpha), found.regions)
    band = max(18, picture.shape[0] // 24)
    header = np.zeros((band, picture.shape[1], 3), np.uint8)
    text = (f"{found.decision} p={found.probabilities[found.predicted]:.3f} - {len(found.regions)} region(s) "
            f"at t={found.threshold:.2f}")
    cv2.putText(header, text, (4, band - 5), cv2.FONT_HERSHEY_SIMPLEX, band / 40, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, picture], axis=0)


# ---------------------------------------------------------------------- the command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cam-studio localize",
        description="Defect regions for new images with a method, layer and threshold chosen in CAM Studio.",
    )
    parser.add_argument("--settings", type=Path, required=True,
                        help="settings JSON (the Compare/Dataset pages' export; see camcore.localize_settings)")
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("--out", type=Path, required=True, help="regions JSON to write")
    parser.add_argument("--overlays", type=Path, default=None, help="also write an overlay PNG per image here")
    return parser


def image_paths(arguments: Iterable[Path]) -> list[Path]:
    """The image files named, folders expanded (recursively, sorted); FileNotFoundError
    naming a missing argument."""
    from camcore.evaluation.datafiles import image_files

    found: list[Path] = []
    for path in arguments:
        if path.is_dir():
            found += image_files(path)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} not found")
    return found


def _overlay_name(path: Path, used: set[str]) -> str:
    name, number = f"{path.stem}_regions.png", 2
    while name in used:
        name, number = f"{path.stem}_regions_{number}.png", number + 1
    used.add(name)
    return name


def _run(localizer: Localizer, paths: Sequence[Path], overlays: Path | None) -> list[dict[str, Any]]:
    from camcore.visualize import png_bytes

    entries: list[dict[str, Any]] = []
    used: set[str] = set()
    for path in paths:
        try:
            pixels = _pixels(path)
            found = localizer(pixels, str(path))
        except ValueError as exc:  # one unreadable image must not stop the others
            entries.append({"image": str(path), "error": str(exc)})
            continue
        entry = found.to_dict()
        if overlays is not None:
            target = overlays / _overlay_name(path, used)
            target.write_bytes(png_bytes(overlay_image(pixels, found)))
            entry["overlay"] = str(target)
        entries.append(entry)
    return entries


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``cam-studio localize``: 0 when every image was localized, 1 when some could not be
    read (listed in the output), 2 for bad settings or arguments."""
    args = _parser().parse_args(argv)
    try:
        settings = read_settings(args.settings)
        paths = image_paths(args.images)
        if not paths:
            raise FileNotFoundError("no image files found in " + ", ".join(map(str, args.images)))
        if args.overlays is not None:
            args.overlays.mkdir(parents=True, exist_ok=True)
        localizer = Localizer(settings)
    except (SettingsError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    entries = _run(localizer, paths, args.overlays)
    failed = [e for e in entries if "error" in e]
    called = [e for e in entries if e.get("regions")]
    summary = {"images": len(entries), "with_regions": len(called),
               "regions": sum(len(e["regions"]) for e in called), "errors": len(failed)}
    document = {"settings": settings.to_dict(), "model": localizer.describe(), "images": entries, "summary": summary}
    _write_json(args.out, document)
    print(f"{len(entries)} image(s): {len(called)} with defect regions "
          f"({summary['regions']} regions), {len(failed)} unreadable -> {args.out}")
    for entry in failed:
        print(f"  {entry['error']}", file=sys.stderr)
    return 1 if failed else 0


class _CallableModule(types.ModuleType):
    """``camcore.localize`` is this module; calling it calls :func:`localize`. Python binds a
    submodule to its package's attribute on import, so the module and the function cannot
    both be ``camcore.localize`` otherwise."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[Localization]:
        return localize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    raise SystemExit(main())
