"""The MVTec AD layout in the own-data reader (camcore.evaluation.archives / .mvtec): detection
beside DAGM and flat, categories, masks by either name, a missing mask, train/good, and the
same metrics as the DAGM layout on the same images."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from camcore import evaluation as ev
from camcore import synth
from camcore.dagm import write_dagm
from camcore.evaluation import archives, mvtec
from camcore.evaluation.archives import ArchiveError


def _png(pixels: np.ndarray) -> bytes:
    """PNG bytes of gray (H, W) or RGB (H, W, 3) pixels (OpenCV writes BGR: flipped here)."""
    bgr = pixels[..., ::-1] if pixels.ndim == 3 else pixels
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
    assert ok
    return encoded.tobytes()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def write_mvtec(root: Path, category: str, images: dict[str, tuple[np.ndarray, np.ndarray | None]],
                mask_names: str = "suffix") -> dict[str, str]:
    """Write ``{"<split>/<type>/<name>": (image, mask or None)}`` as an MVTec AD category under
    ``root``; masks of defect types go to ``ground_truth/<type>/<name>_mask.png`` (``"suffix"``)
    or ``<name>.png`` (``"stem"``). Returns {key: image path relative to root}."""
    written = {}
    for key, (image, mask) in images.items():
        split, defect_type, name = key.split("/")
        path = root / category / split / defect_type / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(image))
        written[key] = path.relative_to(root).as_posix()
        if mask is not None:
            stem = f"{name}_mask" if mask_names == "suffix" else name
            mask_path = root / category / "ground_truth" / defect_type / f"{stem}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            mask_path.write_bytes(_png(mask.astype(np.uint8) * 255))
    return written


def _folder_zip(root: Path) -> bytes:
    return _zip({p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})


def _blob(shape: tuple[int, int], y: int, x: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


@pytest.fixture
def two_categories(tmp_path) -> Path:
    """``bottle``: RGB 40x48, masks named <name>_mask.png; ``carpet``: gray 36x36, masks named
    like their image; one carpet defect without a mask."""
    rng = np.random.default_rng(5)
    rgb = lambda: rng.integers(0, 256, (40, 48, 3), np.uint8)  # noqa: E731
    gray = lambda: rng.integers(0, 256, (36, 36), np.uint8)  # noqa: E731
    root = tmp_path / "mvtec"
    write_mvtec(root, "bottle", {
        "train/good/000": (rgb(), None),
        "test/good/000": (rgb(), None),
        "test/broken_large/000": (rgb(), _blob((40, 48), 10, 12, 5)),
        "test/broken_large/001": (rgb(), _blob((40, 48), 30, 30, 4)),
        "test/contamination/000": (rgb(), _blob((40, 48), 20, 20, 6)),
    })
    write_mvtec(root, "carpet", {
        "test/good/000": (gray(), None),
        "test/hole/000": (gray(), _blob((36, 36), 8, 8, 3)),
        "test/hole/001": (gray(), None),  # no mask written
    }, mask_names="stem")
    (root / "README.txt").write_text("not an image")
    return root


def test_an_mvtec_zip_is_detected_with_its_categories_and_class_names(two_categories, tmp_path):
    data = _zip({f"download/{k}": v for k, v in
                 {p.relative_to(two_categories).as_posix(): p.read_bytes()
                  for p in two_categories.rglob("*") if p.is_file()}.items()})
    dataset = archives.open_archive(data, "mvtec.zip", parent=tmp_path)
    try:
        assert dataset.layout == "mvtec" and dataset.categories == ("bottle", "carpet")
        ids = [item.id for item in dataset.items]
        assert ids == [
            "bottle/test/broken_large/000.png", "bottle/test/broken_large/001.png",
            "bottle/test/contamination/000.png", "bottle/test/good/000.png",
            "carpet/test/good/000.png", "carpet/test/hole/000.png", "carpet/test/hole/001.png",
        ]  # train/good only when asked
        assert [item.index for item in dataset.items] == list(range(len(ids)))
        classes = {item.id: item.class_name for item in dataset.items}
        assert classes["bottle/test/broken_large/001.png"] == "bottle/broken_large"
        assert classes["carpet/test/good/000.png"] == "carpet/good"
        assert [item.defective for item in dataset.items] == [True, True, True, False, False, True, True]
        assert dataset.masked == 5
        (note,) = dataset.notes
        assert note.startswith("carpet/test/hole/001.png: no mask (expected carpet/ground_truth/hole/001_mask.png)")
        assert [i.id for i in dataset.items_of("carpet")] == ids[4:] and dataset.items_of(None) == dataset.items
        with pytest.raises(ValueError, match="no category 'cable' in mvtec.zip; it holds bottle, carpet"):
            dataset.items_of("cable")
    finally:
        dataset.close()


def test_rgb_and_gray_images_load_with_masks_by_either_name(two_categories):
    found = archives.read_folder(two_categories)
    loaded = {item.id: item.load() for item in found.items if item.id != "carpet/test/hole/001.png"}
    bottle = loaded["bottle/test/broken_large/000.png"]
    assert bottle.image.shape == (40, 48, 3) and bottle.defective
    expected = cv2.imdecode(np.frombuffer((two_categories / "bottle/test/broken_large/000.png").read_bytes(), np.uint8),
                            cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(bottle.image, expected)  # RGB, not BGR
    np.testing.assert_array_equal(bottle.mask, _blob((40, 48), 10, 12, 5))  # <name>_mask.png
    assert bottle.class_name == "bottle/broken_large" and bottle.detail == "broken_large"
    carpet = loaded["carpet/test/hole/000.png"]
    assert carpet.image.shape == (36, 36) and carpet.defective
    np.testing.assert_array_equal(carpet.mask, _blob((36, 36), 8, 8, 3))  # mask named like the image
    good = loaded["carpet/test/good/000.png"]
    assert not good.defective and not good.mask.any() and good.detail == "" and good.class_name == "carpet/good"


def test_a_defective_image_without_a_mask_is_a_per_image_error_not_a_failed_run(two_categories):
    items = archives.items_from_folder(two_categories, category="carpet")
    assert [i.id for i in items] == ["carpet/test/good/000.png", "carpet/test/hole/000.png", "carpet/test/hole/001.png"]
    with pytest.raises(ArchiveError, match=r"^carpet/test/hole/001.png: no ground-truth mask "
                                           r"\(expected carpet/ground_truth/hole/001_mask.png\)"):
        items[2].load()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling2D()(h)))
    spec = ev.ModelSpec.from_model(model, "unit", key="memory:mini")
    table = ev.evaluate(spec, items, ["grad_cam", "sobel", "random"], curve_steps=2, workers=1)
    failed = ev.errors(table)
    assert list(failed["image_id"]) == ["carpet/test/hole/001.png"]
    assert "no ground-truth mask" in failed["error"].iloc[0]
    done = ev.results_only(table)
    assert sorted(done["image_id"].unique()) == ["carpet/test/good/000.png", "carpet/test/hole/000.png"]
    assert set(done["class_name"]) == {"carpet/good", "carpet/hole"}
    assert set(done.loc[done["defective"], "defect_kind"]) == {"hole"}


def test_choosing_a_category_and_adding_train_good(two_categories):
    found = archives.read_folder(two_categories, category="bottle", train_good=True)
    assert found.layout == "mvtec" and found.categories == ("bottle",) and found.notes == ()
    assert [i.id for i in found.items][-1] == "bottle/train/good/000.png"
    train = found.items[-1]
    assert train.defective is False and train.class_name == "bottle/good" and not train.load().defective
    assert [mvtec.is_training_image(i) for i in found.items] == [False] * (len(found.items) - 1) + [True]
    with pytest.raises(ArchiveError, match=r"no category 'cable' in this MVTec AD set; it holds bottle, carpet"):
        archives.read_folder(two_categories, category="cable")


def test_a_single_category_at_the_top_of_a_zip_is_named_after_the_zip(two_categories, tmp_path):
    data = _folder_zip(two_categories / "bottle")  # train/, test/, ground_truth/ at the top
    dataset = archives.open_archive(data, "bottle_line3.zip", parent=tmp_path)
    try:
        assert dataset.layout == "mvtec" and dataset.categories == ("bottle_line3",)
        assert dataset.items[0].id == "test/broken_large/000.png"
        assert dataset.items[0].class_name == "bottle_line3/broken_large"
    finally:
        dataset.close()
    # the same category in a wrapper folder keeps the folder's name
    wrapped = _zip({f"bottle/{p.relative_to(two_categories / 'bottle').as_posix()}": p.read_bytes()
                    for p in (two_categories / "bottle").rglob("*") if p.is_file()})
    dataset = archives.open_archive(wrapped, "upload.zip", parent=tmp_path)
    try:
        assert dataset.categories == ("bottle",) and dataset.items[0].class_name == "bottle/broken_large"
    finally:
        dataset.close()


def test_two_masks_for_one_image_and_masks_without_image(two_categories):
    extra = two_categories / "bottle" / "ground_truth" / "broken_large"
    (extra / "000.png").write_bytes((extra / "000_mask.png").read_bytes())
    with pytest.raises(ArchiveError, match=r"bottle/ground_truth/broken_large/000.png and "
                                           r"bottle/ground_truth/broken_large/000_mask.png are both masks"):
        archives.read_folder(two_categories)
    (extra / "000.png").rename(extra / "017_mask.png")
    found = archives.read_folder(two_categories)
    assert any("1 mask(s) match no image of bottle/test/broken_large/: "
               "bottle/ground_truth/broken_large/017_mask.png" in note for note in found.notes)


def test_flat_sets_with_train_or_test_folders_stay_flat(tmp_path):
    image = np.zeros((8, 8), np.uint8)
    for name in ("images/test/scratch/a.png", "masks/test/scratch/a.png", "images/train/b.png"):
        path = tmp_path / "test" / name  # a flat set in a wrapper folder named test/
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(image))
    found = archives.read_folder(tmp_path)
    assert found.layout == "flat" and [i.id for i in found.items] == ["images/test/scratch/a.png", "images/train/b.png"]


def test_the_command_line_reads_an_mvtec_zip(two_categories, tmp_path, capsys):
    (tmp_path / "set.zip").write_bytes(_folder_zip(two_categories))
    found = archives.open_data(tmp_path / "set.zip", category="bottle")
    try:
        assert found.layout == "mvtec" and len(found.items) == 4
    finally:
        found.close()
    with pytest.raises(ArchiveError, match="--split applies to DAGM folders"):
        archives.open_data(two_categories, split="Test")


# ------------------------------------------------------- the same metrics as DAGM
TEXTURES = ("fractal", "grain", "speckle")  # three DAGM classes = three MVTec categories
SIZE = 64


def _samples() -> list[synth.Sample]:
    samples = []
    for t, texture in enumerate(TEXTURES):
        samples.append(synth.make_sample(100 + t, texture, None, SIZE))
        samples.append(synth.make_sample(200 + t, texture, "spot", SIZE))
        samples.append(synth.make_sample(300 + t, texture, "scratch", SIZE))
    return samples


def test_three_mvtec_categories_score_like_the_dagm_layout_on_the_same_images(tmp_path):
    samples = _samples()
    dagm_written = write_dagm(tmp_path / "dagm", samples, split="Test")
    mvtec_ids = []
    for n, sample in enumerate(samples):
        kind = sample.defect or "good"
        key = f"test/{kind}/{n:03d}"
        files = {key: (sample.image, sample.mask if sample.defect else None)}
        mvtec_ids.append(write_mvtec(tmp_path / "mvtec", sample.texture, files)[key])
    dagm = archives.open_archive(_folder_zip(tmp_path / "dagm"), "dagm.zip", parent=tmp_path)
    mvtec = archives.open_archive(_folder_zip(tmp_path / "mvtec"), "mvtec.zip", parent=tmp_path)
    assert (dagm.layout, mvtec.layout, mvtec.categories) == ("dagm", "mvtec", TEXTURES)

    keras.utils.set_random_seed(4)
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv2")(keras.layers.MaxPooling2D(2)(h))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))
    spec = ev.ModelSpec.from_model(model, "unit", key="memory:parity")
    methods = ["grad_cam", "score_cam", "sobel", "random"]
    options = dict(curve_steps=4, max_n=3, workers=1)
    by_dagm = ev.evaluate(spec, list(dagm.items), methods, **options)
    by_mvtec = ev.evaluate(spec, list(mvtec.items), methods, **options)
    dagm.close(), mvtec.close()

    same_image = {w.image_path.relative_to(tmp_path / "dagm").as_posix(): m
                  for w, m in zip(dagm_written, mvtec_ids)}
    by_dagm = by_dagm.assign(image_id=by_dagm["image_id"].map(same_image))
    # the random control's map is seeded by the image id, which differs between layouts
    keep = lambda t: t[t["method"] != "random"].set_index(["image_id", "method"]).sort_index()  # noqa: E731
    left, right = keep(by_dagm), keep(by_mvtec)
    assert len(left) == len(samples) * 3 and left.index.equals(right.index)
    skip = {"seconds", "source", "path", "class_name", "defect_kind", "index", "model_passes"}
    metrics = [c for c in left.columns if c not in skip and not c.endswith("seconds")
               and pd.api.types.is_numeric_dtype(left[c])]
    assert {"pointing_game", "iou_at_global", "deletion_auc", "average_drop", "iou@0.50"} <= set(metrics)
    pd.testing.assert_frame_equal(left[metrics], right[metrics], check_exact=False, rtol=1e-6, atol=1e-9)
    assert (left["defective"] == right["defective"]).all() and left["defective"].sum() == 2 * 3 * len(TEXTURES)
    assert set(right["class_name"]) == {f"{t}/{k}" for t in TEXTURES for k in ("good", "spot", "scratch")}


def test_python_m_camcore_evaluate_runs_an_mvtec_zip(two_categories, tmp_path, capsys):
    from camcore.evaluation.cli import main

    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling2D()(h))).save(
        tmp_path / "mini.keras")
    (tmp_path / "set.zip").write_bytes(_folder_zip(two_categories))
    out = tmp_path / "r.csv"
    status = main(["--model", str(tmp_path / "mini.keras"), "--preprocessing", "unit",
                   "--data", str(tmp_path / "set.zip"), "--category", "carpet", "--methods", "grad_cam",
                   "--steps", "2", "--workers", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "note: carpet/test/hole/001.png: no mask" in captured.err
    assert "1 image(s) could not be read" in captured.out
    table = pd.read_csv(out)
    assert set(table["class_name"].dropna()) == {"carpet/good", "carpet/hole"}
    assert main(["--model", str(tmp_path / "mini.keras"), "--preprocessing", "unit", "--data", str(two_categories),
                 "--category", "cable", "--out", str(tmp_path / "x.csv")]) == 2
    assert "no category 'cable'" in capsys.readouterr().err
