"""The per-channel passes on a Ray cluster: :class:`RayBackend` wraps a model's local
backend and sends its batched forward-only passes - Score-CAM's masked passes,
Ablation-CAM's ablated passes, the metrics' probability passes - to the actors of a
:class:`RayPool`; everything that reads one image (activations, gradients, guided
backprop, the class scores) stays local, where it costs one pass.

Design, and why:

* **Actors, not tasks.** A worker must import TensorFlow, load the model and trace its
  passes before its first batch (3-4 s for a small model, more for VGG16); an actor pays
  that once and keeps the model and its traced passes between batches and requests,
  where a task would pay it per call or need a process-wide cache.
* **One actor per node** with CPUs, its TensorFlow threads capped to the node's CPUs (a
  batch already uses every core of its node, as locally). Each batch of the scheduler's
  steps is split across the actors, so a 2-node cluster runs both halves at once while the
  scheduler keeps one step in flight (its fairness and cancellation stay as they are).
* **The actors reserve no CPU** (``num_cpus=0``) and are placed by soft node affinity: they
  are idle between requests, and reserving the cluster's CPUs for them would starve (and
  on a small cluster deadlock, see the evaluation's notes) batch jobs such as
  ``python -m camcore.evaluate --ray`` on the same cluster.
* **The model travels once per model**: saved as ``.keras`` bytes, put in Ray's object
  store by the driver and loaded by each actor on first use (kept per weights
  fingerprint, a few models per actor), checked against the driver's weights.
* **A lost worker is a delay**: an actor whose process dies is restarted by Ray
  (``max_restarts=-1``) and its unfinished calls are retried (``max_task_retries``); the
  restarted actor reloads the model from the object store. A part still failing after
  that, or not answering within ``call_timeout``, runs on this server, so the page always
  completes; :meth:`RayBackend.placement` says so.
* **An unreachable cluster** is found within seconds (:func:`camcore.raycluster.unreachable_reason`:
  Ray itself retries a dead address for minutes) and reported by :class:`ClusterUnavailable`;
  the caller then uses the local backend.

Ray is imported only when a pool connects: importing this module does not import it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, cast

import numpy as np

from camcore.backends.base import Backend, LayerInfo
from camcore.raycluster import (
    cap_threads,
    import_ray,
    keras_model_bytes,
    load_shipped_model,
    software_versions,
    unreachable_reason,
    version_mismatch,
    weights_fingerprint,
)

if TYPE_CHECKING:
    from camcore.backends.keras import KerasBackend

logger = logging.getLogger(__name__)

DEFAULT_RETRIES = 3
"""Retries of a call whose actor was lost (actors themselves are restarted without limit)."""
DEFAULT_CALL_TIMEOUT = 600.0
"""Seconds a batch may take on the cluster, restarts included, before it runs here."""
DEFAULT_CONNECT_TIMEOUT = 120.0
"""Seconds the actors may take to start (import TensorFlow) when a pool connects."""
MODELS_PER_ACTOR = 4
"""Models an actor keeps loaded (the dashboard keeps as many explainers)."""
ON_THIS_SERVER = "per-channel passes on this server"


class ClusterUnavailable(RuntimeError):
    """The Ray cluster cannot run the passes (the message says why)."""


@dataclass(frozen=True)
class ShippedModel:
    """A model in the cluster's object store: ``weights`` (its fingerprint) names it on the
    actors, ``ref`` holds ``(bytes, filename)`` of its file, ``target`` its backend's."""

    weights: str
    ref: Any
    target: str


def _masked(backend: Backend, part: np.ndarray, x: np.ndarray, layer: str, preprocessing: str | None,
            precision: str) -> np.ndarray:
    return backend.masked_scores(x, layer, part, preprocessing, precision)


def _ablated(backend: Backend, part: np.ndarray, x: np.ndarray, layer: str, precision: str) -> np.ndarray:
    return backend.ablated_scores(x, layer, part, precision)


def _probabilities(backend: Backend, part: np.ndarray, precision: str) -> np.ndarray:
    return backend.probabilities_fn(precision)(part)


PASSES: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType({
    "masked_scores": _masked, "ablated_scores": _ablated, "probabilities": _probabilities,
})
"""The passes an actor runs: (backend, the rows of this part, the shared arguments) -> rows."""


class PassActor:
    """One Ray actor: runs :data:`PASSES` on the models shipped to it (loaded on first use)."""

    def __init__(self, cpus: int, max_models: int = MODELS_PER_ACTOR) -> None:
        self.cpus = max(1, int(cpus))
        cap_threads(self.cpus)
        self.max_models = max_models
        self.backends: OrderedDict[tuple[str, str], Backend] = OrderedDict()

    def describe(self) -> dict[str, Any]:
        """This actor's node, process, CPUs and software versions."""
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "cpus": self.cpus,
                "versions": software_versions()}

    def run(self, model: ShippedModel, name: str, part: np.ndarray, *shared: Any) -> np.ndarray:
        """Pass ``name`` of ``model`` on this part of a batch."""
        return PASSES[name](self._backend(model), part, *shared)

    def _backend(self, model: ShippedModel) -> Backend:
        key = (model.weights, model.target)
        backend = self.backends.get(key)
        if backend is None:
            import ray

            from camcore.backends import as_backend

            data, filename = ray.get(model.ref)
            backend = as_backend(load_shipped_model(data, filename, model.weights), target=model.target)
            self.backends[key] = backend
            while len(self.backends) > self.max_models:
                self.backends.popitem(last=False)
        self.backends.move_to_end(key)
        return backend


def split_rows(rows: int, parts: int) -> list[slice]:
    """``rows`` cut into at most ``parts`` contiguous, non-empty slices of near-equal size."""
    bounds = np.linspace(0, rows, min(rows, parts) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass
class _Worker:
    handle: Any
    node: str
    pid: int
    cpus: int


class RayPool:
    """A connection to a Ray cluster and one :class:`PassActor` per node with CPUs.

    Build it with :meth:`connect`; :meth:`close` stops the actors (and disconnects if the
    pool connected). Thread-safe: any thread may :meth:`run` passes.
    """

    def __init__(self, ray: Any, workers: list[_Worker], address: str, connected_here: bool,
                 retries: int = DEFAULT_RETRIES) -> None:
        self.ray = ray
        self.address = address
        self.retries = retries
        self._workers = workers
        self._connected_here = connected_here
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def connect(cls, address: str | None = None, *, retries: int = DEFAULT_RETRIES,
                connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, probe_timeout: float = 3.0,
                max_models: int = MODELS_PER_ACTOR) -> RayPool:
        """Connect to ``address`` (default ``$RAY_ADDRESS``; this process's existing Ray
        connection is used as it is) and start one actor per node. ClusterUnavailable,
        with the reason, if nothing answers there, no actor starts within
        ``connect_timeout`` or every node runs other software versions than this one."""
        ray = import_ray("the dashboard's Ray backend")
        address = address or os.environ.get("RAY_ADDRESS") or ""
        connected_here = False
        if not ray.is_initialized():
            if not address:
                raise ClusterUnavailable("no Ray address given (set RAY_ADDRESS or --ray-address)")
            failure = unreachable_reason(address, probe_timeout)
            if failure is not None:
                raise ClusterUnavailable(f"Ray cluster at {address} unreachable: {failure}")
            try:
                ray.init(address=address, logging_level=logging.WARNING)
            except Exception as exc:  # noqa: BLE001 - any failure to connect is reported, not raised
                raise ClusterUnavailable(f"could not connect to the Ray cluster at {address}: {exc}") from exc
            connected_here = True
        try:
            workers = _start_workers(ray, retries, connect_timeout, max_models)
        except ClusterUnavailable:
            if connected_here:
                ray.shutdown()
            raise
        return cls(ray, workers, address or "this process's Ray", connected_here, retries)

    @property
    def workers(self) -> int:
        """Actors in the pool (a lost one being restarted still counts)."""
        with self._lock:
            return len(self._workers)

    def pids(self) -> list[int]:
        """The actors' process ids when they started (for tests and status)."""
        with self._lock:
            return [worker.pid for worker in self._workers]

    def nodes(self) -> list[str]:
        """The Ray node id each actor started on."""
        with self._lock:
            return [worker.node for worker in self._workers]

    def ship(self, model: Any, target: str = "logit") -> ShippedModel:
        """Put ``model`` (a Keras model) in the cluster's object store."""
        data, filename = keras_model_bytes(model)
        return ShippedModel(weights_fingerprint(model), self.ray.put((data, filename)), target)

    def run(self, model: ShippedModel, name: str, parts: Sequence[np.ndarray], shared: Sequence[Any],
            timeout: float = DEFAULT_CALL_TIMEOUT) -> list[np.ndarray | BaseException]:
        """Pass ``name`` of ``model`` on each part, part i on actor i (at most one part per
        actor), all at once; per part its rows or the exception that lost it (an actor that
        did not answer within ``timeout`` seconds, or failed after its retries)."""
        with self._lock:
            workers = list(self._workers)
        if len(parts) > len(workers):
            raise ValueError(f"{len(parts)} parts for {len(workers)} Ray workers")
        ray = self.ray
        shared_refs = [ray.put(value) if isinstance(value, np.ndarray) else value for value in shared]
        refs = [worker.handle.run.remote(model, name, part, *shared_refs) for worker, part in zip(workers, parts)]
        deadline = time.monotonic() + timeout
        results: list[np.ndarray | BaseException] = []
        for worker, ref in zip(workers, refs):
            try:
                results.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
            except ray.exceptions.RayError as exc:
                results.append(exc)
                self._forget_if_dead(worker, exc, ref)
        return results

    def _forget_if_dead(self, worker: _Worker, error: BaseException, ref: Any) -> None:
        if isinstance(error, self.ray.exceptions.GetTimeoutError):
            try:
                self.ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort: the part runs here anyway
                pass
        elif isinstance(error, self.ray.exceptions.ActorDiedError):  # restarts exhausted or refused
            with self._lock:
                if worker in self._workers:
                    self._workers.remove(worker)

    def close(self) -> None:
        """Stop the actors; disconnect from the cluster if :meth:`connect` connected."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._workers = self._workers, []
        for worker in workers:
            try:
                self.ray.kill(worker.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._connected_here and self.ray.is_initialized():
            self.ray.shutdown()


def _start_workers(ray: Any, retries: int, timeout: float, max_models: int) -> list[_Worker]:
    """One PassActor per alive node with CPUs, each capped to its node's CPUs; the ones
    that do not start in time or run other software versions are stopped."""
    nodes = [node for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) >= 1]
    if not nodes:
        raise ClusterUnavailable("the Ray cluster has no node with a CPU")
    handles = [_place_actor(ray, node, retries, max_models, soft=True) for node in nodes]
    found = _describe(ray, handles, timeout)
    # Soft affinity falls back to another node while the target's resources are not yet
    # known to the scheduler (a node that just joined, a busy head): two actors then share
    # one node's CPUs and the other node idles. Such an actor is placed again, pinned.
    for i, (node, facts) in enumerate(zip(nodes, found)):
        if isinstance(facts, dict) and facts["node"] != node["NodeID"]:
            ray.kill(handles[i], no_restart=True)
            handles[i] = _place_actor(ray, node, retries, max_models, soft=False)
            found[i] = _describe(ray, [handles[i]], timeout)[0]
    driver = software_versions()
    workers, problems = [], []
    for handle, facts in zip(handles, found):
        if isinstance(facts, str):
            problem: str | None = facts
        else:
            problem = version_mismatch(facts["versions"], driver)
            if problem is None:
                workers.append(_Worker(handle, facts["node"], facts["pid"], facts["cpus"]))
                continue
        problems.append(problem)
        ray.kill(handle, no_restart=True)
    if not workers:
        raise ClusterUnavailable(f"no Ray worker could run the passes: {problems[0]}")
    for problem in problems:
        logger.warning("a Ray worker was left out: %s", problem)
    return workers


def _place_actor(ray: Any, node: dict[str, Any], retries: int, max_models: int, *, soft: bool) -> Any:
    """A :class:`PassActor` on ``node`` (no CPU reserved, see the module's notes)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return ray.remote(PassActor).options(
        num_cpus=0, max_restarts=-1, max_task_retries=retries,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=soft),
    ).remote(math.floor(node["Resources"]["CPU"]), max_models)


def _describe(ray: Any, handles: list[Any], timeout: float) -> list[dict[str, Any] | str]:
    """Each actor's :meth:`PassActor.describe`, or why it gave none within ``timeout``."""
    refs = [handle.describe.remote() for handle in handles]
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any] | str] = []
    for ref in refs:
        try:
            found.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
        except ray.exceptions.GetTimeoutError:
            found.append(f"a worker did not start within {timeout:.0f} s")
        except ray.exceptions.RayError as exc:
            found.append(f"a worker failed to start: {exc}")
    return found


class RayBackend(Backend):
    """``local``'s passes, with the batched forward-only ones run on ``pool``'s actors.

    Everything but :meth:`masked_scores`, :meth:`ablated_scores` and
    :meth:`probabilities_fn` is ``local``'s (so are attributes such as ``model`` and
    ``adapter``). A part of a batch the cluster lost runs on ``local``; :attr:`local_batches`
    counts them and :meth:`placement` says so.

    Args:
        local: a Keras model's backend (:class:`~camcore.backends.keras.KerasBackend`).
        pool: the cluster's actors (:meth:`RayPool.connect`).
        call_timeout: seconds a batch may take on the cluster before it runs here.
    """

    def __init__(self, local: KerasBackend, pool: RayPool, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        if getattr(local, "kind", None) != "keras":
            raise ValueError(f"the Ray backend ships Keras models only, not {getattr(local, 'kind', local)!r} ones")
        self.local = local
        self.pool = pool
        self.call_timeout = call_timeout
        self.kind = local.kind
        self.input_shape = local.input_shape
        self.n_classes = local.n_classes
        self.probability_kind = local.probability_kind
        self.layers = local.layers
        self.capabilities = local.capabilities
        self.precisions = local.precisions
        self.remote_batches = 0
        self.local_batches = 0
        self.last_failure: str | None = None
        self._shipped: ShippedModel | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name in ("local", "__setstate__"):  # not set yet: no recursion through self.local
            raise AttributeError(name)
        return getattr(self.local, name)

    # ------------------------------------------------------------ local passes
    def activations(self, x: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
        return self.local.activations(x, layer)

    def forward(self, batch: np.ndarray, precision: str = "fp32") -> np.ndarray:
        return self.local.forward(batch, precision)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.local.scores(x)

    def gradients(self, x: np.ndarray, layer: str, class_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        return self.local.gradients(x, layer, class_index)

    def guided_backprop(self, x: np.ndarray, class_index: int) -> tuple[np.ndarray, int]:
        return self.local.guided_backprop(x, class_index)

    def prepare_precision(self, precision: str) -> str | None:
        return self.local.prepare_precision(precision)

    @property
    def default_layer(self) -> str:
        return self.local.default_layer

    def layer_info(self, path: str) -> LayerInfo:
        return self.local.layer_info(path)

    def check_class(self, class_index: Any) -> int:
        return self.local.check_class(class_index)

    # ------------------------------------------------------------ passes on the cluster
    def masked_scores(self, x: np.ndarray, layer: str, maps: np.ndarray, preprocessing: str | None = None,
                      precision: str = "fp32") -> np.ndarray:
        maps = np.asarray(maps, np.float32)
        expected = self.layer_info(layer).shape[:2]
        if maps.shape[1:] != expected:
            raise ValueError(f"maps of shape {maps.shape[1:]} do not fit layer {layer!r} {expected}")
        x = np.asarray(x, np.float32)
        return self._spread("masked_scores", maps, (x, layer, preprocessing, precision),
                            lambda part: self.local.masked_scores(x, layer, part, preprocessing, precision))

    def ablated_scores(self, x: np.ndarray, layer: str, keep: np.ndarray, precision: str = "fp32") -> np.ndarray:
        x, keep = np.asarray(x, np.float32), np.asarray(keep, np.float32)
        return self._spread("ablated_scores", keep, (x, layer, precision),
                            lambda part: self.local.ablated_scores(x, layer, part, precision))

    def probabilities_fn(self, precision: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
        here = self.local.probabilities_fn(precision)

        def run(batch: np.ndarray) -> np.ndarray:
            return self._spread("probabilities", np.asarray(batch, np.float32), (precision,), here)

        return run

    def _spread(self, name: str, rows: np.ndarray, shared: tuple,
                here: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Pass ``name`` on ``rows`` split across the actors, in order; a part the cluster
        lost runs ``here``."""
        slices = split_rows(len(rows), self.pool.workers)
        if not slices:
            return here(rows)
        try:
            results = self.pool.run(self._model(), name, [rows[s] for s in slices], shared, self.call_timeout)
        except Exception as exc:  # noqa: BLE001 - the cluster is gone: the batch runs here
            results = [exc] * len(slices)
        parts = []
        for where, result in zip(slices, results):
            if isinstance(result, BaseException):
                self._note_failure(result)
                result = here(rows[where])
            else:
                self._count("remote_batches")
            parts.append(np.asarray(result))
        return np.concatenate(parts, axis=0)

    def _model(self) -> ShippedModel:
        with self._lock:  # shipped once, however many threads ask
            if self._shipped is None:
                self._shipped = self.pool.ship(self.local.model, getattr(self.local.adapter, "target", "logit"))
            return self._shipped

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def _note_failure(self, error: BaseException) -> None:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.warning("a batch part failed on Ray and runs on this server: %s", reason)
        with self._lock:
            self.local_batches += 1
            self.last_failure = reason[:200]

    def placement(self) -> str:
        """Where the per-channel passes ran, e.g. "per-channel passes on Ray (2 workers)"."""
        workers = self.pool.workers
        if workers == 0:
            return f"{ON_THIS_SERVER} (every Ray worker was lost: {self.last_failure or 'no worker left'})"
        text = f"per-channel passes on Ray ({workers} worker{'s' if workers != 1 else ''})"
        if self.local_batches:
            text += (f"; {self.local_batches} batch part{'s' if self.local_batches != 1 else ''} ran on this server "
                     f"after Ray failed ({self.last_failure})")
        return text


def on_cluster(backend: Backend, pool: RayPool | None) -> Backend:
    """``backend`` with its batched passes on ``pool`` where it can be shipped (a Keras
    model's), else ``backend`` itself."""
    if pool is None or backend.kind != "keras" or isinstance(backend, RayBackend):
        return backend
    # kind "keras" is a KerasBackend's (compared by kind: importing that class imports TensorFlow)
    return RayBackend(cast("KerasBackend", backend), pool)


def passes_placement(backend: Backend, unavailable: str | None = None) -> str:
    """Where ``backend``'s per-channel passes run, for a page's header: on Ray (how many
    workers, any part that fell back here), or on this server (and why not on Ray, given
    ``unavailable``: the reason a cluster could not be used)."""
    if isinstance(backend, RayBackend):
        return backend.placement()
    if unavailable:
        return f"{ON_THIS_SERVER} ({unavailable})"
    return ON_THIS_SERVER
