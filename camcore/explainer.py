"""Explainer: every CAM method for one model, sharing work between them.

Per (layer, image) it caches the layer's activations and the class scores; per
(layer, image, class) the gradient of the class score (Grad-CAM and Grad-CAM++
come from the same compiled forward+backward); per (layer, image) the scores of
Score-CAM's masked passes, for every class at once. Masked passes run in order of
decreasing channel std, so after any Score-CAM run every ``max_n`` up to what was
computed (Faster-Score-CAM) costs no model pass at all.

The plain functions at the bottom (``grad_cam(model, x, layer)`` ...) build a
fresh Explainer per call; keep an Explainer to benefit from the caches.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from camcore.adapter import LayerInfo, ModelAdapter
from camcore.methods import METHODS
from camcore.metrics import map_correlation
from camcore.methods.gradient import (
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    normalize_cam,
    weighted_cam,
)
from camcore.methods.score import (
    ChannelPlan,
    clamp_max_n,
    plan_channels,
    score_cam_weights,
)
from camcore.preprocess import apply_preprocessing

Progress = Callable[[int, int], None]
DEFAULT_MAX_N = 10
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class CamResult:
    """A CAM with how it was obtained.

    ``seconds`` is the wall time of this call; ``timings`` splits it into stages
    ("forward+gradients", "activations", "masked passes", "weights");
    ``model_passes`` counts images run through the model by this call (0 when
    everything came from the cache, ``cached`` is then True).
    """

    method: str
    cam: np.ndarray
    seconds: float
    cached: bool
    model_passes: int
    timings: dict[str, float] = field(default_factory=dict)


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

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class _ScoreState:
    """Score-CAM's masked-pass results for one (layer, image, masking)."""

    activations: np.ndarray  # (h, w, K)
    plan: ChannelPlan
    scores: np.ndarray  # (K, n_classes) pre-activation scores of X∘H^k; NaN = not run
    done: np.ndarray  # (K,) bool
    zero_scores: np.ndarray | None = None  # scores of the all-zero mask, shared by constant channels
    seconds_per_pass: float = 0.0

    def covered_prefix(self) -> int:
        """How many leading channels (in std order) need no further model pass."""
        order, plan = self.plan.order, self.plan
        ready = self.done[order] | plan.zero[order]
        if self.zero_scores is not None:
            ready |= plan.constant[order]
        missing = np.flatnonzero(~ready)
        return int(missing[0]) if missing.size else int(order.size)


def _top1_if_negative(scores: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
    top1 = tf.argmax(scores[0], output_type=tf.int32)
    return tf.where(class_index < 0, top1, class_index)


def image_key(x: np.ndarray) -> str:
    """Content hash of an input array (shape, dtype and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((x.shape, x.dtype.str)).encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


class Explainer:
    """All CAM methods for one Keras model, with shared, bounded, thread-safe caches.

    Args:
        model: Functional or Sequential Keras 3 classifier (see ModelAdapter).
        target: "logit" (default) or "probability": the score the CAMs explain.
        batch_size: images per compiled masked forward pass in Score-CAM.
        cache_size: entries kept in the LRU cache (activations, gradients,
            Score-CAM states, saliency maps).
    """

    def __init__(
        self,
        model: keras.Model,
        target: str = "logit",
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.adapter = ModelAdapter(model, target=target)
        self.batch_size = int(batch_size)
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

    # ------------------------------------------------------- compiled passes
    def _signature_x(self, batch: int | None = 1) -> tf.TensorSpec:
        return tf.TensorSpec((batch, *self.input_shape), tf.float32)

    def _scores_fn(self) -> Callable:
        fn = self._compiled.get("scores")
        if fn is None:
            adapter = self.adapter

            @tf.function(input_signature=[self._signature_x(None)])
            def scores(x):
                return adapter.forward(x)[1]

            fn = self._compiled["scores"] = scores
        return fn

    def _gradient_fn(self, layer: str) -> Callable:
        key = ("gradient", layer)
        fn = self._compiled.get(key)
        if fn is None:
            adapter = self.adapter

            @tf.function(input_signature=[self._signature_x(), tf.TensorSpec((), tf.int32)])
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

            fn = self._compiled[key] = forward_backward
        return fn

    def _activation_fn(self, layer: str) -> Callable:
        key = ("activations", layer)
        fn = self._compiled.get(key)
        if fn is None:
            adapter = self.adapter

            @tf.function(input_signature=[self._signature_x()])
            def forward(x):
                return adapter.forward(x, capture=layer)

            fn = self._compiled[key] = forward
        return fn

    def _masked_fn(self, layer: str, preprocessing: str | None) -> Callable:
        """Compiled Score-CAM pass: (input, maps (B, h, w)) -> scores (B, n_classes).

        Upsampling, min-max normalization and masking happen inside the graph, so
        memory grows with the batch, not with the channel count.
        """
        key = ("masked", layer, preprocessing)
        fn = self._compiled.get(key)
        if fn is None:
            adapter = self.adapter
            info = adapter.layer_info(layer)
            height, width, _ = self.input_shape

            @tf.function(
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

            fn = self._compiled[key] = masked_scores
        return fn

    def _guided_fn(self) -> Callable:
        fn = self._compiled.get("guided")
        if fn is None:
            adapter = self.adapter

            @tf.function(input_signature=[self._signature_x(), tf.TensorSpec((), tf.int32)])
            def guided(x, class_index):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x)
                    _, scores = adapter.forward(x, guided=True)
                    class_index = _top1_if_negative(scores, class_index)
                    target = adapter.target_score(scores, class_index)
                return tape.gradient(target, x), class_index

            fn = self._compiled["guided"] = guided
        return fn

    # ------------------------------------------------------------ cached data
    def _prepare(self, x: Any) -> tuple[np.ndarray, str]:
        arr = self.adapter.check_input(x)
        return arr, image_key(arr)

    def scores(self, x: Any) -> np.ndarray:
        """Pre-activation class scores (n_classes,) of one input."""
        with self._lock:
            arr, key = self._prepare(x)
            return self._scores(arr, key)

    def _scores(self, arr: np.ndarray, key: str) -> np.ndarray:
        cached = self._cache.get(("scores", key))
        if cached is None:
            cached = self._scores_fn()(tf.constant(arr)).numpy()[0]
            self._cache.put(("scores", key), cached)
        return cached

    def predict(self, x: Any) -> np.ndarray:
        """The model's class probabilities (n_classes,) for one input."""
        scores = self.scores(x)
        return np.asarray(self.adapter.probabilities(tf.constant(scores[None])))[0]

    def top_classes(self, x: Any, k: int = 5) -> list[tuple[int, float]]:
        """The k most probable classes as (index, probability), best first."""
        probabilities = self.predict(x)
        order = np.argsort(-probabilities, kind="stable")[:k]
        return [(int(i), float(probabilities[i])) for i in order]

    def _class(self, arr: np.ndarray, key: str, class_index: Any) -> int:
        if class_index is None:
            return int(np.argmax(self._scores(arr, key)))
        return self.adapter.check_class(class_index)

    def _known_class(self, key: str, class_index: Any) -> int:
        """The explicit class, or top-1 if the scores are cached; -1 lets the compiled
        pass pick top-1 itself, so an unknown top class costs no extra forward."""
        if class_index is not None:
            return self.adapter.check_class(class_index)
        scores = self._cache.get(("scores", key))
        return -1 if scores is None else int(np.argmax(scores))

    def _gradients(self, arr: np.ndarray, key: str, layer: str, class_index: int):
        """(activations, gradients, seconds spent or 0.0 when cached, class index).

        ``class_index`` -1 means top-1, chosen inside the compiled pass.
        """
        cached = self._cache.get(("gradient", layer, key, class_index))
        if cached is not None:
            return cached[0], cached[1], 0.0, class_index
        start = time.perf_counter()
        outputs = self._gradient_fn(layer)(tf.constant(arr), tf.constant(class_index, tf.int32))
        activations, scores, gradients = (t.numpy() for t in outputs[:3])
        class_index = int(outputs[3])
        activations, gradients = activations[0], gradients[0]
        seconds = time.perf_counter() - start
        self._cache.put(("gradient", layer, key, class_index), (activations, gradients))
        self._cache.put(("activations", layer, key), (activations, scores[0]))
        self._cache.put(("scores", key), scores[0])
        return activations, gradients, seconds, class_index

    def _activations(self, arr: np.ndarray, key: str, layer: str) -> tuple[np.ndarray, float]:
        cached = self._cache.get(("activations", layer, key))
        if cached is not None:
            return cached[0], 0.0
        start = time.perf_counter()
        activations, scores = self._activation_fn(layer)(tf.constant(arr))
        activations = activations.numpy()[0]
        self._cache.put(("activations", layer, key), (activations, scores.numpy()[0]))
        self._cache.put(("scores", key), scores.numpy()[0])
        return activations, time.perf_counter() - start

    # ---------------------------------------------------------- gradient CAMs
    def _gradient_cam(self, method: str, weights_fn, x, layer, class_index) -> CamResult:
        start = time.perf_counter()
        with self._lock:
            self.adapter.layer_info(layer)
            arr, key = self._prepare(x)
            index = self._known_class(key, class_index)
            activations, gradients, pass_seconds, _ = self._gradients(arr, key, layer, index)
            weights_start = time.perf_counter()
            cam = weighted_cam(activations, weights_fn(activations, gradients))
            weight_seconds = time.perf_counter() - weights_start
        return CamResult(
            method,
            cam,
            time.perf_counter() - start,
            cached=pass_seconds == 0.0,
            model_passes=0 if pass_seconds == 0.0 else 1,
            timings={"forward+gradients": pass_seconds, "weights": weight_seconds},
        )

    def grad_cam_result(self, x: Any, layer: str, class_index: int | None = None) -> CamResult:
        return self._gradient_cam("grad_cam", grad_cam_weights, x, layer, class_index)

    def grad_cam_plus_plus_result(self, x: Any, layer: str, class_index: int | None = None) -> CamResult:
        return self._gradient_cam("grad_cam_plus_plus", grad_cam_plus_plus_weights, x, layer, class_index)

    def grad_cam(self, x: Any, layer: str, class_index: int | None = None) -> np.ndarray:
        """Grad-CAM (Selvaraju et al. 2017, eq. 1-2): (h, w) float32 in [0, 1]."""
        return self.grad_cam_result(x, layer, class_index).cam

    def grad_cam_plus_plus(self, x: Any, layer: str, class_index: int | None = None) -> np.ndarray:
        """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 10, 11, 19): (h, w) float32 in [0, 1]."""
        return self.grad_cam_plus_plus_result(x, layer, class_index).cam

    # ---------------------------------------------------------------- Score-CAM
    def _score_state(self, arr, key, layer, raw, preprocessing) -> tuple[_ScoreState, float]:
        masking = "input" if raw is None else ("raw", preprocessing, image_key(raw))
        state_key = ("score", layer, key, masking)
        state = self._cache.get(state_key)
        seconds = 0.0
        if state is None:
            activations, seconds = self._activations(arr, key, layer)
            k = activations.shape[-1]
            state = _ScoreState(
                activations=activations,
                plan=plan_channels(activations),
                scores=np.full((k, self.n_classes), np.nan, np.float32),
                done=np.zeros(k, bool),
            )
            self._cache.put(state_key, state)
        return state, seconds

    def _run_masked_passes(self, state, arr, layer, n, raw, preprocessing, progress) -> int:
        """Run the masked passes the first ``n`` channels still need; return how many ran."""
        varying, needs_zero = state.plan.passes_needed(n)
        todo = varying[~state.done[varying]]
        zero_todo = needs_zero and state.zero_scores is None
        total = int(todo.size) + int(zero_todo)
        if total == 0:
            return 0
        fn = self._masked_fn(layer, None if raw is None else preprocessing)
        source = tf.constant(arr if raw is None else np.asarray(raw, np.float32))
        maps = np.moveaxis(state.activations, -1, 0)  # (K, h, w)
        done = 0
        if progress is not None:
            progress(0, total)
        start = time.perf_counter()
        if zero_todo:
            zero = np.zeros((1, *maps.shape[1:]), np.float32)
            state.zero_scores = fn(source, tf.constant(zero)).numpy()[0]
            done += 1
            if progress is not None:
                progress(done, total)
        for begin in range(0, todo.size, self.batch_size):
            channels = todo[begin : begin + self.batch_size]
            state.scores[channels] = fn(source, tf.constant(maps[channels])).numpy()
            state.done[channels] = True
            done += channels.size
            if progress is not None:
                progress(done, total)
        state.seconds_per_pass = (time.perf_counter() - start) / total
        return total

    def _score_cam_map(self, state: _ScoreState, n: int, class_index: int, weighting: str) -> np.ndarray:
        channels = state.plan.order[:n]
        # All-zero channels add 0·w_k to the sum; under channel_softmax their share of
        # the normalizer is a positive global factor that the [0, 1] rescale removes.
        channels = channels[~state.plan.zero[channels]]
        if channels.size == 0:
            return np.zeros(state.activations.shape[:2], np.float32)
        scores = state.scores[channels]
        constant = state.plan.constant[channels]
        if constant.any():
            scores = scores.copy()
            scores[constant] = state.zero_scores
        weights = score_cam_weights(scores, class_index, self.adapter.probability_kind, weighting)
        cam = np.tensordot(state.activations[..., channels], weights, axes=([-1], [0]))
        return normalize_cam(np.maximum(cam, 0.0))

    def score_cam_result(
        self,
        x: Any,
        layer: str,
        class_index: int | None = None,
        max_n: int | None = None,
        *,
        weighting: str = "class_softmax",
        progress: Progress | None = None,
        raw_image: np.ndarray | None = None,
        preprocessing: str | None = None,
        method: str | None = None,
    ) -> CamResult:
        """Score-CAM with its timings; see :meth:`score_cam`."""
        start = time.perf_counter()
        if (raw_image is None) != (preprocessing is None):
            raise ValueError("raw_image and preprocessing go together: give both or neither")
        with self._lock:
            self.adapter.layer_info(layer)
            arr, key = self._prepare(x)
            if raw_image is not None:
                raw_image = self.adapter.check_input(raw_image)
            if class_index is not None:
                self.adapter.check_class(class_index)
            state, forward_seconds = self._score_state(arr, key, layer, raw_image, preprocessing)
            index = self._class(arr, key, class_index)  # scores are cached by now
            n = clamp_max_n(max_n, state.plan.n_channels)
            masked_start = time.perf_counter()
            passes = self._run_masked_passes(state, arr, layer, n, raw_image, preprocessing, progress)
            masked_seconds = time.perf_counter() - masked_start
            weights_start = time.perf_counter()
            cam = self._score_cam_map(state, n, index, weighting)
            weight_seconds = time.perf_counter() - weights_start
        label = method or ("score_cam" if max_n is None else "faster_score_cam")
        return CamResult(
            label,
            cam,
            time.perf_counter() - start,
            cached=passes == 0 and forward_seconds == 0.0,
            model_passes=passes + (1 if forward_seconds else 0),
            timings={
                "activations": forward_seconds,
                "masked passes": masked_seconds if passes else 0.0,
                "weights": weight_seconds,
            },
        )

    def score_cam(
        self,
        x: Any,
        layer: str,
        class_index: int | None = None,
        max_n: int | None = None,
        *,
        weighting: str = "class_softmax",
        progress: Progress | None = None,
        raw_image: np.ndarray | None = None,
        preprocessing: str | None = None,
    ) -> np.ndarray:
        """Score-CAM (Wang et al. 2020, eq. 3-5): (h, w) float32 in [0, 1].

        ``max_n=None`` uses every channel; ``max_n=k`` is Faster-Score-CAM on the k
        channels of largest activation std (k > channel count uses them all).
        Masks multiply the preprocessed ``x``; give ``raw_image`` (0..255, model
        layout) and a ``preprocessing`` mode to mask the raw image and re-preprocess.
        ``progress(done, total)`` is called as masked passes finish.
        """
        return self.score_cam_result(
            x, layer, class_index, max_n, weighting=weighting, progress=progress,
            raw_image=raw_image, preprocessing=preprocessing,
        ).cam

    def faster_score_cam(
        self, x: Any, layer: str, class_index: int | None = None, max_n: int = DEFAULT_MAX_N, **kwargs: Any
    ) -> np.ndarray:
        """Faster-Score-CAM: Score-CAM on the ``max_n`` channels of largest activation std."""
        return self.score_cam(x, layer, class_index, max_n=max_n, **kwargs)

    def score_cam_channels_done(self, x: Any, layer: str) -> int:
        """How many leading channels (in std order) are covered by cached masked passes.

        Any ``max_n`` up to this number costs no model pass.
        """
        with self._lock:
            arr, key = self._prepare(x)
            state = self._cache.get(("score", layer, key, "input"))
            if state is None:
                return 0
            return state.covered_prefix()

    def faster_score_cam_tradeoff(
        self, x: Any, layer: str, class_index: int | None = None, ns: Sequence[int] | None = None
    ) -> list[dict[str, float]]:
        """Faster-Score-CAM against full Score-CAM as max_n grows.

        For each n: the masked passes it needs, their estimated time (at the
        per-pass time measured when they ran) and the correlation of its map with
        full Score-CAM. Runs full Score-CAM first if needed; then costs no pass.
        """
        full = self.score_cam_result(x, layer, class_index, None)
        with self._lock:
            arr, key = self._prepare(x)
            index = self._class(arr, key, class_index)
            state = self._cache.get(("score", layer, key, "input"))
            total = state.plan.n_channels
            if ns is None:
                ns = sorted({int(round(v)) for v in np.geomspace(1, total, num=min(total, 24))})
            rows = []
            for n in ns:
                n = clamp_max_n(int(n), total)
                varying, needs_zero = state.plan.passes_needed(n)
                passes = int(varying.size) + int(needs_zero)
                cam = self._score_cam_map(state, n, index, "class_softmax")
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
        """Guided backpropagation (Springenberg et al. 2015): d score / d input with
        only positive gradients passed through every ReLU. (H, W, C) float32, raw
        gradient values (signed); see ``camcore.visualize`` for display."""
        with self._lock:
            arr, key = self._prepare(x)
            index = self._known_class(key, class_index)
            cached = self._cache.get(("guided", key, index))
            if cached is None:
                saliency, chosen = self._guided_fn()(tf.constant(arr), tf.constant(index, tf.int32))
                cached = saliency.numpy()[0]
                self._cache.put(("guided", key, int(chosen)), cached)
            return cached

    # -------------------------------------------------------------- dispatch
    def compute(
        self,
        method: str,
        x: Any,
        layer: str,
        class_index: int | None = None,
        max_n: int | None = None,
        progress: Progress | None = None,
    ) -> CamResult:
        """Run a method of the registry (``camcore.METHODS``) by key."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        if method == "grad_cam":
            return self.grad_cam_result(x, layer, class_index)
        if method == "grad_cam_plus_plus":
            return self.grad_cam_plus_plus_result(x, layer, class_index)
        if method == "score_cam":
            return self.score_cam_result(x, layer, class_index, None, progress=progress, method=method)
        n = DEFAULT_MAX_N if max_n is None else max_n
        return self.score_cam_result(x, layer, class_index, n, progress=progress, method=method)


# ------------------------------------------------------------- plain functions
def grad_cam(model: keras.Model, x: Any, layer: str, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) of ``class_index`` (default top-1)
    at ``layer`` (name, or path like "vgg16/block5_conv3"): (h, w) float32 in [0, 1]."""
    return Explainer(model).grad_cam(x, layer, class_index)


def grad_cam_plus_plus(model: keras.Model, x: Any, layer: str, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 10, 11, 19): (h, w) float32 in [0, 1]."""
    return Explainer(model).grad_cam_plus_plus(x, layer, class_index)


def score_cam(
    model: keras.Model,
    x: Any,
    layer: str,
    class_index: int | None = None,
    max_n: int | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Score-CAM (Wang et al. 2020); ``max_n=k`` gives Faster-Score-CAM. (h, w) in [0, 1]."""
    return Explainer(model).score_cam(x, layer, class_index, max_n, **kwargs)


def faster_score_cam(
    model: keras.Model, x: Any, layer: str, class_index: int | None = None, max_n: int = DEFAULT_MAX_N
) -> np.ndarray:
    """Faster-Score-CAM: Score-CAM on the ``max_n`` channels of largest activation std."""
    return Explainer(model).score_cam(x, layer, class_index, max_n)


def guided_backprop(model: keras.Model, x: Any, class_index: int | None = None) -> np.ndarray:
    """Guided backpropagation saliency (Springenberg et al. 2015): (H, W, C) float32."""
    return Explainer(model).guided_backprop(x, class_index)
