"""camcore.evaluate against a direct computation, and its journal's edge cases.

One image's evaluation rows are recomputed here field by field: the image resized and
scaled by hand; each CAM from a fresh Explainer; localization by the one protocol of
``camcore.metrics.localization`` (the map at its own resolution against the mask at the
image's native resolution); faithfulness on the map upsampled bilinearly to the model
input, with the image blurred (sigma 5 px) as the deletion baseline and insertion
canvas; every metric through ``camcore.metrics``. The mask is not symmetric and the
explained class is neither the predicted one nor 0 or 1, so a flipped mask or a wrong
class changes the numbers.
"""

from __future__ import annotations

import dataclasses
import json

import cv2
import keras
import numpy as np
import pytest

import camcore
from camcore import evaluation as ev
from camcore import metrics
from camcore.dagm import write_dagm
from camcore.synth import generate

IMAGE_SIZE, INPUT = 128, 32
STEPS, MAX_N = 4, 3
CLASS = 2
BLUR_SIGMA = 5.0  # the deletion baseline and insertion canvas (camcore.evaluation.BLUR_SIGMA)
CAMS = ("grad_cam", "grad_cam_plus_plus", "score_cam", "faster_score_cam")


def three_class_model(seed: int = 21, name: str = "three") -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((INPUT, INPUT, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return three_class_model()


@pytest.fixture(scope="module")
def spec(model) -> ev.ModelSpec:
    return ev.ModelSpec.from_model(model, "unit", layer="conv2", class_index=CLASS, key="memory:three")


# ------------------------------------------------------------------ direct computation


def model_input(image: np.ndarray) -> np.ndarray:
    small = cv2.resize(image, (INPUT, INPUT), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) / 255.0)[None, ..., None]


def upsampled(cam: np.ndarray) -> np.ndarray:
    return np.clip(cv2.resize(cam, (INPUT, INPUT), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def expected_fields(model, x, cam, saliency, mask, class_index, road=True) -> dict[str, float]:
    """The row of one map: ``cam`` as the method made it (localization), ``saliency`` the
    map at the model input (faithfulness)."""
    def predict(batch):
        return model(batch, training=False).numpy()

    blurred = cv2.GaussianBlur(x[0], (0, 0), BLUR_SIGMA).reshape(x.shape[1:])
    fields: dict[str, float] = {}
    if mask is not None:
        curve, _ = metrics.localization_curves(cam, mask)
        fields["oracle_threshold"], fields["oracle_iou"] = metrics.best_threshold(cam, mask)
        found = metrics.localization(cam, mask, fields["oracle_threshold"])
        fields["pointing_game"] = float(found.pointing_hit)
        fields["energy_pointing_game"] = found.energy_pointing
        fields.update({f"iou@{t:.2f}": v for t, v in zip(metrics.DEFAULT_THRESHOLDS, curve)})
    drop = metrics.average_drop_increase(predict, x, saliency, class_index)
    fields["average_drop"] = drop.drop
    fields["increased_confidence"] = float(drop.increased)
    deletion = metrics.deletion_curve(predict, x, saliency, class_index, steps=STEPS, baseline=blurred)
    insertion = metrics.insertion_curve(predict, x, saliency, class_index, steps=STEPS, start="blur",
                                        blur_sigma=BLUR_SIGMA)
    fields["deletion_auc"], fields["insertion_auc"] = metrics.auc(deletion), metrics.auc(insertion)
    for k in range(STEPS + 1):
        fields[f"deletion@{k / STEPS:.2f}"] = deletion[k]
        fields[f"insertion@{k / STEPS:.2f}"] = insertion[k]
    for order in ("morf", "lerf") if road else ():
        # noise: 1 % of the input range, [0, 1] for "unit" preprocessing
        curve = metrics.road_curve(predict, x, saliency, class_index, order=order, noise_std=0.01)
        fields[f"road_{order}_auc"] = metrics.auc(curve)
    return fields


def direct_maps(model, x, image_uint8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """method -> (map as made, map at the model input)."""
    maps = {}
    for method in CAMS:
        cam = camcore.Explainer(model).compute(method, x, "conv2", CLASS, max_n=MAX_N).cam
        maps[method] = (cam, upsampled(cam))
    sobel = camcore.sobel_gradient(image_uint8)
    maps["sobel"] = (sobel, sobel)
    return maps


def differs(a: dict[str, float], b: dict[str, float], keys) -> bool:
    return any(abs(a[k] - b[k]) > 1e-4 for k in keys)


# ------------------------------------------------------------------------ the rows


@pytest.fixture(scope="module")
def evaluated(spec):
    items = ev.synthetic_items(12, seed=17, size=IMAGE_SIZE, defect_rate=0.5)
    masks = {item.id: item.load().mask for item in items}
    # the largest defect, so that several maps overlap it
    defective = max((i for i in items if masks[i.id].any()), key=lambda i: masks[i.id].sum())
    assert not np.array_equal(masks[defective.id], np.flipud(masks[defective.id]))
    clean = next(i for i in items if not masks[i.id].any() and not i.load().defective)
    table = ev.evaluate(spec, [defective, clean], curve_steps=STEPS, max_n=MAX_N, road=True, workers=1)
    return table, defective, clean


@pytest.mark.parametrize("kind", ["defective", "clean"])
def test_every_metric_of_an_image_matches_a_direct_computation(model, evaluated, kind):
    table, defective, clean = evaluated
    item = defective if kind == "defective" else clean
    loaded = item.load()
    x = model_input(loaded.image)
    probabilities = model(x, training=False).numpy()[0]
    assert int(np.argmax(probabilities)) != CLASS, "the explained class must not be the predicted one"
    mask = loaded.mask if loaded.defective else None
    image_uint8 = cv2.resize(loaded.image, (INPUT, INPUT), interpolation=cv2.INTER_AREA)
    rows = table[table["image_id"] == item.id].set_index("method")
    assert set(rows.index) == set(ev.ALL_METHODS)
    localization = ["pointing_game", "energy_pointing_game", "oracle_iou"]
    localization += [f"iou@{t:.2f}" for t in metrics.DEFAULT_THRESHOLDS]
    faithfulness = ["average_drop", "increased_confidence", "deletion_auc", "insertion_auc"]
    faithfulness += [f"deletion@{k / STEPS:.2f}" for k in range(STEPS + 1)]
    tells_flip = {}
    # every map but the random control's (its seed is derived inside evaluate)
    for method, (cam, saliency) in direct_maps(model, x, image_uint8).items():
        row = rows.loc[method]
        assert row["target_class"] == CLASS and row["predicted"] == int(np.argmax(probabilities))
        assert row["p_target"] == pytest.approx(float(probabilities[CLASS]), rel=1e-5, abs=1e-7)
        assert bool(row["defective"]) == loaded.defective and row["class_name"] == loaded.class_name
        expected = expected_fields(model, x, cam, saliency, mask, CLASS)
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-4, abs=1e-6), f"{method}: {name}"
        # the checks above can tell a wrong class from the right one
        for other in sorted({0, 1, int(np.argmax(probabilities))} - {CLASS}):
            wrong = expected_fields(model, x, cam, saliency, mask, other, road=False)
            assert differs(expected, wrong, faithfulness), f"{method}: class {other} gives the same numbers"
        if mask is None:
            assert all(np.isnan(row[name]) for name in localization), method
            continue
        assert row["iou_at_global"] == pytest.approx(expected[f"iou@{row['global_threshold']:.2f}"])
        assert row["dice_at_global"] == pytest.approx(2 * row["iou_at_global"] / (1 + row["iou_at_global"]))
        flipped = expected_fields(model, x, cam, saliency, np.flipud(mask), CLASS, road=False)
        tells_flip[method] = differs(expected, flipped, localization)
    if mask is not None:
        # ... and a mask flipped upside down from the right one (on a small defect some
        # maps have no mass near it or its mirror image, so not necessarily every method)
        assert tells_flip["sobel"] and sum(tells_flip.values()) >= 3, tells_flip


# ---------------------------------------------------------------------- the journal


def _loads(items, calls, fail_first=()):
    """Items whose load is counted in ``calls``; ids in ``fail_first`` fail once."""
    failed: set[str] = set()

    def wrap(item):
        def load():
            calls.append(item.id)
            if item.id in fail_first and item.id not in failed:
                failed.add(item.id)
                raise ValueError("temporarily unreadable")
            return item.load()

        return dataclasses.replace(item, load=load)

    return [wrap(item) for item in items]


FAST = dict(methods=["grad_cam", "sobel", "random"], curve_steps=2, max_n=2, workers=1)


def _journal_records(out):
    lines = ev.journal_path(out).read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line must parse


def test_a_failed_image_is_retried_on_resume(spec, tmp_path):
    root = tmp_path / "dagm"
    write_dagm(root, generate(3, seed=4, size=64))
    items = ev.dagm_items(root)
    out = tmp_path / "r.csv"
    calls: list[str] = []
    first = ev.evaluate(spec, _loads(items, calls, fail_first={items[1].id}), out=out, **FAST)
    assert list(ev.errors(first)["image_id"]) == [items[1].id]
    calls.clear()
    second = ev.evaluate(spec, _loads(items, calls), out=out, **FAST)
    assert calls == [items[1].id], "only the failed image is redone"
    assert ev.errors(second).empty
    assert ev.results_only(second).groupby("method")["image_id"].nunique().eq(3).all()
    records = _journal_records(out)[1:]
    assert [r["id"] for r in records] == [items[0].id, items[1].id, items[2].id, items[1].id]
    assert "rows" in records[-1]


def test_an_unreadable_generated_image_is_reported_not_a_crash(spec, tmp_path):
    # Generated items do not know whether they are defective before they are loaded, so
    # their error row has no "defective" value: the table must still be built, written
    # and read back.
    items = ev.synthetic_items(2, seed=4, size=64)
    out = tmp_path / "r.parquet"
    table = ev.evaluate(spec, _loads(items, [], fail_first={items[0].id}), out=out, **FAST)
    assert list(ev.errors(table)["image_id"]) == [items[0].id]
    back = ev.read_results(out)
    assert list(ev.errors(back)["image_id"]) == [items[0].id]
    assert ev.results_only(back)["image_id"].unique().tolist() == [items[1].id]


def test_a_rerun_with_another_model_refuses_to_merge(spec, tmp_path):
    items = ev.synthetic_items(2, seed=5, size=64)
    out = tmp_path / "r.parquet"
    ev.evaluate(spec, items, out=out, **FAST)
    other = ev.ModelSpec.from_model(three_class_model(seed=22, name="other"), "unit", layer="conv2",
                                    class_index=CLASS, key="memory:other")
    before = ev.journal_path(out).read_bytes()
    with pytest.raises(ValueError, match=r"another configuration.*model"):
        ev.evaluate(other, items, out=out, **FAST)
    assert ev.journal_path(out).read_bytes() == before


@pytest.mark.parametrize("header", [b"garbage\n", b'{"id": "synthetic/00000", "rows": []}\n', b"[1, 2]\n", b"\n"])
def test_a_journal_with_a_garbage_header_is_refused(spec, tmp_path, header):
    items = ev.synthetic_items(1, seed=6, size=64)
    out = tmp_path / "r.csv"
    ev.journal_path(out).write_bytes(header)
    with pytest.raises(ValueError, match="not an evaluation journal"):
        ev.evaluate(spec, items, out=out, **FAST)
    assert ev.journal_path(out).read_bytes() == header  # left for the user to inspect
    table = ev.evaluate(spec, items, out=out, overwrite=True, **FAST)
    assert ev.errors(table).empty and not ev.results_only(table).empty


def test_a_torn_last_line_is_dropped_and_the_journal_stays_readable(spec, tmp_path):
    items = ev.synthetic_items(3, seed=7, size=64)
    out = tmp_path / "r.csv"
    ev.evaluate(spec, items[:1], out=out, **FAST)
    with open(ev.journal_path(out), "ab") as handle:
        handle.write(b'{"id":"synthetic/00001","rows":[{"mo')  # died mid-write
    calls: list[str] = []
    ev.evaluate(spec, _loads(items, calls), out=out, **FAST)
    assert calls == [items[1].id, items[2].id]
    assert [r["id"] for r in _journal_records(out)[1:]] == [item.id for item in items]
    calls.clear()
    ev.evaluate(spec, _loads(items, calls), out=out, **FAST)
    assert calls == []


def test_an_unreadable_record_in_the_middle_is_redone(spec, tmp_path):
    items = ev.synthetic_items(3, seed=8, size=64)
    out = tmp_path / "r.csv"
    ev.evaluate(spec, items, out=out, **FAST)
    path = ev.journal_path(out)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # record of items[1], cut in half
    path.write_text("\n".join(lines) + "\n")
    calls: list[str] = []
    table = ev.evaluate(spec, _loads(items, calls), out=out, **FAST)
    assert calls == [items[1].id]
    assert ev.results_only(table).groupby("method")["image_id"].nunique().eq(3).all()
