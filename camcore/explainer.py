"""Explainer: every CAM method of the registry for one model, sharing work between them.

The Explainer is the engine's bookkeeping, nothing model-specific: a bounded, thread-safe
LRU cache, the lock, per-call timings, the precision of the forward-only passes, and the
dispatch of a method to the pass providers its ``needs`` name (:mod:`camcore.passes`),
which run the model only through its backend (:mod:`camcore.backends`):

* per (layer, image): the layer's activations and the class scores (served here);
* per (layer, image, class): the gradient of the class score - every gradient method
  (Grad-CAM, Grad-CAM++, LayerCAM, XGrad-CAM, HiResCAM) reads the same forward+backward;
* per (layer, image): Score-CAM's masked passes, run in order of decreasing channel std
  and kept with their full score vectors, so any later ``max_n`` or class costs no model
  pass; Ablation-CAM's channel-ablated passes likewise.

A method the backend cannot serve (a gradient method on a gradient-free backend) is
"not available for this model" (:meth:`Explainer.unavailable_reason`), never a crash.
The plain functions (``camcore.grad_cam(model, x, layer)`` ...) build a fresh Explainer
per call; keep an Explainer to benefit from the caches.

    >>> explainer = camcore.Explainer(model)                       # e.g. the vgg_defect demo
    >>> result = explainer.compute("grad_cam", x, "top_down56", class_index=1)
    >>> result.cam.shape, result.model_passes, result.reused
    ((56, 56), 1, ())
    >>> explainer.compute("grad_cam_plus_plus", x, "top_down56", class_index=1).reused
    ('forward+backward shared with earlier gradient methods',)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Iterator, Sequence

import numpy as np

from camcore import autoprecision
from camcore import precision as precisions
from camcore.autoprecision import Verdict, VerdictStore
from camcore.backends import Backend, LayerInfo, NotAvailable, as_backend
from camcore.defaults import DEFAULT_BATCH_SIZE, DEFAULT_MAX_N
from camcore.maps import map_correlation, normalize_cam
from camcore.methods import get as get_method
from camcore.methods import unavailable_reason
from camcore.methods.base import MethodSpec
from camcore.methods.score_cam import score_cam_weights
from camcore.passes import PROVIDERS, CallRecord, NeedsModelPass, PassContext, Provider
from camcore.passes.base import Progress, finite_scores
from camcore.passes.masked import MaskedPasses, ScoreState, clamp_max_n
from camcore.prepared import Prepared, image_key
from camcore.scheduler import PassScheduler, run_inline

if TYPE_CHECKING:
    import keras

    from camcore.adapter import ModelAdapter

__all__ = ["CamResult", "Explainer", "Prepared", "image_key", "DEFAULT_MAX_N"]


@dataclass(frozen=True)
class CamResult:
    """A CAM with how it was obtained.

    ``cam``: float32 in [0, 1], at the layer's resolution (at the input's for fused
    layers). ``seconds``: wall time of this call, split by stage in ``timings``.
    ``model_passes``: images run through the model by this call (0 when everything came
    from the cache; ``cached`` is then True). ``reused``: what earlier calls computed
    that this one read (e.g. "forward+backward shared with earlier gradient methods").
    ``max_n``: channels used by a max_N method (clamped to the layer's channel count).
    """

    method: str
    cam: np.ndarray
    seconds: float
    cached: bool
    model_passes: int
    timings: dict[str, float] = field(default_factory=dict)
    reused: tuple[str, ...] = ()
    class_index: int = -1
    layer: str | tuple[str, ...] = ""
    max_n: int | None = None


class LRUCache:
    """A bounded, thread-safe mapping that forgets the least recently used entry."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _Flights:
    """One lock per key of work in flight: a second caller asking for the same work waits
    for the first and then finds it cached, while callers of other keys never wait."""

    def __init__(self) -> None:
        self._locks: dict[Any, list] = {}  # key -> [lock, holders and waiters]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, key: Any, wait: bool = True) -> Iterator[bool]:
        """Hold ``key``'s lock; ``wait=False`` yields False at once when another holds it."""
        with self._lock:
            entry = self._locks.setdefault(key, [threading.RLock(), 0])
            entry[1] += 1
        acquired = entry[0].acquire(blocking=wait)
        try:
            yield acquired
        finally:
            if acquired:
                entry[0].release()
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


class Explainer:
    """Every registered CAM method for one model, with shared, bounded, thread-safe caches.

    Args:
        model: a Functional or Sequential Keras 3 classifier (served by
            :class:`~camcore.backends.keras.KerasBackend`), or any
            :class:`~camcore.backends.Backend` (e.g. an ONNX model).
        target: "logit" (default) or "probability": the score the gradient CAMs explain.
        batch_size: images per pass in Score-CAM / Ablation-CAM.
        cache_size: entries kept in the LRU cache (activations, gradients, masked-pass
            states, saliency maps).
        precision: of the forward-only passes (Score-CAM's masked passes, Ablation-CAM's
            ablated passes, metric passes): "fp32" (exact, the default), "bf16" (a
            bfloat16 copy of the model - fast only on some CPUs, e.g. with AMX) or "auto":
            fp32 where the CPU's flags rule bf16 out, else bf16 only where a probe on this
            model, layer and input shape measured it clearly faster and faithful
            (:mod:`camcore.autoprecision`; :meth:`verdict` says what it chose and why).
            Gradients, activations, the class scores and guided backprop always run in
            fp32. A model whose bf16 copy cannot be built falls back to fp32;
            ``precision_note`` says why.
        verdicts: where auto's measured verdicts are kept (default: the process's store,
            backed by a file, :func:`camcore.autoprecision.default_store`).
        scheduler: runs the batches of per-channel passes (Score-CAM, Ablation-CAM) fairly
            between the owners passed to :meth:`compute` (:class:`camcore.scheduler.PassScheduler`,
            one per server); None runs them in the caller's thread.

    Thread-safe without one lock around everything: cached maps are read while other
    threads compute, and one piece of work (a gradient pass, a layer's masked passes) is
    computed once however many threads ask for it at the same time (:meth:`flight`).
    """

    def __init__(
        self,
        model: keras.Model | Backend,
        target: str = "logit",
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_size: int = 64,
        precision: str = "fp32",
        verdicts: VerdictStore | None = None,
        scheduler: PassScheduler | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if target not in ("logit", "probability"):
            raise ValueError(f"target must be 'logit' or 'probability', got {target!r}")
        self.backend = as_backend(model, target=target)
        self.batch_size = int(batch_size)
        self.requested_precision = precision
        static = precisions.resolve_precision(precision)
        self._verdict_store = verdicts
        self._fixed: Verdict | None = None  # the verdict of every layer, when known without measuring
        if precision != "auto":
            self._fixed = Verdict(static, "as requested", source="requested")
        elif "bf16" not in self.backend.precisions:
            self._fixed = Verdict("fp32", f"{self.backend.kind} models run at fp32", source="flags")
        elif static != "auto":
            forced = autoprecision.forced_verdict()
            self._fixed = forced or Verdict("fp32", f"no bf16 ({precisions.detect_bf16().reason})", source="flags")
        self._layer_verdicts: dict[str, Verdict] = {}
        self._model_hash: str | None = None
        self.cache = LRUCache(cache_size)
        self.scheduler = scheduler
        self.flight = _Flights()
        self._providers: dict[str, Provider] = {}
        self._lock = threading.RLock()  # short bookkeeping only (verdicts, providers)

    # ------------------------------------------------------------ model facts
    @property
    def model(self) -> Any:
        """The model the backend serves (the Keras model for Keras backends)."""
        return getattr(self.backend, "model", self.backend)

    @property
    def adapter(self) -> ModelAdapter:
        """The Keras model adapter (Keras backends only)."""
        adapter = getattr(self.backend, "adapter", None)
        if adapter is None:
            raise AttributeError(f"a {self.backend.kind} backend has no Keras adapter")
        return adapter

    @property
    def layers(self) -> list[LayerInfo]:
        return list(self.backend.layers)

    @property
    def default_layer(self) -> str:
        return self.backend.default_layer

    @property
    def n_classes(self) -> int:
        return self.backend.n_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.backend.input_shape

    def layer_info(self, layer: str) -> LayerInfo:
        """Validated info for ``layer``; ValueError naming the problem otherwise."""
        return self.backend.layer_info(layer)

    def check_class(self, class_index: Any) -> int:
        return self.backend.check_class(class_index)

    def unavailable_reason(self, method: str) -> str | None:
        """Why ``method`` cannot run on this model (e.g. "needs gradients — not available for
        onnx models"), or None if it can."""
        return unavailable_reason(get_method(method), self.backend)

    # ------------------------------------------------------------ precision
    @property
    def precision(self) -> str:
        """"fp32" or "bf16": the forward-only passes' precision (under auto, that of the layer
        measured last; "fp32" before any)."""
        verdict = self._fixed or next(reversed(self._layer_verdicts.values()), None)
        return "fp32" if verdict is None else verdict.precision

    @property
    def precision_note(self) -> str:
        """Why the passes run at :attr:`precision` ("" for an fp32 request)."""
        verdict = self._fixed or next(reversed(self._layer_verdicts.values()), None)
        if verdict is None or (verdict.source == "requested" and self.requested_precision == "fp32"):
            return ""
        return verdict.summary()

    def known_verdict(self, layer: str) -> Verdict | None:
        """The precision verdict for ``layer`` if known without running anything."""
        if self._fixed is not None:
            return self._fixed
        found = self._layer_verdicts.get(layer)
        if found is None:
            found = self._store().lookup(self._verdict_key(layer))
            if found is not None:
                self._layer_verdicts[layer] = found
        return found

    def verdict(self, x: Any, layer: str) -> Verdict:
        """The precision of ``layer``'s forward-only passes and why; under "auto" the first
        call per (model, layer, input shape) on a CPU whose flags allow bf16 runs the probe
        of :func:`camcore.autoprecision.probe` on ``x`` (unless a verdict is on disk)."""
        self.backend.layer_info(layer)
        return self._verdict(self.prepare(x), layer)

    def _verdict(self, prepared: Prepared, layer: str) -> Verdict:
        known = self.known_verdict(layer)
        if known is not None:
            return known
        verdict = self._store().get_or_measure(self._verdict_key(layer), lambda: self._probe(prepared, layer))
        self._layer_verdicts[layer] = verdict
        return verdict

    def pass_precision(self, prepared: Prepared, layer: str) -> str:
        """The precision ``layer``'s forward-only passes run at (measuring it if auto must)."""
        precision = self._verdict(prepared, layer).precision
        if precision != "fp32":
            failure = self.backend.prepare_precision(precision)
            if failure is not None:  # no copy at that precision: every verdict is fp32 from now on
                self._fixed = Verdict("fp32", f"no {precision} copy of this model: {failure}", source="fallback")
                return "fp32"
        return precision

    def _store(self) -> VerdictStore:
        if self._verdict_store is None:
            self._verdict_store = autoprecision.default_store()
        return self._verdict_store

    def _verdict_key(self, layer: str) -> str:
        if self._model_hash is None:
            self._model_hash = autoprecision.model_fingerprint(self.model)
        return autoprecision.verdict_key(self._model_hash, layer, self.input_shape)

    def _probe(self, prepared: Prepared, layer: str) -> Verdict:
        activations = self.activations_of(prepared, layer, CallRecord())
        verdict = autoprecision.measure_backend(self.backend, prepared.x, layer, activations, self.batch_size)
        if verdict.source == "fallback":
            self._fixed = verdict
        return verdict

    # ------------------------------------------------------------ inputs, cache
    def prepare(self, x: Any, image: np.ndarray | None = None) -> Prepared:
        """``x`` checked against this model's input and hashed once (see :class:`Prepared`)."""
        prepared = Prepared.of(x, image)
        expected = (1, *self.input_shape)
        if prepared.shape != expected:
            raise ValueError(f"x must have shape {expected} for this model, got {prepared.shape}")
        return prepared

    def clear_cache(self) -> None:
        """Drop every cached tensor (the compiled passes stay)."""
        self.cache.clear()

    def provider(self, need: str) -> Provider:
        """The provider of ``need`` for this explainer (built on first use)."""
        found = self._providers.get(need)
        if found is None:
            cls = PROVIDERS.get(need)
            if cls is None:
                raise ValueError(f"no provider for {need!r}; known: {sorted(PROVIDERS)}")
            with self._lock:
                found = self._providers.setdefault(need, cls(self))
        return found

    # -------------------------------------------------- the shared tensors
    def scores_of(self, prepared: Prepared, call: CallRecord | None = None) -> np.ndarray:
        """Pre-activation class scores of one prepared input (cached, computed once)."""
        key = ("scores", prepared.key)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if call is not None:
            call.need_pass()
        with self.flight(key):
            cached = self.cache.get(key)  # another thread may have computed it meanwhile
            if cached is None:
                start = time.perf_counter()
                cached = finite_scores(self.backend.scores(prepared.x))
                self.cache.put(key, cached)
                if call is not None:
                    call.spent("forward", time.perf_counter() - start, 1)
        return cached

    def activations_of(self, prepared: Prepared, layer: str, call: CallRecord) -> np.ndarray:
        """A layer's activations (h, w, K) of one prepared input (cached, computed once)."""
        key = ("activations", layer, prepared.key)
        cached = self.cache.get(key)
        if cached is None:
            call.need_pass()
            with self.flight(key):
                cached = self.cache.get(key)
                if cached is None:
                    start = time.perf_counter()
                    activations, scores = self.backend.activations(prepared.x, layer)
                    self.cache.put(key, activations)
                    self.cache.put(("scores", prepared.key), finite_scores(scores))
                    call.spent("activations", time.perf_counter() - start, 1)
                    return activations
        call.reused.append("activations from an earlier pass")
        return cached

    def run_steps(self, owner: Hashable | None, steps: Sequence[Any], progress: Progress | None,
                  sizes: Sequence[int]) -> None:
        """Run a per-channel computation's batches: on the scheduler, fairly between owners
        and cancelled when the caller stops waiting, or here without one."""
        if self.scheduler is None:
            run_inline(steps, progress, sizes)
        else:
            self.scheduler.run(owner, steps, progress, sizes)

    def scores(self, x: Any) -> np.ndarray:
        """Pre-activation class scores (n_classes,) of one input."""
        return self.scores_of(self.prepare(x))

    def predict(self, x: Any) -> np.ndarray:
        """The model's class probabilities (n_classes,) for one input."""
        return self.backend.probabilities(self.scores(x))

    def top_classes(self, x: Any, k: int = 5) -> list[tuple[int, float]]:
        """The k most probable classes as (index, probability), best first."""
        probabilities = self.predict(x)
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(int(i), float(probabilities[i])) for i in order]

    def probabilities_fn(self, precision: str | None = None):
        """``f(batch (B, H, W, C)) -> probabilities (B, n_classes)``: the forward pass the
        faithfulness metrics perturb, at ``precision`` (default: :attr:`precision`)."""
        precision = self.precision if precision is None else precisions.resolve_precision(precision)
        if precision == "auto":
            raise ValueError("probabilities_fn needs a measured precision: pass explainer.verdict(x, layer).precision")
        if precision != "fp32" and self.backend.prepare_precision(precision) is not None:
            precision = "fp32"
        return self.backend.probabilities_fn(precision)

    def activations_and_gradients(self, x: Any, layer: str, class_index: int | None = None
                                  ) -> tuple[np.ndarray, np.ndarray, int]:
        """The shared tensors of the gradient family: (A (h, w, K), dy_c/dA (h, w, K), c),
        from the cache or one forward+backward. For custom methods and checks."""
        self.backend.layer_info(layer)
        prepared = self.prepare(x)
        index = self._known_class(prepared.key, class_index)
        context = PassContext(self, prepared, layer, index, None, None, {}, CallRecord())
        return self.provider("gradients").read(context)

    def guided_backprop(self, x: Any, class_index: int | None = None) -> np.ndarray:
        """Guided backpropagation (Springenberg et al. 2015, eq. 6): d score / d input with
        only positive gradients passed through every ReLU. (H, W, C) float32, raw
        gradient values (signed); see ``camcore.visualize`` for display. ValueError on a
        backend without gradients."""
        prepared = self.prepare(x)
        index = self._known_class(prepared.key, class_index)
        key = ("guided", prepared.key, index)
        with self.flight(key):
            cached = self.cache.get(key)
            if cached is None:
                try:
                    cached, chosen = self.backend.guided_backprop(prepared.x, index)
                except NotAvailable as exc:
                    raise ValueError(f"guided backpropagation {exc}") from None
                self.cache.put(("guided", prepared.key, chosen), cached)
        return cached

    def _known_class(self, key: str, class_index: Any) -> int:
        """The explicit class, or top-1 if the scores are cached; -1 lets the pass pick top-1
        itself, so an unknown top class costs no extra forward."""
        if class_index is not None:
            return self.backend.check_class(class_index)
        scores = self.cache.get(("scores", key))
        return -1 if scores is None else int(np.argmax(scores))

    # -------------------------------------------------------------- dispatch
    def _layers(self, layer: str | Sequence[str]) -> list[str]:
        layers = [layer] if isinstance(layer, str) else list(layer) if isinstance(layer, (list, tuple)) else None
        if not layers:
            raise TypeError(f"layer must be a layer name/path or a non-empty list of them, got {layer!r}")
        for path in layers:
            self.backend.layer_info(path)
        return layers

    def _compute(self, spec: MethodSpec, prepared: Prepared, layer: str, class_index: int | None,
                 max_n: int | None, progress: Progress | None, options: Any,
                 call: CallRecord) -> tuple[np.ndarray, int, int | None]:
        index = self._known_class(prepared.key, class_index)
        context = PassContext(self, prepared, layer, index, max_n, progress, options, call)
        if "gradients" in spec.needs:
            context.gradients  # noqa: B018 - one shared pass also resolves top-1
        start, in_passes = time.perf_counter(), sum(call.timings.values())
        raw = np.asarray(spec.cam(context), dtype=np.float32)
        if raw.ndim != 2:
            raise ValueError(f"method {spec.key!r} returned a map of shape {raw.shape}, expected (h, w)")
        cam = normalize_cam(np.maximum(np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0), 0.0))
        # the model passes the method triggered are timed as their own stages
        passes = sum(call.timings.values()) - in_passes
        call.timings["weights"] = call.timings.get("weights", 0.0) + time.perf_counter() - start - passes
        used_n = context.max_n if spec.uses_max_n else None
        return cam, context.class_index, used_n

    def compute(
        self,
        method: str,
        x: Any,
        layer: str | Sequence[str],
        class_index: int | None = None,
        max_n: int | None = None,
        progress: Progress | None = None,
        owner: Hashable | None = None,
        **options: Any,
    ) -> CamResult:
        """Run the registered method ``method`` (see ``camcore.METHODS``).

        Args:
            x: the model input (1, H, W, C), or a :class:`Prepared` (hashed once).
            layer: a layer name or path ("vgg16/block5_conv3"); a list of them fuses the
                per-layer maps (see :func:`camcore.methods.fusion.fuse_maps`) into one
                map at the input resolution.
            class_index: the explained class; None = top-1.
            max_n: channels for max_N methods (Faster-Score-CAM; default 10, clamped to
                the layer's channel count).
            progress: ``progress(done, total)`` as per-channel passes finish; anything it raises
                stops the computation (with a scheduler, its remaining batches are dropped).
            owner: who asks (e.g. a browser session): with a scheduler, owners take turns.
            options: method options, e.g. Score-CAM's ``weighting="channel_softmax"`` or
                ``raw_image=..., preprocessing=...`` (mask the raw image, re-preprocess).

        Raises ValueError for a method this model cannot serve (see :meth:`unavailable_reason`).
        """
        return self._run(method, x, layer, class_index, max_n, progress, options, offline=False, owner=owner)

    def peek(self, method: str, x: Any, layer: str | Sequence[str], class_index: int | None = None,
             max_n: int | None = None, **options: Any) -> CamResult | None:
        """The result of :meth:`compute` if it needs no model pass, else None (also for a
        method this model cannot serve)."""
        if self.unavailable_reason(method) is not None:
            return None
        try:
            return self._run(method, x, layer, class_index, max_n, None, options, offline=True)
        except NeedsModelPass:
            return None

    def _run(self, method: str, x: Any, layer: str | Sequence[str], class_index: int | None,
             max_n: int | None, progress: Progress | None, options: Any, offline: bool,
             owner: Hashable | None = None) -> CamResult:
        start = time.perf_counter()
        spec = get_method(method)
        missing = unavailable_reason(spec, self.backend)
        if missing is not None:
            raise ValueError(f"{spec.label} is not available for this model: {missing}")
        if spec.uses_max_n and max_n is None:
            max_n = DEFAULT_MAX_N
        if max_n is not None:
            clamp_max_n(max_n, 1)  # type and range check before any work
        call = CallRecord(offline, owner)
        layers = self._layers(layer)
        prepared = self.prepare(x)
        if class_index is not None:
            self.backend.check_class(class_index)
        cam, index, used_n, layer_id = self._run_layers(spec, prepared, layers, class_index, max_n, progress,
                                                        options, call)
        return CamResult(
            method=spec.key, cam=cam, seconds=time.perf_counter() - start, cached=call.passes == 0,
            model_passes=call.passes, timings=call.timings, reused=tuple(dict.fromkeys(call.reused)),
            class_index=index, layer=layer_id, max_n=used_n,
        )

    def _run_layers(self, spec: MethodSpec, prepared: Prepared, layers: list[str], class_index: int | None,
                    max_n: int | None, progress: Progress | None, options: Any, call: CallRecord):
        """One layer's map, or the maps of several layers fused (one-pass methods only)."""
        if len(layers) == 1:
            cam, index, used_n = self._compute(spec, prepared, layers[0], class_index, max_n, progress, options, call)
            return cam, index, used_n, layers[0]
        if not spec.fusable:
            raise ValueError(f"{spec.label} costs a pass per channel: fuse gradient or activation methods only")
        from camcore.methods.fusion import fuse_maps

        maps = []
        for path in layers:
            cam, index, used_n = self._compute(spec, prepared, path, class_index, max_n, progress, options, call)
            class_index = index  # every layer explains the same class
            maps.append(cam)
        return fuse_maps(maps, self.input_shape[:2]), index, used_n, tuple(layers)

    # ------------------------------------------------------ Score-CAM extras
    def score_state(self, x: Any, layer: str) -> ScoreState | None:
        """The cached Score-CAM state of (x, layer) - channel plan, masked-pass scores, what
        ran - for inspection by tests and benchmarks; None before any masked pass."""
        return self._cached_score_state(self.prepare(x), layer)

    def _cached_score_state(self, prepared: Prepared, layer: str) -> ScoreState | None:
        verdict = self.known_verdict(layer)  # None: no masked pass ran for this layer yet
        return None if verdict is None else self.cache.get(MaskedPasses.state_key(prepared, layer, verdict.precision))

    def score_cam_channels_done(self, x: Any, layer: str) -> int:
        """How many leading channels (in std order) are covered by cached masked passes:
        any ``max_n`` up to this number costs no model pass."""
        state = self.score_state(x, layer)
        return 0 if state is None else state.covered_prefix()

    def faster_score_cam_tradeoff(
        self, x: Any, layer: str, class_index: int | None = None, ns: Sequence[int] | None = None
    ) -> list[dict[str, float]]:
        """Faster-Score-CAM against full Score-CAM as max_n grows.

        For each n: the masked passes it needs, their estimated time (at the per-pass
        time measured when they ran) and the correlation of its map with full
        Score-CAM. Runs full Score-CAM first if needed; then costs no pass.
        """
        prepared = self.prepare(x)
        full = self.compute("score_cam", prepared, layer, class_index)
        state = self._cached_score_state(prepared, layer)
        assert state is not None  # full Score-CAM just ran
        total = state.plan.n_channels
        if ns is None:
            ns = sorted({int(round(v)) for v in np.geomspace(1, total, num=min(total, 24))})
        return [self._tradeoff_row(state, clamp_max_n(int(n), total), full) for n in ns]

    def _tradeoff_row(self, state: ScoreState, n: int, full: CamResult) -> dict[str, float]:
        varying, needs_zero = state.plan.passes_needed(n)
        passes = int(varying.size) + int(needs_zero)
        channels, scores = state.rows(n)
        weights = score_cam_weights(scores, full.class_index, self.backend.probability_kind)
        cam = np.tensordot(state.activations[..., channels], weights, axes=([-1], [0]))
        cam = normalize_cam(np.maximum(cam, 0.0))
        return {"max_n": n, "passes": passes, "seconds": passes * state.seconds_per_pass,
                "correlation": map_correlation(cam, full.cam)}
