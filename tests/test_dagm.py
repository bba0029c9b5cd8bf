"""Tests for camcore.dagm: the DAGM 2007 folder layout, round trip and errors."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from camcore import dagm
from camcore.dagm import DagmFormatError, load_ellipse, load_item, read_dagm, write_dagm
from camcore.synth import TEXTURES, Sample, fit_ellipse, generate, make_sample


@pytest.fixture(scope="module")
def samples() -> dict[str, list[Sample]]:
    return {
        "Train": list(generate(16, seed=7, size=64)),
        "Test": list(generate(6, seed=8, size=64)),
    }


@pytest.fixture()
def root(tmp_path: Path, samples: dict[str, list[Sample]]) -> Path:
    for split, split_samples in samples.items():
        write_dagm(tmp_path, split_samples, split=split)
    return tmp_path


def _by_class(split_samples: list[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for sample in split_samples:
        grouped.setdefault(dagm.class_folder(sample.texture), []).append(sample)
    return grouped


def _one_class_root(tmp_path: Path, lines: list[str]) -> Path:
    """A hand-written Class1/Train with images 0001.PNG (clean), 0002.PNG (defective)."""
    split_dir = tmp_path / "Class1" / "Train"
    (split_dir / "Label").mkdir(parents=True)
    image = make_sample(0, "grain", None, 32).image
    cv2.imwrite(str(split_dir / "0001.PNG"), image)
    cv2.imwrite(str(split_dir / "0002.PNG"), image)
    label = np.zeros_like(image)
    cv2.ellipse(label, (16, 16), (8, 4), 30, 0, 360, 255, -1)
    cv2.imwrite(str(split_dir / "Label" / "0002_label.PNG"), label)
    (split_dir / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _labels_path(root: Path) -> Path:
    return root / "Class1" / "Train" / "Label" / "Labels.txt"


# --------------------------------------------------------------------------- round trip


def test_round_trip_gives_back_images_labels_masks_and_ellipses(root: Path, samples: dict[str, list[Sample]]) -> None:
    for split, split_samples in samples.items():
        items = read_dagm(root, split=split)
        assert {item.split for item in items} == {split}
        grouped = _by_class(split_samples)
        expected = [sample for name in sorted(grouped, key=lambda name: int(name[5:])) for sample in grouped[name]]
        assert len(items) == len(expected)
        for item, sample in zip(items, expected):
            assert item.class_name == dagm.class_folder(sample.texture)
            assert item.defective == sample.defective
            image, mask = load_item(item)
            assert image.dtype == np.uint8 and np.array_equal(image, sample.image)
            assert mask.dtype == bool and np.array_equal(mask, sample.mask)
            if sample.defective:
                # Ellipses.txt stores repr() of the floats, so they come back exactly.
                assert item.mask_path is not None and item.ellipse == sample.ellipse is not None
            else:
                assert item.mask_path is None and item.ellipse is None and load_ellipse(item) is None


def test_written_layout_matches_dagm(root: Path, samples: dict[str, list[Sample]]) -> None:
    first_class = dagm.class_folder(samples["Train"][0].texture)
    split_dir = root / first_class / "Train"
    assert (split_dir / "0001.PNG").is_file()
    lines = (split_dir / "Label" / "Labels.txt").read_text().splitlines()
    assert lines[0] == "1"
    for line in lines[1:]:
        fields = line.split("\t")
        assert re.fullmatch(r"\d{4}\.PNG", fields[2]) and fields[3] == "0"
        if fields[1] == "1":
            assert fields[4] == f"{fields[2][:4]}_label.PNG"
            label = cv2.imread(str(split_dir / "Label" / fields[4]), cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.ndim == 2 and set(np.unique(label)) <= {0, 255}
        else:
            assert fields[1] == "0" and len(fields) == 4
    image = cv2.imread(str(split_dir / "0001.PNG"), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8 and image.ndim == 2
    assert dagm.read_class_names(root) == {f"Class{k + 1}": texture for k, texture in enumerate(TEXTURES)}


def test_reads_both_splits_and_filters_classes(root: Path, samples: dict[str, list[Sample]]) -> None:
    everything = read_dagm(root)
    assert len(everything) == sum(len(group) for group in samples.values())
    assert {item.split for item in everything} == {"Train", "Test"}
    only = dagm.class_folder(samples["Train"][0].texture)
    chosen = read_dagm(root, classes=[only])
    assert chosen and {item.class_name for item in chosen} == {only}
    with pytest.raises(ValueError, match="no class folder Class99"):
        read_dagm(root, classes=["Class99"])
    with pytest.raises(ValueError, match="unknown split"):
        read_dagm(root, split="Validation")


def test_ellipse_is_fitted_from_the_mask_without_ellipses_file(root: Path) -> None:
    with_file = [item for item in read_dagm(root) if item.defective]
    for path in root.glob("Class*/*/Label/Ellipses.txt"):
        path.unlink()
    without_file = [item for item in read_dagm(root) if item.defective]
    assert with_file and all(item.ellipse is None for item in without_file)
    for original, item in zip(with_file, without_file):
        # The generator's ellipse is fit_ellipse of the same mask, so they agree.
        assert load_ellipse(item) == original.ellipse


def test_reads_a_real_dagm_style_folder(tmp_path: Path) -> None:
    # As in the public download: trailing tab on clean lines, CRLF, filled-ellipse label.
    root = _one_class_root(tmp_path, ["1", "1\t0\t0001.PNG\t0\t", "2\t1\t0002.PNG\t0\t0002_label.PNG\r"])
    items = read_dagm(root)
    assert [(item.image_path.name, item.defective) for item in items] == [("0001.PNG", False), ("0002.PNG", True)]
    image, mask = load_item(items[1])
    assert image.shape == mask.shape == (32, 32) and mask.any()
    ellipse = load_ellipse(items[1])
    assert ellipse is not None and ellipse == fit_ellipse(mask)


def test_writer_refuses_to_overwrite_a_split(root: Path, samples: dict[str, list[Sample]]) -> None:
    with pytest.raises(FileExistsError, match="Labels.txt"):
        write_dagm(root, samples["Train"][:2], split="Train")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("2\t1\t0002.PNG", "expected 4 or 5 tab-separated fields"),
        ("2\tx\t0002.PNG\t0\t0002_label.PNG", "defect flag must be 0 or 1"),
        ("2\t2\t0002.PNG\t0\t0002_label.PNG", "defect flag must be 0 or 1"),
        ("two\t1\t0002.PNG\t0\t0002_label.PNG", "index must be a non-negative integer"),
        ("2\t1\t0002.PNG\t0", "defective image 0002.PNG has no label file"),
        ("2\t1\t0002.PNG\t0\t0009_label.PNG", "label file .*0009_label.PNG not found"),
        ("2\t0\t0009.PNG\t0", "image file .*0009.PNG not found"),
        ("2\t0\t0001.PNG\t0", "listed twice"),
    ],
)
def test_malformed_labels_line_names_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    root = _one_class_root(tmp_path, ["1", "1\t0\t0001.PNG\t0", bad_line])
    with pytest.raises(DagmFormatError, match=message) as caught:
        read_dagm(root)
    assert f"{_labels_path(root)}:3:" in str(caught.value)


def test_bad_header_names_file_and_line(tmp_path: Path) -> None:
    root = _one_class_root(tmp_path, ["1\t0\t0001.PNG\t0"])
    with pytest.raises(DagmFormatError, match="header") as caught:
        read_dagm(root)
    assert f"{_labels_path(root)}:1:" in str(caught.value)


def test_missing_labels_file_is_named(root: Path) -> None:
    labels = next(root.glob("Class*/Train/Label/Labels.txt"))
    labels.unlink()
    with pytest.raises(DagmFormatError, match=re.escape(str(labels))):
        read_dagm(root, split="Train")


def test_missing_image_file_is_named(root: Path) -> None:
    image = next(root.glob("Class*/Train/0001.PNG"))
    image.unlink()
    with pytest.raises(DagmFormatError, match=re.escape(str(image)) + " not found"):
        read_dagm(root)


def test_corrupt_png_fails_on_load_naming_the_file(root: Path) -> None:
    items = read_dagm(root, split="Test")
    items[0].image_path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG " * 3)
    assert read_dagm(root, split="Test")  # indexing decodes nothing
    with pytest.raises(DagmFormatError, match=re.escape(str(items[0].image_path)) + ": cannot decode"):
        load_item(items[0])
    defective = next(item for item in items if item.defective)
    defective.mask_path.write_bytes(b"")
    with pytest.raises(DagmFormatError, match=re.escape(str(defective.mask_path))):
        load_item(defective)


def test_malformed_ellipses_file_names_file_and_line(root: Path) -> None:
    ellipses = next(root.glob("Class*/Train/Label/Ellipses.txt"))
    ellipses.write_text(ellipses.read_text() + "0001.PNG\t1\t2\tthree\t4\t5\n")
    line_no = len(ellipses.read_text().splitlines())
    with pytest.raises(DagmFormatError) as caught:
        read_dagm(root)
    assert f"{ellipses}:{line_no}:" in str(caught.value)


def test_not_a_dagm_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DagmFormatError, match="not a DAGM layout: no Class<k>/ folders in " + re.escape(str(tmp_path))):
        read_dagm(tmp_path)
    with pytest.raises(DagmFormatError, match="not a DAGM layout"):
        read_dagm(tmp_path / "missing")


def test_requested_split_must_exist_somewhere(tmp_path: Path) -> None:
    write_dagm(tmp_path, generate(3, seed=1, size=32), split="Train")
    assert len(read_dagm(tmp_path, split="Train")) == 3
    with pytest.raises(DagmFormatError, match="no Class<k>/Test/ folder"):
        read_dagm(tmp_path, split="Test")
