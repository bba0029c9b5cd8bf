"""Wall time of the same evaluation run locally and on Ray (a local Ray instance by default).

    python scripts/bench_ray.py [--n 100] [--model vgg_defect] [--methods grad_cam ...]
                                [--ray-address ADDR] [--dir DIR]

Each run is a fresh ``python -m camcore.evaluate`` process, timed from start to exit, so
both pay for importing TensorFlow and loading the model; the Ray run also pays for
starting Ray and one model load per actor. The two results tables are then compared
(same images and methods; the largest metric difference, timing columns aside).
Issue 12's target on a 2-core machine: Ray <= 1.2 x local for 100 images.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_RATIO = 1.2
TIMING_COLUMNS = {"seconds", "metric_seconds"}


def _run(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def _largest_difference(local: pd.DataFrame, remote: pd.DataFrame) -> tuple[float, str]:
    key = ["image_id", "method"]
    local = local.sort_values(key).reset_index(drop=True)
    remote = remote.sort_values(key).reset_index(drop=True)
    if not local[key].equals(remote[key]):
        raise SystemExit("the two runs evaluated different images or methods")
    worst, where = 0.0, ""
    for column in local.columns:
        if column in TIMING_COLUMNS or pd.api.types.is_bool_dtype(local[column]):
            continue
        if not pd.api.types.is_numeric_dtype(local[column]):
            continue
        gap = np.abs(local[column].to_numpy(float) - remote[column].to_numpy(float))
        if np.any(~np.isnan(gap)) and np.nanmax(gap) > worst:
            worst, where = float(np.nanmax(gap)), column
    return worst, where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="generated images (default 100)")
    parser.add_argument("--model", default=None, help="demo name or model file (default: the default demo)")
    parser.add_argument("--methods", nargs="+", default=None, help="methods (default: all)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster (default: a local instance)")
    parser.add_argument("--dir", type=Path, default=None, help="keep the tables and logs here")
    args = parser.parse_args()

    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench_ray_"))
    folder.mkdir(parents=True, exist_ok=True)
    common = [sys.executable, "-m", "camcore.evaluate", "--synthetic", str(args.n), "--overwrite"]
    if args.model:
        common += ["--model", args.model]
    if args.methods:
        common += ["--methods", *args.methods]
    on_ray = ["--ray"] + (["--ray-address", args.ray_address] if args.ray_address else [])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    # Read TensorFlow from disk once so that neither timed run pays a cold cache.
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, capture_output=True)
    local_s = _run([*common, "--out", str(folder / "local.parquet")], folder / "local.log")
    ray_s = _run([*common, *on_ray, "--out", str(folder / "ray.parquet")], folder / "ray.log")

    from camcore.evaluation import read_results

    worst, where = _largest_difference(read_results(folder / "local.parquet"), read_results(folder / "ray.parquet"))
    ratio = ray_s / local_s
    print(f"{args.n} images, {os.cpu_count()} CPUs: local {local_s:.1f} s, Ray {ray_s:.1f} s, "
          f"ratio {ratio:.2f} (target <= {TARGET_RATIO})")
    print(f"largest metric difference between the runs: {worst:.2g}" + (f" ({where})" if where else ""))
    print(f"tables and logs: {folder}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
