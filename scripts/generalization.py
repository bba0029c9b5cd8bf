"""How well the demo models hold up beyond the images they were trained on.

    python scripts/generalization.py                    # everything, then writes the cards
    python scripts/generalization.py --skip-folds       # fresh seed and localization only (minutes)

Three measurements, all on images no model saw, all scored with the one localization
protocol (:func:`camcore.metrics.localization`: map upsampled to the 512² pixel mask,
pointing hit within 15 px):

1. **Fresh seed** - every shipped demo model on ``--fresh`` new generated images (half
   defective, every texture family): accuracy, false-alarm rate (clean images called
   defective), detection rate (defective images called defective) and the Grad-CAM
   pointing game on its card's layer; also per family.
2. **Leave one texture family out** - for the default demo's architecture, one model per
   family of :data:`camcore.synth.FAMILIES`, trained from scratch (same recipe and
   augmentation as ``scripts/train_demos.py``, on a smaller budget: ``--fold-train``
   images, ``--fold-epochs`` epochs) on every *other* family, then tested on
   ``--fold-test`` fresh images of the held-out family. Fold results are journaled in
   ``--work``: an interrupted run resumes where it stopped.
3. **Localization** - the default demo on ``--localization`` fresh *defective* images:
   pointing game and IoU at the best global threshold (pixel masks) for every fast CAM
   method on several layers and on fused layers, beside the Sobel-edge and random
   controls; the best method/layer is named.

The figures go into each card's ``generalization`` field (``--no-cards`` to skip), and
Markdown tables for the README are printed (and saved as ``--work``/tables.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_demos, beside this file

import keras  # noqa: E402
import numpy as np  # noqa: E402

import train_demos  # noqa: E402
from camcore import demos, synth  # noqa: E402
from camcore.explainer import Explainer  # noqa: E402
from camcore.methods import METHODS  # noqa: E402
from camcore.metrics import DEFAULT_THRESHOLDS, localization, localization_curves  # noqa: E402
from camcore.metrics.controls import control_maps  # noqa: E402
from camcore.preprocess import preprocess_image  # noqa: E402

FRESH_SEED = 20_261_130  # apart from the training (7), held-out (1_000_010) and test seeds
FOLD_TEST_SEED = 30_261_130
LOCALIZATION_SEED = 40_261_130
TARGETS = {  # issue 14, for the default demo
    "held_out_false_alarm_rate_max": 0.10,
    "held_out_detection_rate_min": 0.90,
    "held_out_pointing_min": 0.85,
    "best_pointing_min": 0.90,
    "best_iou_min": 0.60,
}
# Methods that need one forward+backward pass (or none) per image: the ones a dashboard
# user runs on every image. Score-CAM and Ablation-CAM take a pass per channel.
FAST_METHODS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "xgrad_cam", "hires_cam", "eigen_cam")
# Layers of the default demo (vgg_defect) to compare, finest last; tuples are fused.
LOCALIZATION_LAYERS: tuple[str | tuple[str, ...], ...] = (
    "block5_conv3",
    "top_down28",
    "top_down56",
    "block3_conv2",
    ("top_down56", "top_down28"),
    ("top_down56", "block3_conv2"),
    ("top_down56", "block3_conv2", "block2_conv1"),
)


# --------------------------------------------------------------------------- measurements


def _rates(predicted: np.ndarray, defective: np.ndarray) -> dict[str, float]:
    clean = ~defective
    return {
        "images": int(len(predicted)),
        "accuracy": float((predicted == defective).mean()),
        "false_alarm_rate": float(predicted[clean].mean()) if clean.any() else float("nan"),
        "detection_rate": float(predicted[defective].mean()) if defective.any() else float("nan"),
    }


def classify_and_point(
    model: keras.Model,
    layer: str,
    n: int,
    seed: int,
    families: Sequence[str] | None = None,
    also: tuple[str, str | tuple[str, ...]] | None = None,
) -> dict:
    """Accuracy, false-alarm and detection rates on ``n`` fresh images (half defective) and
    the Grad-CAM pointing game (class "defective", ``layer``) on the defective ones, overall
    and per texture family; ``also`` = (method, layer or fused layers) adds that map's
    pointing game as ``pointing_also``."""
    samples = [synth.sample_at(i, seed, defect_rate=train_demos.DEFECT_RATE, families=families) for i in range(n)]
    x = np.concatenate(
        [preprocess_image(s.image, train_demos.INPUT_SIZE, train_demos.CHANNELS, train_demos.PREPROCESSING) for s in samples]
    )
    predicted = model.predict(x, batch_size=64, verbose=0).argmax(axis=1).astype(bool)
    defective = np.array([s.defective for s in samples])
    explainer = Explainer(model)
    hits = np.zeros(n, bool)
    also_hits = np.zeros(n, bool)
    for i, sample in enumerate(samples):
        if sample.defective:
            cam = explainer.compute("grad_cam", x[i : i + 1], layer, 1).cam
            hits[i] = localization(cam, sample.mask, 0.5).pointing_hit
            if also is not None:
                method, also_layer = also
                also_layer = list(also_layer) if isinstance(also_layer, tuple) else also_layer
                cam = explainer.compute(method, x[i : i + 1], also_layer, 1).cam
                also_hits[i] = localization(cam, sample.mask, 0.5).pointing_hit
            explainer.clear_cache()
    family = np.array([s.family for s in samples])

    def summary(keep: np.ndarray) -> dict:
        found = keep & defective
        result = _rates(predicted[keep], defective[keep]) | {
            "pointing": float(hits[found].mean()) if found.any() else float("nan")
        }
        if also is not None:
            result["pointing_also"] = float(also_hits[found].mean()) if found.any() else float("nan")
        return result

    result = summary(np.ones(n, bool)) | {"seed": seed, "method": "grad_cam", "layer": layer}
    if also is not None:
        result["also"] = {"method": also[0], "layer": "+".join(also[1]) if isinstance(also[1], tuple) else also[1]}
    if families is None or len(families) > 1:
        result["by_family"] = {name: summary(family == name) for name in dict.fromkeys(family)}
    return result


def localization_table(
    model: keras.Model, n: int, seed: int, layers: Sequence[str | tuple[str, ...]], methods: Sequence[str]
) -> dict:
    """Pointing game and IoU at the best global threshold (the threshold with the highest
    mean IoU over the set) per method and layer on ``n`` fresh defective images, with the
    Sobel and random controls; IoU also per defect kind at that threshold."""
    samples = [synth.sample_at(i, seed, defect_rate=1.0) for i in range(n)]
    explainer = Explainer(model)
    hits: dict[str, list[bool]] = {}
    curves: dict[str, list[np.ndarray]] = {}
    labels: dict[str, tuple[str, str]] = {}
    for index, sample in enumerate(samples):
        x = preprocess_image(sample.image, train_demos.INPUT_SIZE, train_demos.CHANNELS, train_demos.PREPROCESSING)
        maps = {}
        for method in methods:
            for layer in layers:
                name = "+".join(layer) if isinstance(layer, tuple) else layer
                key = f"{method}@{name}"
                labels[key] = (METHODS[method].label, name)
                maps[key] = explainer.compute(method, x, list(layer) if isinstance(layer, tuple) else layer, 1).cam
        controls = control_maps(sample.image, seed=index)
        for control, cam in controls.items():
            labels[control] = ({"sobel": "Sobel edges (control)", "random": "random (control)"}[control], "-")
            maps[control] = cam
        for key, cam in maps.items():
            hits.setdefault(key, []).append(localization(cam, sample.mask, 0.5).pointing_hit)
            curves.setdefault(key, []).append(localization_curves(cam, sample.mask)[0])
        explainer.clear_cache()
    kinds = np.array([s.defect for s in samples])
    rows = []
    for key in hits:
        curve = np.mean(curves[key], axis=0)
        best = int(np.argmax(curve))
        per_image = np.array([c[best] for c in curves[key]])
        rows.append(
            {
                "key": key,
                "method": labels[key][0],
                "layer": labels[key][1],
                "pointing": float(np.mean(hits[key])),
                "iou": float(curve[best]),
                "threshold": float(DEFAULT_THRESHOLDS[best]),
                "iou_by_defect": {kind: float(per_image[kinds == kind].mean()) for kind in synth.DEFECTS if (kinds == kind).any()},
            }
        )
    candidates = [row for row in rows if row["key"] not in ("sobel", "random")]
    best_row = max(candidates, key=lambda row: (row["iou"], row["pointing"]))
    return {"images": n, "seed": seed, "defective_only": True, "rows": rows, "best": best_row["key"]}


def parse_key(key: str) -> tuple[str, str | tuple[str, ...]]:
    """``"layer_cam@a+b"`` -> ``("layer_cam", ("a", "b"))``; a single layer stays a string."""
    method, layer = key.split("@", 1)
    return method, tuple(layer.split("+")) if "+" in layer else layer


# --------------------------------------------------------------------------- leave one family out


def leave_one_family_out(
    name: str,
    folds: Sequence[str],
    n_train: int,
    epochs: int,
    n_test: int,
    seed: int,
    work: Path,
    workers: int,
    also: tuple[str, str | tuple[str, ...]] | None = None,
) -> dict:
    """One model per held-out family (see the module docstring); results journaled in
    ``work/folds.json`` so that finished folds are not redone."""
    journal = work / "folds.json"
    done = json.loads(journal.read_text()) if journal.is_file() else {}
    settings = {"architecture": name, "images": n_train, "epochs": epochs, "test_images": n_test, "seed": seed,
                "also": list(also) if also else None}
    if done.get("settings") != settings:
        done = {"settings": settings, "folds": {}}
    todo = [family for family in folds if family not in done["folds"]]
    if todo:
        # One pool for every fold: fold F trains on the pool's images of the other families.
        start = time.perf_counter()
        pool = train_demos.make_pool(n_train, seed, workers=workers)
        print(f"pool of {n_train} images in {time.perf_counter() - start:.0f} s", flush=True)
        for held in todo:
            start = time.perf_counter()
            keep = pool.families != held
            model = train_demos.fit(name, pool.subset(keep), epochs, seed, verbose=0)
            layer = train_demos.ARCHITECTURES[name].layer
            result = classify_and_point(model, layer, n_test, FOLD_TEST_SEED, [held], also)
            # the same model on fresh images of the families it trained on: what the held-out
            # family costs, apart from what the smaller budget costs
            seen = classify_and_point(model, layer, n_test, FOLD_TEST_SEED, [f for f in synth.FAMILIES if f != held], also)
            seen.pop("by_family", None)
            result |= {
                "seen_families": seen,
                "training_images": int(keep.sum()),
                "seconds": round(time.perf_counter() - start, 1),
            }
            done["folds"][held] = result
            journal.write_text(json.dumps(done, indent=2))
            print(f"held out {held}: {json.dumps(result)}", flush=True)
            keras.backend.clear_session()
    folds_result = {family: done["folds"][family] for family in folds}
    keys = ("accuracy", "false_alarm_rate", "detection_rate", "pointing") + (("pointing_also",) if also else ())
    mean = {key: float(np.mean([fold[key] for fold in folds_result.values()])) for key in keys}
    mean_seen = {key: float(np.mean([fold["seen_families"][key] for fold in folds_result.values()])) for key in keys}
    worst = {
        "accuracy": min(fold["accuracy"] for fold in folds_result.values()),
        "false_alarm_rate": max(fold["false_alarm_rate"] for fold in folds_result.values()),
        "detection_rate": min(fold["detection_rate"] for fold in folds_result.values()),
        "pointing": min(fold["pointing"] for fold in folds_result.values()),
    }
    if also:
        worst["pointing_also"] = min(fold["pointing_also"] for fold in folds_result.values())
    return {
        "architecture": name,
        "training": settings
        | {"note": "each fold trains from scratch on the other families with the shipped recipe and augmentation, on a smaller budget"},
        "test_seed": FOLD_TEST_SEED,
        "folds": folds_result,
        "mean": mean,
        "worst": worst,
        "mean_seen_families": mean_seen,
    }


# --------------------------------------------------------------------------- report


def _pct(value: float) -> str:
    return "–" if value != value else f"{100 * value:.1f} %"


def _also_label(result: dict) -> str:
    also = result.get("also")
    return f"{METHODS[also['method']].label} @ `{also['layer']}` pointing" if also else ""


def tables(fresh: dict[str, dict], lofo: dict | None, loc: dict | None) -> str:
    """The Markdown tables for the README."""
    also = next((_also_label(result) for result in fresh.values() if result.get("also")), "")
    lines = [
        "| model | images | accuracy | false alarms | detection | Grad-CAM pointing |" + (f" {also} |" if also else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if also else ""),
    ]
    for name, result in fresh.items():
        extra = f" {_pct(result['pointing_also'])} |" if "pointing_also" in result else (" – |" if also else "")
        lines.append(
            f"| `{name}` (`{result['layer']}`) | {result['images']} | {_pct(result['accuracy'])} | "
            f"{_pct(result['false_alarm_rate'])} | {_pct(result['detection_rate'])} | {_pct(result['pointing'])} |" + extra
        )
    if lofo:
        fold_also = "pointing_also" in lofo["mean"]
        lines += [
            "",
            f"| held-out family (`{lofo['architecture']}` recipe, {lofo['training']['images']} images × "
            f"{lofo['training']['epochs']} epochs per fold) | accuracy | false alarms | detection | Grad-CAM pointing |"
            + (f" {also} |" if fold_also else ""),
            "|---|---:|---:|---:|---:|" + ("---:|" if fold_also else ""),
        ]
        rows = [(f"{family} ({', '.join(synth.FAMILIES[family])})", fold) for family, fold in lofo["folds"].items()]
        rows += [("**mean**", lofo["mean"]), ("worst fold", lofo["worst"])]
        rows += [("same fold models on their training families (mean)", lofo["mean_seen_families"])]
        for label, summary in rows:
            lines.append(
                f"| {label} | {_pct(summary['accuracy'])} | {_pct(summary['false_alarm_rate'])} | "
                f"{_pct(summary['detection_rate'])} | {_pct(summary['pointing'])} |"
                + (f" {_pct(summary['pointing_also'])} |" if fold_also else "")
            )
    if loc:
        lines += [
            "",
            f"| method @ layer ({loc['images']} fresh defective images) | pointing game | IoU @ best global threshold |"
            " IoU by defect kind (scratch / spot / crack / stain / missing) |",
            "|---|---:|---:|---|",
        ]
        ordered = sorted(loc["rows"], key=lambda row: (row["key"] in ("sobel", "random"), -row["iou"]))
        for row in ordered:
            kinds = " / ".join(f"{row['iou_by_defect'].get(kind, float('nan')):.2f}" for kind in synth.DEFECTS)
            marker = "**" if row["key"] == loc["best"] else ""
            layer = f" @ `{row['layer']}`" if row["layer"] != "-" else ""
            lines.append(
                f"| {marker}{row['method']}{layer}{marker} | {_pct(row['pointing'])} | "
                f"{row['iou']:.3f} (t = {row['threshold']:.2f}) | {kinds} |"
            )
    return "\n".join(lines)


def check_targets(lofo: dict | None, loc: dict | None) -> dict:
    """Each issue-14 target with the measured value and whether it is met."""
    result = {}
    if lofo:
        mean = lofo["mean"]
        result["held_out_false_alarm_rate"] = {"target": f"<= {TARGETS['held_out_false_alarm_rate_max']}", "mean": mean["false_alarm_rate"], "worst": lofo["worst"]["false_alarm_rate"], "met": mean["false_alarm_rate"] <= TARGETS["held_out_false_alarm_rate_max"]}
        result["held_out_detection_rate"] = {"target": f">= {TARGETS['held_out_detection_rate_min']}", "mean": mean["detection_rate"], "worst": lofo["worst"]["detection_rate"], "met": mean["detection_rate"] >= TARGETS["held_out_detection_rate_min"]}
        result["held_out_pointing"] = {"target": f">= {TARGETS['held_out_pointing_min']}", "method": "grad_cam", "mean": mean["pointing"], "worst": lofo["worst"]["pointing"], "met": mean["pointing"] >= TARGETS["held_out_pointing_min"]}
        if "pointing_also" in mean:
            result["held_out_pointing_best_method"] = {"target": f">= {TARGETS['held_out_pointing_min']}", "method": lofo["training"]["also"], "mean": mean["pointing_also"], "worst": lofo["worst"]["pointing_also"], "met": mean["pointing_also"] >= TARGETS["held_out_pointing_min"]}
    if loc:
        best = next(row for row in loc["rows"] if row["key"] == loc["best"])
        result["best_pointing"] = {"target": f">= {TARGETS['best_pointing_min']}", "value": best["pointing"], "met": best["pointing"] >= TARGETS["best_pointing_min"], "key": best["key"]}
        result["best_iou"] = {"target": f">= {TARGETS['best_iou_min']}", "value": best["iou"], "met": best["iou"] >= TARGETS["best_iou_min"], "key": best["key"]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/generalization.py", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="demo models for the fresh-seed figures (default: all)")
    parser.add_argument("--fresh", type=int, default=600, help="fresh-seed images per model")
    parser.add_argument("--folds", default=",".join(synth.FAMILIES), help="families to hold out, one fold each")
    parser.add_argument("--fold-train", type=int, default=4000, help="images in the pool every fold trains on (minus its family)")
    parser.add_argument("--fold-epochs", type=int, default=6)
    parser.add_argument("--fold-test", type=int, default=200, help="held-out-family test images per fold")
    parser.add_argument("--localization", type=int, default=300, help="defective images for the method/layer table")
    parser.add_argument("--skip-folds", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("generalization_work"), help="journal and tables folder")
    parser.add_argument("--no-cards", action="store_true", help="do not write the figures into the model cards")
    parser.add_argument("--models-dir", type=Path, default=train_demos.MODELS_DIR, help="where the demo models and cards are")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    models_dir = args.models_dir
    names = args.models.split(",") if args.models else demos.list_demos(models_dir)
    default = demos.DEFAULT_DEMO

    default_card = demos.read_card(default, models_dir)
    default_model = keras.models.load_model(models_dir / default_card["file"], safe_mode=True, compile=False)
    loc = localization_table(default_model, args.localization, LOCALIZATION_SEED, LOCALIZATION_LAYERS, FAST_METHODS)
    (args.work / "localization.json").write_text(json.dumps(loc, indent=2))
    best = parse_key(loc["best"])
    print(f"best method/layer on {args.localization} defective images: {loc['best']}", flush=True)

    fresh = {}
    for name in names:
        card = demos.read_card(name, models_dir)
        model = keras.models.load_model(models_dir / card["file"], safe_mode=True, compile=False)
        fresh[name] = classify_and_point(model, card["layer"], args.fresh, FRESH_SEED, also=best if name == default else None)
        print(f"fresh seed, {name}: {json.dumps({k: v for k, v in fresh[name].items() if k != 'by_family'})}", flush=True)
    lofo = None
    if not args.skip_folds:
        folds = args.folds.split(",")
        lofo = leave_one_family_out(
            default, folds, args.fold_train, args.fold_epochs, args.fold_test, args.seed, args.work, args.workers, best
        )
    targets = check_targets(lofo, loc)
    markdown = tables(fresh, lofo, loc)
    (args.work / "tables.md").write_text(markdown + "\n")
    print(markdown)
    print(json.dumps(targets, indent=2))

    if not args.no_cards:
        stamp = {"script": "scripts/generalization.py", "date": dt.date.today().isoformat()}
        for name in names:
            path = models_dir / f"{name}.json"
            card = json.loads(path.read_text())
            entry = stamp | {"fresh_seed": fresh[name]}
            if name == default:
                entry["localization"] = loc
                if lofo is not None:
                    entry["leave_one_family_out"] = lofo
                elif "leave_one_family_out" in card.get("generalization", {}):
                    entry["leave_one_family_out"] = card["generalization"]["leave_one_family_out"]
                entry["targets"] = check_targets(entry.get("leave_one_family_out"), loc)
            card["generalization"] = entry
            path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
