"""The dashboard's per-channel passes on Ray (camcore.backends.ray): the same maps as
local on a two-node cluster on 127.0.0.1 started here, a worker killed mid-run costs only
a delay, an unreachable cluster leaves the passes on this server and says so, and the
Compare page runs with RAY_ADDRESS set and says where its passes ran."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from ray_cluster import worker_processes
from shown_panels import tiles
from streamlit.testing.v1 import AppTest

from camcore.backends import as_backend
from camcore.backends.ray import (
    ClusterUnavailable,
    RayBackend,
    RayPool,
    on_cluster,
    passes_placement,
    split_rows,
)
from camcore.explainer import Explainer
from camcore.maps import map_correlation
from camcore.scheduler import PassScheduler
from dashboard.cli import ray_address_option

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
LAYER = "conv2"
CHANNELS = 24
BATCH = 4  # 6 steps of masked passes: room to kill a worker between two of them


def _model() -> keras.Model:
    keras.utils.set_random_seed(7)
    inp = keras.Input((48, 48, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu", name=LAYER)(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name="ray_test")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return _model()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 1, (1, 48, 48, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def local_maps(model, image) -> dict[str, np.ndarray]:
    explainer = Explainer(model, batch_size=BATCH)
    return {method: explainer.compute(method, image, LAYER).cam for method in ("score_cam", "ablation_cam")}


def _assert_same_map(remote: np.ndarray, local: np.ndarray) -> None:
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-5)
    assert round(map_correlation(remote, local), 4) == 1.0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ----------------------------------------------------------------- no cluster


def test_batches_split_into_contiguous_near_equal_parts():
    assert split_rows(16, 2) == [slice(0, 8), slice(8, 16)]
    assert split_rows(5, 2) == [slice(0, 2), slice(2, 5)]
    assert split_rows(1, 3) == [slice(0, 1)]  # never an empty part
    assert split_rows(7, 3) == [slice(0, 2), slice(2, 5), slice(5, 7)]
    assert split_rows(0, 2) == [] and split_rows(4, 0) == []


class _HalfLostPool:
    """A pool of two 'workers' whose second part is always lost; the first part runs on a
    backend of its own (as an actor would)."""

    workers = 2

    def __init__(self, model: keras.Model) -> None:
        self.backend = as_backend(model)
        self.parts: list[int] = []

    def ship(self, model, target="logit"):
        return "shipped"

    def run(self, shipped, name, parts, shared, timeout):
        self.parts += [len(part) for part in parts]
        first = self.backend.masked_scores(shared[0], shared[1], parts[0], *shared[2:]) if name == "masked_scores" \
            else self.backend.ablated_scores(shared[0], shared[1], parts[0], *shared[2:])
        return [first, RuntimeError("worker lost\nstack trace")]


def test_a_part_the_cluster_lost_runs_here_in_its_place(model, image, local_maps):
    pool = _HalfLostPool(model)
    backend = RayBackend(as_backend(model), pool)  # type: ignore[arg-type]
    explainer = Explainer(backend, batch_size=BATCH)
    for method, local in local_maps.items():
        _assert_same_map(explainer.compute(method, image, LAYER).cam, local)
    steps = 2 * CHANNELS // BATCH  # both methods, all channels varying
    assert pool.parts == [BATCH // 2] * (2 * steps)
    assert backend.remote_batches == steps and backend.local_batches == steps
    assert passes_placement(backend) == (
        f"per-channel passes on Ray (2 workers); {steps} batch parts ran on this server after Ray failed (worker lost)"
    )


def test_an_actor_keeps_a_bounded_number_of_models(monkeypatch, image):
    import ray

    from camcore.backends import ray as ray_backend
    from camcore.raycluster import keras_model_bytes, weights_fingerprint

    # the actor's code in this process; its thread caps would outlive the test
    monkeypatch.setattr(ray_backend, "cap_threads", lambda threads: None)
    store: dict[str, tuple[bytes, str]] = {}
    monkeypatch.setattr(ray, "get", lambda ref: store[ref])
    actor = ray_backend.PassActor(cpus=1, max_models=2)
    models = []
    for seed in range(3):
        model = _model()
        if seed:  # the same architecture with other weights
            keras.utils.set_random_seed(seed)
            model = keras.models.clone_model(model)
        shipped = ray_backend.ShippedModel(weights_fingerprint(model), f"ref{seed}", "logit")
        store[shipped.ref] = keras_model_bytes(model)
        models.append((model, shipped))
    maps = np.random.default_rng(2).uniform(0, 1, (3, 24, 24)).astype(np.float32)
    for model, shipped in models[:2] + models[:1] + models[2:]:  # the third evicts the least recent: the second
        scores = actor.run(shipped, "masked_scores", maps, image, LAYER, None, "fp32")
        np.testing.assert_allclose(scores, as_backend(model).masked_scores(image, LAYER, maps), rtol=0, atol=1e-5)
    assert len({shipped.weights for _, shipped in models}) == 3
    assert list(actor.backends) == [(models[0][1].weights, "logit"), (models[2][1].weights, "logit")]


class _SchedulerWithALaggingNode:
    """Ray as seen by ``_start_workers`` while node B's resources are not yet known to the
    scheduler: a soft node-affinity request for B runs on A; a hard one runs on B."""

    class exceptions:  # noqa: N801 - stands in for ray.exceptions
        class GetTimeoutError(Exception):
            pass

        class RayError(Exception):
            pass

    A, B = "a" * 56, "b" * 56  # node IDs as Ray spells them

    def __init__(self) -> None:
        self.placed: list[tuple[str, bool]] = []  # (target node, soft)
        self.killed: list[int] = []

    def nodes(self):
        return [{"NodeID": node, "Alive": True, "Resources": {"CPU": 1.0}} for node in (self.A, self.B)]

    def remote(self, cls):
        ray = self

        class _Options:
            def options(self, scheduling_strategy, **_):
                target, soft = scheduling_strategy.node_id, scheduling_strategy.soft
                ray.placed.append((target, soft))
                node = ray.A if soft else target
                index = len(ray.placed)

                class _Handle:
                    pid = index

                    class describe:  # noqa: N801 - an actor method's .remote
                        @staticmethod
                        def remote():
                            from camcore.raycluster import software_versions

                            return {"node": node, "pid": index, "cpus": 1, "versions": software_versions()}

                class _Creator:
                    @staticmethod
                    def remote(*_):
                        return _Handle()

                return _Creator()

        return _Options()

    def get(self, ref, timeout=None):
        return ref

    def kill(self, handle, no_restart=True):
        self.killed.append(handle.pid)


def test_an_actor_the_scheduler_put_on_the_wrong_node_is_pinned_to_its_own():
    from camcore.backends import ray as ray_backend

    fake = _SchedulerWithALaggingNode()
    workers = ray_backend._start_workers(fake, retries=1, timeout=5, max_models=2)
    a, b = fake.A, fake.B
    assert [worker.node for worker in workers] == [a, b]  # one actor per node after all
    assert fake.placed == [(a, True), (b, True), (b, False)]
    assert fake.killed == [2]  # the misplaced one, not left running beside the other


def test_an_unreachable_cluster_is_reported_within_seconds():
    address = f"127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    with pytest.raises(ClusterUnavailable, match=rf"Ray cluster at {address} unreachable: nothing answers"):
        RayPool.connect(address, probe_timeout=2.0)
    assert time.perf_counter() - start < 10  # Ray's own connect retried for minutes
    import ray

    assert not ray.is_initialized()
    backend = as_backend(_model())
    assert on_cluster(backend, None) is backend
    assert passes_placement(backend) == "per-channel passes on this server"


def test_cam_studio_run_takes_a_ray_address():
    assert ray_address_option(["--ray-address", "10.0.0.5:6379", "--server.port", "8600"]) == (
        "10.0.0.5:6379", ["--server.port", "8600"])
    assert ray_address_option(["--ray-address=auto"]) == ("auto", [])
    assert ray_address_option(["--server.port", "8600"]) == (None, ["--server.port", "8600"])
    with pytest.raises(ValueError, match="needs an address"):
        ray_address_option(["--ray-address", "--server.port", "8600"])


def _page(monkeypatch: pytest.MonkeyPatch, address: str, methods: list[str]) -> AppTest:
    monkeypatch.setenv("RAY_ADDRESS", address)
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["methods"] = methods
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _headline(at: AppTest) -> str:
    return next(m.value for m in at.main.markdown if " · layer " in m.value)


def test_the_page_with_an_unreachable_cluster_computes_here_and_says_why(monkeypatch):
    from dashboard import state

    address = f"127.0.0.1:{_closed_port()}"
    try:
        at = _page(monkeypatch, address, ["grad_cam", "faster_score_cam"])
        assert (f"per-channel passes on this server (Ray cluster at {address} unreachable: nothing answers"
                in _headline(at))
        captions = [tile.caption for tile in tiles(at.main)]
        assert "Faster-Score-CAM · overlay" in captions
        assert not isinstance(state.get_explainer("demo:vgg_defect").backend, RayBackend)
    finally:
        state.ray_pool.clear()


# -------------------------------------------------------------------- cluster


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The Ray tests' 2-node cluster on 127.0.0.1 (tests/conftest.py)."""
    return ray_cluster


@pytest.fixture(scope="module")
def pool(cluster):
    connected = RayPool.connect(cluster.address)
    try:
        yield connected
    finally:
        connected.close()


def test_score_cam_and_ablation_cam_on_ray_equal_the_local_maps(pool, model, image, local_maps):
    # built as the dashboard builds its explainers (dashboard/state.py: _explainer)
    backend = on_cluster(as_backend(model), pool)
    assert isinstance(backend, RayBackend) and pool.workers == 2
    assert len(set(pool.nodes())) == 2  # one actor per node
    scheduler = PassScheduler()
    try:
        explainer = Explainer(backend, batch_size=BATCH, scheduler=scheduler)
        for method, local in local_maps.items():
            result = explainer.compute(method, image, LAYER, owner="session")
            _assert_same_map(result.cam, local)
    finally:
        scheduler.close()
    steps = 2 * CHANNELS // BATCH
    # every batch split between the two workers, nothing ran here
    assert backend.remote_batches == 2 * steps and backend.local_batches == 0
    assert passes_placement(backend) == "per-channel passes on Ray (2 workers)"
    batch = np.random.default_rng(1).uniform(0, 1, (5, 48, 48, 1)).astype(np.float32)
    np.testing.assert_allclose(backend.probabilities_fn()(batch), as_backend(model).probabilities_fn()(batch),
                               rtol=0, atol=1e-6)


def test_a_worker_killed_mid_run_costs_only_a_delay(cluster, pool, model, image, local_maps):
    backend = RayBackend(as_backend(model), pool)
    explainer = Explainer(backend, batch_size=BATCH)  # inline steps: the kill lands between two of them
    explainer.compute("faster_score_cam", image, LAYER, max_n=2)  # the actors hold the model
    victims: list[int] = []

    def kill_a_worker_after_the_first_batch(done: int, total: int) -> None:
        if done > 0 and not victims:
            victim = worker_processes(cluster, "PassActor")[0]
            victims.append(victim.pid)
            os.kill(victim.pid, signal.SIGKILL)

    explainer.clear_cache()
    result = explainer.compute("score_cam", image, LAYER, progress=kill_a_worker_after_the_first_batch)
    assert victims, "no batch finished"
    _assert_same_map(result.cam, local_maps["score_cam"])
    assert backend.local_batches == 0  # the lost part was retried on Ray, not run here
    restarted = [process.pid for process in worker_processes(cluster, "PassActor")]
    assert len(restarted) == 2 and victims[0] not in restarted
    assert passes_placement(backend) == "per-channel passes on Ray (2 workers)"


def test_the_page_runs_its_passes_on_the_cluster_and_says_so(cluster, pool, monkeypatch):
    from dashboard import state

    pool.close()  # the page connects by itself, as a server started with --ray-address does
    try:
        # Faster-Score-CAM: the page's masked passes on its default max_N channels (the maps of
        # full Score-CAM and Ablation-CAM on the cluster are compared above; on the demo model
        # they took 64 passes here, for no more of the page's path)
        at = _page(monkeypatch, cluster.address, ["grad_cam", "faster_score_cam"])
        assert "per-channel passes on Ray (2 workers)" in _headline(at)
        captions = [tile.caption for tile in tiles(at.main)]
        assert "Faster-Score-CAM · overlay" in captions
        backend = state.get_explainer("demo:vgg_defect").backend
        assert isinstance(backend, RayBackend) and backend.remote_batches > 0 and backend.local_batches == 0
    finally:
        found, _ = state.ray_pool(cluster.address)
        if found is not None:
            found.close()
        state.ray_pool.clear()
