"""Memory: a long-running server meets many uploaded models and images, and its memory
plateaus; a model that drops out of the cache takes its explainer, its compiled passes
and their traces with it.

The plateau runs in a fresh child process (this file run as a script) so that its RSS is
the dashboard's alone: the Compare page in Streamlit's AppTest, one session uploading 30
distinct model files and 200 distinct images in sequence.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
MODELS = 30
IMAGES = 200
CHECKPOINTS = (10, 20, 30)
MAX_GROWTH = 0.10  # RSS from 20 to 30 models


def model_file(i: int) -> bytes:
    """Distinct small classifiers (weights and widths differ), their own Rescaling, so the
    dashboard loads them without a question; each traces its own compiled passes."""
    import keras

    keras.utils.set_random_seed(100 + i)
    inputs = keras.Input((24, 24, 3), name="image")
    h = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    h = keras.layers.Conv2D(6 + i % 5, 3, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.Conv2D(8 + i % 3, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(h)
    model = keras.Model(inputs, outputs, name=f"upload_{i}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def image_file(i: int) -> bytes:
    from camcore.visualize import png_bytes

    rng = np.random.default_rng(i)
    return png_bytes(rng.integers(0, 256, (32 + i % 17, 28 + i % 13, 3), dtype=np.uint8))


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _plateau_child(models: int, images: int) -> None:
    """Upload ``models`` model files and ``images`` images through the Compare page; print
    one JSON line per checkpoint: models done, images done, RSS (MB), seconds."""
    from streamlit.testing.v1 import AppTest
    from streamlit_harness import compile_pages_once

    compile_pages_once()
    files = [model_file(i) for i in range(models)]
    per_model = [images // models + (1 if i < images % models else 0) for i in range(models)]
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = "upload"
    # the gradient pass and Faster-Score-CAM's masked passes: every kind of compiled pass and
    # cache, without the trade-off chart's full Score-CAM that would only cost time here
    at.session_state["methods"] = ["grad_cam", "faster_score_cam"]
    at.run()
    start, shown = time.perf_counter(), 0
    for i, data in enumerate(files):
        at.file_uploader(key="model_file").upload(f"model_{i}.keras", data, "application/octet-stream").run()
        if i == 0:
            at.radio(key="image_source").set_value("upload").run()
        for _ in range(per_model[i]):
            at.file_uploader(key="image_file").upload(f"image_{shown}.png", image_file(shown), "image/png").run()
            shown += 1
            problems = [e.value for e in at.exception] + [e.value for e in at.error]
            if problems or not any(f"image_{shown - 1}.png" in m.value for m in at.main.markdown):
                print(json.dumps({"error": problems or f"no grid for image_{shown - 1}.png"}), flush=True)
                return
        if i + 1 in CHECKPOINTS or i + 1 == models:
            gc.collect()
            print(json.dumps({"models": i + 1, "images": shown, "rss_mb": rss_mb(),
                              "seconds": time.perf_counter() - start}), flush=True)


def run_plateau(models: int = MODELS, images: int = IMAGES, timeout: float = 1200) -> list[dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, __file__, "plateau", str(models), str(images)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and records, done.stderr[-3000:]
    errors = [r["error"] for r in records if "error" in r]
    assert not errors, errors
    return records


def test_rss_plateaus_over_30_uploaded_models_and_200_images():
    records = run_plateau()
    by_models = {r["models"]: r for r in records}
    assert set(CHECKPOINTS) <= set(by_models) and by_models[MODELS]["images"] == IMAGES
    rss = {n: by_models[n]["rss_mb"] for n in CHECKPOINTS}
    growth = rss[30] / rss[20] - 1.0
    print(f"\nRSS after 10/20/30 models: {rss[10]:.0f} / {rss[20]:.0f} / {rss[30]:.0f} MB, "
          f"20->30: {growth:+.1%}, {by_models[MODELS]['seconds']:.0f} s")
    assert growth <= MAX_GROWTH, rss


def test_an_evicted_model_releases_its_explainer_compiled_passes_and_traces():
    """Past ``MAX_MODELS`` uploads the first model leaves the dashboard's caches; once no
    session shows it, nothing keeps its model, explainer, bf16 copy or tf.functions."""
    from streamlit.testing.v1 import AppTest

    from dashboard import state

    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = "upload"
    at.run()
    # TensorFlow's import-time objects are frozen out of the collector's sight (every rerun
    # ends in a full collection); the models loaded after that stay collectable (below)
    assert gc.get_freeze_count() > 100_000
    at.file_uploader(key="model_file").upload("first.keras", model_file(0), "application/octet-stream").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (sha,) = at.session_state["_upload_shas"].values()
    key = state.upload_key(sha)
    explainer = state.get_explainer(key)  # the page's own (a cache hit)
    assert explainer.model is state.get_model(key).model
    # a second cached explainer with the compiled bf16 copy, as on a CPU with native bf16
    bf16 = state.get_explainer(key, "bf16")
    x = state.get_model(key).preprocess(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    bf16.compute("score_cam", x, "conv2", 0)
    assert bf16.backend.bf16_model is not None
    traced = [*explainer.backend.compiled_passes(), *bf16.backend.compiled_passes()]
    assert len(traced) >= 4 and all(fn.experimental_get_tracing_count() >= 1 for fn in traced)
    watched = {
        "model": weakref.ref(explainer.model),
        "explainer": weakref.ref(explainer),
        "bf16 explainer": weakref.ref(bf16),
        "bf16 copy": weakref.ref(bf16.backend.bf16_model),
        **{f"tf.function {i}": weakref.ref(fn) for i, fn in enumerate(traced)},
        **{f"trace {i}.{j}": weakref.ref(concrete) for i, fn in enumerate(traced)
           for j, concrete in enumerate(fn._list_all_concrete_functions())},
    }
    assert sum(name.startswith("trace") for name in watched) >= len(traced)
    del explainer, bf16, traced, x
    gc.collect()
    assert all(ref() is not None for ref in watched.values())  # still cached: nothing is lost early

    for i in range(1, state.MAX_MODELS + 1):
        at.file_uploader(key="model_file").upload(f"next_{i}.keras", model_file(i), "application/octet-stream").run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    gc.collect()
    alive = [name for name, ref in watched.items() if ref() is not None]
    assert not alive, f"still referenced after eviction: {alive}"


if __name__ == "__main__":
    if sys.argv[1] == "plateau":
        _plateau_child(int(sys.argv[2]), int(sys.argv[3]))


def test_every_cache_of_the_engine_and_the_page_has_a_bound_that_is_hit():
    """The explainer's LRU, the Keras backend's compiled passes (with their traces) and the
    page's timing log stop growing at their bounds; what they drop is freed."""
    import gc
    import weakref

    import keras

    import camcore
    from camcore.backends.keras import KerasBackend
    from dashboard.state import TimingLog

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = inp
    for i in range(8):
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=f"c{i}")(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))
    backend = KerasBackend(model)
    backend.max_traced = 5
    explainer = camcore.Explainer(backend, cache_size=6)
    x = np.random.default_rng(0).uniform(0, 1, (1, 16, 16, 3)).astype(np.float32)
    first = None
    for i in range(8):
        explainer.compute("grad_cam", x + i, f"c{i}", 0)
        if first is None:
            first = weakref.ref(backend.compiled_passes()[0])
    assert len(backend._compiled) == 5 and set(backend._concrete) <= set(backend._compiled)
    assert len(explainer.cache) == 6
    gc.collect()
    assert first() is None  # the least recently used pass and its traces were released

    log = TimingLog(maxsize=3, per_key=2)
    result = explainer.compute("grad_cam", x, "c7", 0)
    for key in range(5):
        for _ in range(4):
            log.record(key, dataclasses.replace(result, cached=False))
    assert len(log) == 3 and len(log.get(4)) == 2
    assert log.get(4)[0][0].cam.size == 0 and log.get(4)[0][0].timings == result.timings  # no map kept
