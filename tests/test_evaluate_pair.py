"""The evaluation of two models (``evaluate(..., model_b=)``, ``cam-studio evaluate --model-b``):
both models' metric sets and the agreement figures per image and method, a model against
itself, resuming a pair run, a model B without gradients and with other classes, and the
summaries of where two models differ."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from camcore import evaluation as ev
from camcore.evaluation import pair_summary
from camcore.evaluation.pair import pair_maps
from camcore.evaluation.pair_table import is_pair_table, side_table
from camcore.explainer import Explainer
from camcore.metrics import registered_columns
from camcore.metrics.agreement import AGREEMENT_COLUMNS, compare_maps

SIZE = 64  # generated images
FAST = dict(curve_steps=4, max_n=3, workers=2)
TIMING = {"seconds", "metric_seconds", "b_seconds", "b_metric_seconds"}
AGREEMENT = [c.name for c in AGREEMENT_COLUMNS]


def _tiny_model(seed: int, size: int = 32, channels: int = 1, name: str = "tiny") -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, channels), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def spec_a() -> ev.ModelSpec:
    return ev.ModelSpec.from_model(_tiny_model(3), "unit", key="memory:tiny_a")


@pytest.fixture(scope="module")
def spec_b() -> ev.ModelSpec:
    """Another model, with another input size and three channels."""
    return ev.ModelSpec.from_model(_tiny_model(8, size=48, channels=3, name="other"), "unit", key="memory:tiny_b")


def assert_same_table(expected: pd.DataFrame, found: pd.DataFrame, skip: set[str] = TIMING) -> None:
    """Same rows (by image and method) and columns, numbers within 1e-6, timing aside."""
    key = ["image_id", "method"]
    expected = expected.sort_values(key).reset_index(drop=True)
    found = found.sort_values(key).reset_index(drop=True)
    assert list(found.columns) == list(expected.columns)
    for column in expected.columns:
        if column in skip:
            continue
        a, b = expected[column], found[column]
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=0, atol=1e-6, err_msg=column)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), column


def _journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in ev.journal_path(out).read_text().splitlines()]


# ------------------------------------------------------------------ the CLI, two demo models


def test_the_cli_writes_both_metric_sets_and_the_agreement(tmp_path, capsys, monkeypatch):
    """``cam-studio evaluate --synthetic N --model vgg_defect --model-b resnet_defect`` (3 small
    images, Grad-CAM and the controls): A's columns are a run of A alone, B's (``b_``) a run
    of B alone, and the agreement columns compare_maps of the two maps."""
    from dashboard import cli as cam_studio

    monkeypatch.setattr("sys.argv", ["cam-studio"])  # the command sets it as `python -m` would
    out = tmp_path / "pair.parquet"
    argv = ["--synthetic", "3", "--size", "128", "--seed", "2", "--defect-rate", "0.7", "--model", "vgg_defect",
            "--model-b", "resnet_defect", "--methods", "grad_cam", "--steps", "4", "--out", str(out)]
    assert cam_studio.main(["evaluate", *argv]) == 0
    printed = capsys.readouterr().out
    assert "## Model A: demo:vgg_defect" in printed and "## Model B: demo:resnet_defect" in printed
    assert "Where the maps differ most" in printed and "Top-1: the two models predict different classes on" in printed
    table = ev.read_results(out)
    assert is_pair_table(table) and set(table["b_model"].dropna()) == {"demo:resnet_defect"}
    assert _journal(out)[0]["config"]["pair"]["model"] == "demo:resnet_defect"

    items = ev.synthetic_items(3, seed=2, size=128, defect_rate=0.7)
    methods = ["grad_cam", "sobel", "random"]
    alone_a = ev.evaluate(ev.load_model_spec("vgg_defect"), items, methods, curve_steps=4, seed=2)
    alone_b = ev.evaluate(ev.load_model_spec("resnet_defect"), items, methods, curve_steps=4, seed=2)
    assert_same_table(alone_a, side_table(table, "a"))
    assert_same_table(alone_b, side_table(table, "b"))
    registered = [c.name for _, c in registered_columns() if c.name in alone_a.columns]
    assert registered and all(f"b_{name}" in table.columns for name in registered)

    rows = ev.results_only(table)
    cams = rows[rows["method"] == "grad_cam"]
    controls = rows[rows["method"] != "grad_cam"]
    assert cams[AGREEMENT[:2]].notna().all().all() and controls[AGREEMENT[:2]].isna().all().all()
    np.testing.assert_array_equal(cams["top1_agree"], (cams["predicted"] == cams["b_predicted"]).astype(float))
    # the agreement figures are compare_maps of the two models' maps at the image's resolution
    explainers = [Explainer(ev.load_model_spec(n).model) for n in ("vgg_defect", "resnet_defect")]
    specs = [ev.load_model_spec(n) for n in ("vgg_defect", "resnet_defect")]
    for item in items:
        row = cams[cams["image_id"] == item.id].iloc[0]
        loaded = item.load()
        mask = loaded.mask if loaded.defective else None
        found = pair_maps(explainers, specs, loaded.image, "grad_cam", classes=(1, 1), max_n=10, threshold=0.5,
                          mask=mask)
        reference = compare_maps(found.cam_a, found.cam_b, 0.5, mask=mask, size=loaded.image.shape[:2])
        assert row["map_correlation"] == pytest.approx(reference.correlation, abs=1e-6)
        assert row["map_iou"] == pytest.approx(reference.iou, abs=1e-6)
        if mask is None:
            assert np.isnan(row["both_peaks_in_defect"])
        else:
            assert row["both_peaks_in_defect"] == float(reference.both_peaks_in_defect)
    assert cams["defective"].astype(bool).any() and not cams["defective"].astype(bool).all()


def test_a_model_compared_with_itself_agrees_on_every_image():
    spec = ev.load_model_spec("vgg_defect")
    items = ev.synthetic_items(4, seed=5, size=128, defect_rate=0.75)
    table = ev.evaluate(spec, items, ["grad_cam", "score_cam", "eigen_cam", "sobel", "random"], model_b=spec,
                        metrics=["localization", "drop_increase"], curve_steps=4)
    cams = ev.results_only(table)
    cams = cams[cams["method"].isin(["grad_cam", "score_cam", "eigen_cam"])]
    assert len(cams) == 12
    assert (cams["map_correlation"].round(4) == 1.0).all(), cams["map_correlation"].tolist()
    assert (cams["map_iou"] == 1.0).all() and (cams["top1_agree"] == 1.0).all()
    defective = cams[cams["defective"].astype(bool)]
    assert len(defective) and (defective["peak_a_in_defect"] == defective["peak_b_in_defect"]).all()
    for column in ("p_target", "pointing_game", "oracle_iou", "average_drop", "iou@0.50"):
        np.testing.assert_allclose(cams[f"b_{column}"], cams[column], atol=1e-6, err_msg=column)
    summary = pair_summary.summarize_agreement(table)
    assert (summary["map_correlation_mean"].round(4) == 1.0).all() and (summary["map_iou_mean"] == 1.0).all()


# ---------------------------------------------------------------------- resume, journal


def test_a_pair_run_resumed_after_a_kill_gives_the_same_table(spec_a, spec_b, tmp_path):
    items = ev.synthetic_items(5, seed=4, size=SIZE)
    methods = ["grad_cam", "score_cam", "sobel", "random"]
    whole = ev.evaluate(spec_a, items, methods, model_b=spec_b, out=tmp_path / "whole.parquet", **FAST)

    out = tmp_path / "resumed.parquet"
    loads: list[str] = []

    def counted(item: ev.EvalItem) -> ev.EvalItem:
        return dataclasses.replace(item, load=lambda: loads.append(item.id) or item.load())

    def killed_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(spec_a, [counted(i) for i in items], methods, model_b=spec_b, out=out, progress=killed_after_two,
                    **FAST)
    assert [record["id"] for record in _journal(out)[1:]] == [item.id for item in items[:2]] and not out.exists()
    loads.clear()
    resumed = ev.evaluate(spec_a, [counted(i) for i in items], methods, model_b=spec_b, out=out, **FAST)
    assert loads == [item.id for item in items[2:]]  # the finished images are not redone
    assert_same_table(whole, resumed)
    assert_same_table(whole, ev.read_results(out))
    assert {"b_global_threshold", "b_iou_at_global"} <= set(resumed.columns)

    # the pair is part of the configuration: another model B, or none, does not resume this journal
    with pytest.raises(ValueError, match="another configuration.*pair"):
        ev.evaluate(spec_a, items, methods, model_b=spec_a, out=out, **FAST)
    with pytest.raises(ValueError, match="another configuration.*pair"):
        ev.evaluate(spec_a, items, methods, model_b=spec_b, agreement_threshold=0.3, out=out, **FAST)
    with pytest.raises(ValueError, match="another configuration.*pair"):
        ev.evaluate(spec_a, items, methods, out=out, **FAST)


def test_a_single_model_table_and_journal_are_unchanged(spec_a, spec_b, tmp_path):
    items = ev.synthetic_items(2, seed=6, size=SIZE)
    alone = ev.evaluate(spec_a, items, ["grad_cam", "sobel", "random"], out=tmp_path / "a.csv", **FAST)
    paired = ev.evaluate(spec_a, items, ["grad_cam", "sobel", "random"], model_b=spec_b, **FAST)
    assert not is_pair_table(alone) and not any(c.startswith("b_") or c in AGREEMENT for c in alone.columns)
    assert "pair" not in _journal(tmp_path / "a.csv")[0]["config"]
    assert list(side_table(paired, "a").columns) == list(alone.columns)  # A's columns, in A's order
    assert_same_table(alone, side_table(paired, "a"))
    # a pair table reads as A's evaluation wherever one model is expected
    summaries = [ev.summarize(t) for t in (alone, paired)]
    untimed = [s[[c for c in s.columns if "seconds" not in c]] for s in summaries]
    pd.testing.assert_frame_equal(untimed[1], untimed[0], check_exact=False, atol=1e-6)


# ------------------------------------------------- a model B that cannot serve every method


def test_a_model_b_without_gradients_and_other_classes(spec_a, tmp_path, capsys):
    """A gradient-free model B with three classes: its gradient rows say why they are empty
    (noted, not a failure), B explains its own top-1 on each image, top-1 is not compared."""
    from test_backends import ToyBackend

    from camcore import models

    toy = models.from_backend(ToyBackend(9), "toy", "unit", ("a", "b", "c"), (8, 8), key="memory:toy")
    spec_toy = ev.ModelSpec.of(toy)
    items = ev.synthetic_items(3, seed=7, size=SIZE)
    table = ev.evaluate(spec_a, items, ["grad_cam", "score_cam", "sobel", "random"], model_b=spec_toy, **FAST)
    rows = ev.results_only(table)
    grad = rows[rows["method"] == "grad_cam"]
    assert (grad["b_unavailable"] == "needs gradients — not available for toy models").all()
    assert grad[["map_correlation", "b_pointing_game", "b_seconds"]].isna().all().all()
    assert grad["pointing_game"].notna().any() and grad["b_p_target"].notna().all()  # A's metrics, B's prediction
    score = rows[rows["method"] == "score_cam"]
    assert score["map_correlation"].notna().all() and (score["b_unavailable"] == "").all()
    assert (rows["b_target_class"] == rows["b_predicted"]).all() and set(rows["b_predicted"]) == {0, 1}  # its top-1
    assert "top1_agree" not in rows or rows["top1_agree"].isna().all()
    assert pair_summary.top1_disagreement(table).empty
    assert pair_summary.unavailable_for_b(table) == {"grad_cam": "needs gradients — not available for toy models"}
    assert set(side_table(table, "b")["method"]) == {"score_cam", "sobel", "random"}
    text = pair_summary.format_pair_summary(table)
    assert "Not available for model B: Grad-CAM (needs gradients" in text and "different classes" in text


# --------------------------------------------------------------------------- summaries


def _doctored() -> pd.DataFrame:
    """A pair table by hand: 4 images of two classes, two methods."""
    rows = []
    r = {"i0": (0.9, 0.8), "i1": (0.2, 0.6), "i2": (0.5, 0.1), "i3": (0.95, 0.99)}
    classes = {"i0": "Class1", "i1": "Class1", "i2": "Class2", "i3": "Class2"}
    top1 = {"i0": 1.0, "i1": 0.0, "i2": 0.0, "i3": 0.0}
    for image, (grad, score) in r.items():
        for method, value in (("grad_cam", grad), ("score_cam", score), ("sobel", None)):
            rows.append({"model": "A", "image_id": image, "class_name": classes[image], "defective": True,
                         "method": method, "map_correlation": value, "map_iou": None if value is None else value / 2,
                         "top1_agree": top1[image], "b_model": "B", "predicted": 1, "b_predicted": int(top1[image]),
                         "p_target": 0.9, "b_p_target": 0.4})
    return pd.DataFrame(rows)


def test_the_least_agreeing_images_and_the_classes_where_top1_differs():
    table = _doctored()
    least = pair_summary.least_agreeing(table, n=2)
    assert least["image_id"].tolist() == ["i2", "i1"]  # mean r 0.30, 0.40
    assert least["map_correlation"].tolist() == pytest.approx([0.3, 0.4])
    assert least["least_method"].tolist() == ["score_cam", "grad_cam"] and least["least_value"].tolist() == [0.1, 0.2]
    by_grad = pair_summary.least_agreeing(table, "grad_cam", by="map_iou", n=3)
    assert by_grad["image_id"].tolist() == ["i1", "i2", "i0"]
    classes = pair_summary.top1_disagreement(table)
    assert classes["class_name"].tolist() == ["Class2", "Class1"]
    assert classes["top1_differs"].tolist() == [2, 1] and classes["share"].tolist() == [100.0, 50.0]
    summary = pair_summary.summarize_agreement(table)
    assert list(summary.index) == ["grad_cam", "score_cam"]
    assert summary.loc["grad_cam", "map_correlation_mean"] == pytest.approx((0.9 + 0.2 + 0.5 + 0.95) / 4)
    assert summary.loc["score_cam", "map_correlation_median"] == pytest.approx((0.6 + 0.8) / 2)
    with pytest.raises(ValueError, match="rank by"):
        pair_summary.least_agreeing(table, by="p_target")


def test_the_cli_refuses_bad_second_model_options_before_any_work(tmp_path, capsys):
    out = str(tmp_path / "r.csv")
    cases = [
        (["--layer-b", "conv"], "--layer-b and --preprocessing-b need --model-b"),
        (["--model-b", "resnet_defect", "--agreement-threshold", "1.5"], "--agreement-threshold must be in [0, 1]"),
        (["--model-b", "resnet_defect", "--layer-b", "nope"], "model B: layer 'nope' not found"),
    ]
    for extra, message in cases:
        assert ev.main(["--synthetic", "2", "--out", out, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not ev.journal_path(out).exists()
