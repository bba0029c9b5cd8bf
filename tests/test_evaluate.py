"""Tests for camcore.evaluate: resuming, bad data, tables, summary and CLI (tiny models)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from camcore import evaluation as ev
from camcore.dagm import DagmFormatError, write_dagm
from camcore.metrics import DEFAULT_THRESHOLDS
from camcore.synth import generate

SIZE = 64  # generated images
FAST = dict(curve_steps=4, max_n=3, workers=2)


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((32, 32, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name="tiny")


@pytest.fixture(scope="module")
def spec() -> ev.ModelSpec:
    return ev.ModelSpec.from_model(_tiny_model(), "unit", key="memory:tiny")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    _tiny_model().save(path)
    return path


def _counting(items: list[ev.EvalItem], calls: list[str]) -> list[ev.EvalItem]:
    def wrap(item: ev.EvalItem):
        def load():
            calls.append(item.id)
            return item.load()

        return dataclasses.replace(item, load=load)

    return [wrap(item) for item in items]


def _journal_ids(out: Path) -> list[str]:
    lines = ev.journal_path(out).read_text().splitlines()
    return [json.loads(line)["id"] for line in lines[1:]]


# ----------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_without_redoing_finished_images(spec, tmp_path):
    items = ev.synthetic_items(7, seed=4, size=SIZE)
    out = tmp_path / "results.parquet"
    calls: list[str] = []

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(spec, _counting(items, calls), out=out, progress=stop_after_three, **FAST)
    assert calls == [item.id for item in items[:3]]
    assert _journal_ids(out) == calls
    assert not out.exists()  # the table is only written once the set is done

    calls.clear()
    seen: list[tuple[int, int]] = []
    table = ev.evaluate(spec, _counting(items, calls), out=out, progress=lambda d, t: seen.append((d, t)), **FAST)
    assert calls == [item.id for item in items[3:]]  # finished images are not recomputed
    assert seen[0] == (3, 7) and seen[-1] == (7, 7)
    counts = table.groupby("method")["image_id"].agg(["count", "nunique"])
    assert set(counts.index) == set(ev.ALL_METHODS)
    assert (counts["count"] == 7).all() and (counts["nunique"] == 7).all()
    written = pd.read_parquet(out)
    assert len(written) == 7 * len(ev.ALL_METHODS)
    assert sorted(written["image_id"].unique()) == [item.id for item in items]

    calls.clear()  # a third run has nothing to do
    again = ev.evaluate(spec, _counting(items, calls), out=out, **FAST)
    assert calls == [] and len(again) == len(table)


def test_torn_last_line_is_dropped_and_that_image_redone(spec, tmp_path):
    items = ev.synthetic_items(4, seed=5, size=SIZE)
    out = tmp_path / "results.csv"
    ev.evaluate(spec, items[:2], out=out, **FAST)
    journal = ev.journal_path(out)
    with open(journal, "a") as handle:  # the process died while writing image 3
        handle.write('{"id":"synthetic/00002","rows":[{"model":"memo')
    calls: list[str] = []
    table = ev.evaluate(spec, _counting(items, calls), out=out, **FAST)
    assert calls == ["synthetic/00002", "synthetic/00003"]
    assert _journal_ids(out) == [item.id for item in items]
    assert table.groupby("method")["image_id"].nunique().eq(4).all()
    assert len(pd.read_csv(out)) == 4 * len(ev.ALL_METHODS)


def test_resuming_with_another_configuration_is_refused(spec, tmp_path):
    items = ev.synthetic_items(2, seed=6, size=SIZE)
    out = tmp_path / "results.parquet"
    ev.evaluate(spec, items, ["grad_cam", "sobel", "random"], out=out, **FAST)
    with pytest.raises(ValueError, match=r"rows\.jsonl.*another configuration.*methods"):
        ev.evaluate(spec, items, ["score_cam", "sobel", "random"], out=out, **FAST)
    table = ev.evaluate(spec, items, ["score_cam", "sobel", "random"], out=out, overwrite=True, **FAST)
    assert set(table["method"]) == {"score_cam", "sobel", "random"}


def test_cli_limit_then_full_run_finishes_the_set(model_file, tmp_path, capsys):
    out = tmp_path / "results.csv"
    base = ["--model", str(model_file), "--preprocessing", "unit", "--synthetic", "5", "--size", str(SIZE),
            "--seed", "2", "--steps", "4", "--max-n", "3", "--out", str(out)]
    assert ev.main([*base, "--limit", "2"]) == 0
    assert _journal_ids(out) == ["synthetic/00000", "synthetic/00001"]
    assert ev.main(base) == 0
    assert _journal_ids(out) == [f"synthetic/{i:05d}" for i in range(5)]  # each image computed once
    table = pd.read_csv(out)
    assert table.groupby("method")["image_id"].nunique().eq(5).all()
    printed = capsys.readouterr().out
    assert "| Grad-CAM" in printed and "best thr." in printed and "s/image" in printed


# --------------------------------------------------------------------------- bad data


@pytest.fixture()
def dagm_root(tmp_path) -> Path:
    root = tmp_path / "dagm"
    write_dagm(root, generate(6, seed=9, size=SIZE, defect_rate=0.5))
    return root


def _labels_files(root: Path) -> list[Path]:
    return sorted(root.glob("Class*/Train/Label/Labels.txt"))


def test_bad_layout_names_the_folder(tmp_path):
    (tmp_path / "not_dagm").mkdir()
    with pytest.raises(DagmFormatError, match="not_dagm"):
        ev.dagm_items(tmp_path / "not_dagm")


def test_missing_labels_file_names_the_file(dagm_root, capsys):
    labels = _labels_files(dagm_root)[0]
    labels.unlink()
    with pytest.raises(DagmFormatError, match=str(labels).replace("\\", "\\\\")):
        ev.dagm_items(dagm_root)
    assert ev.main(["--data", str(dagm_root), "--model", "x.keras", "--out", str(dagm_root / "r.csv")]) == 2
    assert str(labels) in capsys.readouterr().err


def test_missing_label_of_a_defective_image_names_the_line(dagm_root):
    labels = next(p for p in _labels_files(dagm_root) if "\t1\t" in p.read_text())
    lines = labels.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if "\t1\t" in line)
    lines[k] = "\t".join(lines[k].split("\t")[:4])
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DagmFormatError, match=f"Labels.txt:{k + 1}: defective image .* has no label file"):
        ev.dagm_items(dagm_root)


def test_one_unreadable_image_is_reported_and_skipped(spec, dagm_root, tmp_path, caplog):
    items = ev.dagm_items(dagm_root)
    broken = Path(items[1].path)
    broken.write_bytes(b"this is not a PNG")
    out = tmp_path / "results.parquet"
    table = ev.evaluate(spec, items, out=out, **FAST)
    failed = ev.errors(table)
    assert list(failed["image_id"]) == [items[1].id]
    assert str(broken) in failed["error"].iloc[0] and "cannot decode" in failed["error"].iloc[0]
    assert str(broken) in caplog.text
    good = ev.results_only(table)
    assert good["image_id"].nunique() == len(items) - 1
    assert ev.errors(pd.read_parquet(out))["image_id"].tolist() == [items[1].id]
    assert len(ev.summarize(table)) == len(ev.ALL_METHODS)
    assert set(good["class_name"]) <= {item.class_name for item in items}
    assert good.loc[good["defective"].astype(bool), "pointing_game"].notna().all()
    assert good.loc[~good["defective"].astype(bool), "pointing_game"].isna().all()


def test_cli_reports_the_skipped_image(model_file, dagm_root, tmp_path, capsys):
    broken = Path(ev.dagm_items(dagm_root)[0].path)
    broken.write_bytes(b"")
    out = tmp_path / "r.csv"
    args = ["--model", str(model_file), "--preprocessing", "unit", "--data", str(dagm_root),
            "--methods", "grad_cam", "--steps", "2", "--out", str(out)]
    assert ev.main(args) == 0
    printed = capsys.readouterr().out
    assert "1 image(s) could not be read" in printed and str(broken) in printed


def test_model_arguments_are_checked(model_file, tmp_path):
    with pytest.raises(ValueError, match="needs --preprocessing"):
        ev.load_model_spec(str(model_file))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        ev.load_model_spec("nope")
    with pytest.raises(FileNotFoundError):
        ev.load_model_spec(str(tmp_path / "missing.keras"), preprocessing="unit")
    spec = ev.load_model_spec(str(model_file), preprocessing="unit")
    assert spec.input_size == (32, 32) and spec.channels == 1 and spec.layer == "conv2"
    assert spec.class_index == 1 and spec.key.startswith("file:")
    with pytest.raises(ValueError, match="out of range"):
        ev.load_model_spec(str(model_file), preprocessing="unit", class_index=2)
    with pytest.raises(ValueError, match="layer 'nope' not found"):
        ev.load_model_spec(str(model_file), preprocessing="unit", layer="nope")
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="junk.keras is not a Keras model file"):
        ev.load_model_spec(str(junk), preprocessing="unit")


def test_a_bad_layer_fails_before_any_journal_is_written(spec, tmp_path):
    out = tmp_path / "r.csv"
    with pytest.raises(ValueError, match="no spatial map"):
        ev.evaluate(dataclasses.replace(spec, layer="gap"), ev.synthetic_items(1, size=SIZE), out=out)
    assert not ev.journal_path(out).exists()


# ------------------------------------------------------------------- tables, summary


def _fake_results(curves: dict[str, list[np.ndarray]], pointing: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for method, per_image in curves.items():
        for i, curve in enumerate(per_image):
            row = {"model": "m", "image_id": f"img{i}", "method": method, "defective": True, "seconds": 0.1,
                   "pointing_game": pointing[method][i], "energy_pointing_game": 0.5,
                   "oracle_iou": float(np.max(curve)), "average_drop": 10.0 * i, "increased_confidence": float(i == 0),
                   "deletion_auc": 0.2, "insertion_auc": 0.7}
            row |= {ev.iou_column(t): float(v) for t, v in zip(DEFAULT_THRESHOLDS, curve)}
            rows.append(row)
    return ev.records_to_frame([{"id": f"x{k}", "rows": [row]} for k, row in enumerate(rows)])


def test_global_threshold_maximizes_mean_iou_and_flags_follow_the_controls():
    t = np.asarray(DEFAULT_THRESHOLDS)
    bump = lambda centre, height: height * np.exp(-((t - centre) ** 2) / 0.02)  # noqa: E731
    curves = {
        "grad_cam": [bump(0.3, 0.6), bump(0.5, 0.6)],  # mean peaks between, at 0.40
        "score_cam": [bump(0.7, 0.1), bump(0.7, 0.1)],  # loses to sobel on IoU
        "sobel": [bump(0.5, 0.2), bump(0.5, 0.2)],
        "random": [bump(0.5, 0.05), bump(0.5, 0.05)],
    }
    pointing = {"grad_cam": [1.0, 1.0], "score_cam": [1.0, 1.0], "sobel": [0.0, 1.0], "random": [0.0, 0.0]}
    table = ev.add_global_threshold(_fake_results(curves, pointing))
    assert ev.global_thresholds(table) == pytest.approx(
        {"grad_cam": 0.4, "score_cam": 0.7, "sobel": 0.5, "random": 0.5}
    )
    grad = table[table["method"] == "grad_cam"]
    expected_iou = [bump(0.3, 0.6)[7], bump(0.5, 0.6)[7]]
    np.testing.assert_allclose(grad["iou_at_global"], expected_iou)
    np.testing.assert_allclose(grad["dice_at_global"], [2 * v / (1 + v) for v in expected_iou])

    summary = ev.summarize(table)
    assert list(summary.index) == ["grad_cam", "score_cam", "sobel", "random"]
    assert summary.loc["grad_cam", "best_threshold"] == pytest.approx(0.4)
    assert summary.loc["grad_cam", "iou_at_best_mean"] == pytest.approx(np.mean(expected_iou))
    assert summary.loc["grad_cam", "pointing_game"] == 100.0
    assert summary.loc["grad_cam", "average_drop_mean"] == pytest.approx(5.0)
    assert summary.loc["grad_cam", "increase_in_confidence"] == pytest.approx(50.0)
    assert not summary.loc["grad_cam", "below_controls"]
    assert summary.loc["score_cam", "below_controls"]
    assert "mean IoU" in summary.loc["score_cam", "flag"] and "pointing" not in summary.loc["score_cam", "flag"]
    text = ev.format_summary(summary)
    assert "| Score-CAM ⚠ |" in text and "| Grad-CAM |" in text
    assert "⚠ Score-CAM: does not beat the Sobel and random controls on mean IoU" in text


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_results_round_trip_through_both_formats(spec, tmp_path, suffix):
    items = ev.synthetic_items(3, seed=8, size=SIZE, defect_rate=1.0)
    table = ev.evaluate(spec, items, ["grad_cam", "sobel", "random"], curve_steps=4, max_n=3, workers=1)
    path = ev.write_results(table, tmp_path / f"r{suffix}")
    with open(path, "rb") as handle:  # as the dashboard gets an upload
        back = ev.read_results(handle, name=path.name)
    pd.testing.assert_frame_equal(
        ev.summarize(back).drop(columns=["flag", "below_controls"]),
        ev.summarize(table).drop(columns=["flag", "below_controls"]),
    )
    assert [x for x, _ in ev.curve_columns(back, "iou")] == pytest.approx(list(DEFAULT_THRESHOLDS))
    assert [x for x, _ in ev.curve_columns(back, "deletion")] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a camcore.evaluate results table"):
        ev.read_results(other)


def test_threads_do_not_change_results_and_road_is_optional(spec):
    items = ev.synthetic_items(2, seed=10, size=SIZE, defect_rate=1.0)
    inline = ev.evaluate(spec, items, ["faster_score_cam", "sobel", "random"], curve_steps=4, max_n=3, workers=1)
    threaded = ev.evaluate(spec, items, ["faster_score_cam", "sobel", "random"], curve_steps=4, max_n=3,
                           workers=2, road=True)
    metric_columns = [c for c in inline.columns if c not in ("seconds", "metric_seconds")]
    pd.testing.assert_frame_equal(inline[metric_columns], threaded[metric_columns], rtol=1e-6)
    assert "road_morf_auc" not in inline.columns
    assert threaded["road_morf_auc"].notna().all() and threaded["road_lerf_auc"].notna().all()
    assert len(ev.curve_columns(threaded, "road_morf")) == 9


def test_synthetic_image_regenerates_the_evaluated_sample():
    items = ev.synthetic_items(4, seed=3, size=SIZE)
    third = items[2].load()
    again = ev.synthetic_image(items[2].source, 2)
    np.testing.assert_array_equal(third.image, again.image)
    np.testing.assert_array_equal(third.mask, again.mask)
    assert (again.class_name, again.defective, again.detail) == (third.class_name, third.defective, third.detail)


def test_every_method_pays_for_its_own_passes(spec):
    """The methods share one explainer (one trace per compiled pass), but each row's time
    and pass count are the method's alone: nothing is served from an earlier method's
    forward+backward or masked passes."""
    items = ev.synthetic_items(2, seed=9, size=64)
    table = ev.evaluate(spec, items, ["grad_cam", "grad_cam_plus_plus", "score_cam", "faster_score_cam"], max_n=2,
                        curve_steps=2)
    passes = table.set_index(["image_id", "method"])["model_passes"].unstack()
    assert (passes["grad_cam"] == 1).all() and (passes["grad_cam_plus_plus"] == 1).all()
    assert (passes["faster_score_cam"] >= 2).all()  # its forward and its own masked passes
    assert (passes["score_cam"] >= passes["faster_score_cam"]).all()
    assert (table["seconds"] > 0).all()
