"""``python -m camcore.evaluate``: the command line of the batch evaluation."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from camcore.dagm import DagmFormatError
from camcore.evaluation.defaults import (
    ALL_METHODS,
    CONTROLS,
    DEFAULT_CURVE_STEPS,
    DEFAULT_MAX_N,
    DEFAULT_WORKERS,
    _check_methods,
)
from camcore.evaluation.journal import journal_path
from camcore.evaluation.results import check_writable, errors, results_only
from camcore.evaluation.runner import evaluate
from camcore.evaluation.archives import open_data
from camcore.evaluation.sources import SYNTHETIC_SIZE, synthetic_items
from camcore.evaluation.spec import load_model_spec
from camcore.evaluation.summary import format_summary, summarize
from camcore.preprocess import PREPROCESSING_MODES



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m camcore.evaluate",
        description="Evaluate CAM methods over a data set (DAGM, MVTec AD or flat; a folder or a .zip) or a generated set.",
    )
    parser.add_argument("--model", default=None, help="demo name or .keras/.h5/.hdf5 file (default: the default demo)")
    parser.add_argument("--preprocessing", choices=sorted(PREPROCESSING_MODES), help="needed for a model file")
    parser.add_argument("--class-index", type=int, default=None, help='index of the "defective" class (default 1)')
    parser.add_argument("--layer", default=None, help="layer to explain (default: the demo's, or the last spatial one)")
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
    parser.add_argument("--road", action="store_true", help="also compute ROAD MoRF/LeRF (slower)")
    parser.add_argument("--sanity", action="store_true",
                        help="also the model-randomization sanity check per image and method (one randomized "
                        "copy of the model, seeded by --seed; Adebayo et al. 2018)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="forward-only passes (masked, ablated, metric passes): fp32 exact (default), "
                        "bf16 copy, or auto (bf16 only where the CPU has native bf16)")
    parser.add_argument("--steps", type=int, default=DEFAULT_CURVE_STEPS, help="deletion/insertion curve steps")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads for metric work")
    parser.add_argument("--overwrite", action="store_true", help="discard the journal of an earlier run")
    cluster = parser.add_argument_group("Ray", "run on a Ray cluster (pip install 'ray[data]'); same results and journal")
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
    chosen = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return _check_methods([*chosen, *CONTROLS])


def _quiet_ray_data() -> None:
    """Ray Data's per-run INFO lines and its note that its progress bars are off (this
    command draws its own) would interleave with the progress bar; warnings still show."""
    try:
        import ray.data  # noqa: F401 - sets up Ray Data's loggers, adjusted below
    except ImportError:
        return  # evaluate_ray says how to install Ray
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        check_writable(args.out, journal_path(args.out))  # a full or read-only disk fails here, not at the end
        methods = _methods_arg(args.methods)
        if args.data is not None:
            dataset = open_data(args.data, split=args.split, category=args.category, train_good=args.train_good)
            items = list(dataset.items)  # ``dataset`` keeps an unpacked zip's folder alive until the end
            for note in dataset.notes:
                print(f"note: {note}", file=sys.stderr)
        else:
            items = synthetic_items(args.synthetic, seed=args.seed, size=args.size, defect_rate=args.defect_rate)
        if args.limit is not None:
            if args.limit < 1:
                raise ValueError(f"--limit must be >= 1, got {args.limit}")
            items = items[: args.limit]
        spec = load_model_spec(
            args.model, preprocessing=args.preprocessing, layer=args.layer, class_index=args.class_index
        )
    except (DagmFormatError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=len(items), unit="image", desc=spec.key, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    start = time.perf_counter()
    try:
        with logging_redirect_tqdm():
            options = dict(
                max_n=args.max_n, road=args.road, curve_steps=args.steps, seed=args.seed, out=args.out,
                sanity=args.sanity, precision=args.precision,
                overwrite=args.overwrite, workers=args.workers, progress=progress,
            )
            if args.ray or args.ray_address:
                from camcore.evaluation.ray_runner import evaluate_ray

                _quiet_ray_data()
                table = evaluate_ray(
                    spec, items, methods, address=args.ray_address, actors=args.ray_actors,
                    cpus_per_actor=args.ray_cpus_per_actor, **options,
                )
            else:
                table = evaluate(spec, items, methods, **options)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\ninterrupted: {bar.n} of {len(items)} images are saved in {journal_path(args.out)}; "
            "run the same command again to finish",
            file=sys.stderr,
        )
        return 130
    except (DagmFormatError, ValueError, ImportError, ConnectionError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the disk filled up during the run
        bar.close()
        print(
            f"error: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; "
            f"{bar.n} of {len(items)} images are saved in {journal_path(args.out)}: "
            "make room and run the same command again to finish",
            file=sys.stderr,
        )
        return 2
    bar.close()
    wall = time.perf_counter() - start
    failed = errors(table)
    evaluated = results_only(table)["image_id"].nunique()
    print(f"\n{spec.key}, layer {spec.layer}: {evaluated} images evaluated, {len(failed)} skipped, "
          f"{wall:.1f} s wall time this run")
    if evaluated:
        print()
        print(format_summary(summarize(table)))
    if len(failed):
        print(f"\n{len(failed)} image(s) could not be read and were skipped:")
        for _, row in failed.iterrows():
            print(f"  {row['error']}")
    print(f"\nresults: {args.out} (journal: {journal_path(args.out)})")
    return 0 if evaluated else 1
