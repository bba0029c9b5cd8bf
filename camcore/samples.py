"""The bundled sample images in ``assets/samples/`` and their index.

The set is small and curated: one clean image per texture and defective ones (two for
each of the six textures the set started with, one for each later texture, to keep the
repository small), 512x512 8-bit grayscale PNGs (32 in all), each defective image with
its mask PNG. Defect kinds rotate over the defective slots so all five kinds appear,
and each slot keeps the most visible of a few candidate seeds, so the bundled defects
are clear.
``assets/samples/index.json`` lists the files::

    [{"image": "fractal_defective_1.png", "texture": "fractal", "defective": true,
      "defect": "scratch", "mask": "fractal_defective_1_mask.png",
      "ellipse": {"cx": ..., "cy": ..., "a": ..., "b": ..., "angle": ...}, "seed": 1000},
     {"image": "fractal_clean_1.png", ..., "defective": false, "defect": null,
      "mask": null, "ellipse": null, "seed": 1900}, ...]

``seed`` reproduces the image: ``synth.make_sample(seed, texture, defect, 512)``.

Regenerate with ``python -m camcore.samples [--out assets/samples]``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from camcore.assets import assets_dir
from camcore.synth import DEFECTS, TEXTURES, Ellipse, Sample, ellipse_mask, make_pair, make_sample

DEFAULT_DIR = assets_dir() / "samples"  # $CAMSTUDIO_ASSETS is read once, at import
INDEX_FILE = "index.json"
SAMPLE_SIZE = 512
CLEAN_PER_TEXTURE = 1
# Two defective samples for the six original textures (names and links from before the
# texture families were added keep working), one for each later texture.
ORIGINAL_TEXTURES = TEXTURES[:6]
CANDIDATES_PER_SLOT = 8
# The classifiers see the images at this size, so visibility is judged there.
MODEL_INPUT_SIZE = 224


@dataclass(frozen=True)
class SampleInfo:
    """One bundled sample: absolute file paths plus its labels and generator seed."""

    image_path: Path
    texture: str
    defective: bool
    defect: str | None
    mask_path: Path | None
    ellipse: Ellipse | None
    seed: int

    @property
    def name(self) -> str:
        """Display name, the image file's stem (e.g. ``"fractal_defective_1"``)."""
        return self.image_path.stem


def load_sample_index(directory: str | os.PathLike[str] | None = None) -> list[SampleInfo]:
    """Read ``index.json`` of ``directory`` (default: the bundled samples, see camcore.assets).
    Raises FileNotFoundError if it is missing, ValueError naming the file if malformed."""
    directory = Path(directory) if directory is not None else DEFAULT_DIR
    index_path = directory / INDEX_FILE
    try:
        entries = json.loads(index_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{index_path}: not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise ValueError(f"{index_path}: expected a JSON list of entries")
    return [_parse_entry(entry, directory, f"{index_path}: entry {number}") for number, entry in enumerate(entries)]


def load_sample(info: SampleInfo) -> tuple[np.ndarray, np.ndarray | None]:
    """The sample's uint8 (H, W) image and bool (H, W) mask (None for a clean sample)."""
    image = _read_gray(info.image_path)
    if info.mask_path is None:
        return image, None
    mask = _read_gray(info.mask_path) > 0
    if mask.shape != image.shape:
        raise ValueError(f"{info.mask_path}: mask size {mask.shape} differs from image size {image.shape}")
    return image, mask


def defective_per_texture(texture: str) -> int:
    """How many defective samples of ``texture`` the set holds."""
    return 2 if texture in ORIGINAL_TEXTURES else 1


def write_samples(directory: str | os.PathLike[str]) -> list[SampleInfo]:
    """Generate the curated set into ``directory`` (PNGs + index.json); returns the index."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    defective_slot = 0
    for texture_index, texture in enumerate(TEXTURES):
        for slot in range(defective_per_texture(texture)):
            # Rotating kinds over the defective slots covers all five kinds.
            defect = DEFECTS[defective_slot % len(DEFECTS)]
            defective_slot += 1
            base_seed = 1000 * (texture_index + 1) + 100 * slot
            seeds = range(base_seed, base_seed + CANDIDATES_PER_SLOT)
            candidates = {candidate: make_pair(candidate, texture, defect, SAMPLE_SIZE) for candidate in seeds}
            seed = max(candidates, key=lambda candidate: _visibility(*candidates[candidate]))
            stem = f"{texture}_defective_{slot + 1}"
            entries.append(_save(directory, stem, seed, candidates[seed][0]))
        for slot in range(CLEAN_PER_TEXTURE):
            seed = 1000 * (texture_index + 1) + 900 + slot
            stem = f"{texture}_clean_{slot + 1}"
            entries.append(_save(directory, stem, seed, make_sample(seed, texture, None, SAMPLE_SIZE)))
    (directory / INDEX_FILE).write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    return load_sample_index(directory)


def defect_visibility(seed: int, texture: str, defect: str, size: int = SAMPLE_SIZE) -> float:
    """How clearly the defect of ``make_sample(seed, texture, defect, size)`` shows at
    the model's input size: mean absolute change over the defect, in units of the clean
    texture's local fine-detail contrast around it."""
    return _visibility(*make_pair(seed, texture, defect, size))


def _visibility(defective: Sample, clean: Sample) -> float:
    """:func:`defect_visibility` of a defective sample and its clean version."""
    size = defective.image.shape[0]

    def shrink(pixels: np.ndarray) -> np.ndarray:
        return cv2.resize(pixels.astype(np.float32), (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE), interpolation=cv2.INTER_AREA)

    factor = MODEL_INPUT_SIZE / size
    footprint = shrink(defective.mask) >= 0.5
    if defective.ellipse is None or not footprint.any():
        return 0.0
    change = np.abs(shrink(defective.image) - shrink(clean.image))[footprint].mean()
    small_clean = shrink(clean.image)
    detail = small_clean - cv2.GaussianBlur(small_clean, (0, 0), 6.0)
    surroundings = defective.ellipse.scaled(factor)
    neighbourhood = ellipse_mask(
        Ellipse(surroundings.cx, surroundings.cy, surroundings.a * 2 + 8, surroundings.b * 2 + 8, surroundings.angle),
        footprint.shape,
    )
    return float(change / (detail[neighbourhood].std() + 1.0))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate the bundled samples."""
    parser = argparse.ArgumentParser(prog="python -m camcore.samples", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"output folder (default: {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    infos = write_samples(args.out)
    total = sum(path.stat().st_size for info in infos for path in (info.image_path, info.mask_path) if path)
    print(f"wrote {len(infos)} samples ({total / 1e6:.1f} MB) and {INDEX_FILE} to {args.out}")
    return 0


def _save(directory: Path, stem: str, seed: int, sample: Sample) -> dict[str, Any]:
    image_name = f"{stem}.png"
    _write_png(directory / image_name, sample.image)
    mask_name = None
    if sample.defective:
        mask_name = f"{stem}_mask.png"
        _write_png(directory / mask_name, sample.mask.astype(np.uint8) * np.uint8(255))
    ellipse = None
    if sample.ellipse is not None:
        ellipse = {key: round(value, 3) for key, value in sample.ellipse.to_dict().items()}
    return {
        "image": image_name,
        "texture": sample.texture,
        "defective": sample.defective,
        "defect": sample.defect,
        "mask": mask_name,
        "ellipse": ellipse,
        "seed": seed,
    }


def _write_png(path: Path, pixels: np.ndarray) -> None:
    # Maximum compression: these files are committed to the repository.
    ok, encoded = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    path.write_bytes(encoded.tobytes())


def _read_gray(path: Path) -> np.ndarray:
    pixels = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
    if pixels is None:
        raise ValueError(f"{path}: cannot decode image")
    return pixels


def _parse_entry(entry: Any, directory: Path, where: str) -> SampleInfo:
    try:
        texture, defect = str(entry["texture"]), entry["defect"]
        defective = entry["defective"]
        if texture not in TEXTURES:
            raise ValueError(f"unknown texture {texture!r}")
        if not isinstance(defective, bool) or (defect is not None and defect not in DEFECTS):
            raise ValueError(f"bad defective/defect: {defective!r}/{defect!r}")
        if defective != (defect is not None) or defective != (entry["mask"] is not None):
            raise ValueError("'defective', 'defect' and 'mask' disagree")
        ellipse = Ellipse.from_dict(entry["ellipse"]) if entry["ellipse"] is not None else None
        return SampleInfo(
            image_path=directory / str(entry["image"]),
            texture=texture,
            defective=defective,
            defect=defect,
            mask_path=directory / str(entry["mask"]) if entry["mask"] is not None else None,
            ellipse=ellipse,
            seed=int(entry["seed"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc


if __name__ == "__main__":
    raise SystemExit(main())
