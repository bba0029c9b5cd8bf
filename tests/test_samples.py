"""Tests for camcore.samples and the bundled assets/samples set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from camcore import samples
from camcore.samples import SampleInfo, load_sample, load_sample_index
from camcore.synth import DEFECTS, TEXTURES, ellipse_mask, make_sample

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "samples"


@pytest.fixture(scope="module")
def index() -> list[SampleInfo]:
    return load_sample_index()


def test_default_directory_is_the_repository_assets(index: list[SampleInfo]) -> None:
    assert samples.DEFAULT_DIR == ASSETS
    assert all(info.image_path.parent == ASSETS for info in index)


def test_index_covers_every_texture_and_defect_kind(index: list[SampleInfo]) -> None:
    assert len(index) == 32
    assert Counter((info.texture, info.defective) for info in index) == {
        **{(texture, True): 2 for texture in TEXTURES[:6]},
        **{(texture, True): 1 for texture in TEXTURES[6:]},
        **{(texture, False): 1 for texture in TEXTURES},
    }
    assert all(samples.defective_per_texture(texture) == (2 if texture in TEXTURES[:6] else 1) for texture in TEXTURES)
    assert {info.defect for info in index if info.defective} == set(DEFECTS)
    assert len({info.name for info in index}) == 32
    # the names the set had before the texture families still exist
    names = {info.name for info in index}
    for texture in TEXTURES[:6]:
        assert {f"{texture}_defective_1", f"{texture}_defective_2", f"{texture}_clean_1"} <= names


def test_index_matches_the_files_on_disk(index: list[SampleInfo]) -> None:
    listed = {info.image_path.name for info in index} | {info.mask_path.name for info in index if info.mask_path}
    on_disk = {path.name for path in ASSETS.glob("*.png")}
    assert listed == on_disk
    total_bytes = sum(path.stat().st_size for path in ASSETS.iterdir())
    assert total_bytes < 5_000_000
    for info in index:
        image, mask = load_sample(info)
        assert image.dtype == np.uint8 and image.shape == (512, 512)
        if info.defective:
            assert mask is not None and mask.dtype == bool and mask.shape == image.shape and mask.any()
            assert info.ellipse is not None and info.defect in DEFECTS
            assert not (mask & ~ellipse_mask(info.ellipse, mask.shape)).any()
        else:
            assert mask is None and info.ellipse is None and info.defect is None


def test_seeds_reproduce_the_bundled_images(index: list[SampleInfo]) -> None:
    for info in index:
        image, mask = load_sample(info)
        regenerated = make_sample(info.seed, info.texture, info.defect, 512)
        # Byte-exact on one machine; allow rare +-1 rounding from other OpenCV builds.
        difference = np.abs(regenerated.image.astype(np.int16) - image.astype(np.int16))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, info.name
        if mask is not None:
            assert (regenerated.mask != mask).mean() < 0.001, info.name


def test_regeneration_rewrites_the_same_index(tmp_path: Path) -> None:
    assert samples.main(["--out", str(tmp_path)]) == 0
    fresh = json.loads((tmp_path / samples.INDEX_FILE).read_text())
    bundled = json.loads((ASSETS / samples.INDEX_FILE).read_text())
    assert fresh == bundled
    assert sorted(path.name for path in tmp_path.glob("*.png")) == sorted(path.name for path in ASSETS.glob("*.png"))


def test_bundled_defects_are_clearly_visible(index: list[SampleInfo]) -> None:
    for info in index:
        if info.defective:
            assert samples.defect_visibility(info.seed, info.texture, info.defect) > 1.0, info.name


def test_malformed_index_is_reported_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_sample_index(tmp_path)
    index_path = tmp_path / samples.INDEX_FILE
    index_path.write_text("{not json")
    with pytest.raises(ValueError, match=str(index_path)):
        load_sample_index(tmp_path)
    entry = {"image": "a.png", "texture": "fractal", "defective": True, "defect": None, "mask": None}
    entry |= {"ellipse": None, "seed": 1}
    index_path.write_text(json.dumps([entry]))
    with pytest.raises(ValueError, match="entry 0"):
        load_sample_index(tmp_path)
