"""Tests for the evaluation on Ray: a two-node Ray cluster on 127.0.0.1 started here (head
+ one worker node, one CPU each), the same rows as the local run, and a lost actor."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import psutil
import pytest
from ray_cluster import worker_processes
from toy_metrics import map_mean_metric

from camcore import evaluation as ev
from camcore.dagm import write_dagm
from camcore.evaluation import ray_runner
from camcore.evaluation.settings import run_settings
from camcore.metrics import DEFAULT_THRESHOLDS, register_metric, unregister_metric
from camcore.synth import generate

SIZE = 64  # generated images
N_IMAGES = 8
ROWS_IMAGES = 4  # the rows test: two images per actor, with ROAD; the killed-actor test keeps N_IMAGES
TIMING_COLUMNS = {"seconds", "metric_seconds", "b_seconds", "b_metric_seconds"}
# One method per kind of pass an actor runs (forward+backward, masked forward passes, the
# ablation pass, a pass-free one); the controls are always added. All nine methods took
# twice as long, almost all of it ROAD's imputations, and tested no more of the Ray path.
RAY_METHODS = ("grad_cam", "score_cam", "ablation_cam", "eigen_cam")


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    inp = keras.Input((32, 32, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name="tiny")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    _tiny_model().save(path)
    return path


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The Ray tests' 2-node cluster on 127.0.0.1 (tests/conftest.py)."""
    return ray_cluster


def _cli(model_file: Path, out: Path, *extra: str, images: int = N_IMAGES) -> list[str]:
    return [
        "--model", str(model_file), "--preprocessing", "unit", "--synthetic", str(images), "--size", str(SIZE),
        "--seed", "3", "--steps", "4", "--max-n", "3", "--road", "--methods", *RAY_METHODS, "--out", str(out), *extra,
    ]


def _journal_ids(out: Path) -> list[str]:
    lines = ev.journal_path(out).read_text().splitlines()
    return [json.loads(line)["id"] for line in lines[1:]]


def _assert_same_rows(local: pd.DataFrame, remote: pd.DataFrame) -> None:
    key = ["image_id", "method"]
    local = local.sort_values(key).reset_index(drop=True)
    remote = remote.sort_values(key).reset_index(drop=True)
    assert list(local.columns) == list(remote.columns)
    pd.testing.assert_frame_equal(local[key], remote[key])
    for column in local.columns:
        if column in TIMING_COLUMNS:
            continue
        a, b = local[column], remote[column]
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            np.testing.assert_allclose(b.to_numpy(float), a.to_numpy(float), rtol=0, atol=1e-6, err_msg=column)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), column


# ----------------------------------------------------------------- no cluster


def test_importing_camcore_does_not_import_ray():
    code = "import sys, camcore, camcore.evaluate, camcore.evaluation; print('ray' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"


def test_a_shipped_model_is_the_drivers_model(model_file, tmp_path):
    from_file = ev.load_model_spec(str(model_file), preprocessing="unit")
    in_memory = ev.ModelSpec.from_model(_tiny_model(), "unit", key="memory:tiny")
    for spec in (from_file, in_memory):
        payload = ray_runner.model_payload(spec)
        rebuilt = ray_runner.spec_from_payload(payload)
        assert rebuilt.model is not spec.model
        assert dataclasses.replace(rebuilt, model=None) == dataclasses.replace(spec, model=None)
        x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
        np.testing.assert_array_equal(rebuilt.model(x).numpy(), spec.model(x).numpy())
    assert ray_runner.model_payload(from_file).data == model_file.read_bytes()  # a file travels as itself
    other = ev.ModelSpec.from_model(keras.models.clone_model(in_memory.model), "unit", key="memory:tiny")
    forged = dataclasses.replace(ray_runner.model_payload(other), weights=ray_runner.model_payload(in_memory).weights)
    with pytest.raises(ValueError, match="weights differ"):
        ray_runner.spec_from_payload(forged)


def test_windows_ship_seeds_or_pixels_and_record_unreadable_images_on_the_driver(tmp_path):
    root = tmp_path / "dagm"
    write_dagm(root, generate(5, seed=2, size=SIZE, defect_rate=0.6))
    items = ev.dagm_items(root)
    broken = Path(items[2].path)
    broken.write_bytes(b"not an image")
    one_image = SIZE * SIZE * 2  # a gray image and its mask, one byte per pixel each
    windows = list(ray_runner._windows(items, window_bytes=2 * one_image))
    assert len(windows) >= 2
    shipped = [payload for payloads, _ in windows for payload in payloads]
    failed = [record for _, records in windows for record in records]
    assert [record["id"] for record in failed] == [items[2].id] and str(broken) in failed[0]["error"]
    assert sorted([*(p["id"] for p in shipped), items[2].id]) == sorted(item.id for item in items)
    by_id = {item.id: item for item in items}
    for payload in shipped:
        np.testing.assert_array_equal(payload["loaded"].image, by_id[payload["id"]].load().image)
        np.testing.assert_array_equal(payload["loaded"].mask, by_id[payload["id"]].load().mask)
    generated = list(
        ray_runner._windows(ev.synthetic_items(50, size=SIZE), window_bytes=ray_runner.DEFAULT_WINDOW_BYTES)
    )
    assert len(generated) == 1 and all(p["loaded"] is None for p in generated[0][0])  # seeds only


def test_the_actor_computes_the_local_rows(model_file, tmp_path, monkeypatch):
    # the actor's code in this process (no cluster); its thread caps would outlive the test
    monkeypatch.setattr(ray_runner, "_cap_threads", lambda threads: None)
    spec = ev.load_model_spec(str(model_file), preprocessing="unit")
    root = tmp_path / "dagm"
    write_dagm(root, generate(2, seed=4, size=SIZE, defect_rate=0.5))
    items = ev.synthetic_items(2, seed=6, size=SIZE) + ev.dagm_items(root)  # seeds and pixels
    methods = ["grad_cam", "score_cam", "sobel", "random"]
    local = ev.evaluate(spec, items, methods, max_n=3, curve_steps=4, workers=1)

    settings = run_settings(methods, max_n=3, curve_steps=4, thresholds=DEFAULT_THRESHOLDS, seed=0)
    versions = ray_runner.software_versions()
    actor = ray_runner._EvaluationActor(ray_runner.model_payload(spec), settings, cpus=1, workers=1, versions=versions)
    payloads = [p for window, _ in ray_runner._windows(items, ray_runner.DEFAULT_WINDOW_BYTES) for p in window]
    out = actor({"item": np.array([pickle.dumps(p) for p in payloads], dtype=object)})
    assert list(out["id"]) == [item.id for item in items]
    remote = ev.add_global_threshold(ev.records_to_frame([pickle.loads(record) for record in out["record"]]))
    _assert_same_rows(local, remote)

    with pytest.raises(RuntimeError, match=r"keras \S+ \(driver: 0\.0\)"):
        ray_runner._EvaluationActor(
            ray_runner.model_payload(spec), settings, cpus=1, workers=1, versions={**versions, "keras": "0.0"}
        )


# -------------------------------------------------------------------- cluster


def test_ray_rows_match_the_local_run_with_a_metric_registered_alone(cluster, model_file, tmp_path):
    """The Ray run gives the local run's rows, a toy metric the driver registered included:
    its entry travels with the settings (the nodes never import the module that defines it).
    One run for both: every evaluation on the cluster starts its actors again."""
    local_out, ray_out = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    entry = register_metric(map_mean_metric())
    try:
        assert ev.main(_cli(model_file, local_out, images=ROWS_IMAGES)) == 0
        assert ev.main(_cli(model_file, ray_out, "--ray", "--ray-address", cluster.address, images=ROWS_IMAGES)) == 0
        local, remote = ev.read_results(local_out), ev.read_results(ray_out)
        assert remote["image_id"].nunique() == ROWS_IMAGES and ev.errors(remote).empty
        assert remote["map_mean"].notna().all() and len(ev.curve_columns(remote, "map_mean_curve")) == 2
        _assert_same_rows(local, remote)
        assert sorted(_journal_ids(ray_out)) == sorted(_journal_ids(local_out))
        # the same journal: a rerun finds every image done and adds nothing (no Ray needed)
        before = ev.journal_path(ray_out).read_text()
        assert ev.main(_cli(model_file, ray_out, "--ray", "--ray-address", cluster.address, images=ROWS_IMAGES)) == 0
        assert ev.journal_path(ray_out).read_text() == before
    finally:
        unregister_metric(entry.key)


def test_a_pair_run_on_ray_gives_the_local_rows(cluster, model_file, tmp_path):
    """Model A from a file, model B in memory with another input size: both travel to the
    actors, which give the local pair run's rows (B's columns and the agreement included)."""
    spec = ev.load_model_spec(str(model_file), preprocessing="unit")
    keras.utils.set_random_seed(11)
    other = keras.Sequential([keras.Input((40, 40, 3)), keras.layers.Conv2D(5, 3, activation="relu", name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    spec_b = ev.ModelSpec.from_model(other, "unit", key="memory:other")
    items = ev.synthetic_items(3, seed=12, size=SIZE, defect_rate=0.7)
    methods = ["grad_cam", "score_cam", "sobel", "random"]
    out = tmp_path / "pair.parquet"
    remote = ray_runner.evaluate_ray(spec, items, methods, curve_steps=2, max_n=3, model_b=spec_b, out=out,
                                     address=cluster.address)
    local = ev.evaluate(spec, items, methods, curve_steps=2, max_n=3, workers=1, model_b=spec_b)
    assert remote["b_model"].eq("memory:other").all() and remote["map_correlation"].notna().sum() == 6
    _assert_same_rows(local, remote)
    config = json.loads(ev.journal_path(out).read_text().splitlines()[0])["config"]
    assert config["pair"]["model"] == "memory:other" and config["pair"]["input_size"] == [40, 40]


def _actor_processes(nodes) -> list[psutil.Process]:
    """The evaluation actors started by this cluster's raylets."""
    return worker_processes(nodes, "_EvaluationActor")


def test_a_killed_actor_loses_no_image_and_duplicates_none(cluster, model_file, tmp_path):
    spec = ev.load_model_spec(str(model_file), preprocessing="unit")
    items = ev.synthetic_items(N_IMAGES, seed=8, size=SIZE)
    out = tmp_path / "results.parquet"
    killed: list[int] = []

    def kill_one_actor_early(done: int, total: int) -> None:
        if done == 1 and not killed:
            victim = _actor_processes(cluster)[0]
            killed.append(victim.pid)
            os.kill(victim.pid, signal.SIGKILL)

    table = ray_runner.evaluate_ray(
        spec, items, ["grad_cam", "score_cam", "sobel", "random"], curve_steps=4, max_n=3, road=True,
        out=out, progress=kill_one_actor_early, address=cluster.address,
    )
    assert killed, "no actor was running"
    ids = _journal_ids(out)
    assert sorted(ids) == sorted(item.id for item in items)  # every image exactly once
    assert ev.errors(table).empty
    assert table.groupby("image_id")["method"].count().eq(4).all() and len(table) == 4 * N_IMAGES
    written = ev.read_results(out)
    assert sorted(written["image_id"].unique()) == sorted(ids)
