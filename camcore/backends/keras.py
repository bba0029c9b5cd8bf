"""The Keras backend: every pass of :class:`~camcore.backends.base.Backend` as one compiled
TensorFlow function through :class:`~camcore.adapter.ModelAdapter` (nested backbones, list
inputs, softmax/sigmoid heads read as logits), plus a bf16 copy for the forward-only passes.

Every compiled pass has ``autograph=False``: their Python control flow runs at trace time on
static values only, and autograph would write a ``__autograph_generated_file*.py`` into the
temporary folder per trace, kept until the process exits (a long-lived server collected
thousands), and it doubled the time of the first pass of every method.

The batched passes (masked, ablated, forward) are traced once per batch size, with every
shape static (:meth:`KerasBackend._static`): with a free batch dimension the same masked
pass of VGG16 ran at 1.27x the time of ``model(x)`` on a fixed-shape batch of 16 (487 vs
382 ms/image, AMD EPYC, 2026-12-07), with static shapes at 1.03x (392 ms) - oneDNN picks
its kernels per shape. Only a few batch sizes occur (the batch, the last remainder).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from camcore.adapter import ModelAdapter
from camcore.backends.base import Backend, LayerInfo
from camcore.precision import bf16_copy
from camcore.preprocess import apply_preprocessing


def _top1_if_negative(scores: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
    top1 = tf.argmax(scores[0], output_type=tf.int32)
    return tf.where(class_index < 0, top1, class_index)


class KerasBackend(Backend):
    """A Functional or Sequential Keras 3 classifier (see :class:`ModelAdapter`).

    Args:
        model: the classifier; never modified.
        target: "logit" (default) or "probability": the score gradients are taken of.
    """

    kind = "keras"
    capabilities = frozenset({"gradients", "guided_backprop", "layer_tail"})
    precisions = ("fp32", "bf16")
    max_traced = 48
    """Compiled passes kept (least recently used go first, with their traces): each holds
    its graphs, ~1 MB each on the demo models, and a session that visits every layer of a
    model makes ~8 per layer, so without a bound a long-lived server only grew."""

    def __init__(self, model: keras.Model, target: str = "logit") -> None:
        self.adapter = ModelAdapter(model, target=target)
        self.model = model
        self.input_shape = self.adapter.input_shape
        self.n_classes = self.adapter.n_classes
        self.probability_kind = self.adapter.probability_kind
        self.layers = self.adapter.layers
        self._compiled: OrderedDict[Any, Callable] = OrderedDict()
        self._concrete: dict[Any, dict[Any, Callable]] = {}  # key -> {signature: traced graph}
        self._bf16: ModelAdapter | None = None
        self._bf16_failure: str | None = None
        self._bf16_lock = threading.Lock()  # one copy, however many threads ask at once
        self._trace_lock = threading.RLock()  # one trace per pass, however many threads ask at once

    # ------------------------------------------------------------ facts
    @property
    def default_layer(self) -> str:
        return self.adapter.default_layer

    def layer_info(self, path: str) -> LayerInfo:
        return self.adapter.layer_info(path)

    def check_class(self, class_index: Any) -> int:
        return self.adapter.check_class(class_index)

    # ------------------------------------------------------------ precision
    def prepare_precision(self, precision: str) -> str | None:
        """fp32 is always ready; bf16 builds the copy on first use (about a second and a copy
        of the weights) and returns why not where a layer cannot be rebuilt in bf16."""
        if precision == "fp32":
            return None
        with self._bf16_lock:
            if self._bf16 is None and self._bf16_failure is None:
                copy, note = bf16_copy(self.model)
                if copy is None:
                    self._bf16_failure = note
                else:
                    self._bf16 = ModelAdapter(copy, target=self.adapter.target)
        return self._bf16_failure

    @property
    def bf16_model(self) -> keras.Model | None:
        """The bf16 copy, once built."""
        return None if self._bf16 is None else self._bf16.model

    def _adapter(self, precision: str) -> ModelAdapter:
        if precision == "fp32":
            return self.adapter
        failure = self.prepare_precision(precision)
        if failure is not None or self._bf16 is None:
            raise ValueError(f"no {precision} copy of this model: {failure}")
        return self._bf16

    def compiled_passes(self) -> list[Callable]:
        """Every tf.function built so far (for memory checks)."""
        return [fn for fn in self._compiled.values() if hasattr(fn, "experimental_get_tracing_count")]

    # ------------------------------------------------------------ compiled passes
    def _compiled_fn(self, key: Any, build: Callable[[], Callable]) -> Callable:
        with self._trace_lock:
            fn = self._compiled.get(key)
            if fn is None:
                fn = self._compiled[key] = build()
                while len(self._compiled) > self.max_traced:
                    oldest, _ = self._compiled.popitem(last=False)
                    self._concrete.pop(oldest, None)
            else:
                self._compiled.move_to_end(key)
            return fn

    def _static(self, key: Any, build: Callable[[], Callable], *arrays: Any) -> Callable:
        """The tf.function ``build()`` makes (one per ``key``), traced for exactly the shapes
        and dtypes of ``arrays``: one graph per batch size, every shape static. Calling the
        traced graph directly also skips tf.function's argument binding on every call."""
        signature = tuple((tuple(int(d) for d in a.shape), tf.as_dtype(a.dtype).name) for a in arrays)
        with self._trace_lock:
            fn = self._compiled_fn(key, build)  # marks the key recently used
            traces = self._concrete.setdefault(key, {})
            concrete = traces.get(signature)
            if concrete is None:
                specs = [tf.TensorSpec(shape, tf.as_dtype(dtype)) for shape, dtype in signature]
                # build() makes a tf.function; TensorFlow ships no type information for it
                concrete = traces[signature] = fn.get_concrete_function(*specs)  # type: ignore[attr-defined]
            return concrete

    def forward(self, batch: np.ndarray, precision: str = "fp32") -> np.ndarray:
        adapter = self._adapter(precision)

        def build() -> Callable:
            @tf.function(autograph=False)
            def scores(x):
                return adapter.forward(x)[1]

            return scores

        batch = np.asarray(batch, np.float32)
        return self._static(("forward", precision), build, batch)(tf.constant(batch)).numpy()

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x, "fp32")[0]

    def activations(self, x: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
        adapter = self.adapter

        def build() -> Callable:
            @tf.function(autograph=False)
            def forward(x):
                return adapter.forward(x, capture=layer)

            return forward

        activations, scores = self._static(("activations", layer), build, x)(tf.constant(x))
        return activations.numpy()[0], scores.numpy()[0]

    def gradients(self, x: np.ndarray, layer: str, class_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        adapter = self.adapter

        def build() -> Callable:
            @tf.function(autograph=False)
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

        index = np.int32(class_index)
        fn = self._static(("gradient", layer), build, x, index)
        activations, scores, gradients, chosen = fn(tf.constant(x), tf.constant(index))
        return activations.numpy()[0], gradients.numpy()[0], scores.numpy()[0], int(chosen)

    def guided_backprop(self, x: np.ndarray, class_index: int) -> tuple[np.ndarray, int]:
        adapter = self.adapter

        def build() -> Callable:
            @tf.function(autograph=False)
            def guided(x, class_index):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x)
                    _, scores = adapter.forward(x, guided=True)
                    class_index = _top1_if_negative(scores, class_index)
                    target = adapter.target_score(scores, class_index)
                return tape.gradient(target, x), class_index

            return guided

        index = np.int32(class_index)
        saliency, chosen = self._static("guided", build, x, index)(tf.constant(x), tf.constant(index))
        return saliency.numpy()[0], int(chosen)

    def _masked_fn(self, layer: str, preprocessing: str | None, precision: str) -> Callable[[], Callable]:
        """The builder of the compiled Score-CAM pass: (input, maps (B, h, w)) -> scores (B, n_classes).

        Upsampling, min-max normalization and masking happen inside the graph, so
        memory grows with the batch, not with the channel count.
        """
        adapter = self._adapter(precision)
        height, width, _ = self.input_shape

        def build() -> Callable:
            @tf.function(autograph=False)
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

        return build

    def masked_scores(self, x: np.ndarray, layer: str, maps: np.ndarray, preprocessing: str | None = None,
                      precision: str = "fp32") -> np.ndarray:
        maps = np.asarray(maps, np.float32)
        if maps.shape[1:] != self.layer_info(layer).shape[:2]:
            raise ValueError(
                f"maps of shape {maps.shape[1:]} do not fit layer {layer!r} {self.layer_info(layer).shape[:2]}"
            )
        fn = self._static(("masked", layer, preprocessing, precision), self._masked_fn(layer, preprocessing, precision),
                          x, maps)
        return fn(tf.constant(x), tf.constant(maps)).numpy()

    def ablated_scores(self, x: np.ndarray, layer: str, keep: np.ndarray, precision: str = "fp32") -> np.ndarray:
        return self._ablation_fn(layer, precision)(tf.constant(x), tf.constant(keep, tf.float32)).numpy()

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
        shared_head = self.ablation_pass(layer, share_head=True, precision=precision)
        tiled = self.ablation_pass(layer, share_head=False, precision=precision)

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
            return self._compiled_fn(key, lambda: decide(x, keep))(x, keep)

        return first_call

    def ablation_pass(self, layer: str, share_head: bool, precision: str = "fp32") -> Callable:
        """One compiled Ablation-CAM pass: the shared-head one (layers before ``layer`` run
        once) or the tiled one (the whole model per gated copy); traced per batch size."""
        adapter = self._adapter(precision)

        def build() -> Callable:
            @tf.function(autograph=False)
            def ablated_scores(x, keep):
                if not share_head:
                    x = tf.tile(x, [tf.shape(keep)[0], 1, 1, 1])
                gate = lambda activations: activations * keep[:, None, None, :]  # noqa: E731
                return adapter.forward(x, capture=layer, on_capture=gate, batch_merges=share_head)[1]

            return ablated_scores

        key = ("ablation pass", layer, share_head, precision)
        return lambda x, keep: self._static(key, build, x, keep)(x, keep)

    def probabilities_fn(self, precision: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
        adapter = self._adapter(precision)

        def build() -> Callable:
            @tf.function(autograph=False)
            def probabilities(batch):
                return adapter.probabilities(adapter.forward(batch)[1])

            return probabilities

        def run(batch: np.ndarray) -> np.ndarray:
            batch = np.asarray(batch, np.float32)
            return self._static(("probabilities", precision), build, batch)(tf.constant(batch)).numpy()

        return run
