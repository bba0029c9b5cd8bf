"""``python -m camcore.evaluate``: the command line of the batch evaluation."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from camcore.dagm import DagmFormatError
from camcore.evaluation.archives import open_data
from camcore.evaluation.defaults import (
    ALL_METHODS,
    CONTROLS,
    DEFAULT_CURVE_STEPS,
    DEFAULT_MAX_N,
    DEFAULT_WORKERS,
    check_methods,
)
from camcore.evaluation.journal import journal_path
from camcore.evaluation.pair_summary import format_pair_summary
from camcore.evaluation.results import check_writable, errors, results_only
from camcore.evaluation.runner import evaluate
from camcore.evaluation.settings import metric_choice, unavailable_methods
from camcore.evaluation.sources import SYNTHETIC_SIZE, EvalItem, synthetic_items
from camcore.evaluation.spec import ModelSpec, load_model_spec
from camcore.evaluation.summary import format_summary, summarize
from camcore.metrics import METRICS, default_metric_keys, select_metrics, selectable_metric_keys
from camcore.metrics.agreement import DEFAULT_AGREEMENT_THRESHOLD
from camcore.metrics.road import METRIC as ROAD
from camcore.metrics.sanity import METRIC as SANITY
from camcore.preprocess import PREPROCESSING_MODES

ALL_METRICS = "all"
"""``--metrics all``: every registered metric, the optional ones included."""


def _metrics_help() -> str:
    keys = [f"{key}{' (optional)' if METRICS[key].optional else ''}" for key in selectable_metric_keys()]
    return (f"metrics to compute (space or comma separated, or {ALL_METRICS!r}): {', '.join(keys)}; "
            f"default: {' '.join(default_metric_keys())}")



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m camcore.evaluate",
        description="Evaluate CAM methods over a data set (DAGM, MVTec AD or flat; a folder or a .zip) "
        "or a generated set.",
    )
    parser.add_argument("--model", default=None, help="demo name or .keras/.h5/.hdf5 file (default: the default demo)")
    parser.add_argument("--preprocessing", choices=sorted(PREPROCESSING_MODES), help="needed for a model file")
    parser.add_argument("--class-index", type=int, default=None, help='index of the "defective" class (default 1)')
    parser.add_argument("--layer", default=None, help="layer to explain (default: the demo's, or the last spatial one)")
    second = parser.add_argument_group(
        "second model", "evaluate every image with a second model too and compare the two models' maps")
    second.add_argument("--model-b", default=None, metavar="MODEL", help="model B: a demo name or a model file")
    second.add_argument("--preprocessing-b", choices=sorted(PREPROCESSING_MODES), help="needed for a model B file")
    second.add_argument("--layer-b", default=None, metavar="LAYER", help="model B's layer (default: its own)")
    second.add_argument("--agreement-threshold", type=float, default=DEFAULT_AGREEMENT_THRESHOLD, metavar="T",
                        help="threshold of the two maps' regions whose IoU is reported (default %(default)s)")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="DAGM, MVTec AD or flat folder, or a .zip of one")
    data.add_argument("--synthetic", type=int, metavar="N", help="generate N DAGM-style images instead")
    parser.add_argument("--split", choices=("Train", "Test"), default=None, help="DAGM split (default both)")
    parser.add_argument("--category", default=None, help="MVTec AD: evaluate this category only (default all)")
    parser.add_argument("--train-good", action="store_true", help="MVTec AD: add train/good/ as clean images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated set and the random control")
    parser.add_argument("--defect-rate", type=float, default=0.5, help="share of defective generated images")
    parser.add_argument("--size", type=int, default=SYNTHETIC_SIZE, help="side of generated images in pixels")
    parser.add_argument(
        "--methods", nargs="+", default=None,
        help=f"methods (space or comma separated; default all: {', '.join(ALL_METHODS)}); "
        "the sobel and random controls are always added",
    )
    parser.add_argument("--max-n", type=int, default=DEFAULT_MAX_N, help="Faster-Score-CAM channels")
    parser.add_argument("--metrics", nargs="+", default=None, metavar="METRIC", help=_metrics_help())
    parser.add_argument("--road", action="store_true",
                        help=f"add {ROAD.key} to the metrics: ROAD MoRF/LeRF (Rong et al. 2022; slower)")
    parser.add_argument("--sanity", action="store_true",
                        help=f"add {SANITY.key} to the metrics: the model-randomization sanity check per image and "
                        "method (one randomized copy of the model, seeded by --seed; Adebayo et al. 2018)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="forward-only passes (masked, ablated, metric passes): fp32 exact (default), "
                        "bf16 copy, or auto (bf16 only where the CPU has native bf16)")
    parser.add_argument("--steps", type=int, default=DEFAULT_CURVE_STEPS, help="deletion/insertion curve steps")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads for metric work")
    parser.add_argument("--overwrite", action="store_true", help="discard the journal of an earlier run")
    cluster = parser.add_argument_group(
        "Ray", "run on a Ray cluster (pip install 'ray[data]'); same results and journal"
    )
    cluster.add_argument("--ray", action="store_true", help="run on Ray: $RAY_ADDRESS if set, else a local instance")
    cluster.add_argument("--ray-address", metavar="ADDR", default=None, help="Ray cluster to use (implies --ray)")
    cluster.add_argument("--ray-actors", type=int, default=None, metavar="N",
                     help="actors, each loading the model once (default: cluster CPUs / CPUs per actor)")
    cluster.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="C",
                     help="CPUs each actor reserves and sizes its thread pools to (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="results file, .parquet or .csv")
    return parser


def _methods_arg(values: Sequence[str] | None) -> list[str]:
    if not values:
        return list(ALL_METHODS)
    return check_methods([*_split(values), *CONTROLS])


def _split(values: Sequence[str]) -> list[str]:
    """Values given space or comma separated, as one list."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _metrics_arg(values: Sequence[str] | None, road: bool, sanity: bool) -> list[str]:
    """The metric keys of ``--metrics`` (``all``: every one) with ``--road`` / ``--sanity``
    added; ValueError naming an unknown one."""
    chosen = None if not values else _split(values)
    if chosen is not None and ALL_METRICS in chosen:
        chosen = list(selectable_metric_keys())
    keys = metric_choice(chosen, road=road, sanity=sanity)
    select_metrics(keys)
    return keys


def _quiet_ray_data() -> None:
    """Ray Data's per-run INFO lines and its note that its progress bars are off (this
    command draws its own) would interleave with the progress bar; warnings still show."""
    try:
        import ray.data  # noqa: F401 - sets up Ray Data's loggers, adjusted below
    except ImportError:
        return  # evaluate_ray says how to install Ray
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


@dataclass(frozen=True)
class _Run:
    """A checked command line: what to evaluate, with which model, on which images
    (``data``: the opened data set, which keeps an unpacked zip's folder alive until the
    run ends; None for a generated set)."""

    spec: ModelSpec
    items: list[EvalItem]
    methods: list[str]
    metrics: list[str]
    data: Any = None
    spec_b: ModelSpec | None = None


def _checked_run(args: argparse.Namespace) -> _Run:
    """The run the arguments ask for; ValueError / DagmFormatError / FileNotFoundError
    naming what is wrong, before any work."""
    check_writable(args.out, journal_path(args.out))  # a full or read-only disk fails here, not at the end
    methods = _methods_arg(args.methods)
    metric_keys = _metrics_arg(args.metrics, args.road, args.sanity)
    dataset = None
    if args.data is not None:
        dataset = open_data(args.data, split=args.split, category=args.category, train_good=args.train_good)
        items = list(dataset.items)
        for note in dataset.notes:
            print(f"note: {note}", file=sys.stderr)
    else:
        items = synthetic_items(args.synthetic, seed=args.seed, size=args.size, defect_rate=args.defect_rate)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        items = items[: args.limit]
    spec = load_model_spec(args.model, preprocessing=args.preprocessing, layer=args.layer, class_index=args.class_index)
    for method, reason in unavailable_methods(spec, methods).items():
        print(f"note: {method} is not available for this model ({reason}); it is left out", file=sys.stderr)
    spec_b = _second_spec(args, [m for m in methods if m not in unavailable_methods(spec, methods)])
    return _Run(spec, list(items), methods, metric_keys, dataset, spec_b)


def _second_spec(args: argparse.Namespace, methods: Sequence[str]) -> ModelSpec | None:
    """Model B of ``--model-b`` (None without it); a note per method it cannot serve."""
    if args.model_b is None:
        if args.layer_b is not None or args.preprocessing_b is not None:
            raise ValueError("--layer-b and --preprocessing-b need --model-b")
        return None
    if not 0.0 <= args.agreement_threshold <= 1.0:
        raise ValueError(f"--agreement-threshold must be in [0, 1], got {args.agreement_threshold}")
    try:
        spec_b = load_model_spec(args.model_b, preprocessing=args.preprocessing_b, layer=args.layer_b)
    except ValueError as exc:
        raise ValueError(f"model B: {exc}".replace("--preprocessing,", "--preprocessing-b,")) from exc
    for method, reason in unavailable_methods(spec_b, methods).items():
        print(f"note: {method} is not available for model B ({reason}): model A's rows only", file=sys.stderr)
    return spec_b


def _evaluate(args: argparse.Namespace, run: _Run, progress: Callable[[int, int], None]) -> pd.DataFrame:
    """The evaluation of ``run``, locally or on Ray."""
    options: dict[str, Any] = dict(
        max_n=args.max_n, metrics=run.metrics, curve_steps=args.steps, seed=args.seed, out=args.out,
        precision=args.precision, overwrite=args.overwrite, workers=args.workers, progress=progress,
        model_b=run.spec_b, agreement_threshold=args.agreement_threshold,
    )
    if args.ray or args.ray_address:
        from camcore.evaluation.ray_runner import evaluate_ray

        _quiet_ray_data()
        return evaluate_ray(run.spec, run.items, run.methods, address=args.ray_address, actors=args.ray_actors,
                            cpus_per_actor=args.ray_cpus_per_actor, **options)
    return evaluate(run.spec, run.items, run.methods, **options)


def _stopped(exc: BaseException, saved: int, run: _Run, out: Path) -> int:
    """Say why the run stopped and what is saved; the exit status."""
    journal = journal_path(out)
    if isinstance(exc, KeyboardInterrupt):
        print(f"\ninterrupted: {saved} of {len(run.items)} images are saved in {journal}; "
              "run the same command again to finish", file=sys.stderr)
        return 130
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):  # e.g. the disk filled up
        print(f"error: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; "
              f"{saved} of {len(run.items)} images are saved in {journal}: "
              "make room and run the same command again to finish", file=sys.stderr)
        return 2
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _report(run: _Run, table: pd.DataFrame, wall: float, out: Path) -> int:
    """Print the summary, the skipped images and where the results are; the exit status."""
    spec = run.spec
    failed = errors(table)
    evaluated = results_only(table)["image_id"].nunique()
    against = "" if run.spec_b is None else f" against {run.spec_b.key}, layer {run.spec_b.layer}"
    print(f"\n{spec.key}, layer {spec.layer}{against}: {evaluated} images evaluated, {len(failed)} skipped, "
          f"{wall:.1f} s wall time this run")
    if evaluated:
        print()
        print(format_summary(summarize(table)) if run.spec_b is None else format_pair_summary(table))
    if len(failed):
        print(f"\n{len(failed)} image(s) could not be read and were skipped:")
        for _, row in failed.iterrows():
            print(f"  {row['error']}")
    print(f"\nresults: {out} (journal: {journal_path(out)})")
    return 0 if evaluated else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        run = _checked_run(args)
    except (DagmFormatError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=len(run.items), unit="image", desc=run.spec.key, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        with logging_redirect_tqdm():
            table = _evaluate(args, run, lambda done, total: bar.update(done - bar.n))
    except (KeyboardInterrupt, DagmFormatError, ValueError, ImportError, OSError) as exc:
        bar.close()
        return _stopped(exc, bar.n, run, args.out)
    bar.close()
    return _report(run, table, time.perf_counter() - start, args.out)
