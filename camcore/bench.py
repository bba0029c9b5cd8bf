"""Benchmark: each method's time against a floor measured in the same run.

    python -m camcore.bench [--models vgg16,vgg_defect,resnet_defect] [--repeats 3] [--quick] [--onnx]

For every model it prints, as a Markdown table:

* Grad-CAM / Grad-CAM++: time on images the warm explainer has not seen, against
  the floor = one compiled forward+backward that returns both the layer's
  activations and their gradient (returning only the gradient would let
  TensorFlow prune the forward pass and fake a fast floor);
* Score-CAM: time of a full run against the floor = as many compiled batched
  forwards as the masked passes it must run (channels not skipped), in batches of the
  size it uses (the best of 8, 16, 32, 64), timed whole right after each run; the share
  of channels skipped; the correlation with plain Score-CAM; the cost of a max_n
  change after a run; peak extra memory;
* the speed-up over the 2019 article's reference algorithm (per-channel cv2
  loops + model.predict), re-implemented below as the baseline;
* with ``--onnx``, for the demo models named in ``--models`` (all demos if none is; ``--models
  none --onnx`` for these rows alone): each exported to ONNX (Keras 3's exporter, tf2onnx) and
  run by ONNX Runtime: its best batched forward per image against TF's (which runtime is
  faster on this CPU), Score-CAM and Ablation-CAM against ONNX Runtime's own floor, and the
  Keras model's Score-CAM on the same images beside it.

Times are the minimum over repeats after a warm-up, because these machines are
shared and noisy; ratios compare work timed side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from dataclasses import dataclass
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402

from camcore.explainer import CamResult, Explainer  # noqa: E402
from camcore.methods import METHODS  # noqa: E402

BATCH_SIZES = (8, 16, 32, 64)


@dataclass
class Row:
    model: str
    what: str
    seconds: float
    floor: float | None = None
    note: str = ""

    @property
    def ratio(self) -> str:
        return f"{self.seconds / self.floor:.2f}×" if self.floor else "–"


class PeakMemory:
    """Samples this process's RSS in a thread; ``extra_mb`` is the peak above the start."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._process = psutil.Process()

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def min_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_throughput(
    model: keras.Model, shape: tuple[int, int, int], repeats: int, sizes: tuple[int, ...] = BATCH_SIZES
) -> tuple[int, float, dict]:
    """(best batch size, seconds per image at it, {batch: s/img}) for compiled fixed-shape forwards."""
    per_image = {batch: _compiled_forward_seconds(model, shape, batch, repeats) / batch for batch in sizes}
    best = min(per_image, key=per_image.__getitem__)
    return best, per_image[best], per_image


def _compiled_forward_seconds(model: keras.Model, shape: tuple[int, int, int], batch: int, repeats: int) -> float:
    """Best time of one compiled forward of a random batch of ``batch`` (traced and warmed up first)."""
    forward = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(batch).uniform(0, 1, (batch, *shape)).astype(np.float32))
    forward(x).numpy()  # trace + warm up
    return min_time(lambda: forward(x).numpy(), repeats)


def flat_gradient_floor(explainer: Explainer, layer: str) -> Callable[[np.ndarray], object]:
    """The least work Grad-CAM needs: one compiled forward+backward returning
    BOTH the activations and their gradient (same adapter machinery)."""
    adapter = explainer.adapter

    @tf.function(input_signature=[tf.TensorSpec((1, *explainer.input_shape), tf.float32)])
    def floor(x):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            def watch(t):
                tape.watch(t)
                return t

            activations, scores = adapter.forward(x, capture=layer, on_capture=watch)
            target = scores[:, 0]
        return activations, tape.gradient(target, activations)

    # the traced graph called directly, as the explainer calls its own: tf.function's
    # per-call argument binding (~1 ms) is avoidable work, not part of a floor
    concrete = floor.get_concrete_function()
    return lambda x: [t.numpy() for t in concrete(tf.constant(x))]


def activation_floor(explainer: Explainer, layer: str) -> Callable[[np.ndarray], object]:
    """The least work an activation-only method (Eigen-CAM) needs: one compiled forward
    returning the layer's activations and the scores."""
    adapter = explainer.adapter

    @tf.function(input_signature=[tf.TensorSpec((1, *explainer.input_shape), tf.float32)])
    def floor(x):
        return adapter.forward(x, capture=layer)

    concrete = floor.get_concrete_function()
    return lambda x: [t.numpy() for t in concrete(tf.constant(x))]


def reference_score_cam(model: keras.Model, x: np.ndarray, layer_model: keras.Model, class_index: int) -> np.ndarray:
    """The 2019 article's algorithm, re-implemented as the baseline: per-channel cv2
    resize and normalization in Python, every masked input materialized, one
    model.predict over all of them. (The article then applied softmax to the
    already-softmaxed output; here softmax is applied once, so maps can be compared.)"""
    activations = layer_model.predict(x, verbose=0)
    height, width = x.shape[1:3]
    resized = [
        cv2.resize(activations[0, :, :, k], (width, height), interpolation=cv2.INTER_LINEAR)
        for k in range(activations.shape[3])
    ]
    normalized = []
    for a in resized:
        span = a.max() - a.min()
        normalized.append((a - a.min()) / span if span > 0 else np.zeros_like(a))
    masked = np.concatenate([np.copy(x) * m[None, :, :, None] for m in normalized], axis=0)
    probabilities = model.predict(masked, verbose=0)
    weights = probabilities[:, class_index]
    cam = np.maximum(np.dot(activations[0], weights), 0)
    return cam / cam.max() if cam.max() > 0 else cam


def _one_pass_rows(
    name: str, explainer: Explainer, layer: str, fresh: Callable[[], np.ndarray], repeats: int
) -> list[Row]:
    """Every one-pass method (gradient and activation families), each alone on images the
    explainer has not seen, interleaved with its floor so that load hits both alike."""
    gradient_floor = flat_gradient_floor(explainer, layer)
    forward_floor = activation_floor(explainer, layer)
    methods = [key for key, spec in METHODS.items() if not spec.per_channel_passes]
    gradient_floor(fresh())
    forward_floor(fresh())
    for method in methods:
        explainer.compute(method, fresh(), layer)  # warm-up: tracing is paid once per layer
    floors: dict[str, list[float]] = {"gradient": [], "activation": []}
    times: dict[str, list[float]] = {m: [] for m in methods}

    def run(method: str) -> Callable[[], object]:
        return lambda: explainer.compute(method, fresh(), layer)

    for _ in range(repeats + 2):
        floors["gradient"].append(min_time(lambda: gradient_floor(fresh()), 1))
        floors["activation"].append(min_time(lambda: forward_floor(fresh()), 1))
        for method in methods:
            times[method].append(min_time(run(method), 1))
    rows = []
    for method in methods:
        spec = METHODS[method]
        floor = min(floors["gradient" if "gradients" in spec.needs else "activation"])
        what = "compiled forward+backward returning activations and gradient" if "gradients" in spec.needs \
            else "compiled forward returning the activations"
        rows.append(Row(name, spec.label, min(times[method]), floor, f"floor: {what}; raw x in (hashed once per call)"))
    return rows


def bench_model(name: str, model: keras.Model, layer: str, make_input: Callable[[int], np.ndarray], args) -> list[Row]:
    rows: list[Row] = []
    shape = tuple(model.inputs[0].shape[1:])
    batch, per_image, table = best_throughput(model, shape, args.repeats)
    print(f"[{name}] forward s/img by batch: " + ", ".join(f"{b}: {t * 1000:.1f} ms" for b, t in table.items()),
          flush=True)

    explainer = Explainer(model, batch_size=batch)
    counter = iter(range(10_000))
    fresh = lambda: make_input(next(counter))  # noqa: E731  (images the explainer has not seen)
    rows += _one_pass_rows(name, explainer, layer, fresh, args.repeats)
    if args.one_pass_only:
        return rows
    score_rows, x, result, per_image = _score_cam_rows(name, explainer, layer, fresh, batch, per_image, args)
    rows += score_rows
    rows += _max_n_rows(name, explainer, layer, x)
    rows += _ablation_rows(name, explainer, layer, fresh, batch, per_image, args)
    if not args.quick:
        rows += _reference_rows(name, explainer, layer, x, result)
    return rows


def _score_cam_rows(name: str, explainer: Explainer, layer: str, fresh: Callable[[], np.ndarray], batch: int,
                    per_image: float, args) -> tuple[list[Row], np.ndarray, CamResult, float]:
    """Full Score-CAM against its floor: as many compiled batched forwards as it has masked passes, at
    its batch size, timed whole right after each run, so that load on a shared machine hits the run
    and its floor alike (the minimum of each over the runs counts)."""
    model = explainer.model
    shape = tuple(model.inputs[0].shape[1:])
    explainer.compute("faster_score_cam", fresh(), layer, max_n=2)  # warm-up of the masked pass
    forward = tf.function(lambda x: model(x, training=False))
    batches = [tf.constant(np.random.default_rng(i).uniform(0, 1, (batch, *shape)).astype(np.float32))
               for i in range(2)]
    forward(batches[0]).numpy()  # trace + warm up
    runs, floors = [], []
    for _ in range(2 if args.quick else 3):
        x = fresh()
        with PeakMemory() as memory:
            result = explainer.compute("score_cam", x, layer)
        state = explainer.score_state(x, layer)
        if state is None:
            raise RuntimeError(f"Score-CAM on {layer!r} ran but left no channel plan in the cache")
        varying, needs_zero = state.plan.passes_needed(state.plan.n_channels)
        passes = int(varying.size) + int(needs_zero)
        runs.append((result.timings["masked passes"] + result.timings["weights"], result, passes, memory.extra_mb, x))
        floors.append(_batched_forwards_seconds(forward, batches, passes, batch) / passes)
    score_seconds, result, passes, extra_mb, x = min(runs, key=lambda run: run[0])
    n_channels = explainer.layer_info(layer).channels
    skipped = 1 - passes / n_channels
    pairs = ", ".join(f"{run[0] * 1000:.0f}/{floor * passes * 1000:.0f} ms" for run, floor in zip(runs, floors))
    row = Row(name, f"Score-CAM ({n_channels} ch)", score_seconds, passes * min(floors),
              f"{passes} passes, {skipped:.0%} of channels skipped, batch {batch}; floor: {passes} forwards in "
              f"batches of {batch}, timed after each run (run/floor: {pairs}); peak +{max(r[3] for r in runs):.0f} MB")
    return [row], x, result, min(per_image, min(floors))


def _batched_forwards_seconds(forward: Callable, batches: list, passes: int, batch: int) -> float:
    """Wall time of ``passes`` images through ``forward`` in full batches of ``batch`` (a remainder
    counted at the full batches' rate per image)."""
    full = max(1, passes // batch)
    start = time.perf_counter()
    for i in range(full):
        forward(batches[i % len(batches)]).numpy()
    return (time.perf_counter() - start) * passes / (full * batch)


def _max_n_rows(name: str, explainer: Explainer, layer: str, x: np.ndarray) -> list[Row]:
    n_channels = explainer.layer_info(layer).channels
    changes = []
    for n in np.random.default_rng(0).integers(1, n_channels + 1, 20):
        start = time.perf_counter()
        explainer.compute("faster_score_cam", x, layer, max_n=int(n))
        changes.append(time.perf_counter() - start)
    return [Row(name, "max_n change after a run", max(changes), None,
                f"worst of 20, median {np.median(changes) * 1000:.1f} ms")]


def _ablation_rows(name: str, explainer: Explainer, layer: str, fresh: Callable[[], np.ndarray], batch: int,
                   per_image: float, args) -> list[Row]:
    n_channels = explainer.layer_info(layer).channels
    explainer.compute("ablation_cam", fresh(), layer)  # warm-up: traces and picks the ablation pass
    ablation_runs = []
    for _ in range(max(2, args.repeats)):
        with PeakMemory() as memory:
            ablation = explainer.compute("ablation_cam", fresh(), layer)
        ablation_runs.append((ablation.timings.get("ablation passes", 0.0) + ablation.timings["weights"],
                              ablation, memory.extra_mb))
    ablation_seconds, ablation, ablation_mb = min(ablation_runs, key=lambda run: run[0])
    ablation_passes = int(ablation.model_passes) - 1  # minus the activations pass
    return [Row(name, f"Ablation-CAM ({n_channels} ch)", ablation_seconds, ablation_passes * per_image,
                f"{ablation_passes} ablations (all-zero channels skipped), batch {batch}; floor: as many whole-model "
                f"passes; the layers before {layer} run once per batch; peak +{ablation_mb:.0f} MB")]


def _reference_rows(name: str, explainer: Explainer, layer: str, x: np.ndarray, result: CamResult) -> list[Row]:
    """The 2019 article's algorithm on the same image, end to end."""
    if "/" in layer:
        return []
    model = explainer.model
    layer_model = keras.Model(model.inputs, model.get_layer(layer).output)
    index = int(np.argmax(explainer.scores(x)))
    with PeakMemory() as reference_memory:
        start = time.perf_counter()
        reference = reference_score_cam(model, x, layer_model, index)
        reference_seconds = time.perf_counter() - start
    ours = explainer.compute("score_cam", x, layer, index).cam
    correlation = float(np.corrcoef(ours.ravel(), reference.ravel())[0, 1])
    return [Row(name, "reference Score-CAM (2019 article)", reference_seconds, None,
                f"ours {reference_seconds / result.seconds:.1f}× faster end to end; map correlation {correlation:.4f}; "
                f"peak +{reference_memory.extra_mb:.0f} MB")]


def small_model() -> keras.Model:
    """A held-out small model (224×224×3, three strided convolutions): its compiled
    forward+backward takes about 3 ms here, where per-call overhead shows."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((224, 224, 3))
    h = keras.layers.Conv2D(16, 5, strides=4, activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="c2")(h)
    h = keras.layers.Conv2D(32, 3, activation="relu", name="c3")(h)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out, name="small")


def _forward_per_image(model: keras.Model, shape: tuple[int, ...], batch: int, repeats: int) -> float:
    forward = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(batch).uniform(0, 1, (batch, *shape)).astype(np.float32))
    forward(x).numpy()
    return min_time(lambda: forward(x).numpy(), repeats) / batch


def precision_rows(name: str, model: keras.Model, layer: str, make_input: Callable[[int], np.ndarray],
                   args) -> list[Row]:
    """fp32 against the bf16 copy: auto's verdict and what its first use cost, the probe's own
    cost (forced, whatever the CPU's flags) against a full fp32 Score-CAM, batched-forward
    floors, and Score-CAM's masked passes under fp32, auto and bf16 against the fp32 floor.
    Where bf16 is not native (emulated, several times slower) only the
    ``--emulated-channels`` channels of largest std run (Faster-Score-CAM), so that the run
    stays in minutes; the ratio is per pass either way."""
    from camcore.autoprecision import VerdictStore, measure_backend
    from camcore.precision import bf16_copy, detect_bf16

    support = detect_bf16()
    shape = tuple(model.inputs[0].shape[1:])
    batch = 16
    fp32_floor = _forward_per_image(model, shape, batch, args.repeats)
    rows = [Row(name, "forward per image, fp32", fp32_floor, None, f"batch {batch}")]
    auto = Explainer(model, batch_size=batch, precision="auto", verdicts=VerdictStore(None))  # nothing on disk
    x = make_input(90_003)
    start = time.perf_counter()
    verdict = auto.verdict(x, layer)
    rows.append(Row(name, "precision auto: first use", time.perf_counter() - start, None,
                    f"auto -> {verdict.summary()} (cpu: {support.reason})"))
    channels = auto.layer_info(layer).channels
    activations = auto.activations_and_gradients(x, layer)[0] if "gradients" in auto.backend.capabilities \
        else auto.backend.activations(np.asarray(x, np.float32), layer)[0]
    forced = measure_backend(auto.backend, np.asarray(x, np.float32), layer, activations, batch)
    rows.append(Row(name, "precision probe, forced", forced.probe_seconds, channels * fp32_floor,
                    f"-> {forced.summary()}; ratio = probe / a full fp32 Score-CAM's floor ({channels} passes)"))
    copy, note = bf16_copy(model)
    if copy is None:
        return rows + [Row(name, "bf16 copy", 0.0, None, f"not built: {note}")]
    bf16_floor = _forward_per_image(copy, shape, batch, args.repeats)
    rows.append(Row(name, "forward per image, bf16 copy", bf16_floor, fp32_floor, "ratio = bf16 / fp32 floor"))
    n = None if support.native else args.emulated_channels
    for precision in ("fp32", "auto", "bf16"):
        rows.append(_masked_row(name, model, layer, make_input, precision, n, batch, fp32_floor))
    return rows


def _masked_row(name: str, model: keras.Model, layer: str, make_input: Callable[[int], np.ndarray], precision: str,
                n: int | None, batch: int, fp32_floor: float) -> Row:
    explainer = Explainer(model, batch_size=batch, precision=precision)
    explainer.compute("faster_score_cam", make_input(90_000), layer, max_n=2)  # trace the masked pass
    x = make_input({"fp32": 90_001, "auto": 90_004, "bf16": 90_002}[precision])
    with PeakMemory() as memory:
        result = explainer.compute("score_cam" if n is None else "faster_score_cam", x, layer, max_n=n)
    passes = result.model_passes - 1  # minus the activations pass
    what = "Score-CAM" if n is None else f"Faster-Score-CAM (max_N {n})"
    label = precision if precision != "auto" else f"auto ({explainer.precision})"
    return Row(name, f"{what}, {label}", result.timings.get("masked passes", 0.0), passes * fp32_floor,
               f"{passes} masked passes; ratio = time / fp32 floor of those passes; peak +{memory.extra_mb:.0f} MB")


def cpu_kind() -> str:
    """The CPU's model name and its bf16 flags: every figure is named by the kind of CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return f"cpu {platform.machine()} (no /proc/cpuinfo)"
    model = next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = sorted({flag for flag in ("avx512_bf16", "amx_bf16") if f" {flag}" in text})
    return f"cpu {model}, bf16 flags: {', '.join(flags) or 'none'}"


def random_input(shape: tuple[int, int, int], scale: float) -> Callable[[int], np.ndarray]:
    return lambda i: np.random.default_rng(1000 + i).uniform(-scale, scale, (1, *shape)).astype(np.float32)


def demo_cases(names: list[str]):
    from camcore import demos, synth

    for name in names:
        demo = demos.load_demo(name)
        images = [s.image for s in synth.generate(64, seed=4242, defect_rate=1.0)]
        yield name, demo.model, demo.layer, (
            lambda i, d=demo, imgs=images: d.preprocess(imgs[i % len(imgs)]) + 1e-6 * (i // len(imgs))
        )


def forward_per_image_side_by_side(backend, model: keras.Model, shape: tuple[int, ...], repeats: int,
                                   sizes: tuple[int, ...] = BATCH_SIZES) -> dict[str, dict[int, float]]:
    """Seconds per image of ONNX Runtime's and TF's batched forwards by batch size, {"onnx": {batch:
    s/img}, "tf": {...}}: the two runs of each batch alternate, so that load hits both alike."""
    per_image: dict[str, dict[int, float]] = {"onnx": {}, "tf": {}}
    for batch in sizes:
        x = np.random.default_rng(batch).uniform(0, 1, (batch, *shape)).astype(np.float32)
        runs = _onnx_and_tf_forwards(backend, model, x)
        times: dict[str, list[float]] = {"onnx": [], "tf": []}
        for run in runs.values():
            run()  # warm-up: tracing, and ONNX Runtime sizing its buffers for this shape
        for _ in range(3 * repeats):
            for runtime, run in runs.items():
                times[runtime].append(min_time(run, 1))
        for runtime in runs:
            per_image[runtime][batch] = min(times[runtime]) / batch
    return per_image


def _onnx_and_tf_forwards(backend, model: keras.Model, x: np.ndarray) -> dict[str, Callable[[], object]]:
    """One batched forward of ``x`` by ONNX Runtime and by TF's compiled forward of the Keras model."""
    forward = tf.function(lambda t: model(t, training=False))
    return {"onnx": lambda: backend.forward(x), "tf": lambda: forward(tf.constant(x)).numpy()}


def export_onnx(model: keras.Model, path: str) -> bytes:
    """``model`` through Keras 3's ``model.export(path, format="onnx")`` (tf2onnx), as bytes."""
    model(np.zeros((1, *model.inputs[0].shape[1:]), np.float32))  # the exporter wants a called model
    model.export(path, format="onnx", verbose=False)
    with open(path, "rb") as file:
        return file.read()


def onnx_tensor(backend, layer: str) -> str:
    """The export's tensor of Keras layer ``layer`` (tf2onnx names its ops "<model>_1/<layer>_1/..."),
    else the backend's default layer."""
    found = [info.path for info in backend.layers if f"/{layer}_1/" in info.path]
    return found[-1] if found else backend.default_layer


def _timed_score_cam(explainer: Explainer, x: np.ndarray, layer: str) -> tuple[float, int]:
    """(masked passes + weights seconds, masked passes) of a full Score-CAM run on ``x``."""
    result = explainer.compute("score_cam", x, layer)
    return result.timings["masked passes"] + result.timings["weights"], result.model_passes - 1


def onnx_rows(name: str, model: keras.Model, layer: str, make_input: Callable[[int], np.ndarray], args,
              folder: str) -> list[Row]:
    """The ONNX export of ``model`` on ONNX Runtime: its batched-forward floor against TF's, Score-CAM
    and Ablation-CAM against that floor, and the Keras model's Score-CAM on the same images."""
    from camcore.backends.onnx import OnnxBackend

    label = f"{name} (ONNX)"
    backend = OnnxBackend(export_onnx(model, os.path.join(folder, f"{name}.onnx")), name=f"{name}.onnx")
    tensor = onnx_tensor(backend, layer)
    tables = forward_per_image_side_by_side(backend, model, tuple(model.inputs[0].shape[1:]), args.repeats)
    for runtime, table in tables.items():
        print(f"[{label}] {runtime} forward s/img by batch: " + ", ".join(
            f"{b}: {t * 1000:.1f} ms" for b, t in table.items()), flush=True)
    ort_batch, tf_batch = (min(tables[r], key=tables[r].__getitem__) for r in ("onnx", "tf"))
    ort_image, tf_image = tables["onnx"][ort_batch], tables["tf"][tf_batch]
    faster = "ONNX Runtime" if ort_image < tf_image else "TF"
    rows = [Row(label, "forward per image, ONNX Runtime", ort_image, tf_image,
                f"batch {ort_batch}; floor: TF's compiled forward of the Keras model, batch {tf_batch}, timed "
                f"alternately; {faster} is faster here")]
    onnx_explainer = Explainer(backend, batch_size=ort_batch)
    keras_explainer = Explainer(model, batch_size=tf_batch)
    onnx_explainer.compute("faster_score_cam", make_input(50_000), tensor, max_n=2)  # warm-up
    keras_explainer.compute("faster_score_cam", make_input(50_000), layer, max_n=2)
    runs: dict[str, list[tuple[float, int]]] = {"onnx": [], "keras": []}
    for repeat in range(2 if not args.quick else 1):
        x = make_input(50_001 + repeat)
        runs["onnx"].append(_timed_score_cam(onnx_explainer, x, tensor))
        runs["keras"].append(_timed_score_cam(keras_explainer, x, layer))
    (ours, passes), (theirs, keras_passes) = min(runs["onnx"]), min(runs["keras"])
    rows.append(Row(label, f"Score-CAM ({tensor})", ours, passes * ort_image,
                    f"{passes} masked passes at ONNX Runtime's floor; {theirs / ours:.2f}× the Keras model's speed"))
    rows.append(Row(name, "Score-CAM, Keras model (beside the ONNX row)", theirs, keras_passes * tf_image,
                    f"{keras_passes} masked passes at TF's floor"))
    onnx_explainer.compute("ablation_cam", make_input(50_010), tensor)  # warm-up: builds the tail session
    ablations = []
    for repeat in range(max(2, args.repeats)):
        result = onnx_explainer.compute("ablation_cam", make_input(50_011 + repeat), tensor)
        ablations.append((result.timings.get("ablation passes", 0.0) + result.timings["weights"],
                          result.model_passes - 1))
    seconds, ablated = min(ablations)
    rows.append(Row(label, "Ablation-CAM", seconds, ablated * ort_image,
                    f"{ablated} ablations; floor: as many whole-graph passes; the graph's part before "
                    f"{tensor} runs once per image"))
    return rows


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg16,small,demos",
                        help="comma list: vgg16, resnet50, small (a ~3 ms model), demos, demo names, or none")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the reference algorithm")
    parser.add_argument("--precision", action="store_true",
                        help="also fp32 vs bf16 on VGG16 and ResNet50 (weights=None)")
    parser.add_argument("--one-pass-only", action="store_true",
                        help="only the one-pass methods against their floors (per-call overhead)")
    parser.add_argument("--onnx", action="store_true",
                        help="also the demo models exported to ONNX, on ONNX Runtime (needs tf2onnx)")
    parser.add_argument("--emulated-channels", type=int, default=32,
                        help="channels of the bf16 Score-CAM timing where bf16 is emulated (default 32)")
    return parser.parse_args(argv)


def _application(name: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None)


def _model_rows(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    imagenet_like = random_input((224, 224, 3), 120.0)
    if "vgg16" in wanted:
        rows += bench_model("VGG16 (weights=None)", _application("VGG16"), "block5_conv3", imagenet_like, args)
    if "resnet50" in wanted:
        rows += bench_model(
            "ResNet50 (weights=None)", _application("ResNet50"), "conv5_block3_out", imagenet_like, args
        )
    if "small" in wanted:
        rows += bench_model("small (held out)", small_model(), "c3", random_input((224, 224, 3), 1.0), args)
    demo_names = [w for w in wanted if w not in ("vgg16", "resnet50", "small", "demos", "none")]
    if "demos" in wanted:
        from camcore.demos import list_demos

        demo_names = list_demos()
    for name, model, layer, make_input in demo_cases(demo_names):
        rows += bench_model(name, model, layer, make_input, args)
    return rows, demo_names


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, "
          f"Keras {keras.__version__}; {cpu_kind()}")
    rows, demo_names = _model_rows(args)
    if args.onnx:
        import tempfile

        from camcore.demos import list_demos

        with tempfile.TemporaryDirectory(prefix="camcore-bench-onnx-") as folder:
            for name, model, layer, make_input in demo_cases(demo_names or list_demos()):
                rows += onnx_rows(name, model, layer, make_input, args, folder)
    if args.precision:
        imagenet_like = random_input((224, 224, 3), 120.0)
        rows += precision_rows("VGG16 (weights=None)", _application("VGG16"), "block5_conv3", imagenet_like, args)
        rows += precision_rows("ResNet50 (weights=None)", _application("ResNet50"), "conv5_block3_out",
                               imagenet_like, args)

    print()
    print("| model | method | time | floor | ratio | notes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        floor = f"{row.floor * 1000:.1f} ms" if row.floor else "–"
        print(f"| {row.model} | {row.what} | {row.seconds * 1000:.1f} ms | {floor} | {row.ratio} | {row.note} |")


if __name__ == "__main__":
    main()
