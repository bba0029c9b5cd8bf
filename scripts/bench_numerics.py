"""Hand-written numerics against the library the field uses, on the evaluation's sizes.

1. ROAD's noisy linear imputation (:func:`camcore.metrics.road.noisy_linear_impute`,
   multigrid-preconditioned conjugate gradients in NumPy/OpenCV) against the same sparse
   system solved as the ROAD authors do, with ``scipy.sparse.linalg.spsolve`` (SuperLU),
   built here (:func:`scipy_impute`). Each case is a whole ROAD curve as the evaluation
   runs it: the 9 removal percentages of :data:`camcore.metrics.DEFAULT_ROAD_PERCENTAGES`
   of a CAM-like map (a random 14x14 map upsampled bilinearly), most and least relevant
   first, at 224x224 and 512x512, 1 and 3 channels, without noise (so both solve the
   same system and the images can be compared).
2. Spearman's rank correlation of two maps (:func:`camcore.metrics.spearman_correlation`)
   against ``scipy.stats.spearmanr`` behind the same checks and constant-map convention
   (:func:`scipy_spearman`), on smooth maps and on ReLU'd maps (a plateau of zeros, many ties).

Times are the minimum over ``--repeats`` runs (wall time, or the process's CPU time with
``--cpu-time``), both implementations timed in the same run, alternately, on ``--threads``
threads (OpenCV's and the BLAS's; default 1: SuperLU and scipy's ranking use one core, and
the evaluation already runs two metric threads). The figures in the docstrings were taken
with ``--cpu-time`` on a shared 2-core machine, where wall times swung 2-4x from run to run.
Needs scipy, which the project itself does not use: ``pip install scipy==1.17.1`` (the
version of the figures in camcore/metrics/road.py and sanity.py).

    python scripts/bench_numerics.py [--repeats 3] [--sizes 224 512] [--threads 1] [--cpu-time]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camcore.metrics import DEFAULT_ROAD_PERCENTAGES, noisy_linear_impute, spearman_correlation  # noqa: E402
from camcore.metrics.road import ROAD_KERNEL  # noqa: E402

try:
    from scipy import sparse, stats
    from scipy.sparse import linalg as sparse_linalg
except ImportError:  # pragma: no cover - a message, not a traceback
    sys.exit("this benchmark needs scipy: pip install scipy==1.17.1")

OFFSETS = [(dy, dx, float(ROAD_KERNEL[dy + 1, dx + 1])) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def scipy_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's imputation without noise, solved by SuperLU: row ``i`` of the system is
    ``d_i u_i - sum_j w_ij u_j = sum_k w_ik v_k`` over the removed pixel's in-image
    neighbours (unknown ``j``, known ``k``; weights 1/6 direct, 1/12 diagonal)."""
    img = image.astype(np.float64)
    h, w, channels = img.shape
    ys, xs = np.nonzero(removed)
    n = ys.size
    index = np.full((h, w), -1, np.int64)
    index[ys, xs] = np.arange(n)
    diagonal = np.zeros(n)
    rows, cols, values = [np.arange(n)], [np.arange(n)], []
    rhs = np.zeros((n, channels))
    for dy, dx, weight in OFFSETS:
        ny, nx = ys + dy, xs + dx
        inside = np.flatnonzero((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w))
        diagonal[inside] += weight
        neighbour = index[ny[inside], nx[inside]]
        unknown = neighbour >= 0
        rows.append(inside[unknown])
        cols.append(neighbour[unknown])
        values.append(np.full(int(unknown.sum()), -weight))
        known = inside[~unknown]
        rhs[known] += weight * img[ny[known], nx[known]]
    matrix = sparse.csc_matrix(
        (np.concatenate([diagonal, *values]), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    solution = np.asarray(sparse_linalg.spsolve(matrix, rhs)).reshape(n, channels)
    out = img.copy()
    out[ys, xs] = solution
    return out.astype(np.float32)


def scipy_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """``scipy.stats.spearmanr`` with camcore's checks and convention for a constant map
    (1.0 when the maps are identical, else 0.0; scipy would return NaN)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape or not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        raise ValueError("maps must be finite and of the same shape")
    if np.ptp(a64) == 0 or np.ptp(b64) == 0:
        return 1.0 if np.array_equal(a64, b64) else 0.0
    return float(stats.spearmanr(a64.ravel(), b64.ravel()).statistic)


def cam_like(rng: np.random.Generator, size: int, relu: bool = False) -> np.ndarray:
    """A 14x14 random map upsampled bilinearly to ``size`` (float32, [0, 1]); ``relu`` keeps
    the part above its median only, a plateau of zeros as a ReLU'd CAM has."""
    small = rng.random((14, 14)).astype(np.float32)
    if relu:
        small = np.maximum(small - np.median(small), 0.0)
        small /= small.max()
    return np.clip(cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def removal_masks(saliency: np.ndarray, order: str) -> list[np.ndarray]:
    """The removed pixels of each ROAD percentage (ties in raster order, as road_curve)."""
    flat = saliency.ravel()
    ranks = np.empty(flat.size, np.int64)
    ranks[np.argsort(-flat if order == "morf" else flat, kind="stable")] = np.arange(flat.size)
    ranks = ranks.reshape(saliency.shape)
    return [ranks < int(round(p * flat.size)) for p in DEFAULT_ROAD_PERCENTAGES]


CLOCK = time.perf_counter
"""The clock of :func:`best_of`: wall time, or the process's CPU time with ``--cpu-time``."""


def best_of(repeats: int, *runs: Callable[[], object]) -> list[float]:
    """Minimum seconds of each run over ``repeats``, the runs alternating."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = CLOCK()
            run()
            best[k] = min(best[k], CLOCK() - start)
    return best


def bench_road(sizes: list[int], repeats: int) -> None:
    print("ROAD imputation: one curve = 9 percentages, seconds (min of", repeats, "runs)")
    print("| size | channels | order | multigrid CG (camcore) | spsolve (scipy) | scipy / camcore | max |Δ| |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for size in sizes:
        saliency = cam_like(rng, size)
        for channels in (1, 3):
            image = rng.random((size, size, channels)).astype(np.float32)
            for order in ("morf", "lerf"):
                masks = removal_masks(saliency, order)
                ours = [noisy_linear_impute(image, m, noise_std=0.0) for m in masks]
                theirs = [scipy_impute(image, m) for m in masks]
                diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
                hand, lib = best_of(
                    repeats,
                    lambda image=image, masks=masks: [noisy_linear_impute(image, m, noise_std=0.0) for m in masks],
                    lambda image=image, masks=masks: [scipy_impute(image, m) for m in masks],
                )
                print(f"| {size}² | {channels} | {order} | {hand:.2f} | {lib:.2f} | {lib / hand:.1f}x | {diff:.1e} |",
                      flush=True)


def bench_spearman(sizes: list[int], repeats: int) -> None:
    print("\nSpearman correlation of two maps, milliseconds (min of", repeats * 10, "runs)")
    print("| size | maps | camcore | scipy.stats.spearmanr | scipy / camcore | max |Δ| |")
    print("|---:|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(1)
    for size in sizes:
        for kind, relu in (("smooth", False), ("ReLU'd (ties)", True)):
            a, b = cam_like(rng, size, relu), cam_like(rng, size, relu)
            diff = abs(spearman_correlation(a, b) - scipy_spearman(a, b))
            hand, lib = best_of(
                repeats * 10, lambda a=a, b=b: spearman_correlation(a, b), lambda a=a, b=b: scipy_spearman(a, b)
            )
            print(f"| {size}² | {kind} | {hand * 1e3:.1f} | {lib * 1e3:.1f} | {lib / hand:.2f}x | {diff:.1e} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--only", choices=("road", "spearman"), default=None)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and BLAS threads (default 1)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time, not wall time: steadier on a shared machine "
                        "(with --threads 1 only)")
    args = parser.parse_args()
    global CLOCK
    if args.cpu_time:
        if args.threads != 1:
            parser.error("--cpu-time needs --threads 1")
        CLOCK = time.process_time
    import scipy
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(args.threads)
    threadpool_limits(args.threads)
    clock = "CPU time" if args.cpu_time else "wall time"
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, OpenCV {cv2.__version__}, {args.threads} thread(s), "
          f"{clock}\n")
    if args.only in (None, "road"):
        bench_road(args.sizes, args.repeats)
    if args.only in (None, "spearman"):
        bench_spearman(args.sizes, args.repeats)


if __name__ == "__main__":
    main()
