"""Ray's overhead on the dashboard's per-channel passes: full Score-CAM on VGG16
(weights=None, block5_conv3, 512 masked passes) run locally and through
:class:`camcore.backends.ray.RayBackend`, side by side on the same machine.

    python scripts/bench_ray_passes.py [--repeats 2] [--nodes 1] [--model vgg16|small]

Fair on a small machine: the Ray cluster started here gets the machine's CPUs and no more
(``--nodes 1``: one node with every CPU, one actor whose TensorFlow uses them all, as the
local run's does; ``--nodes 2``: two nodes splitting them, each batch split across two
actors). The driver waits while the actors compute, so both runs use the same cores.
Runs alternate (local, Ray, local, Ray, ...) so the load of a shared machine hits both
alike; the best of each is compared. Also printed: the first Ray run (shipping the model,
loading it on the actors, tracing), single batches of 16 masked passes timed in
alternation (the median ratio is robust to a shared machine's load changing during the
runs), and the round trip of one small call (a 1-map masked pass of a tiny model), which
is the per-batch overhead. Issue 22's target: Ray <= 1.2x local.

Ray starts its workers at niceness 15 (``RAY_worker_niceness``) so that a node's own
processes come first; on a machine shared with other work that gives the actors a fraction
of the CPU a nice-0 local run gets, which measures the machine's scheduler, not Ray. The
cluster started here runs its workers at niceness 0 (``--worker-niceness`` to change).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from camcore.backends import as_backend  # noqa: E402
from camcore.backends.ray import RayBackend, RayPool  # noqa: E402
from camcore.bench import cpu_kind, small_model  # noqa: E402
from camcore.explainer import Explainer  # noqa: E402
from camcore.maps import map_correlation  # noqa: E402

TARGET = 1.2


def _model(name: str) -> tuple[keras.Model, str]:
    keras.utils.set_random_seed(0)
    if name == "vgg16":
        return keras.applications.VGG16(weights=None), "block5_conv3"
    return small_model(), "c3"


def _start_ray(nodes: int):
    """A Ray cluster of ``nodes`` nodes on 127.0.0.1 sharing this machine's CPUs; returns
    a function that stops it."""
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    cpus = os.cpu_count() or 1
    ray_constants.ENABLE_RAY_CLUSTER = False  # stay on 127.0.0.1 (see tests/ray_cluster.py)
    if nodes == 1:
        ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
        return ray.shutdown
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1",
                                                            "num_cpus": cpus // nodes, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=cpus // nodes)
    ray.init(address=cluster.address, logging_level="WARNING")

    def stop() -> None:
        ray.shutdown()
        cluster.shutdown()

    return stop


def _score_cam_seconds(explainer: Explainer, x: np.ndarray, layer: str) -> tuple[float, np.ndarray]:
    """Seconds of the masked passes of one full Score-CAM (the activations are cached)."""
    explainer.clear_cache()
    explainer.compute("eigen_cam", x, layer)  # the activations pass, same for both
    result = explainer.compute("score_cam", x, layer)
    return result.timings["masked passes"], result.cam


def _batch_ratio(local: Explainer, remote: Explainer, x: np.ndarray, layer: str,
                 pairs: int) -> tuple[float, float, float]:
    """(median seconds of one batch of 16 masked passes here, via Ray, median of the
    per-pair ratios), the two timed in alternation."""
    activations = local.backend.activations(x, layer)[0]
    maps = np.moveaxis(activations, -1, 0)[:16]
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(pairs):
        for name, explainer in (("local", local), ("ray", remote)):
            start = time.perf_counter()
            explainer.backend.masked_scores(x, layer, maps)
            times[name].append(time.perf_counter() - start)
    ratios = np.array(times["ray"]) / np.array(times["local"])
    return float(np.median(times["local"])), float(np.median(times["ray"])), float(np.median(ratios))


def _round_trip_ms(pool: RayPool, repeats: int = 50) -> tuple[float, float]:
    """(ms of a 1-map masked pass of a tiny model via Ray, ms of the same pass here)."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 1))
    tiny = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3, padding="same", name="c")(inp))))
    local = as_backend(tiny)
    remote = RayBackend(as_backend(tiny), pool)
    x = np.ones((1, 16, 16, 1), np.float32)
    maps = np.ones((1, 16, 16), np.float32)
    times = {}
    for name, backend in (("ray", remote), ("local", local)):
        backend.masked_scores(x, "c", maps)  # ship, load, trace
        start = time.perf_counter()
        for _ in range(repeats):
            backend.masked_scores(x, "c", maps)
        times[name] = (time.perf_counter() - start) / repeats * 1000
    return times["ray"], times["local"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (default 2)")
    parser.add_argument("--nodes", type=int, default=1, help="Ray nodes sharing this machine's CPUs (default 1)")
    parser.add_argument("--model", choices=("vgg16", "small"), default="vgg16")
    parser.add_argument("--pairs", type=int, default=8, help="alternating single batches (default 8)")
    parser.add_argument("--worker-niceness", default="0", help="of the Ray workers started here (Ray's default: 15)")
    args = parser.parse_args()
    os.environ["RAY_worker_niceness"] = args.worker_niceness

    print(f"{cpu_kind()}; {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    model, layer = _model(args.model)
    x = np.random.default_rng(1000).uniform(-120, 120, (1, *model.inputs[0].shape[1:])).astype(np.float32)
    local = Explainer(model)
    stop = _start_ray(args.nodes)
    try:
        start = time.perf_counter()
        pool = RayPool.connect()
        print(f"pool connected, {pool.workers} actor(s) started: {time.perf_counter() - start:.1f} s", flush=True)
        remote = Explainer(RayBackend(as_backend(model), pool))
        start = time.perf_counter()
        first, _ = _score_cam_seconds(remote, x, layer)
        print(f"first Ray run (ship + load on {pool.workers} actor(s) + trace + passes): "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        _score_cam_seconds(local, x, layer)  # trace locally too
        runs: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(args.repeats):
            for name, explainer in (("local", local), ("ray", remote)):
                seconds, cam = _score_cam_seconds(explainer, x, layer)
                runs[name].append(seconds)
                print(f"  {name}: {seconds:.1f} s", flush=True)
                if name == "local":
                    reference = cam
                else:
                    print(f"    map r = {map_correlation(cam, reference):.6f}, "
                          f"max |diff| = {np.abs(cam - reference).max():.2e}", flush=True)
        batch_local, batch_ray, batch_ratio = _batch_ratio(local, remote, x, layer, args.pairs)
        ray_ms, local_ms = _round_trip_ms(pool)
        ratio = min(runs["ray"]) / min(runs["local"])
        print(f"\n{args.model}, {args.nodes} Ray node(s) / {pool.workers} actor(s), workers at niceness "
              f"{args.worker_niceness}:\n"
              f"  full Score-CAM masked passes: local {min(runs['local']):.1f} s, Ray {min(runs['ray']):.1f} s "
              f"-> ratio {ratio:.2f} (target <= {TARGET})\n"
              f"  one batch of 16, {args.pairs} alternating pairs: local {batch_local:.2f} s, Ray {batch_ray:.2f} s "
              f"(medians), median ratio {batch_ratio:.2f}\n"
              f"  per-call round trip {ray_ms:.1f} ms via Ray vs {local_ms:.1f} ms here; "
              f"load average at end {os.getloadavg()[0]:.1f}")
        pool.close()
    finally:
        stop()
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
