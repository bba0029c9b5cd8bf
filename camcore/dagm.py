"""Read and write image folders in the DAGM 2007 layout.

The layout is that of the public DAGM 2007 download, so a real DAGM folder reads as
well as one written by :func:`write_dagm`::

    ROOT/
      classes.txt                   ours, optional: "Class1<TAB>fractal" per line
      Class1/
        Train/
          0001.PNG                  8-bit grayscale images, 4-digit names
          0002.PNG
          ...
          Label/
            Labels.txt              index of the images in Train/ (see below)
            0002_label.PNG          defect mask of 0002.PNG: 0 = background, 255 = defect
            ...
            Ellipses.txt            ours, optional: weak-label ellipses (see below)
        Test/                       the same for the test split
      Class2/ ...

``Labels.txt``: the first line is the header ``1``; then one line per image with
tab-separated fields::

    <index> <TAB> <0|1 defective> <TAB> <image file> <TAB> 0 [<TAB> <label file>]

The label file (a name inside ``Label/``) is required when the flag is 1 and ignored
when it is 0. Trailing empty fields and blank lines are tolerated.

In the real data set the label PNG is the weak-label ellipse drawn filled. Our writer
stores the exact pixel mask instead, and adds ``Label/Ellipses.txt`` (not part of the
real set) with one line per defective image::

    <image file> <TAB> <cx> <TAB> <cy> <TAB> <a> <TAB> <b> <TAB> <angle_deg>

(see :class:`camcore.synth.Ellipse` for the conventions). The reader uses
``Ellipses.txt`` when present and otherwise fits an ellipse to the label mask with
:func:`camcore.synth.fit_ellipse` when the item is loaded. ``classes.txt`` maps class
folders to texture names: ``ClassK`` holds ``synth.TEXTURES[K - 1]``.

Problems raise :class:`DagmFormatError`, whose message names the offending file and,
for ``Labels.txt``/``Ellipses.txt``, the line (``path:line: message``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from camcore.synth import TEXTURES, Ellipse, Sample, fit_ellipse

SPLITS: tuple[str, ...] = ("Train", "Test")
LABEL_DIR = "Label"
LABELS_FILE = "Labels.txt"
ELLIPSES_FILE = "Ellipses.txt"
CLASSES_FILE = "classes.txt"
_CLASS_DIR = re.compile(r"Class(\d+)")


class DagmFormatError(ValueError):
    """A DAGM folder, index file or image is missing or malformed."""


@dataclass(frozen=True)
class DagmItem:
    """One image of a DAGM folder. ``ellipse`` is set when ``Ellipses.txt`` lists the
    image; otherwise use :func:`load_ellipse`, which fits one to the mask."""

    class_name: str
    split: str
    image_path: Path
    defective: bool
    mask_path: Path | None
    ellipse: Ellipse | None


def class_folder(texture: str) -> str:
    """The class folder that holds ``texture``: ``"Class1"`` for ``TEXTURES[0]``, ..."""
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; valid: {', '.join(TEXTURES)}")
    return f"Class{TEXTURES.index(texture) + 1}"


# --------------------------------------------------------------------------- writing


def write_dagm(root: str | os.PathLike[str], samples: Iterable[Sample], split: str = "Train") -> list[DagmItem]:
    """Write ``samples`` as the ``split`` part of a DAGM folder at ``root``, grouped
    into ``Class{k}`` folders by texture; call once per split. Also writes
    ``classes.txt``. Returns the written items in input order.

    Refuses (FileExistsError) to touch a split that already has a ``Labels.txt``.
    """
    _check_split(split)
    root = Path(root)
    for texture in TEXTURES:
        existing = root / class_folder(texture) / split / LABEL_DIR / LABELS_FILE
        if existing.exists():
            raise FileExistsError(f"{existing} already exists; write each split into a fresh folder")

    labels: dict[str, list[str]] = {}
    ellipses: dict[str, list[str]] = {}
    written: list[DagmItem] = []
    for sample in samples:
        image, mask = _check_sample(sample)
        class_name = class_folder(sample.texture)
        split_dir = root / class_name / split
        label_dir = split_dir / LABEL_DIR
        if class_name not in labels:
            label_dir.mkdir(parents=True, exist_ok=True)
            labels[class_name], ellipses[class_name] = [], []
        index = len(labels[class_name]) + 1
        image_name = f"{index:04d}.PNG"
        _write_png(split_dir / image_name, image)
        mask_path, ellipse = None, None
        if sample.defective:
            mask_path = label_dir / f"{index:04d}_label.PNG"
            _write_png(mask_path, mask.astype(np.uint8) * np.uint8(255))
            ellipse = sample.ellipse if sample.ellipse is not None else fit_ellipse(mask)
            labels[class_name].append(f"{index}\t1\t{image_name}\t0\t{mask_path.name}")
            fields = (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle)
            # repr() round-trips floats exactly.
            ellipses[class_name].append("\t".join([image_name, *(repr(float(v)) for v in fields)]))
        else:
            labels[class_name].append(f"{index}\t0\t{image_name}\t0")
        written.append(DagmItem(class_name, split, split_dir / image_name, sample.defective, mask_path, ellipse))

    for class_name, lines in labels.items():
        label_dir = root / class_name / split / LABEL_DIR
        (label_dir / LABELS_FILE).write_text("1\n" + "".join(line + "\n" for line in lines), encoding="ascii")
        if ellipses[class_name]:
            ellipse_text = "".join(line + "\n" for line in ellipses[class_name])
            (label_dir / ELLIPSES_FILE).write_text(ellipse_text, encoding="ascii")
    if labels:
        mapping = "".join(f"{class_folder(texture)}\t{texture}\n" for texture in TEXTURES)
        (root / CLASSES_FILE).write_text(mapping, encoding="ascii")
    return written


def _check_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    image, mask = np.asarray(sample.image), np.asarray(sample.mask, bool)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"sample image must be uint8 (H, W), got {image.dtype} {image.shape}")
    if mask.shape != image.shape:
        raise ValueError(f"sample mask shape {mask.shape} differs from image shape {image.shape}")
    if sample.defective and not mask.any():
        raise ValueError(f"defective sample ({sample.defect}) has an empty mask")
    return image, mask


def _write_png(path: Path, pixels: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    path.write_bytes(encoded.tobytes())


# --------------------------------------------------------------------------- reading


def read_dagm(
    root: str | os.PathLike[str], split: str | None = None, classes: Sequence[str] | None = None
) -> list[DagmItem]:
    """Index a DAGM folder: every image listed in ``Class*/<split>/Label/Labels.txt``
    (both splits when ``split`` is None), optionally only the ``classes`` folders
    (e.g. ``["Class1"]``), ordered by class number, split and file order. Checks that
    every listed file exists but decodes nothing. Class folders without the requested
    split are skipped.
    """
    if split is not None:
        _check_split(split)
    class_dirs = _class_dirs(Path(root))
    if classes is not None:
        wanted = list(classes)
        unknown = [name for name in wanted if name not in class_dirs]
        if unknown:
            raise ValueError(f"no class folder {', '.join(unknown)} in {root}; found: {', '.join(class_dirs)}")
        class_dirs = {name: class_dirs[name] for name in wanted}

    items: list[DagmItem] = []
    wanted_splits = SPLITS if split is None else (split,)
    found_split = False
    for class_name, class_dir in class_dirs.items():
        # A class may lack a split (e.g. a small synthetic test set without that
        # texture); a split folder without Labels.txt is still an error.
        splits = [name for name in wanted_splits if (class_dir / name).is_dir()]
        if split is None and not splits:
            raise DagmFormatError(f"{class_dir}: no {' or '.join(SPLITS)} folder")
        found_split = found_split or bool(splits)
        for split_name in splits:
            items.extend(_read_split(class_dir / split_name, class_name, split_name))
    if not found_split:
        raise DagmFormatError(f"no Class<k>/{split}/ folder in {root}")
    return items


def read_class_names(root: str | os.PathLike[str]) -> dict[str, str]:
    """The ``classes.txt`` mapping (class folder -> texture name); {} when absent."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return {}
    mapping: dict[str, str] = {}
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DagmFormatError(f"{path}:{line_no}: expected '<class folder><TAB><name>', got {line!r}")
        mapping[fields[0].strip()] = fields[1].strip()
    return mapping


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def _class_dirs(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise DagmFormatError(f"not a DAGM layout: {root} is not a directory")
    found = []
    for path in root.iterdir():
        match = _CLASS_DIR.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    if not found:
        raise DagmFormatError(f"not a DAGM layout: no Class<k>/ folders in {root}")
    return {path.name: path for _, path in sorted(found)}


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DagmFormatError(f"missing {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DagmFormatError(f"{path}: unreadable: {exc}") from exc


def _fields(line: str) -> list[str]:
    fields = [field.strip() for field in line.split("\t")]
    if len(fields) == 1:  # tolerate space-separated files (DAGM names contain no spaces)
        fields = line.split()
    while fields and not fields[-1]:
        fields.pop()
    return fields


def _read_split(split_dir: Path, class_name: str, split: str) -> list[DagmItem]:
    labels_path = split_dir / LABEL_DIR / LABELS_FILE
    lines = _read_lines(labels_path)
    numbered = [(line_no, line) for line_no, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DagmFormatError(f"{labels_path}: empty file, expected the header line '1'")
    header_no, header = numbered[0]
    if not re.fullmatch(r"\s*\d+\s*", header):
        raise DagmFormatError(f"{labels_path}:{header_no}: expected the header line '1', got {header!r}")

    entries: list[tuple[str, bool, Path | None]] = []
    seen: set[str] = set()
    for line_no, line in numbered[1:]:
        where = f"{labels_path}:{line_no}"
        fields = _fields(line)
        if len(fields) not in (4, 5):
            raise DagmFormatError(
                f"{where}: expected 4 or 5 tab-separated fields "
                f"'<index> <0|1> <image> 0 [<label>]', got {len(fields)}: {line!r}"
            )
        index, flag, image_name = fields[0], fields[1], fields[2]
        if not re.fullmatch(r"\d+", index):
            raise DagmFormatError(f"{where}: image index must be a non-negative integer, got {index!r}")
        if flag not in ("0", "1"):
            raise DagmFormatError(f"{where}: defect flag must be 0 or 1, got {flag!r}")
        if image_name in seen:
            raise DagmFormatError(f"{where}: image {image_name} is listed twice")
        seen.add(image_name)
        image_path = split_dir / image_name
        if not image_path.is_file():
            raise DagmFormatError(f"{where}: image file {image_path} not found")
        mask_path = None
        if flag == "1":
            if len(fields) < 5 or fields[4] in ("", "0"):
                raise DagmFormatError(f"{where}: defective image {image_name} has no label file")
            mask_path = split_dir / LABEL_DIR / fields[4]
            if not mask_path.is_file():
                raise DagmFormatError(f"{where}: label file {mask_path} not found")
        entries.append((image_name, flag == "1", mask_path))

    defective_by_image = {name: defective for name, defective, _ in entries}
    ellipses = _read_ellipses(split_dir / LABEL_DIR / ELLIPSES_FILE, defective_by_image)
    return [
        DagmItem(class_name, split, split_dir / name, defective, mask_path, ellipses.get(name))
        for name, defective, mask_path in entries
    ]


def _read_ellipses(path: Path, defective_by_image: dict[str, bool]) -> dict[str, Ellipse]:
    if not path.is_file():
        return {}
    ellipses: dict[str, Ellipse] = {}
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        fields = _fields(line)
        if len(fields) != 6:
            raise DagmFormatError(f"{where}: expected 6 fields '<image> <cx> <cy> <a> <b> <angle>', got {len(fields)}")
        name = fields[0]
        if not defective_by_image.get(name, False):
            state = "a clean image" if name in defective_by_image else f"not listed in {LABELS_FILE}"
            raise DagmFormatError(f"{where}: ellipse for {name}, which is {state}")
        try:
            ellipses[name] = Ellipse(*(float(value) for value in fields[1:]))
        except ValueError as exc:
            raise DagmFormatError(f"{where}: bad ellipse: {exc}") from exc
    return ellipses


# --------------------------------------------------------------------------- loading


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file as uint8 grayscale (H, W); DagmFormatError names the file
    if it is missing, corrupt or not 8-bit."""
    path = Path(path)
    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as exc:
        raise DagmFormatError(f"{path}: cannot read: {exc}") from exc
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if pixels is None:
        raise DagmFormatError(f"{path}: cannot decode image (corrupt or not an image file)")
    if pixels.dtype != np.uint8:
        raise DagmFormatError(f"{path}: expected an 8-bit image, got {pixels.dtype}")
    if pixels.ndim == 3:
        conversion = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, conversion)
    return pixels


def load_item(item: DagmItem) -> tuple[np.ndarray, np.ndarray]:
    """The item's uint8 (H, W) image and bool (H, W) defect mask (all False if clean)."""
    image = load_image(item.image_path)
    if item.mask_path is None:
        return image, np.zeros(image.shape, bool)
    mask = load_image(item.mask_path) > 0
    if mask.shape != image.shape:
        raise DagmFormatError(f"{item.mask_path}: label size {mask.shape} differs from image size {image.shape}")
    if item.defective and not mask.any():
        raise DagmFormatError(f"{item.mask_path}: label mask of a defective image is empty")
    return image, mask


def load_ellipse(item: DagmItem) -> Ellipse | None:
    """The item's weak-label ellipse: from ``Ellipses.txt`` if listed, else fitted to
    its label mask; None for a clean image."""
    if item.ellipse is not None or not item.defective:
        return item.ellipse
    _, mask = load_item(item)
    return fit_ellipse(mask)
