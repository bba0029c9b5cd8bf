"""How well the demo models hold up beyond the images they were trained on.

    python scripts/generalization.py                  # everything (1.5-2 h on a shared 2-core machine), then the cards
    python scripts/generalization.py --skip-folds     # fresh seed and localization only
    python scripts/generalization.py --folds wood,cast --skip-localization

Three measurements, all on generated images no model saw, all scored with the one
localization protocol (:func:`camcore.metrics.localization`: map upsampled to the 512²
pixel mask, pointing hit within 15 px):

1. **Fresh seed** - every shipped demo model on ``--fresh`` new images (half defective,
   every texture family): accuracy, false-alarm rate (clean images called defective),
   detection rate (defective images called defective) and the Grad-CAM pointing game on
   its card's layer (:func:`train_demos.score`, the figures of the card's ``heldout``).
2. **Leave one texture family out** - for the default demo's architecture (``--demo`` picks another), one model per
   family of :data:`camcore.synth.FAMILIES`, trained from scratch with the recipe of
   ``scripts/train_demos.py`` (same architecture, loss and augmentation) on a smaller
   budget (``--fold-train`` pooled images minus the held-out family's, ``--fold-epochs``
   epochs), tested on ``--fold-test`` fresh images of the held-out family only. Beside
   it, on the same test images: one *control* model of the same budget (as many images,
   drawn from every family) - what the small budget costs without the family shift - and
   the shipped model. Results are journaled in ``--work``: an interrupted run resumes at
   the next unfinished model.
3. **Localization** - the default demo on ``--localization`` fresh defective images,
   through ``python -m camcore.evaluate`` (the one batch evaluator) once per layer of
   :data:`LOCALIZATION_LAYERS` with the one-pass methods: pointing game and IoU at each
   method's best global threshold, beside the Sobel-edge and random controls.

Writes ``--work``/generalization.json and tables.md, prints the tables, and puts the
figures into each card's ``generalization`` field (``--no-cards`` to skip).
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
from camcore.evaluation import cli as evaluate_cli  # noqa: E402
from camcore.evaluation.defaults import METHOD_LABELS  # noqa: E402
from camcore.evaluation.results import read_results  # noqa: E402
from camcore.evaluation.summary import summarize  # noqa: E402

# Seeds apart from the training (7), card held-out (1_000_010) and test-suite seeds.
FRESH_SEED = 20_261_130
FOLD_TEST_SEED = 30_261_130
LOCALIZATION_SEED = 40_261_130
TARGETS = {  # issue 14, for the default demo
    "held_out_false_alarm_rate_max": 0.10,
    "held_out_detection_rate_min": 0.90,
    "held_out_pointing_min": 0.85,
    "best_pointing_min": 0.90,
    "best_iou_min": 0.60,
}
# One forward+backward pass (or none) per image: what a dashboard user runs on every
# image. Score-CAM and Ablation-CAM take a pass per channel and are left out here.
FAST_METHODS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "xgrad_cam", "hires_cam", "eigen_cam")
# Layers of vgg_defect, the card's first: the 56x56 top-down output, the 28x28 one and the
# 14x14 encoder end (the old default's kind of layer).
LOCALIZATION_LAYERS = ("top_down56", "top_down28", "block5_conv3", "defect_logit")
# defect_logit is the 56x56x1 map whose sigmoid training fits to the defect masks (mixed
# supervision): a CAM on it shows the model's own segmentation, not a post-hoc reading of
# its features. Its rows are listed but kept out of the "best" pick. (Grad-CAM at
# top_down56 is ReLU of that logit less its bias, see train_demos.build_vgg_defect: it is
# counted, being a CAM of a feature layer.) The former default's sigmoid head, defect_map,
# is such a layer too.
SUPERVISED_LAYERS = ("defect_logit", "defect_map")
# The evaluator also draws deletion/insertion curves, which this table does not report:
# two steps keep them cheap (the localization figures do not depend on them).
CURVE_STEPS = 2
CONTROLS = ("sobel", "random")
FIGURES = ("accuracy", "false_alarm_rate", "detection_rate", "pointing")


# --------------------------------------------------------------------------- fresh seed


def load(name: str, models_dir: Path) -> tuple[keras.Model, dict]:
    card = demos.read_card(name, models_dir)
    return keras.models.load_model(models_dir / card["file"], safe_mode=True, compile=False), card


def fresh_seed(names: Sequence[str], n: int, models_dir: Path) -> dict[str, dict]:
    """Every model's card figures on ``n`` images of :data:`FRESH_SEED`."""
    result = {}
    for name in names:
        model, card = load(name, models_dir)
        result[name] = train_demos.evaluate(model, card["layer"], n, FRESH_SEED) | {
            "seed": FRESH_SEED, "method": "grad_cam", "layer": card["layer"]
        }
        print(f"fresh seed, {name}: {json.dumps(result[name])}", flush=True)
        keras.backend.clear_session()
    return result


# --------------------------------------------------------------------------- leave one family out


def family_test_sets(families: Sequence[str], n: int) -> dict[str, list[synth.Sample]]:
    """``n`` fresh images (half defective) of each family, the same for every model."""
    return {
        family: [
            synth.sample_at(i, FOLD_TEST_SEED, defect_rate=train_demos.DEFECT_RATE, families=[family]) for i in range(n)
        ]
        for family in families
    }


def _pool(n: int, seed: int, workers: int, work: Path) -> train_demos.Pool:
    """The training pool of every fold, cached in ``work`` (it takes minutes to generate)."""
    cache = work / f"pool_{n}_{seed}.npz"
    if cache.is_file():
        data = np.load(cache)
        return train_demos.Pool(data["x"], data["masks"], data["y"], data["families"])
    start = time.perf_counter()
    pool = train_demos.make_pool(n, seed, workers=workers)
    print(f"pool of {n} images in {time.perf_counter() - start:.0f} s", flush=True)
    np.savez(cache, x=pool.x, masks=pool.masks, y=pool.y, families=pool.families)
    return pool


def leave_one_family_out(
    name: str, folds: Sequence[str], n_train: int, epochs: int, n_test: int, seed: int, work: Path, workers: int,
    shipped: keras.Model,
) -> dict:
    """The fold models, the same-budget control and the shipped model on each held-out
    family's test images (see the module docstring); journaled in ``work/folds.json``."""
    journal = work / "folds.json"
    architecture = train_demos.ARCHITECTURES[name]
    # the recipe is part of the settings: a journal of another design is not resumed
    settings = {"architecture": name, "recipe": architecture.description,
                "mask_positive_weight": architecture.mask_positive_weight,
                "pool_images": n_train, "epochs": epochs, "test_images_per_family": n_test, "seed": seed,
                "test_seed": FOLD_TEST_SEED}
    done = json.loads(journal.read_text()) if journal.is_file() else {}
    if done.get("settings") != settings:
        done = {"settings": settings, "folds": {}, "control": {}, "shipped": {}}
    layer = architecture.layer
    tests = family_test_sets(folds, n_test)

    def save() -> None:
        journal.write_text(json.dumps(done, indent=2))

    for family in folds:  # the shipped model (trained on every family): the full-budget reference
        if family not in done["shipped"]:
            done["shipped"][family] = train_demos.score(shipped, layer, tests[family])
    save()
    pool = None
    # every family out leaves about 8/9 of the pool; the control trains on as many images
    # drawn from every family, so that it differs from a fold only by the family shift
    n_fold = int(round(n_train * (len(synth.FAMILIES) - 1) / len(synth.FAMILIES)))
    if any(family not in done["control"] for family in folds):
        pool = pool or _pool(n_train, seed, workers, work)
        keep = np.zeros(n_train, bool)
        keep[np.random.default_rng(seed).permutation(n_train)[:n_fold]] = True
        start = time.perf_counter()
        model = train_demos.fit(name, pool.subset(keep), epochs, seed, verbose=0)
        seconds = round(time.perf_counter() - start, 1)
        for family in folds:
            done["control"][family] = (
                train_demos.score(model, layer, tests[family]) | {"training_images": n_fold, "seconds": seconds}
            )
        save()
        figures = {f: {k: round(v, 3) for k, v in r.items() if k in FIGURES} for f, r in done["control"].items()}
        print(f"control ({n_fold} images, every family) in {seconds} s: {json.dumps(figures)}", flush=True)
        del model
        keras.backend.clear_session()
    for held in folds:
        if held in done["folds"]:
            continue
        pool = pool or _pool(n_train, seed, workers, work)
        keep = pool.families != held
        start = time.perf_counter()
        model = train_demos.fit(name, pool.subset(keep), epochs, seed, verbose=0)
        seconds = round(time.perf_counter() - start, 1)
        done["folds"][held] = (
            train_demos.score(model, layer, tests[held]) | {"training_images": int(keep.sum()), "seconds": seconds}
        )
        save()
        print(f"held out {held} ({int(keep.sum())} images) in {seconds} s: {json.dumps(done['folds'][held])}",
              flush=True)
        del model
        keras.backend.clear_session()
    return summarize_folds(done, folds)


def summarize_folds(done: dict, folds: Sequence[str]) -> dict:
    """Per family and mean/worst over the finished folds, with the control and the shipped
    model on the same families."""
    finished = [family for family in folds if family in done["folds"]]

    def mean(column: str) -> dict[str, float]:
        return {k: float(np.mean([done[column][f][k] for f in finished])) for k in FIGURES} if finished else {}

    worst = {}
    if finished:
        rows = [done["folds"][f] for f in finished]
        worst = {
            "accuracy": min(r["accuracy"] for r in rows),
            "false_alarm_rate": max(r["false_alarm_rate"] for r in rows),
            "detection_rate": min(r["detection_rate"] for r in rows),
            "pointing": min(r["pointing"] for r in rows),
        }
    return {
        "settings": done["settings"] | {
            "note": "each fold trains from scratch on the other families with the shipped recipe and augmentation, "
                    "on a smaller budget; the control has the same budget and sees every family; 'shipped' is the "
                    "shipped model (full budget, every family) on the same test images"
        },
        "families_done": finished,
        "families_missing": [family for family in folds if family not in done["folds"]],
        "folds": {f: done["folds"][f] for f in finished},
        "control": {f: done["control"][f] for f in finished if f in done["control"]},
        "shipped": {f: done["shipped"][f] for f in finished if f in done["shipped"]},
        "mean": mean("folds"),
        "worst": worst,
        "mean_control": mean("control"),
        "mean_shipped": mean("shipped"),
    }


# --------------------------------------------------------------------------- localization


def localization(name: str, n: int, layers: Sequence[str], work: Path) -> dict:
    """``python -m camcore.evaluate`` on ``n`` defective images per layer (journaled by the
    evaluator itself); per method and layer the pointing game and IoU at the best global
    threshold, and the controls (measured on the first layer's run, they ignore the model)."""
    rows = []
    for layer in layers:
        out = work / f"localization_{name}_{layer}_{n}.csv"
        argv = ["--model", name, "--layer", layer, "--synthetic", str(n), "--defect-rate", "1.0",
                "--seed", str(LOCALIZATION_SEED), "--methods", ",".join(FAST_METHODS), "--steps", str(CURVE_STEPS),
                "--out", str(out)]
        print("python -m camcore.evaluate " + " ".join(argv), flush=True)
        status = evaluate_cli.main(argv)
        if status != 0:
            raise RuntimeError(f"camcore.evaluate failed ({status}) on layer {layer}")
        summary = summarize(read_results(out))
        for method, entry in summary.iterrows():
            if method in CONTROLS and layer != layers[0]:
                continue
            rows.append({
                "key": method if method in CONTROLS else f"{method}@{layer}",
                "method": METHOD_LABELS.get(method, method),
                "layer": "-" if method in CONTROLS else layer,
                "pointing": float(entry["pointing_game"]) / 100.0,
                "iou": float(entry["iou_at_best_mean"]),
                "threshold": float(entry["best_threshold"]),
                "images": int(entry["defective_images"]),
            })
    candidates = [row for row in rows if row["layer"] not in ("-", *SUPERVISED_LAYERS)]
    best_iou = max(candidates, key=lambda row: (row["iou"], row["pointing"]))
    best_pointing = max(candidates, key=lambda row: (row["pointing"], row["iou"]))
    supervised = [row for row in rows if row["layer"] in SUPERVISED_LAYERS]
    result = {"images": n, "seed": LOCALIZATION_SEED, "defective_only": True, "evaluator": "python -m camcore.evaluate",
              "curve_steps": CURVE_STEPS, "rows": rows, "best_by_iou": best_iou["key"],
              "best_by_pointing": best_pointing["key"]}
    if supervised:
        result["best_on_supervised_map"] = max(supervised, key=lambda row: (row["iou"], row["pointing"]))["key"]
    return result


# --------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f} %"


def tables(fresh: dict, lofo: dict | None, loc: dict | None) -> str:
    """The Markdown tables for the README."""
    lines = ["| model (explained layer) | fresh images | accuracy | false alarms | detection | Grad-CAM pointing |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in fresh.items():
        lines.append(f"| `{name}` (`{r['layer']}`) | {r['images']} | {_pct(r['accuracy'])} | "
                     f"{_pct(r['false_alarm_rate'])} | "
                     f"{_pct(r['detection_rate'])} | {_pct(r['pointing'])} |")
    if lofo and lofo["families_done"]:
        s = lofo["settings"]
        lines += ["", f"Leave one family out (`{s['architecture']}` recipe, pool of {s['pool_images']} images × "
                  f"{s['epochs']} epochs per model; {s['test_images_per_family']} test images per family). "
                  "Each cell: held-out fold / same-budget control that saw the family / shipped model.", "",
                  "| held-out family | accuracy | false alarms | detection | Grad-CAM pointing |",
                  "|---|---:|---:|---:|---:|"]

        def cells(fold: dict, control: dict | None, shipped: dict | None) -> str:
            return " | ".join(
                " / ".join(_pct(r.get(k) if r else None) for r in (fold, control, shipped)) for k in FIGURES
            )

        for family in lofo["families_done"]:
            label = f"{family} ({', '.join(synth.FAMILIES[family])})"
            row_cells = cells(lofo["folds"][family], lofo["control"].get(family), lofo["shipped"].get(family))
            lines.append(f"| {label} | {row_cells} |")
        lines.append(f"| **mean** | {cells(lofo['mean'], lofo['mean_control'], lofo['mean_shipped'])} |")
        lines.append(f"| worst fold | {' | '.join(_pct(lofo['worst'][k]) for k in FIGURES)} |")
        if lofo["families_missing"]:
            lines.append(f"\nNot run (time): {', '.join(lofo['families_missing'])}.")
    if loc:
        lines += ["", f"| method @ layer ({loc['images']} fresh defective images) | pointing game | "
                  "IoU @ best global threshold |",
                  "|---|---:|---:|"]
        for row in sorted(loc["rows"], key=lambda r: (r["layer"] == "-", r["layer"] in SUPERVISED_LAYERS, -r["iou"])):
            bold = "**" if row["key"] in (loc["best_by_iou"], loc["best_by_pointing"]) else ""
            where = f" @ `{row['layer']}`" if row["layer"] != "-" else ""
            if row["layer"] in SUPERVISED_LAYERS:
                where += " (mask-supervised head)"
            lines.append(f"| {bold}{row['method']}{where}{bold} | {_pct(row['pointing'])} | "
                         f"{row['iou']:.3f} (t = {row['threshold']:.2f}) |")
    return "\n".join(lines)


def check_targets(lofo: dict | None, loc: dict | None) -> dict:
    """Each issue-14 target with the measured value and whether it is met (never rounded)."""
    result = {}
    if lofo and lofo["families_done"]:
        m, w = lofo["mean"], lofo["worst"]
        false_alarm_max = TARGETS["held_out_false_alarm_rate_max"]
        result["held_out_false_alarm_rate"] = {"target": f"<= {false_alarm_max}", "mean": m["false_alarm_rate"],
                                               "worst": w["false_alarm_rate"],
                                               "met": m["false_alarm_rate"] <= false_alarm_max}
        detection_min = TARGETS["held_out_detection_rate_min"]
        result["held_out_detection_rate"] = {"target": f">= {detection_min}", "mean": m["detection_rate"],
                                             "worst": w["detection_rate"], "met": m["detection_rate"] >= detection_min}
        pointing_min = TARGETS["held_out_pointing_min"]
        result["held_out_pointing"] = {"target": f">= {pointing_min}", "method": "grad_cam", "mean": m["pointing"],
                                       "worst": w["pointing"], "met": m["pointing"] >= pointing_min}
        missing = f"; not run: {', '.join(lofo['families_missing'])}" if lofo["families_missing"] else ""
        result["held_out_note"] = (
            f"measured on reduced-budget fold models, families {', '.join(lofo['families_done'])}" + missing
        )
    if loc:
        by_iou = next(r for r in loc["rows"] if r["key"] == loc["best_by_iou"])
        by_pointing = next(r for r in loc["rows"] if r["key"] == loc["best_by_pointing"])
        result["best_pointing"] = {"target": f">= {TARGETS['best_pointing_min']}", "key": by_pointing["key"],
                                   "value": by_pointing["pointing"],
                                   "met": by_pointing["pointing"] >= TARGETS["best_pointing_min"]}
        result["best_iou"] = {"target": f">= {TARGETS['best_iou_min']}", "key": by_iou["key"], "value": by_iou["iou"],
                              "pointing_of_that_map": by_iou["pointing"],
                              "met": by_iou["iou"] >= TARGETS["best_iou_min"]}
        if "best_on_supervised_map" in loc:
            row = next(r for r in loc["rows"] if r["key"] == loc["best_on_supervised_map"])
            result["supervised_map"] = {"key": row["key"], "pointing": row["pointing"], "iou": row["iou"],
                                        "note": "CAM on the mask-supervised map head (defect_logit, or defect_map of "
                                                "the former default); not counted as a CAM method/layer"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/generalization.py", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="demo models for the fresh-seed figures (default: all)")
    parser.add_argument("--demo", default=None,
                        help="the demo (and train_demos architecture) the folds retrain and localization measures "
                             "(default: the default demo); e.g. vgg_defect_segdec trained into $CAMSTUDIO_ASSETS")
    parser.add_argument("--fresh", type=int, default=600, help="fresh-seed images per model")
    parser.add_argument("--folds", default=",".join(synth.FAMILIES), help="families to hold out, one model each")
    parser.add_argument("--fold-train", type=int, default=8000,
                        help="pooled training images, the shipped models' own (a fold drops its family's)")
    parser.add_argument("--fold-epochs", type=int, default=3, help="the shipped vgg_defect has 10")
    parser.add_argument("--fold-test", type=int, default=200, help="test images per held-out family (half defective)")
    parser.add_argument("--localization", type=int, default=300, help="defective images for the method/layer table")
    parser.add_argument("--skip-fresh", action="store_true")
    parser.add_argument("--skip-folds", action="store_true")
    parser.add_argument("--skip-localization", action="store_true")
    parser.add_argument("--seed", type=int, default=7, help="training seed of the fold and control models")
    parser.add_argument("--workers", type=int, default=2, help="processes generating the training pool")
    parser.add_argument("--work", type=Path, default=Path("generalization_work"), help="journal, caches and tables")
    parser.add_argument("--no-cards", action="store_true", help="do not write the figures into the model cards")
    parser.add_argument("--models-dir", type=Path, default=train_demos.MODELS_DIR)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",") if args.models else demos.list_demos(args.models_dir)
    default = args.demo or demos.DEFAULT_DEMO
    if default not in train_demos.ARCHITECTURES:
        parser.error(f"unknown demo {default!r}; choose from {list(train_demos.ARCHITECTURES)}")
    folds = args.folds.split(",")
    for family in folds:
        if family not in synth.FAMILIES:
            parser.error(f"unknown family {family!r}; choose from {list(synth.FAMILIES)}")
    saved_path = args.work / "generalization.json"

    def saved() -> dict:
        return json.loads(saved_path.read_text()) if saved_path.is_file() else {}

    # each part is computed only when asked for, else read back from an earlier run, so the
    # parts can run as separate (even concurrent) processes sharing --work
    fresh = None if args.skip_fresh else fresh_seed(names, args.fresh, args.models_dir)
    if args.skip_localization:
        loc = None
    else:
        model, _ = load(default, args.models_dir)
        present = {layer.name for layer in model.layers}
        loc = localization(
            default, args.localization, [layer for layer in LOCALIZATION_LAYERS if layer in present], args.work
        )
        del model
    journal = args.work / "folds.json"
    if not args.skip_folds:
        shipped, _ = load(default, args.models_dir)
        lofo = leave_one_family_out(default, folds, args.fold_train, args.fold_epochs, args.fold_test, args.seed,
                                    args.work, args.workers, shipped)
    elif journal.is_file():
        lofo = summarize_folds(json.loads(journal.read_text()), folds)
    else:
        lofo = saved().get("leave_one_family_out")
    result = saved()
    fresh = fresh if fresh is not None else result.get("fresh_seed", {})
    loc = loc if loc is not None else result.get("localization")
    targets = check_targets(lofo, loc)
    saved_path.write_text(json.dumps(
        {"fresh_seed": fresh, "localization": loc, "leave_one_family_out": lofo, "targets": targets}, indent=2
    ))
    markdown = tables(fresh, lofo, loc)
    (args.work / "tables.md").write_text(markdown + "\n")
    print(markdown)
    print(json.dumps(targets, indent=2))

    if not args.no_cards:
        stamp = {"script": "scripts/generalization.py", "date": dt.date.today().isoformat()}
        for name in names:
            path = args.models_dir / f"{name}.json"
            card = json.loads(path.read_text())
            entry = stamp | {"fresh_seed": fresh.get(name)}
            if name == default:
                entry |= {"leave_one_family_out": lofo, "localization": loc, "targets": targets}
            card["generalization"] = entry
            path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
