"""ModelAdapter: the one place that knows Keras quirks.

Every CAM method needs the same two things from a model: the activations of a
chosen layer and the *pre-activation* score of the chosen class, computed in one
forward pass so that gradients flow between them. Getting both is where naive
code breaks:

* a backbone nested as one layer (``Sequential([VGG16(...), Dense(...)])``): the
  inner layer's symbolic output belongs to the inner graph, so a sub-model built
  from it is disconnected from the outer output and its gradient is ``None``;
* models declared with list inputs (``keras.Model([inp], out)``);
* softmax / sigmoid heads, whose probabilities saturate (CAMs are defined on the
  logit, Selvaraju et al. 2017, sec. 3).

The adapter solves all three by *re-running the model's own graph* on concrete
tensors, layer by layer (descending into nested models), with hooks: capture a
layer's output, replace the head's activation by the identity, or gate ReLU
gradients for guided backpropagation. The user's model is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from camcore.backends.base import LayerInfo, last_spatial_layer

# Activations whose inverse the CAM papers use as "the score": logits for softmax,
# pre-sigmoid for sigmoid.
_HEAD_ACTIVATIONS = ("softmax", "sigmoid")
_RELU_NAMES = ("relu", "relu6", "leaky_relu")


@dataclass(frozen=True)
class Head:
    """How the model's output relates to its pre-activation class scores.

    ``kind`` is "softmax", "sigmoid" or "linear" (no output activation found).
    ``single_unit`` marks a 1-unit binary output: class 1 is the unit, class 0
    its complement (score -z, probability 1 - sigmoid(z)).
    """

    kind: str
    path: str | None
    skip: bool  # head is a bare activation layer: its input is the score
    single_unit: bool
    n_classes: int


@dataclass
class _Hooks:
    capture: str | None = None
    on_capture: Callable[[tf.Tensor], tf.Tensor] | None = None
    guided: bool = False
    batch_merges: bool = False  # repeat a batch of one to the others' batch where branches merge
    captured: list = field(default_factory=list)


def _activation_name(layer: keras.layers.Layer) -> str | None:
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None)
    if name is None and isinstance(layer, keras.layers.Softmax):
        return "softmax"
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    return name


# Layers that join branches: with ``batch_merges`` an input of batch one (a branch computed
# once for every gated row) is repeated to the batch of the gated rows. Add and Multiply
# would broadcast by themselves, Concatenate and Dot would not; repeating for all keeps the
# rule one.
_MERGE_LAYERS = (
    keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
    keras.layers.Maximum, keras.layers.Minimum, keras.layers.Concatenate, keras.layers.Dot,
)


def _batch_merge_inputs(args: tuple) -> tuple:
    inputs = args[0]
    batch = tf.reduce_max(tf.stack([tf.shape(t)[0] for t in inputs]))
    repeated = [tf.repeat(t, batch // tf.shape(t)[0], axis=0) for t in inputs]
    return (type(inputs)(repeated), *args[1:])


def _is_model(layer: Any) -> bool:
    return isinstance(layer, keras.Model)


def _is_graph_model(model: keras.Model) -> bool:
    return isinstance(model, keras.Sequential) or hasattr(model, "_run_through_graph")


@tf.custom_gradient
def _guided_relu_gate(x: tf.Tensor) -> tuple[tf.Tensor, Callable]:
    # Placed on a ReLU's output: together with the ReLU's own backward pass
    # (which zeroes where the forward input was negative) this keeps only
    # positive gradients, i.e. guided backpropagation (Springenberg et al. 2015, eq. 6).
    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(upstream)

    return tf.identity(x), grad


class ModelAdapter:
    """Wraps a Keras 3 image classifier for CAM computation.

    Args:
        model: a Functional or Sequential Keras model with one image input
            (batch, H, W, C) and one (batch, n) output. Backbones nested as a
            single layer and list-declared inputs are supported.
        target: "logit" (default; the pre-softmax / pre-sigmoid score, as the
            CAM papers define it) or "probability".
    """

    def __init__(self, model: keras.Model, target: str = "logit") -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
        if target not in ("logit", "probability"):
            raise ValueError(f"target must be 'logit' or 'probability', got {target!r}")
        if not _is_graph_model(model) or not getattr(model, "built", False):
            raise ValueError(
                "only built Functional or Sequential models can be explained "
                "(subclassed models have no layer graph to read activations from)"
            )
        self.model = model
        self.target = target
        self.input_shape = self._read_input_shape(model)
        self.head = self._find_head(model)
        self._linear_head = self._make_linear_head()
        self._layers = list(self._iter_layers(model, ""))
        self._by_path = {info.path: info for info in self._layers}

    # ----------------------------------------------------------------- inspection
    @staticmethod
    def _read_input_shape(model: keras.Model) -> tuple[int, int, int]:
        inputs = model.inputs
        if inputs is None or len(inputs) != 1:
            n = 0 if inputs is None else len(inputs)
            raise ValueError(f"the model must have exactly one image input, it has {n}")
        shape = tuple(inputs[0].shape)
        if len(shape) != 4:
            raise ValueError(
                f"the model input must be an image batch (batch, H, W, C), got shape {shape}"
            )
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"the model input size must be fixed, got {shape}; rebuild it with a fixed "
                "input shape, e.g. keras.Input((224, 224, 3))"
            )
        outputs = model.outputs
        if outputs is None or len(outputs) != 1 or len(outputs[0].shape) != 2:
            got = None if outputs is None else [tuple(o.shape) for o in outputs]
            raise ValueError(f"the model must have one (batch, classes) output, got {got}")
        return (int(shape[1]), int(shape[2]), int(shape[3]))

    @staticmethod
    def _last_layer(model: keras.Model, prefix: str) -> tuple[keras.layers.Layer, str]:
        if isinstance(model, keras.Sequential):
            layer = model.layers[-1]
        else:
            layer = model.outputs[0]._keras_history.operation
        path = prefix + layer.name
        if _is_model(layer) and _is_graph_model(layer):
            return ModelAdapter._last_layer(layer, path + "/")
        return layer, path

    def _find_head(self, model: keras.Model) -> Head:
        units = int(model.outputs[0].shape[-1])
        layer, path = self._last_layer(model, "")
        name = _activation_name(layer)
        single = units == 1
        n_classes = 2 if single else units
        if name in _HEAD_ACTIVATIONS:
            bare = isinstance(layer, (keras.layers.Activation, keras.layers.Softmax))
            return Head(name, path, bare, single, n_classes)
        # No activation found: the output already is the score. A 1-unit output
        # is read as a binary logit, several units as multi-class logits.
        return Head("linear", None, False, single, n_classes)

    def _make_linear_head(self) -> keras.layers.Layer | None:
        """A copy of the head layer with a linear activation (the user's layer is untouched)."""
        head = self.head
        if head.kind == "linear" or head.skip:
            return None
        if head.path is None:  # _find_head gives every softmax or sigmoid head its layer's path
            raise RuntimeError(f"the model's {head.kind} head has no layer path")
        layer = self._resolve(head.path)
        config = layer.get_config()
        config["activation"] = "linear"
        clone = type(layer).from_config(config)
        clone.build(tuple(layer.input.shape))
        clone.set_weights(layer.get_weights())
        return clone

    def _linear_head_copy(self) -> keras.layers.Layer:
        """The head layer's linear copy (every softmax or sigmoid head but a bare activation has one)."""
        if self._linear_head is None:
            raise RuntimeError(f"the model's {self.head.kind} head {self.head.path!r} has no linear copy")
        return self._linear_head

    def _resolve(self, path: str) -> keras.layers.Layer:
        layer: Any = self.model
        for part in path.split("/"):
            layer = layer.get_layer(part)
        return layer

    def _iter_layers(self, model: keras.Model, prefix: str) -> Iterator[LayerInfo]:
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            path = prefix + layer.name
            if _is_model(layer) and _is_graph_model(layer):
                # The nested model's own output is one of its inner layers' outputs;
                # listing the inner layers (by path) covers it.
                yield from self._iter_layers(layer, path + "/")
                continue
            try:
                shape = tuple(layer.output.shape)
            except (AttributeError, ValueError):
                continue  # shared or unbuilt layer: no single output to explain
            if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
                yield LayerInfo(path, type(layer).__name__, shape[1], shape[2], shape[3])

    @property
    def n_classes(self) -> int:
        return self.head.n_classes

    @property
    def layers(self) -> list[LayerInfo]:
        """Every layer with a 4-D output, nested ones by path, in graph order."""
        return list(self._layers)

    @property
    def default_layer(self) -> str:
        """The last layer whose map has more than one spatial position."""
        return last_spatial_layer(self._layers)

    def layer_info(self, path: str) -> LayerInfo:
        """Validated info for ``path``; ValueError naming the problem otherwise."""
        if not isinstance(path, str):
            raise TypeError(f"layer must be a layer name or path string, got {type(path).__name__}")
        info = self._by_path.get(path)
        if info is not None:
            if not info.spatial:
                raise ValueError(
                    f"layer {path!r} has a 1×1 map {info.shape}: no spatial map to localize with"
                )
            return info
        try:
            layer = self._resolve(path)
        except (ValueError, AttributeError, KeyError):
            names = ", ".join(i.path for i in self._layers[-6:])
            raise ValueError(
                f"layer {path!r} not found in model {self.model.name!r}; "
                f"layers with spatial maps include: {names}"
            ) from None
        shape: tuple[Any, ...] | str
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            shape = "unknown"
        raise ValueError(
            f"layer {path!r} has output shape {shape}: no spatial map "
            "(CAMs need a 4-D (batch, H, W, channels) output)"
        )

    # ------------------------------------------------------------------ checks
    def check_input(self, x: Any) -> np.ndarray:
        """The input as a float32 (1, H, W, C) array; ValueError/TypeError otherwise."""
        if isinstance(x, (list, tuple)) and len(x) == 1:
            x = x[0]
        try:
            arr = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"x must be a numeric array, got {type(x).__name__}") from None
        expected = (1, *self.input_shape)
        if arr.ndim != 4:
            raise ValueError(
                f"x must be a batch of one image with shape {expected}, got rank {arr.ndim} "
                f"shape {arr.shape}"
            )
        if arr.shape != expected:
            raise ValueError(f"x must have shape {expected} for this model, got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("x contains NaN or infinite values")
        return arr

    def check_class(self, class_index: Any) -> int:
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
            raise TypeError(f"class_index must be an int, got {type(class_index).__name__}")
        index = int(class_index)
        if not 0 <= index < self.n_classes:
            raise ValueError(
                f"class_index {index} out of range: the model has {self.n_classes} classes "
                f"(0..{self.n_classes - 1})"
            )
        return index

    # ----------------------------------------------------------------- running
    def _call_layer(self, layer: keras.layers.Layer, path: str, hooks: _Hooks, args, kwargs):
        if _is_model(layer) and _is_graph_model(layer) and self._must_descend(path, hooks):
            out = self._run_model(layer, args[0], hooks, path + "/")
        elif self.head.path == path and self.head.kind != "linear":
            out = args[0] if self.head.skip else self._linear_head_copy()(*args, **kwargs)
        else:
            # only after the capture: before it, every branch is the one image
            if (hooks.batch_merges and hooks.captured and isinstance(layer, _MERGE_LAYERS)
                    and isinstance(args[0], (list, tuple))):
                args = _batch_merge_inputs(args)
            out = layer(*args, **kwargs)
        if hooks.guided and _activation_name(layer) in _RELU_NAMES:
            out = _guided_relu_gate(out)
        if hooks.capture == path:
            if out.dtype in (tf.bfloat16, tf.float16):
                # A low-precision copy (camcore.precision): gates, callers and the gradient
                # see float32; the next layer casts back exactly (bf16 -> f32 -> bf16 is lossless).
                out = tf.cast(out, tf.float32)
            if hooks.on_capture is not None:
                out = hooks.on_capture(out)
            hooks.captured.append(out)
        return out

    def _must_descend(self, path: str, hooks: _Hooks) -> bool:
        inside = path + "/"
        return (
            hooks.guided
            or (hooks.capture or "").startswith(inside)
            or (self.head.path or "").startswith(inside)
        )

    def _run_model(self, model: keras.Model, x: tf.Tensor, hooks: _Hooks, prefix: str):
        if isinstance(model, keras.Sequential):
            for layer in model.layers:
                x = self._call_layer(layer, prefix + layer.name, hooks, (x,), {})
            return x

        def call_fn(op, *args, **kwargs):
            return self._call_layer(op, prefix + op.name, hooks, args, kwargs)

        if isinstance(x, (list, tuple)):
            x = x[0]
        outputs = model._run_through_graph([x], operation_fn=lambda op: op, call_fn=call_fn)
        return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

    def class_scores(self, raw: tf.Tensor) -> tf.Tensor:
        """(batch, n_classes) pre-activation scores from the head's raw output."""
        if self.head.single_unit:
            return tf.concat([-raw, raw], axis=-1)
        return raw

    @property
    def probability_kind(self) -> str:
        """"softmax" or "sigmoid": how class scores become the model's probabilities.

        A 1-unit output's scores are (-z, z), whose elementwise sigmoid is (1 - p, p).
        """
        if self.head.kind == "softmax" or (self.head.kind == "linear" and not self.head.single_unit):
            return "softmax"
        return "sigmoid"

    def probabilities(self, scores: tf.Tensor) -> tf.Tensor:
        """Class probabilities from pre-activation scores (what the model itself outputs)."""
        if self.probability_kind == "softmax":
            return tf.nn.softmax(scores, axis=-1)
        return tf.sigmoid(scores)

    def forward(
        self,
        x: tf.Tensor,
        capture: str | None = None,
        on_capture: Callable[[tf.Tensor], tf.Tensor] | None = None,
        guided: bool = False,
        batch_merges: bool = False,
    ) -> tuple[tf.Tensor | None, tf.Tensor]:
        """Run the model on ``x``; return (captured activations or None, class scores).

        Scores are pre-activation (B, n_classes). ``on_capture`` sees the captured
        layer output as it is produced (e.g. to ``tape.watch`` it). ``guided``
        gates every ReLU's gradient for guided backpropagation. ``batch_merges``
        repeats a batch of one where branches merge, for an ``on_capture`` that turns
        one image's activations into a batch (Ablation-CAM's gated copies).
        """
        hooks = _Hooks(capture=capture, on_capture=on_capture, guided=guided, batch_merges=batch_merges)
        raw = self._run_model(self.model, x, hooks, "")
        captured = hooks.captured[-1] if hooks.captured else None
        if capture is not None and captured is None:
            raise ValueError(f"layer {capture!r} was not reached while running the model")
        return captured, self.class_scores(raw)

    def target_score(self, scores: tf.Tensor, class_index: tf.Tensor) -> tf.Tensor:
        """The score each CAM explains: the class logit, or its probability if asked."""
        values = self.probabilities(scores) if self.target == "probability" else scores
        return tf.gather(values, class_index, axis=-1)
