"""Benchmark: each method's time against a floor measured in the same run.

    python -m camcore.bench [--models vgg16,vgg_defect,resnet_defect] [--repeats 3] [--quick]

For every model it prints, as a Markdown table:

* Grad-CAM / Grad-CAM++: time on images the warm explainer has not seen, against
  the floor = one compiled forward+backward that returns both the layer's
  activations and their gradient (returning only the gradient would let
  TensorFlow prune the forward pass and fake a fast floor);
* Score-CAM: time of a full run against the floor = the masked passes it must
  run (channels not skipped) at the model's best batched throughput, measured at
  batch sizes 8, 16, 32, 64; the share of channels skipped; the correlation with
  plain Score-CAM; the cost of a max_n change after a run; peak extra memory;
* the speed-up over the 2019 article's reference algorithm (per-channel cv2
  loops + model.predict), re-implemented below as the baseline.

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

from camcore.explainer import Explainer  # noqa: E402
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
    per_image = {}
    for batch in sizes:
        forward = tf.function(lambda x: model(x, training=False))
        x = tf.constant(np.random.default_rng(batch).uniform(0, 1, (batch, *shape)).astype(np.float32))
        forward(x).numpy()  # trace + warm up
        per_image[batch] = min_time(lambda: forward(x).numpy(), repeats) / batch
    best = min(per_image, key=per_image.get)
    return best, per_image[best], per_image


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

    return lambda x: [t.numpy() for t in floor(tf.constant(x))]


def activation_floor(explainer: Explainer, layer: str) -> Callable[[np.ndarray], object]:
    """The least work an activation-only method (Eigen-CAM) needs: one compiled forward
    returning the layer's activations and the scores."""
    adapter = explainer.adapter

    @tf.function(input_signature=[tf.TensorSpec((1, *explainer.input_shape), tf.float32)])
    def floor(x):
        return adapter.forward(x, capture=layer)

    return lambda x: [t.numpy() for t in floor(tf.constant(x))]


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


def _one_pass_rows(name: str, explainer: Explainer, layer: str, fresh: Callable[[], np.ndarray], repeats: int) -> list[Row]:
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
    for _ in range(repeats + 2):
        floors["gradient"].append(min_time(lambda: gradient_floor(fresh()), 1))
        floors["activation"].append(min_time(lambda: forward_floor(fresh()), 1))
        for method in methods:
            times[method].append(min_time(lambda m=method: explainer.compute(m, fresh(), layer), 1))
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
    print(f"[{name}] forward s/img by batch: " + ", ".join(f"{b}: {t * 1000:.1f} ms" for b, t in table.items()), flush=True)

    explainer = Explainer(model, batch_size=batch)
    counter = iter(range(10_000))
    fresh = lambda: make_input(next(counter))  # noqa: E731  (images the explainer has not seen)
    rows += _one_pass_rows(name, explainer, layer, fresh, args.repeats)

    explainer.compute("faster_score_cam", fresh(), layer, max_n=2)  # warm-up of the masked pass
    runs = []
    for _ in range(2 if not args.quick else 1):
        x = fresh()
        with PeakMemory() as memory:
            result = explainer.compute("score_cam", x, layer)
        state = explainer.score_state(x, layer)
        runs.append((result.timings["masked passes"] + result.timings["weights"], result, state, memory.extra_mb, x))
    score_seconds, result, state, extra_mb, x = min(runs, key=lambda run: run[0])
    n_channels = state.plan.n_channels
    varying, needs_zero = state.plan.passes_needed(n_channels)
    passes = int(varying.size) + int(needs_zero)
    skipped = 1 - passes / n_channels
    # the best throughput again, after the runs: the floor is the better of the two
    per_image = min(per_image, best_throughput(model, shape, 1, sizes=(batch,))[1])
    score_floor = passes * per_image
    rows.append(
        Row(name, f"Score-CAM ({n_channels} ch)", score_seconds, score_floor,
            f"{passes} passes, {skipped:.0%} of channels skipped, batch {batch}, peak +{max(r[3] for r in runs):.0f} MB")
    )

    changes = []
    rng = np.random.default_rng(0)
    for n in rng.integers(1, n_channels + 1, 20):
        start = time.perf_counter()
        explainer.compute("faster_score_cam", x, layer, max_n=int(n))
        changes.append(time.perf_counter() - start)
    rows.append(Row(name, "max_n change after a run", max(changes), None, f"worst of 20, median {np.median(changes) * 1000:.1f} ms"))

    explainer.compute("ablation_cam", fresh(), layer)  # warm-up: traces and picks the ablation pass
    ablation_runs = []
    for _ in range(max(2, args.repeats)):
        with PeakMemory() as memory:
            ablation = explainer.compute("ablation_cam", fresh(), layer)
        ablation_runs.append((ablation.timings.get("ablation passes", 0.0) + ablation.timings["weights"],
                              ablation, memory.extra_mb))
    ablation_seconds, ablation, ablation_mb = min(ablation_runs, key=lambda run: run[0])
    ablation_passes = int(ablation.model_passes) - 1  # minus the activations pass
    rows.append(
        Row(name, f"Ablation-CAM ({n_channels} ch)", ablation_seconds, ablation_passes * per_image,
            f"{ablation_passes} ablations (all-zero channels skipped), batch {batch}; floor: as many whole-model "
            f"passes; the layers before {layer} run once per batch; peak +{ablation_mb:.0f} MB")
    )

    if not args.quick:
        layer_model = keras.Model(model.inputs, explainer.adapter._resolve(layer).output) if "/" not in layer else None
        if layer_model is not None:
            index = int(np.argmax(explainer.scores(x)))
            with PeakMemory() as reference_memory:
                start = time.perf_counter()
                reference = reference_score_cam(model, x, layer_model, index)
                reference_seconds = time.perf_counter() - start
            ours = explainer.compute("score_cam", x, layer, index).cam
            correlation = float(np.corrcoef(ours.ravel(), reference.ravel())[0, 1])
            rows.append(
                Row(name, "reference Score-CAM (2019 article)", reference_seconds, None,
                    f"ours {reference_seconds / result.seconds:.1f}× faster end to end; map correlation {correlation:.4f}; peak +{reference_memory.extra_mb:.0f} MB")
            )
    return rows


def _forward_per_image(model: keras.Model, shape: tuple[int, ...], batch: int, repeats: int) -> float:
    forward = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(batch).uniform(0, 1, (batch, *shape)).astype(np.float32))
    forward(x).numpy()
    return min_time(lambda: forward(x).numpy(), repeats) / batch


def precision_rows(name: str, model: keras.Model, layer: str, make_input: Callable[[int], np.ndarray],
                   args) -> list[Row]:
    """fp32 against the bf16 copy: batched-forward floors, and Score-CAM's masked passes at
    each precision against the fp32 floor. On a CPU without native bf16 (bf16 emulated, several
    times slower) only the ``--emulated-channels`` channels of largest std are run (Faster-
    Score-CAM), so that the run stays in minutes; the ratio is per pass either way."""
    from camcore.precision import bf16_copy, detect_bf16, resolve_precision

    support = detect_bf16()
    rows = [Row(name, "precision auto", 0.0, None, f"auto -> {resolve_precision('auto')} ({support.reason})")]
    copy, note = bf16_copy(model)
    if copy is None:
        return rows + [Row(name, "bf16 copy", 0.0, None, f"not built: {note}")]
    shape = tuple(model.inputs[0].shape[1:])
    batch = 16
    fp32_floor = _forward_per_image(model, shape, batch, args.repeats)
    bf16_floor = _forward_per_image(copy, shape, batch, args.repeats)
    rows.append(Row(name, "forward per image, fp32", fp32_floor, None, f"batch {batch}"))
    rows.append(Row(name, "forward per image, bf16 copy", bf16_floor, fp32_floor, "ratio = bf16 / fp32 floor"))
    channels = None if support.native else args.emulated_channels
    method = "score_cam" if channels is None else "faster_score_cam"
    for precision in ("fp32", "bf16"):
        explainer = Explainer(model, batch_size=batch, precision=precision)
        explainer.compute("faster_score_cam", make_input(90_000), layer, max_n=2)  # trace the masked pass
        x = make_input(90_001 if precision == "fp32" else 90_002)
        with PeakMemory() as memory:
            result = explainer.compute(method, x, layer, max_n=channels)
        passes = result.model_passes - 1  # minus the activations pass
        seconds = result.timings.get("masked passes", 0.0)
        what = "Score-CAM" if channels is None else f"Faster-Score-CAM (max_N {channels})"
        rows.append(Row(name, f"{what}, {precision}", seconds, passes * fp32_floor,
                        f"{passes} masked passes; ratio = time / fp32 floor of those passes; peak +{memory.extra_mb:.0f} MB"))
    return rows


def random_input(shape: tuple[int, int, int], scale: float) -> Callable[[int], np.ndarray]:
    return lambda i: np.random.default_rng(1000 + i).uniform(-scale, scale, (1, *shape)).astype(np.float32)


def demo_cases(names: list[str]):
    from camcore import demos, synth

    for name in names:
        demo = demos.load_demo(name)
        images = [s.image for s in synth.generate(64, seed=4242, defect_rate=1.0)]
        yield name, demo.model, demo.layer, (lambda i, d=demo, imgs=images: d.preprocess(imgs[i % len(imgs)]) + 1e-6 * (i // len(imgs)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg16,demos", help="comma list: vgg16, demos, demo names, or none")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the reference algorithm")
    parser.add_argument("--precision", action="store_true",
                        help="also fp32 vs bf16 on VGG16 and ResNet50 (weights=None)")
    parser.add_argument("--emulated-channels", type=int, default=32,
                        help="channels of the bf16 Score-CAM timing where bf16 is emulated (default 32)")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}")
    rows: list[Row] = []
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    if "vgg16" in wanted:
        keras.utils.set_random_seed(0)
        vgg = keras.applications.VGG16(weights=None)
        rows += bench_model("VGG16 (weights=None)", vgg, "block5_conv3", random_input((224, 224, 3), 120.0), args)
    demo_names = [w for w in wanted if w not in ("vgg16", "demos", "none")]
    if "demos" in wanted:
        from camcore.demos import list_demos

        demo_names = list_demos()
    for name, model, layer, make_input in demo_cases(demo_names):
        rows += bench_model(name, model, layer, make_input, args)

    if args.precision:
        keras.utils.set_random_seed(0)
        vgg = keras.applications.VGG16(weights=None)
        rows += precision_rows("VGG16 (weights=None)", vgg, "block5_conv3", random_input((224, 224, 3), 120.0), args)
        resnet = keras.applications.ResNet50(weights=None)
        rows += precision_rows("ResNet50 (weights=None)", resnet, "conv5_block3_out", random_input((224, 224, 3), 120.0), args)

    print()
    print("| model | method | time | floor | ratio | notes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        floor = f"{row.floor * 1000:.1f} ms" if row.floor else "–"
        print(f"| {row.model} | {row.what} | {row.seconds * 1000:.1f} ms | {floor} | {row.ratio} | {row.note} |")


if __name__ == "__main__":
    main()
