"""bf16 vs fp32 fidelity of the forward-only CAM methods and the metrics built on them.

    python -m scripts.fidelity_bf16 [--images 100] [--vgg16-images 3]

For each demo model, on ``--images`` generated defective images (fresh seeds), it computes
Score-CAM, Faster-Score-CAM (max_N 10) and Ablation-CAM with ``Explainer(precision="fp32")``
and ``Explainer(precision="bf16")`` and reports, per method: the Pearson correlation of the
two maps (median and worst), and the mean absolute difference of three evaluation metrics -
IoU at the best threshold and the pointing game (``camcore.metrics.localization`` against the
pixel mask) and Average Drop (each precision perturbing through its own forward pass).

VGG16 (``weights=None``) gets a head scaled so that its logits have a realistic spread
(random-weight logits are ~1e-3 apart, which makes Score-CAM's softmax flat and would hide
any error); Faster-Score-CAM (max_N 32) only, on ``--vgg16-images`` images: on a CPU without
native bf16 every bf16 pass is emulated and several times slower than fp32.

Targets (issue "bf16 fast path"): map correlation median >= 0.999 and worst >= 0.99 per
method used in ``auto``; metrics within 0.01 of fp32 on average.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from camcore import metrics, synth  # noqa: E402
from camcore.demos import list_demos, load_demo  # noqa: E402
from camcore.explainer import Explainer  # noqa: E402
from camcore.maps import map_correlation, upsample  # noqa: E402
from camcore.precision import detect_bf16  # noqa: E402

METHODS = ("score_cam", "faster_score_cam", "ablation_cam")
FRESH_SEED = 31_337


def _scores(cam: np.ndarray, mask: np.ndarray, predict, x: np.ndarray, class_index: int, size) -> dict:
    ious, _ = metrics.localization_curves(cam, mask, metrics.DEFAULT_THRESHOLDS)
    found = metrics.localization(cam, mask, 0.5)
    drop = metrics.average_drop_increase(predict, x, upsample(cam, size), class_index)
    return {"iou_best": float(ious.max()), "pointing": float(found.pointing_hit), "average_drop": drop.drop / 100.0}


def compare(name: str, model: keras.Model, layer: str, inputs, methods, class_index: int, max_n: int) -> list[dict]:
    exact, fast = Explainer(model, precision="fp32"), Explainer(model, precision="bf16")
    size = exact.input_shape[:2]
    rows = []
    for method in methods:
        correlations, diffs = [], {"iou_best": [], "pointing": [], "average_drop": []}
        for x, mask in inputs:
            a = exact.compute(method, x, layer, class_index, max_n=max_n).cam
            b = fast.compute(method, x, layer, class_index, max_n=max_n).cam
            correlations.append(map_correlation(a, b))
            if mask is not None:
                sa = _scores(a, mask, exact.probabilities_fn(), x, class_index, size)
                sb = _scores(b, mask, fast.probabilities_fn(), x, class_index, size)
                for key in diffs:
                    diffs[key].append(sb[key] - sa[key])
        rows.append({
            "model": name, "method": method, "images": len(inputs),
            "corr_median": float(np.median(correlations)), "corr_worst": float(np.min(correlations)),
            **{f"{key}_mean_diff": float(np.mean(np.abs(v))) if v else float("nan") for key, v in diffs.items()},
            **{f"{key}_bias": float(np.mean(v)) if v else float("nan") for key, v in diffs.items()},
        })
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--vgg16-images", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"native bf16: {detect_bf16()}")
    start = time.perf_counter()
    rows = []
    for name in list_demos():
        demo = load_demo(name)
        samples = [synth.sample_at(i, FRESH_SEED, defect_rate=1.0) for i in range(args.images)]
        inputs = [(demo.preprocess(s.image), s.mask) for s in samples]
        index = list(demo.class_names).index("defective")
        rows += compare(name, demo.model, demo.layer, inputs, METHODS, index, 10)
    if args.vgg16_images:
        keras.utils.set_random_seed(0)
        vgg = keras.applications.VGG16(weights=None)
        head = vgg.get_layer("predictions")
        kernel, bias = head.get_weights()
        head.set_weights([kernel * 2000.0, bias])  # logits spread over ~±10 instead of ~1e-3
        rng = np.random.default_rng(0)
        inputs = [(rng.uniform(-120, 120, (1, 224, 224, 3)).astype(np.float32), None) for _ in range(args.vgg16_images)]
        rows += compare("VGG16 (scaled head)", vgg, "block5_conv3", inputs, ("faster_score_cam",), 0, 32)
    print(f"\ntotal {time.perf_counter() - start:.0f} s\n")
    print("| model | method | images | map r median | map r worst | Δ IoU@best | Δ pointing | Δ Average Drop |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['method']} | {r['images']} | {r['corr_median']:.4f} | {r['corr_worst']:.4f} | "
              f"{r['iou_best_mean_diff']:.4f} | {r['pointing_mean_diff']:.4f} | {r['average_drop_mean_diff']:.4f} |")


if __name__ == "__main__":
    main()
