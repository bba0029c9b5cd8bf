"""Explainer: every CAM method of the registry for one model, sharing work between them.

One mechanism serves every method (:mod:`camcore.methods`): the Explainer computes,
lazily and once, the tensors a method asks for, and caches them in a bounded,
thread-safe LRU cache:

* per (layer, image): the layer's activations and the class scores;
* per (layer, image, class): the gradient of the class score - every gradient method
  (Grad-CAM, Grad-CAM++, LayerCAM, XGrad-CAM, HiResCAM) reads the same compiled
  forward+backward;
* per (layer, image): Score-CAM's masked passes, run in order of decreasing channel
  std and kept with their full score vectors, so any later ``max_n`` or class costs no
  model pass; Ablation-CAM's channel-ablated passes likewise.

The plain functions (``camcore.grad_cam(model, x, layer)`` ...) build a fresh
Explainer per call; keep an Explainer to benefit from the caches.

    >>> explainer = camcore.Explainer(model)
    >>> result = explainer.compute("grad_cam", x, "block5_conv3", class_index=1)
    >>> result.cam.shape, result.model_passes, result.reused
    ((14, 14), 1, ())
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from camcore.adapter import LayerInfo, ModelAdapter
from camcore.maps import map_correlation, normalize_cam
from camcore.methods import get as get_method
from camcore.methods.base import MethodSpec
from camcore.methods.score_cam import ChannelPlan, clamp_max_n, plan_channels, score_cam_weights
from camcore import autoprecision
from camcore.autoprecision import Verdict, VerdictStore
from camcore import precision as precisions
from camcore.precision import bf16_copy, resolve_precision
from camcore.prepared import Prepared, image_key
from camcore.preprocess import apply_preprocessing

Progress = Callable[[int, int], None]
DEFAULT_MAX_N = 10
DEFAULT_BATCH_SIZE = 16

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


class _LRU:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _NoBf16Copy(Exception):
    """The probe reached the bf16 passes of a model whose bf16 copy cannot be built."""


class _NeedsModelPass(Exception):
    """Raised inside :meth:`Explainer.peek` when a result is not cached."""


@dataclass
class _ScoreState:
    """Score-CAM's masked-pass results for one (layer, image, masking)."""

    activations: np.ndarray  # (h, w, K)
    plan: ChannelPlan
    scores: np.ndarray  # (K, n_classes) pre-activation scores of X∘H^k; NaN = not run
    done: np.ndarray  # (K,) bool
    zero_scores: np.ndarray | None = None  # scores of the all-zero mask, shared by constant channels
    seconds_per_pass: float = 0.0
    precision: str = "fp32"  # of the masked passes

    def covered_prefix(self) -> int:
        """How many leading channels (in std order) need no further model pass."""
        order, plan = self.plan.order, self.plan
        ready = self.done[order] | plan.zero[order]
        if self.zero_scores is not None:
            ready |= plan.constant[order]
        missing = np.flatnonzero(~ready)
        return int(missing[0]) if missing.size else int(order.size)


@dataclass
class _AblationState:
    """Ablation-CAM's passes for one (layer, image): scores with channel k zeroed."""

    zero: np.ndarray  # (K,) all-zero channels: ablating them changes nothing
    base: np.ndarray  # (n_classes,) scores of the image, at the passes' precision
    scores: np.ndarray  # (K, n_classes); NaN = not run
    done: np.ndarray  # (K,) bool


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    """``scores``, or a ValueError saying why nothing can be explained: a model whose output
    is NaN or infinite would otherwise give all-zero maps and NaN probabilities silently."""
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            "the model's output for this image contains NaN or infinite values, so its classes "
            "cannot be explained: check the model's weights and the preprocessing of its input"
        )
    return scores


def _one_row_per_copy(scores: np.ndarray, copies: int, method: str) -> np.ndarray:
    """``scores`` of a batch of ``copies`` images, checked to hold one row per image: a model
    that mixes images across the batch (a Concatenate on the batch axis) has no per-channel
    scores to read, and would otherwise fail with a bare NumPy shape error."""
    if scores.shape[0] != copies:
        raise ValueError(
            f"{method}: the model returned {scores.shape[0]} rows of scores for a batch of {copies} images; "
            "it mixes images across the batch (e.g. a Concatenate on the batch axis), so per-channel "
            "passes cannot be scored. Gradient methods still work on it."
        )
    return scores


def _top1_if_negative(scores: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
    top1 = tf.argmax(scores[0], output_type=tf.int32)
    return tf.where(class_index < 0, top1, class_index)


class _Call:
    """Bookkeeping of one ``compute`` call: timings, model passes, reuse notes."""

    def __init__(self, offline: bool) -> None:
        self.offline = offline
        self.timings: dict[str, float] = {}
        self.passes = 0
        self.reused: list[str] = []

    def need_pass(self) -> None:
        if self.offline:
            raise _NeedsModelPass

    def spent(self, stage: str, seconds: float, passes: int) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        self.passes += passes


class _Inputs:
    """:class:`~camcore.methods.base.CamInputs` for one (image, layer, class), lazily
    filled from the explainer's caches (the caller holds the explainer's lock)."""

    def __init__(self, explainer: "Explainer", prepared: Prepared, layer: str, class_index: int,
                 max_n: int | None, progress: Progress | None, options: Mapping[str, Any], call: _Call) -> None:
        self._explainer = explainer
        self._prepared = prepared
        self._layer = layer
        self._class = class_index  # -1: top-1, resolved by the first pass that sees the scores
        self._max_n = max_n
        self._progress = progress
        self.options = options
        self._call = call
        self._activations: np.ndarray | None = None
        self._gradients: np.ndarray | None = None

    @property
    def probability_kind(self) -> str:
        return self._explainer.adapter.probability_kind

    @property
    def class_index(self) -> int:
        if self._class < 0:
            self._class = int(np.argmax(self._explainer._scores(self._prepared, self._call)))
        return self._class

    @property
    def max_n(self) -> int:
        return clamp_max_n(self._max_n, self.activations.shape[-1])

    @property
    def activations(self) -> np.ndarray:
        if self._activations is None:
            self._activations = self._explainer._activations(self._prepared, self._layer, self._call)
        return self._activations

    @property
    def gradients(self) -> np.ndarray:
        if self._gradients is None:
            activations, gradients, chosen = self._explainer._gradients(
                self._prepared, self._layer, self._class, self._call
            )
            self._activations, self._gradients, self._class = activations, gradients, chosen
        return self._gradients

    def masked_scores(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self._explainer._masked_scores(
            self._prepared, self._layer, n, self.options, self._progress, self._call
        )

    def ablation_scores(self) -> tuple[np.ndarray, np.ndarray]:
        return self._explainer._ablation_scores(self._prepared, self._layer, self._progress, self._call)


class Explainer:
    """Every registered CAM method for one Keras model, with shared, bounded,
    thread-safe caches.

    Args:
        model: Functional or Sequential Keras 3 classifier (see ModelAdapter).
        target: "logit" (default) or "probability": the score the CAMs explain.
        batch_size: images per compiled pass in Score-CAM / Ablation-CAM.
        cache_size: entries kept in the LRU cache (activations, gradients,
            masked-pass states, saliency maps).
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
    """

    def __init__(
        self,
        model: keras.Model,
        target: str = "logit",
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_size: int = 64,
        precision: str = "fp32",
        verdicts: VerdictStore | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.adapter = ModelAdapter(model, target=target)
        self.batch_size = int(batch_size)
        self.requested_precision = precision
        static = resolve_precision(precision)
        self._verdict_store = verdicts
        self._fixed: Verdict | None = None  # the verdict of every layer, when known without measuring
        if precision != "auto":
            self._fixed = Verdict(static, "as requested", source="requested")
        elif static != "auto":
            forced = autoprecision.forced_verdict()
            self._fixed = forced or Verdict("fp32", f"no bf16 ({precisions.detect_bf16().reason})", source="flags")
        self._layer_verdicts: dict[str, Verdict] = {}
        self._model_hash: str | None = None
        self._pass_adapter_bf16: ModelAdapter | None = None
        self._cache = _LRU(cache_size)
        self._compiled: dict[Any, Callable] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------ model facts
    @property
    def model(self) -> keras.Model:
        return self.adapter.model

    @property
    def layers(self) -> list[LayerInfo]:
        return self.adapter.layers

    @property
    def default_layer(self) -> str:
        return self.adapter.default_layer

    @property
    def n_classes(self) -> int:
        return self.adapter.n_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.adapter.input_shape

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
        if verdict is None or verdict.source == "requested" and verdict.precision == self.requested_precision == "fp32":
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
        with self._lock:
            self.adapter.layer_info(layer)
            return self._verdict(self.prepare(x), layer)

    def _verdict(self, prepared: Prepared, layer: str) -> Verdict:
        known = self.known_verdict(layer)
        if known is not None:
            return known
        verdict = self._store().get_or_measure(self._verdict_key(layer), lambda: self._probe(prepared, layer))
        self._layer_verdicts[layer] = verdict
        return verdict

    def _precision_for(self, prepared: Prepared, layer: str) -> str:
        precision = self._verdict(prepared, layer).precision
        if precision == "bf16" and self._bf16_adapter() is None:
            return "fp32"  # the copy could not be built: every verdict is fp32 from now on
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
        """auto's measurement: Score-CAM's masked passes of this image's channels of largest
        std, at fp32 and through the bf16 copy (see :func:`camcore.autoprecision.probe`)."""
        start = time.perf_counter()
        activations = self._activations(prepared, layer, _Call(offline=False))
        plan = plan_channels(activations)
        channels = plan.order[~plan.constant[plan.order]]
        channels = channels if channels.size else plan.order
        maps = np.moveaxis(activations, -1, 0)
        x = tf.constant(prepared.x)

        def runner(precision: str) -> autoprecision.Run:
            compiled: list[Callable] = []

            def run(i: int, batch: int) -> np.ndarray:
                if not compiled:  # the bf16 copy is built only if the probe gets that far
                    if precision == "bf16" and self._bf16_adapter() is None:
                        raise _NoBf16Copy
                    compiled.append(self._masked_fn(layer, None, precision))
                picked = channels[np.arange(i * batch, (i + 1) * batch) % channels.size]
                return compiled[0](x, tf.constant(maps[picked])).numpy()

            return run

        try:
            verdict = autoprecision.probe(runner("fp32"), runner("bf16"), full_passes=int(channels.size),
                                          max_batch=self.batch_size)
        except _NoBf16Copy:
            return self._fixed or Verdict("fp32", "no bf16 copy", source="fallback")
        return dataclasses.replace(verdict, probe_seconds=time.perf_counter() - start)

    def _bf16_adapter(self) -> ModelAdapter | None:
        """The bf16 copy's adapter, built on first use (about a second and a copy of the
        weights); None, with every layer's verdict set to fp32, where no copy can be built."""
        if self._pass_adapter_bf16 is None:
            copy, note = bf16_copy(self.model)
            if copy is None:
                # an exotic layer: exact fp32 instead, never an error
                self._fixed = Verdict("fp32", f"no bf16 copy of this model: {note}", source="fallback")
                return None
            self._pass_adapter_bf16 = ModelAdapter(copy, target=self.adapter.target)
        return self._pass_adapter_bf16

    def _pass_adapter(self, precision: str) -> ModelAdapter:
        """The adapter forward-only passes at ``precision`` run through: the model itself or its bf16 copy."""
        if precision == "fp32":
            return self.adapter
        return self._bf16_adapter() or self.adapter

    def prepare(self, x: Any, image: np.ndarray | None = None) -> Prepared:
        """``x`` checked against this model's input and hashed once (see :class:`Prepared`)."""
        prepared = Prepared.of(x, image)
        expected = (1, *self.input_shape)
        if prepared.shape != expected:
            raise ValueError(f"x must have shape {expected} for this model, got {prepared.shape}")
        return prepared

    def clear_cache(self) -> None:
        """Drop every cached tensor (the compiled passes stay)."""
        with self._lock:
            self._cache.clear()

    # ------------------------------------------------------- compiled passes
    def _signature_x(self, batch: int | None = 1) -> tf.TensorSpec:
        return tf.TensorSpec((batch, *self.input_shape), tf.float32)

    def _compiled_fn(self, key: Any, build: Callable[[], Callable]) -> Callable:
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = build()
        return fn

    # Every compiled pass has autograph=False: their Python control flow runs at trace time on
    # static values only, and autograph would write a __autograph_generated_file*.py into the
    # temporary folder per trace, kept until the process exits (a long-lived server collected
    # thousands), and it doubled the time of the first pass of every method.
    def _scores_fn(self) -> Callable:
        adapter = self.adapter

        def build():
            @tf.function(autograph=False, input_signature=[self._signature_x(None)])
            def scores(x):
                return adapter.forward(x)[1]

            return scores

        return self._compiled_fn("scores", build)

    def _gradient_fn(self, layer: str) -> Callable:
        adapter = self.adapter

        def build():
            @tf.function(autograph=False, input_signature=[self._signature_x(), tf.TensorSpec((), tf.int32)])
            def forward_backward(x, class_index):
                # Watch only the activations: recording variables would make the tape
                # keep the whole conv stack for nothing.
                with tf.GradientTape(watch_accessed_variables=False) as tape:

                    def watch(tensor):
                        tape.watch(tensor)
                        return tensor

                    activations, scores = adapter.forward(x, capture=layer, on_capture=watch)
                    class_index = _top1_if_negative(scores, class_index)
                    target = adapter.target_score(scores, class_index)
                gradients = tape.gradient(target, activations)
                return activations, scores, gradients, class_index

            return forward_backward

        return self._compiled_fn(("gradient", layer), build)

    def _activation_fn(self, layer: str) -> Callable:
        adapter = self.adapter

        def build():
            @tf.function(autograph=False, input_signature=[self._signature_x()])
            def forward(x):
                return adapter.forward(x, capture=layer)

            return forward

        return self._compiled_fn(("activations", layer), build)

    def _masked_fn(self, layer: str, preprocessing: str | None, precision: str) -> Callable:
        """Compiled Score-CAM pass: (input, maps (B, h, w)) -> scores (B, n_classes).

        Upsampling, min-max normalization and masking happen inside the graph, so
        memory grows with the batch, not with the channel count.
        """
        adapter = self._pass_adapter(precision)
        info = adapter.layer_info(layer)
        height, width, _ = self.input_shape

        def build():
            @tf.function(
                autograph=False,
                input_signature=[
                    self._signature_x(),
                    tf.TensorSpec((None, info.height, info.width), tf.float32),
                ]
            )
            def masked_scores(x, maps):
                up = tf.image.resize(maps[..., None], (height, width), method="bilinear")
                low = tf.reduce_min(up, axis=(1, 2, 3), keepdims=True)
                span = tf.reduce_max(up, axis=(1, 2, 3), keepdims=True) - low
                # (A - min) / (max - min), a constant map gives an all-zero mask
                masks = tf.math.divide_no_nan(up - low, span)
                masked = x * masks
                if preprocessing is not None:
                    masked = apply_preprocessing(masked, preprocessing)
                return adapter.forward(masked)[1]

            return masked_scores

        return self._compiled_fn(("masked", layer, preprocessing, precision), build)

    def _ablation_fn(self, layer: str, precision: str) -> Callable:
        """Compiled Ablation-CAM pass: (input (1, H, W, C), keep (B, K)) -> scores (B, n_classes),
        the layer's output multiplied by ``keep`` per row (0 = channel ablated).

        Every ablation shares the image and so everything before the layer: the fast pass
        runs that part once and only the layers after it on the B gated copies (the batch
        appears at the gate and broadcasts through the rest; where a branch computed once
        joins them, the adapter repeats it to B rows, e.g. a Concatenate with an earlier
        branch). A model whose later layers still cannot take a batch of one beside a batch
        of B (a layer of its own that joins tensors, a layer that mixes rows) gets the plain
        pass that tiles the image B times. The first call decides, by running both on two
        rows and comparing them.
        """
        key = ("ablation", layer, precision)
        chosen = self._compiled.get(key)
        if chosen is not None:
            return chosen
        shared_head = self._ablation_pass(layer, share_head=True, precision=precision)
        tiled = self._ablation_pass(layer, share_head=False, precision=precision)

        def decide(x: tf.Tensor, keep: tf.Tensor) -> Callable:
            probe = keep[:2]
            expected = tiled(x, probe).numpy()
            try:
                fast = shared_head(x, probe).numpy()
            except (tf.errors.OpError, ValueError):
                return tiled
            scale = 1.0 + float(np.abs(expected).max())
            tolerance = (1e-4 if precision == "fp32" else 2e-2) * scale
            agrees = fast.shape == expected.shape and bool(np.all(np.abs(fast - expected) <= tolerance))
            return shared_head if agrees else tiled

        def first_call(x: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
            fn = self._compiled.get(key)
            if fn is None:
                fn = self._compiled[key] = decide(x, keep)
            return fn(x, keep)

        return first_call

    def _ablation_pass(self, layer: str, share_head: bool, precision: str) -> Callable:
        adapter = self._pass_adapter(precision)
        channels = adapter.layer_info(layer).channels

        @tf.function(autograph=False, input_signature=[self._signature_x(), tf.TensorSpec((None, channels), tf.float32)])
        def ablated_scores(x, keep):
            if not share_head:
                x = tf.tile(x, [tf.shape(keep)[0], 1, 1, 1])
            gate = lambda activations: activations * keep[:, None, None, :]  # noqa: E731
            return adapter.forward(x, capture=layer, on_capture=gate, batch_merges=share_head)[1]

        return ablated_scores

    def probabilities_fn(self, precision: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """``f(batch (B, H, W, C)) -> probabilities (B, n_classes)``: the compiled forward the
        faithfulness metrics perturb, at ``precision`` (default: :attr:`precision`)."""
        precision = self.precision if precision is None else resolve_precision(precision)
        if precision == "auto":
            raise ValueError("probabilities_fn needs a measured precision: pass explainer.verdict(x, layer).precision")
        if precision == "bf16" and self._bf16_adapter() is None:
            precision = "fp32"
        adapter = self._pass_adapter(precision)

        def build():
            @tf.function(autograph=False, input_signature=[self._signature_x(None)])
            def probabilities(batch):
                return adapter.probabilities(adapter.forward(batch)[1])

            return probabilities

        fn = self._compiled_fn(("probabilities", precision), build)
        return lambda batch: fn(tf.constant(np.asarray(batch, np.float32))).numpy()

    def _guided_fn(self) -> Callable:
        adapter = self.adapter

        def build():
            @tf.function(autograph=False, input_signature=[self._signature_x(), tf.TensorSpec((), tf.int32)])
            def guided(x, class_index):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x)
                    _, scores = adapter.forward(x, guided=True)
                    class_index = _top1_if_negative(scores, class_index)
                    target = adapter.target_score(scores, class_index)
                return tape.gradient(target, x), class_index

            return guided

        return self._compiled_fn("guided", build)

    # ------------------------------------------------------------ cached data
    def _scores(self, prepared: Prepared, call: _Call | None = None) -> np.ndarray:
        cached = self._cache.get(("scores", prepared.key))
        if cached is None:
            if call is not None:
                call.need_pass()
            start = time.perf_counter()
            cached = _finite_scores(self._scores_fn()(tf.constant(prepared.x)).numpy()[0])
            self._cache.put(("scores", prepared.key), cached)
            if call is not None:
                call.spent("forward", time.perf_counter() - start, 1)
        return cached

    def scores(self, x: Any) -> np.ndarray:
        """Pre-activation class scores (n_classes,) of one input."""
        with self._lock:
            return self._scores(self.prepare(x))

    def predict(self, x: Any) -> np.ndarray:
        """The model's class probabilities (n_classes,) for one input."""
        scores = self.scores(x)
        return np.asarray(self.adapter.probabilities(tf.constant(scores[None])))[0]

    def top_classes(self, x: Any, k: int = 5) -> list[tuple[int, float]]:
        """The k most probable classes as (index, probability), best first."""
        probabilities = self.predict(x)
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(int(i), float(probabilities[i])) for i in order]

    def _known_class(self, key: str, class_index: Any) -> int:
        """The explicit class, or top-1 if the scores are cached; -1 lets the compiled
        pass pick top-1 itself, so an unknown top class costs no extra forward."""
        if class_index is not None:
            return self.adapter.check_class(class_index)
        scores = self._cache.get(("scores", key))
        return -1 if scores is None else int(np.argmax(scores))

    def _gradients(self, prepared: Prepared, layer: str, class_index: int, call: _Call):
        """(activations, gradients, class index); ``class_index`` -1 = top-1, chosen inside the pass."""
        cached = self._cache.get(("gradient", layer, prepared.key, class_index))
        if cached is not None:
            call.reused.append("forward+backward shared with earlier gradient methods")
            return cached[0], cached[1], class_index
        call.need_pass()
        start = time.perf_counter()
        outputs = self._gradient_fn(layer)(tf.constant(prepared.x), tf.constant(class_index, tf.int32))
        activations, scores, gradients = (t.numpy() for t in outputs[:3])
        _finite_scores(scores)
        class_index = int(outputs[3])
        activations, gradients = activations[0], gradients[0]
        self._cache.put(("gradient", layer, prepared.key, class_index), (activations, gradients))
        self._cache.put(("activations", layer, prepared.key), activations)
        self._cache.put(("scores", prepared.key), scores[0])
        call.spent("forward+gradients", time.perf_counter() - start, 1)
        return activations, gradients, class_index

    def _activations(self, prepared: Prepared, layer: str, call: _Call) -> np.ndarray:
        cached = self._cache.get(("activations", layer, prepared.key))
        if cached is not None:
            call.reused.append("activations from an earlier pass")
            return cached
        call.need_pass()
        start = time.perf_counter()
        activations, scores = self._activation_fn(layer)(tf.constant(prepared.x))
        scores = _finite_scores(scores.numpy()[0])
        activations = activations.numpy()[0]
        self._cache.put(("activations", layer, prepared.key), activations)
        self._cache.put(("scores", prepared.key), scores)
        call.spent("activations", time.perf_counter() - start, 1)
        return activations

    def activations_and_gradients(self, x: Any, layer: str, class_index: int | None = None
                                  ) -> tuple[np.ndarray, np.ndarray, int]:
        """The shared tensors of the gradient family: (A (h, w, K), dy_c/dA (h, w, K), c),
        from the cache or one compiled forward+backward. For custom methods and checks."""
        with self._lock:
            self.adapter.layer_info(layer)
            prepared = self.prepare(x)
            index = self._known_class(prepared.key, class_index)
            return self._gradients(prepared, layer, index, _Call(offline=False))

    # -------------------------------------------------------- masked passes
    def _score_state(self, prepared: Prepared, layer: str, raw: Prepared | None,
                     preprocessing: str | None, call: _Call) -> _ScoreState:
        masking = "input" if raw is None else ("raw", preprocessing, raw.key)
        precision = self._precision_for(prepared, layer)
        state_key = ("score", layer, prepared.key, masking, precision)
        state = self._cache.get(state_key)
        if state is None:
            activations = self._activations(prepared, layer, call)
            k = activations.shape[-1]
            state = _ScoreState(
                activations=activations,
                plan=plan_channels(activations),
                scores=np.full((k, self.n_classes), np.nan, np.float32),
                done=np.zeros(k, bool),
                precision=precision,
            )
            self._cache.put(state_key, state)
        return state

    def _run_masked_passes(self, state: _ScoreState, source: np.ndarray, layer: str, n: int,
                           preprocessing: str | None, progress: Progress | None, call: _Call) -> None:
        """Run the masked passes the first ``n`` channels still need."""
        varying, needs_zero = state.plan.passes_needed(n)
        todo = varying[~state.done[varying]]
        zero_todo = needs_zero and state.zero_scores is None
        total = int(todo.size) + int(zero_todo)
        reused = int(varying.size) - int(todo.size) + int(needs_zero and not zero_todo)
        if reused:
            call.reused.append(f"{reused} masked passes reused")
        if total == 0:
            return
        call.need_pass()
        fn = self._masked_fn(layer, preprocessing, state.precision)
        source_t = tf.constant(source)
        maps = np.moveaxis(state.activations, -1, 0)  # (K, h, w)
        done = 0
        if progress is not None:
            progress(0, total)
        start = time.perf_counter()
        if zero_todo:
            zero = np.zeros((1, *maps.shape[1:]), np.float32)
            state.zero_scores = fn(source_t, tf.constant(zero)).numpy()[0]
            done += 1
            if progress is not None:
                progress(done, total)
        for begin in range(0, todo.size, self.batch_size):
            channels = todo[begin : begin + self.batch_size]
            state.scores[channels] = _one_row_per_copy(fn(source_t, tf.constant(maps[channels])).numpy(), channels.size, "Score-CAM")
            state.done[channels] = True
            done += channels.size
            if progress is not None:
                progress(done, total)
        seconds = time.perf_counter() - start
        state.seconds_per_pass = seconds / total
        call.spent("masked passes", seconds, total)

    def _masked_scores(self, prepared: Prepared, layer: str, n: int, options: Mapping[str, Any],
                       progress: Progress | None, call: _Call) -> tuple[np.ndarray, np.ndarray]:
        raw, preprocessing = options.get("raw_image"), options.get("preprocessing")
        if (raw is None) != (preprocessing is None):
            raise ValueError("raw_image and preprocessing go together: give both or neither")
        raw = None if raw is None else self.prepare(raw)
        state = self._score_state(prepared, layer, raw, preprocessing, call)
        n = clamp_max_n(n, state.plan.n_channels)
        source = prepared.x if raw is None else raw.x
        self._run_masked_passes(state, source, layer, n, preprocessing, progress, call)
        return self._masked_rows(state, n)

    @staticmethod
    def _masked_rows(state: _ScoreState, n: int) -> tuple[np.ndarray, np.ndarray]:
        channels = state.plan.order[:n]
        # All-zero channels add 0·w_k to the sum; under channel_softmax their share of
        # the normalizer is a positive global factor that the [0, 1] rescale removes.
        channels = channels[~state.plan.zero[channels]]
        scores = state.scores[channels]
        constant = state.plan.constant[channels]
        if constant.any():
            scores = scores.copy()
            scores[constant] = state.zero_scores
        return channels, scores

    def _ablation_scores(self, prepared: Prepared, layer: str, progress: Progress | None,
                         call: _Call) -> tuple[np.ndarray, np.ndarray]:
        activations = self._activations(prepared, layer, call)
        precision = self._precision_for(prepared, layer)
        key = ("ablation", layer, prepared.key, precision)
        state = self._cache.get(key)
        if state is None:
            k = activations.shape[-1]
            if precision == "fp32":
                base = self._scores(prepared, call)
            else:
                # y_c at the passes' own precision, so (y_c - y_c^k) compares like with like
                call.need_pass()
                base = self._ablation_fn(layer, precision)(tf.constant(prepared.x), tf.ones((1, k))).numpy()[0]
                call.spent("ablation passes", 0.0, 1)
            zero = ~np.any(activations.reshape(-1, k) != 0.0, axis=0)
            state = _AblationState(zero=zero, base=base, scores=np.full((k, self.n_classes), np.nan, np.float32),
                                   done=zero.copy())
            state.scores[zero] = base
            self._cache.put(key, state)
        todo = np.flatnonzero(~state.done)
        if todo.size < int((~state.zero).sum()):
            call.reused.append(f"{int((~state.zero).sum()) - todo.size} ablation passes reused")
        if todo.size:
            call.need_pass()
            fn = self._ablation_fn(layer, precision)
            x = tf.constant(prepared.x)
            k = activations.shape[-1]
            if progress is not None:
                progress(0, int(todo.size))
            start = time.perf_counter()
            for begin in range(0, todo.size, self.batch_size):
                channels = todo[begin : begin + self.batch_size]
                keep = np.ones((channels.size, k), np.float32)
                keep[np.arange(channels.size), channels] = 0.0
                state.scores[channels] = _one_row_per_copy(fn(x, tf.constant(keep)).numpy(), channels.size, "Ablation-CAM")
                state.done[channels] = True
                if progress is not None:
                    progress(begin + channels.size, int(todo.size))
            call.spent("ablation passes", time.perf_counter() - start, int(todo.size))
        return state.base, state.scores

    # -------------------------------------------------------------- dispatch
    def _layers(self, layer: str | Sequence[str]) -> list[str]:
        layers = [layer] if isinstance(layer, str) else list(layer) if isinstance(layer, (list, tuple)) else None
        if not layers:
            raise TypeError(f"layer must be a layer name/path or a non-empty list of them, got {layer!r}")
        for path in layers:
            self.adapter.layer_info(path)
        return layers

    def _compute(self, spec: MethodSpec, prepared: Prepared, layer: str, class_index: int | None,
                 max_n: int | None, progress: Progress | None, options: Mapping[str, Any],
                 call: _Call) -> tuple[np.ndarray, int, int | None]:
        index = self._known_class(prepared.key, class_index)
        inputs = _Inputs(self, prepared, layer, index, max_n, progress, options, call)
        if "gradients" in spec.needs:
            inputs.gradients  # noqa: B018 - one shared pass also resolves top-1
        start, in_passes = time.perf_counter(), sum(call.timings.values())
        raw = np.asarray(spec.cam(inputs), dtype=np.float32)
        if raw.ndim != 2:
            raise ValueError(f"method {spec.key!r} returned a map of shape {raw.shape}, expected (h, w)")
        cam = normalize_cam(np.maximum(np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0), 0.0))
        # the model passes the method triggered are timed as their own stages
        passes = sum(call.timings.values()) - in_passes
        call.timings["weights"] = call.timings.get("weights", 0.0) + time.perf_counter() - start - passes
        used_n = inputs.max_n if spec.uses_max_n else None
        return cam, inputs.class_index, used_n

    def compute(
        self,
        method: str,
        x: Any,
        layer: str | Sequence[str],
        class_index: int | None = None,
        max_n: int | None = None,
        progress: Progress | None = None,
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
            progress: ``progress(done, total)`` as per-channel passes finish.
            options: method options, e.g. Score-CAM's ``weighting="channel_softmax"`` or
                ``raw_image=..., preprocessing=...`` (mask the raw image, re-preprocess).
        """
        return self._run(method, x, layer, class_index, max_n, progress, options, offline=False)

    def peek(self, method: str, x: Any, layer: str | Sequence[str], class_index: int | None = None,
             max_n: int | None = None, **options: Any) -> CamResult | None:
        """The result of :meth:`compute` if it needs no model pass, else None."""
        try:
            return self._run(method, x, layer, class_index, max_n, None, options, offline=True)
        except _NeedsModelPass:
            return None

    def _run(self, method: str, x: Any, layer: str | Sequence[str], class_index: int | None,
             max_n: int | None, progress: Progress | None, options: Mapping[str, Any],
             offline: bool) -> CamResult:
        start = time.perf_counter()
        spec = get_method(method)
        if spec.uses_max_n and max_n is None:
            max_n = DEFAULT_MAX_N
        if max_n is not None:
            clamp_max_n(max_n, 1)  # type and range check before any work
        call = _Call(offline)
        with self._lock:
            layers = self._layers(layer)
            prepared = self.prepare(x)
            if class_index is not None:
                self.adapter.check_class(class_index)
            if len(layers) == 1:
                cam, index, used_n = self._compute(spec, prepared, layers[0], class_index, max_n, progress, options, call)
                layer_id: str | tuple[str, ...] = layers[0]
            else:
                if not spec.fusable:
                    raise ValueError(f"{spec.label} costs a pass per channel: fuse gradient or activation methods only")
                from camcore.methods.fusion import fuse_maps

                maps = []
                for path in layers:
                    cam, index, used_n = self._compute(spec, prepared, path, class_index, max_n, progress, options, call)
                    class_index = index  # every layer explains the same class
                    maps.append(cam)
                cam = fuse_maps(maps, self.input_shape[:2])
                layer_id = tuple(layers)
        return CamResult(
            method=spec.key,
            cam=cam,
            seconds=time.perf_counter() - start,
            cached=call.passes == 0,
            model_passes=call.passes,
            timings=call.timings,
            reused=tuple(dict.fromkeys(call.reused)),
            class_index=index,
            layer=layer_id,
            max_n=used_n,
        )

    # ------------------------------------------------------ Score-CAM extras
    def score_cam_channels_done(self, x: Any, layer: str) -> int:
        """How many leading channels (in std order) are covered by cached masked passes:
        any ``max_n`` up to this number costs no model pass."""
        with self._lock:
            state = self._cached_score_state(self.prepare(x), layer)
            return 0 if state is None else state.covered_prefix()

    def _cached_score_state(self, prepared: Prepared, layer: str) -> _ScoreState | None:
        verdict = self.known_verdict(layer)  # None: no masked pass ran for this layer yet
        return None if verdict is None else self._cache.get(("score", layer, prepared.key, "input", verdict.precision))

    def score_state(self, x: Any, layer: str) -> _ScoreState | None:
        """The cached Score-CAM state of (x, layer) - channel plan, masked-pass scores, what
        ran - for inspection by tests and benchmarks; None before any masked pass."""
        with self._lock:
            return self._cached_score_state(self.prepare(x), layer)

    def faster_score_cam_tradeoff(
        self, x: Any, layer: str, class_index: int | None = None, ns: Sequence[int] | None = None
    ) -> list[dict[str, float]]:
        """Faster-Score-CAM against full Score-CAM as max_n grows.

        For each n: the masked passes it needs, their estimated time (at the per-pass
        time measured when they ran) and the correlation of its map with full
        Score-CAM. Runs full Score-CAM first if needed; then costs no pass.
        """
        with self._lock:
            prepared = self.prepare(x)
            full = self.compute("score_cam", prepared, layer, class_index)
            state = self._cached_score_state(prepared, layer)
            total = state.plan.n_channels
            if ns is None:
                ns = sorted({int(round(v)) for v in np.geomspace(1, total, num=min(total, 24))})
            rows = []
            for n in ns:
                n = clamp_max_n(int(n), total)
                varying, needs_zero = state.plan.passes_needed(n)
                passes = int(varying.size) + int(needs_zero)
                channels, scores = self._masked_rows(state, n)
                weights = score_cam_weights(scores, full.class_index, self.adapter.probability_kind)
                cam = np.tensordot(state.activations[..., channels], weights, axes=([-1], [0]))
                cam = normalize_cam(np.maximum(cam, 0.0))
                rows.append(
                    {
                        "max_n": n,
                        "passes": passes,
                        "seconds": passes * state.seconds_per_pass,
                        "correlation": map_correlation(cam, full.cam),
                    }
                )
            return rows

    # --------------------------------------------------------- guided saliency
    def guided_backprop(self, x: Any, class_index: int | None = None) -> np.ndarray:
        """Guided backpropagation (Springenberg et al. 2015, eq. 6): d score / d input with
        only positive gradients passed through every ReLU. (H, W, C) float32, raw
        gradient values (signed); see ``camcore.visualize`` for display."""
        with self._lock:
            prepared = self.prepare(x)
            index = self._known_class(prepared.key, class_index)
            cached = self._cache.get(("guided", prepared.key, index))
            if cached is None:
                saliency, chosen = self._guided_fn()(tf.constant(prepared.x), tf.constant(index, tf.int32))
                cached = saliency.numpy()[0]
                self._cache.put(("guided", prepared.key, int(chosen)), cached)
            return cached
