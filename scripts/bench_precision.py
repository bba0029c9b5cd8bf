"""fp32 vs a bf16 copy of real-size models on this machine: speed and logit fidelity.

    python scripts/bench_precision.py                     # VGG16 and ResNet50, batch 16
    python scripts/bench_precision.py --models vgg16 --batch 8 16 32 --repeats 5

For each model (``weights=None``: nothing is downloaded) it times the class-score
forward pass the Explainer compiles (``ModelAdapter.forward`` under ``tf.function``
with a fixed input signature), fp32 and bf16 alternately, warm, minimum over
repeats (shared 2-core machines are noisy; see /work/shared/benchmarking.md), and
compares the logits of the two on the same images. ``--kernels`` also runs one pass
per precision in a subprocess with ``ONEDNN_VERBOSE=1`` and lists the oneDNN ISA and
convolution kernels used: ``jit_bf16:avx512_core`` means bf16 emulated on fp32 units,
``brg…:avx512_core_bf16`` / ``…amx…`` mean native bf16.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections import Counter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from camcore.adapter import ModelAdapter  # noqa: E402
from camcore.precision import bf16_copy, detect_bf16  # noqa: E402

MODELS = {
    "vgg16": (keras.applications.VGG16, keras.applications.vgg16.preprocess_input),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
}


def build(name: str, size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    factory, _ = MODELS[name]
    return factory(weights=None, input_shape=(size, size, 3))


def images(name: str, count: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    return np.asarray(MODELS[name][1](raw), np.float32)


def compiled_scores(model: keras.Model, batch: int, size: int):
    adapter = ModelAdapter(model)

    @tf.function(input_signature=[tf.TensorSpec((batch, size, size, 3), tf.float32)])
    def scores(x):
        return adapter.forward(x)[1]

    return scores


def time_once(fn, x: tf.Tensor) -> float:
    start = time.perf_counter()
    fn(x).numpy()
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernel_probe(name: str, size: int) -> None:
    """Run one batch-1 pass per precision (called in a subprocess with ONEDNN_VERBOSE=1)."""
    model = build(name, size)
    copy, _ = bf16_copy(model)
    x = tf.constant(images(name, 1, size))
    for label, candidate in (("fp32", model), ("bf16", copy)):
        print(f"### {label}", flush=True)
        compiled_scores(candidate, 1, size)(x).numpy()
        sys.stdout.flush()


def kernels(name: str, size: int) -> dict[str, object]:
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    out = subprocess.run(
        [sys.executable, __file__, "--kernel-probe", name, "--size", str(size)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    isa, section, found = "?", None, {"fp32": Counter(), "bf16": Counter()}
    for line in out.splitlines():
        if line.startswith("### "):
            section = line[4:]
        elif ",info,cpu,isa:" in line:
            isa = line.split("isa:", 1)[1]
        elif section and ",primitive,exec,cpu,convolution," in line:
            fields = line.split(",")
            found[section][fields[fields.index("convolution") + 1]] += 1
    return {"isa": isa, **{k: dict(v) for k, v in found.items()}}


def bench(name: str, batches: list[int], repeats: int, size: int, n_fidelity: int) -> list[dict]:
    model = build(name, size)
    start = time.perf_counter()
    copy, note = bf16_copy(model)
    copy_seconds = time.perf_counter() - start
    if copy is None:
        print(f"{name}: no bf16 copy: {note}")
        return []
    print(f"{name}: bf16 copy in {copy_seconds:.2f} s: {note}", flush=True)

    rows = []
    for batch in batches:
        fns = {"fp32": compiled_scores(model, batch, size), "bf16": compiled_scores(copy, batch, size)}
        x = tf.constant(images(name, batch, size, seed=batch))
        for fn in fns.values():  # trace, then one warm call
            fn(x).numpy()
            fn(x).numpy()
        best = {label: float("inf") for label in fns}
        for _ in range(repeats):  # alternate, so that load changes hit both alike
            for label, fn in fns.items():
                best[label] = min(best[label], time_once(fn, x))
        ms = {label: 1e3 * seconds / batch for label, seconds in best.items()}
        rows.append({"model": name, "batch": batch, **{f"{k}_ms": v for k, v in ms.items()}})
        print(
            f"{name} batch {batch}: fp32 {ms['fp32']:.1f} ms/image, bf16 {ms['bf16']:.1f} ms/image, "
            f"bf16/fp32 time {ms['bf16'] / ms['fp32']:.2f}",
            flush=True,
        )

    # Fidelity on more images than one batch, at the first batch size's compiled shape.
    batch = batches[0]
    fns = {"fp32": compiled_scores(model, batch, size), "bf16": compiled_scores(copy, batch, size)}
    count = max(batch, n_fidelity // batch * batch)
    x_all = images(name, count, size, seed=1234)
    got = {label: np.concatenate([fn(tf.constant(x_all[i : i + batch])).numpy() for i in range(0, count, batch)])
           for label, fn in fns.items()}
    ref, low = got["fp32"], got["bf16"]
    per_image = np.abs(ref - low).max(1) / np.abs(ref).max(1)
    fidelity = {
        "images": count,
        "logit_spread": float(ref.std()),
        "rel_max_err": float(np.abs(ref - low).max() / np.abs(ref).max()),
        "rel_err_median_image": float(np.median(per_image)),
        "r": float(np.corrcoef(ref.ravel(), low.ravel())[0, 1]),
        "r_worst_image": float(min(np.corrcoef(a, b)[0, 1] for a, b in zip(ref, low))),
        "top1_agree": float((ref.argmax(1) == low.argmax(1)).mean()),
    }
    print(f"{name} logits bf16 vs fp32: " + ", ".join(f"{k} {v:.6g}" for k, v in fidelity.items()), flush=True)
    for row in rows:
        row.update(fidelity)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", nargs="+", type=int, default=[16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fidelity-images", type=int, default=32)
    parser.add_argument("--kernels", action="store_true", help="list oneDNN ISA and conv kernels per precision")
    parser.add_argument("--kernel-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kernel_probe:
        kernel_probe(args.kernel_probe, args.size)
        return

    support = detect_bf16()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cpus); TF {tf.__version__}, Keras {keras.__version__}")
    print(f"bf16 native: {support.native} ({support.reason})", flush=True)
    if args.kernels:
        for name in args.models:
            print(f"{name} oneDNN: {kernels(name, args.size)}", flush=True)

    rows = [
        row for name in args.models for row in bench(name, args.batch, args.repeats, args.size, args.fidelity_images)
    ]
    print("\n| model | batch | fp32 ms/image | bf16 ms/image | bf16 speed-up | logits rel. max err | r | top-1 agree |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['batch']} | {row['fp32_ms']:.1f} | {row['bf16_ms']:.1f} | "
            f"{row['fp32_ms'] / row['bf16_ms']:.2f}x | {row['rel_max_err']:.2e} | {row['r']:.5f} | "
            f"{row['top1_agree']:.2f} |"
        )


if __name__ == "__main__":
    main()
