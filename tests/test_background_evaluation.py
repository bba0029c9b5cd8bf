"""camcore.evaluation.background: the in-page run - same rows, cancel between images, cleanup."""

from __future__ import annotations

import dataclasses
import gc
import threading
import time

import keras
import numpy as np
import pandas as pd
import pytest

from camcore import evaluation as ev
from camcore.evaluation import archives
from camcore.evaluation.background import BackgroundEvaluation, journal_table

METHODS = ["grad_cam", "sobel"]
OPTIONS = {"curve_steps": 4, "max_n": 2, "workers": 1}
TIMING = ("seconds", "metric_seconds")


@pytest.fixture(scope="module")
def spec() -> ev.ModelSpec:
    keras.utils.set_random_seed(7)
    inp = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h))
    return ev.ModelSpec.from_model(model, "unit", key="memory:background")


def _gated(items: list[ev.EvalItem]) -> tuple[list[ev.EvalItem], list[threading.Event], list[threading.Event]]:
    """Items whose load waits for ``gates[i]`` and sets ``started[i]`` first."""
    started = [threading.Event() for _ in items]
    gates = [threading.Event() for _ in items]

    def loader(i: int, item: ev.EvalItem):
        def load():
            started[i].set()
            assert gates[i].wait(30), "the test never opened this gate"
            return item.load()

        return load

    return [dataclasses.replace(item, load=loader(i, item)) for i, item in enumerate(items)], started, gates


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=list(TIMING)).sort_values(["image_id", "method"]).reset_index(drop=True)


def test_a_finished_run_has_the_rows_of_evaluate_and_leaves_no_folder(spec, tmp_path):
    items = ev.synthetic_items(3, seed=2, size=32, defect_rate=0.7)
    run = BackgroundEvaluation(spec, items, METHODS, parent=tmp_path, **OPTIONS).start()
    assert run.wait(120) and run.finished and not run.running
    assert (run.done, run.total, run.cancelled, run.error) == (3, 3, False, None)
    expected = ev.evaluate(spec, items, METHODS, **OPTIONS)
    pd.testing.assert_frame_equal(_comparable(run.table), _comparable(expected))
    assert list(tmp_path.iterdir()) == []  # the journal's folder is gone


def test_cancel_stops_after_the_image_in_flight_and_keeps_the_finished_ones(spec, tmp_path):
    items, started, gates = _gated(ev.synthetic_items(5, seed=4, size=32))
    run = BackgroundEvaluation(spec, items, METHODS, parent=tmp_path, **OPTIONS).start()
    gates[0].set()
    started[1].wait(60)  # image 0 is finished, image 1 is in flight
    assert run.done == 1 and run.running and not run.cancel_requested
    run.cancel()
    assert run.cancel_requested
    gates[1].set()
    assert run.wait(60)
    assert run.cancelled and run.error is None and (run.done, run.total) == (2, 5)
    assert not started[2].is_set()  # the next image was never opened
    assert sorted(run.table["image_id"].unique()) == ["synthetic/00000", "synthetic/00001"]
    assert set(run.table["method"]) == set(METHODS)
    assert run.table["iou_at_global"].notna().any() or not run.table["defective"].any()
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_the_first_image_keeps_it_and_before_it_keeps_nothing(spec, tmp_path):
    items, started, gates = _gated(ev.synthetic_items(2, seed=4, size=32))
    run = BackgroundEvaluation(spec, items, METHODS, parent=tmp_path, **OPTIONS).start()
    started[0].wait(60)
    run.cancel()
    gates[0].set()
    assert run.wait(60)
    assert run.cancelled and run.table is not None and list(run.table["image_id"].unique()) == ["synthetic/00000"]
    early = BackgroundEvaluation(spec, items, METHODS, parent=tmp_path, **OPTIONS)
    early.cancel()
    early.start()
    assert early.wait(60) and early.cancelled and early.table is None and early.done == 0


def test_a_failing_run_reports_its_message(spec, tmp_path):
    broken = dataclasses.replace(spec, layer="no_such_layer")
    run = BackgroundEvaluation(broken, ev.synthetic_items(2, size=32), METHODS, parent=tmp_path, **OPTIONS).start()
    assert run.wait(60)
    assert run.error and "no_such_layer" in run.error and run.table is None and not run.cancelled
    with pytest.raises(TypeError, match="out="):
        BackgroundEvaluation(spec, [], METHODS, out="x.csv")


def test_dropping_the_handle_cancels_the_run(spec, tmp_path):
    items, started, gates = _gated(ev.synthetic_items(3, seed=5, size=32))
    run = BackgroundEvaluation(spec, items, METHODS, parent=tmp_path, **OPTIONS).start()
    job = run._job
    started[0].wait(60)
    del run  # e.g. the Streamlit session that kept it ended
    gc.collect()
    assert job.cancel_requested.is_set()
    gates[0].set()
    assert job.finished.wait(60)
    assert job.cancelled and job.done == 1 and not started[1].is_set()
    _wait_for(lambda: list(tmp_path.iterdir()) == [])


def test_journal_table_reads_finished_images_and_skips_a_torn_line(spec, tmp_path):
    out = tmp_path / "r.parquet"
    full = ev.evaluate(spec, ev.synthetic_items(2, seed=1, size=32), METHODS, out=out, **OPTIONS)
    journal = ev.journal_path(out)
    journal.write_text(journal.read_text() + '{"id": "synthetic/0000', encoding="utf-8")
    pd.testing.assert_frame_equal(journal_table(out), full)
    journal.write_text(journal.read_text().splitlines()[0] + "\n", encoding="utf-8")
    assert journal_table(out) is None
    assert journal_table(tmp_path / "none.parquet") is None


def test_an_uploaded_set_runs_in_the_background(spec, tmp_path):
    from camcore import synth
    from camcore.dagm import write_dagm

    write_dagm(tmp_path / "set", synth.generate(3, seed=6, size=32, defect_rate=1.0), split="Test")
    items = archives.items_from_folder(tmp_path / "set", source="upload:set.zip:0")
    run = BackgroundEvaluation(spec, items, METHODS, parent=tmp_path, **OPTIONS).start()
    assert run.wait(120) and run.error is None
    rows = ev.results_only(run.table)
    assert set(rows["source"]) == {"upload:set.zip:0"} and rows["image_id"].nunique() == 3
    assert rows["defective"].all() and np.isfinite(rows["oracle_iou"]).all()


def test_an_unreadable_image_of_unknown_defect_state_is_a_skipped_row(spec, tmp_path):
    import cv2

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.zeros((8, 8), np.uint8))  # wrong size
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((32, 32), np.uint8))
    items = archives.items_from_folder(tmp_path)
    assert items[0].defective is None  # known only once its mask is decoded
    table = ev.evaluate(spec, items, METHODS, **OPTIONS)
    failed = ev.errors(table)
    assert list(failed["image_id"]) == ["images/a.png"] and "mask size 8×8" in failed["error"].iloc[0]
    assert table.loc[table["image_id"] == "images/a.png", "defective"].isna().all()
    assert ev.results_only(table)["image_id"].unique().tolist() == ["images/b.png"]
