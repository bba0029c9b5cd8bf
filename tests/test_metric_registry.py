"""The metric registry: what an entry must declare, how a run chooses its metrics
(``metrics=``, ``--metrics`` and the ``road`` / ``sanity`` aliases), journals that stay
resumable, and a metric added through the registry alone showing up in the evaluation
table, the summary and on the Dataset page (the Ray table: tests/test_evaluate_ray.py)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from toy_metrics import map_mean_metric

from camcore import evaluation as ev
from camcore import metrics
from camcore.evaluation.runner import metric_row
from camcore.evaluation.settings import run_settings
from camcore.metrics import Column, Metric, MetricInputs

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "views" / "dataset.py")
SIZE = 48
FAST = dict(curve_steps=2, max_n=2, workers=1)
METHODS = ["grad_cam", "sobel", "random"]


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(4)
    inp = keras.Input((24, 24, 1), name="image")
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(h), name="tiny")


@pytest.fixture(scope="module")
def spec() -> ev.ModelSpec:
    return ev.ModelSpec.from_model(_tiny_model(), "unit", key="memory:tiny_registry")


@pytest.fixture
def map_mean():
    """The toy metric, registered for one test and removed afterwards."""
    entry = metrics.register_metric(map_mean_metric())
    try:
        yield entry
    finally:
        metrics.unregister_metric(entry.key)
    assert "map_mean" not in metrics.METRICS


# ------------------------------------------------------------------ the registry


def test_builtin_entries_declare_every_column_the_evaluation_writes(spec):
    table = ev.evaluate(spec, ev.synthetic_items(2, seed=1, size=SIZE, defect_rate=0.5), METHODS, road=True,
                        **FAST)
    declared = {c.name for _, c in metrics.registered_columns()}
    prefixes = {c.prefix for _, c in metrics.registered_curves()}
    written = set(table.columns) - set(ev.RECORD_COLUMNS)
    stray = {c for c in written if c not in declared and c.partition("@")[0] not in prefixes}
    assert stray == set()
    assert {"iou", "deletion", "insertion", "road_morf", "road_lerf"} <= {c.partition("@")[0] for c in written}


def test_registering_checks_the_entry():
    with pytest.raises(ValueError, match="already registered"):
        metrics.register_metric(metrics.METRICS["deletion"])
    with pytest.raises(ValueError, match=r"deletion_auc \(of deletion\)"):
        metrics.register_metric(Metric("copy", "Copy", (Column("deletion_auc", "t", "d"),), compute=lambda i: {}))
    with pytest.raises(ValueError, match="built-in"):
        metrics.unregister_metric("road")
    with pytest.raises(ValueError, match="declares a column twice"):
        Metric("twice", "Twice", (Column("a", "a", "a"), Column("a", "a", "a")), compute=lambda i: {})
    with pytest.raises(ValueError, match="summary must be one of"):
        Column("a", "a", "a", summary="sum")
    with pytest.raises(ValueError, match="unknown metric 'nope'.*localization"):
        metrics.select_metrics(["nope"])


def test_a_run_computes_the_default_metrics_the_chosen_ones_and_the_aliases():
    def keys(**options) -> set[str]:
        settings = run_settings(METHODS, max_n=2, curve_steps=2, thresholds=[0.5], **options)
        return set(settings.metric_keys)

    assert keys() == {"localization", "drop_increase", "deletion", "insertion", "time"}
    assert keys(metrics=["deletion"]) == {"deletion", "time"}  # the runner's own columns always
    assert keys(metrics=ev.settings.metric_choice(None, road=True, sanity=True)) == keys() | {"road", "sanity"}
    assert keys(metrics=ev.settings.metric_choice(["insertion"], road=True)) == {"insertion", "road", "time"}


def test_journals_of_runs_before_the_registry_still_resume():
    def config(**options):
        return run_settings(METHODS, max_n=2, curve_steps=2, thresholds=[0.5], **options).journal_config()

    legacy = {"methods": METHODS, "max_n": 2, "road": False, "curve_steps": 2, "thresholds": [0.5], "seed": 0}
    assert config() == legacy
    assert config(metrics=ev.settings.metric_choice(None, road=True, sanity=True)) == legacy | {
        "road": True, "sanity": True}
    assert config(metrics=["deletion"])["metrics"] == ["deletion"]


def test_a_metric_may_not_write_a_column_it_does_not_declare():
    stray = Metric("stray", "Stray", (Column("stray", "s", "s"),), compute=lambda inputs: {"other": 1.0})
    inputs = MetricInputs(lambda b: b, np.zeros((1, 4, 4, 1)), np.zeros((4, 4, 1)), np.zeros((4, 4)),
                          np.zeros((2, 2)), None, 0, np.array([0.5]), 2, "sobel")
    with pytest.raises(ValueError, match=r"'stray' returned columns it does not declare: \['other'\]"):
        metric_row((stray,), {}, inputs)


def test_a_metric_that_needs_a_mask_is_left_out_on_clean_images(spec):
    items = [i for i in ev.synthetic_items(6, seed=3, size=SIZE, defect_rate=0.5)]
    table = ev.evaluate(spec, items, METHODS, metrics=["localization"], **FAST)
    clean = table[~table["defective"].astype(bool)]
    assert len(clean) and clean["pointing_game"].isna().all()
    assert table.loc[table["defective"].astype(bool), "pointing_game"].notna().all()
    assert not [c for c in table.columns if c.startswith(("deletion", "insertion", "average_drop"))]


def test_cli_metrics_choice_and_unknown_metric(spec, tmp_path, capsys):
    model = tmp_path / "tiny.keras"
    spec.model.save(model)
    base = ["--model", str(model), "--preprocessing", "unit", "--synthetic", "2", "--size", str(SIZE), "--steps",
            "2", "--methods", "grad_cam"]
    out = tmp_path / "r.csv"
    assert ev.main([*base, "--metrics", "deletion,drop_increase", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert "deletion_auc" in table.columns and "average_drop" in table.columns
    assert "insertion_auc" not in table.columns and "pointing_game" not in table.columns
    assert ev.main([*base, "--metrics", "nope", "--out", str(tmp_path / "n.csv")]) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "n.csv").exists()


# ------------------------------------------------------- a metric added alone


def _dataset_page_with(table: pd.DataFrame) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    at.radio(key="ds_source").set_value("results").run()
    at.file_uploader(key="ds_upload").set_value(("r.csv", table.to_csv(index=False).encode(), "text/csv")).run()
    assert not at.exception, at.exception
    return at


def test_a_metric_registered_alone_reaches_the_table_the_summary_and_the_dataset_page(spec, map_mean):
    items = ev.synthetic_items(3, seed=5, size=SIZE, defect_rate=0.7)
    table = ev.evaluate(spec, items, METHODS, **FAST)
    assert table["map_mean"].notna().all()
    grad = table[table["method"] == "grad_cam"].iloc[0]
    assert grad["map_mean_curve@1.00"] == grad["map_mean"]

    summary = ev.summarize(table)
    means = table.groupby("method")["map_mean"].mean()
    assert summary["map_mean_mean"].to_dict() == pytest.approx(means.to_dict())
    assert "map mean mean" in ev.summary_table(summary).columns
    assert "map mean mean / median" in ev.format_summary(summary)
    assert list(ev.worst_images(table, "grad_cam", "map_mean")["map_mean"]) == sorted(
        table.loc[table["method"] == "grad_cam", "map_mean"], reverse=True)

    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert "map_mean" in at.multiselect(key="ds_metrics").value  # a default metric of the run form
    at = _dataset_page_with(table)
    # the page's faithfulness table: means only, headed by the metric's label
    summary_shown = next(d.value for d in at.dataframe if "s/image" in d.value.columns)
    assert "map mean" in summary_shown.columns
    assert sorted(summary_shown["map mean"]) == pytest.approx(sorted(means))
    assert "Mean of the map (lower is better)" in at.selectbox(key="ds_metric").options
    assert "highest map mean" in at.selectbox(key="ds_worst_metric").options
    at.selectbox(key="ds_metric").set_value("map_mean").run()
    assert not at.exception, at.exception
    figures = {c.proto.id.rpartition("-")[2]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    box = figures["ds_chart_distribution"]
    assert box["layout"]["yaxis"]["title"]["text"] == "Mean of the map (lower is better)"
    assert {trace["name"] for trace in box["data"]} == {ev.METHOD_LABELS[m] for m in METHODS}
    assert "ds_chart_map_mean_curve" in figures
