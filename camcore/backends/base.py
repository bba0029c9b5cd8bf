"""What the engine may ask of a model: the :class:`Backend` protocol.

Every CAM method reads a few kinds of tensors (``camcore.methods.base.NEEDS``), and each
kind comes from one of a few passes through the model. A backend is the one place that
knows how to run those passes for one kind of model file:

* required: the layers with spatial maps (name, shape), a layer's activations with the
  class scores of the same pass, and batched forward passes returning the class scores,
  always *pre-activation* (pre-softmax / pre-sigmoid: the score the CAM papers explain);
* optional, named by :data:`CAPABILITIES`: ``"gradients"`` (d score / d activations, the
  gradient family), ``"guided_backprop"`` and ``"layer_tail"`` (the model from a layer's
  (gated) activations to the scores: Ablation-CAM's shared-head passes).

A backend without a capability makes the methods that need it "not available for this
model", never an error (:func:`camcore.methods.unavailable_reason`). Arrays cross this
boundary as NumPy float32; a batch is (B, H, W, C), a single input (1, H, W, C).

A minimal backend is a few lines of NumPy (see ``tests/test_backends.py``)::

    class Linear(Backend):
        kind = "toy"
        input_shape, n_classes = (4, 4, 1), 2
        layers = [LayerInfo("x", "Identity", 4, 4, 1)]
        def activations(self, x, layer): return x[0], self.forward(x)[0]
        def forward(self, batch, precision="fp32"): return batch.reshape(len(batch), -1) @ W
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from camcore.preprocess import apply_preprocessing

CAPABILITIES = ("gradients", "guided_backprop", "layer_tail")
"""Optional passes a backend may offer."""


@dataclass(frozen=True)
class LayerInfo:
    """A layer (or graph tensor) whose output is a 4-D (batch, height, width, channels) map."""

    path: str
    class_name: str
    height: int
    width: int
    channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def spatial(self) -> bool:
        return self.height * self.width > 1

    def label(self) -> str:
        return f"{self.path}  ({self.height}×{self.width}×{self.channels}, {self.class_name})"


class NotAvailable(Exception):
    """A pass the backend does not offer (the message says what is missing)."""


def masks_from_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Score-CAM's masks H^k (Wang et al. 2020, eq. 3-4): each map (B, h, w) upsampled
    bilinearly to ``size`` (half-pixel centres, as ``tf.image.resize``) and normalized to
    [0, 1] by (A - min) / (max - min); a constant map gives an all-zero mask. (B, H, W) float32."""
    height, width = int(size[0]), int(size[1])
    masks = np.zeros((maps.shape[0], height, width), np.float32)
    for k, activation in enumerate(np.asarray(maps, np.float32)):
        up = cv2.resize(activation, (width, height), interpolation=cv2.INTER_LINEAR)
        low, high = float(up.min()), float(up.max())
        if high > low:
            masks[k] = (up - low) / (high - low)
    return masks


def last_spatial_layer(layers: Sequence[LayerInfo]) -> str:
    """The path of the last of ``layers`` whose map has more than one spatial position (the
    default layer of every backend); ValueError when there is none."""
    spatial = [info for info in layers if info.spatial]
    if not spatial:
        raise ValueError("the model has no layer with a spatial (H×W with H·W > 1) output")
    return spatial[-1].path


class Backend:
    """Base of every model backend; subclasses set the facts and the two required passes.

    Attributes a subclass sets: ``kind`` (e.g. "keras", "onnx"), ``input_shape`` (H, W, C),
    ``n_classes``, ``probability_kind`` ("softmax" or "sigmoid"), ``layers`` (list of
    :class:`LayerInfo`, graph order), ``capabilities`` (subset of :data:`CAPABILITIES`) and
    ``precisions`` (those it can run forward passes at; bf16 only where a low-precision copy
    exists).
    """

    kind: str = "backend"
    input_shape: tuple[int, int, int]
    n_classes: int
    probability_kind: str = "softmax"
    layers: list[LayerInfo]
    capabilities: frozenset[str] = frozenset()
    precisions: tuple[str, ...] = ("fp32",)

    # ------------------------------------------------------------ required passes
    def activations(self, x: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(A (h, w, K) of ``layer``, class scores (n_classes,)) of one input, from one pass."""
        raise NotImplementedError

    def forward(self, batch: np.ndarray, precision: str = "fp32") -> np.ndarray:
        """Pre-activation class scores (B, n_classes) of a batch."""
        raise NotImplementedError

    # ------------------------------------------------------------ provided passes
    def scores(self, x: np.ndarray) -> np.ndarray:
        """Pre-activation class scores (n_classes,) of one input, at fp32."""
        return np.asarray(self.forward(x, "fp32"), np.float32)[0]

    def masked_scores(self, x: np.ndarray, layer: str, maps: np.ndarray, preprocessing: str | None = None,
                      precision: str = "fp32") -> np.ndarray:
        """Scores (B, n_classes) of X∘H^k for maps (B, h, w) of ``layer`` (Score-CAM's masked
        passes). ``preprocessing`` set: ``x`` is the raw image, masked and then preprocessed."""
        masks = masks_from_maps(maps, self.input_shape[:2])[..., None]
        masked = np.asarray(x, np.float32) * masks
        if preprocessing is not None:
            masked = apply_preprocessing(masked, preprocessing).astype(np.float32)
        return self.forward(masked, precision)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """The model's class probabilities from pre-activation scores (n,) or (B, n)."""
        scores = np.asarray(scores, np.float64)
        if self.probability_kind == "sigmoid":
            return (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
        shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)

    def probabilities_fn(self, precision: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
        """``f(batch) -> probabilities (B, n_classes)`` at ``precision`` (the metrics' passes)."""
        return lambda batch: self.probabilities(self.forward(np.asarray(batch, np.float32), precision))

    # ------------------------------------------------------------ optional passes
    def gradients(self, x: np.ndarray, layer: str, class_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(A, dy_c/dA (h, w, K), scores (n,), c) from one forward+backward; ``class_index``
        -1: top-1, chosen inside the pass."""
        raise NotAvailable(self.missing("gradients"))

    def guided_backprop(self, x: np.ndarray, class_index: int) -> tuple[np.ndarray, int]:
        """(d score / d input with only positive gradients through each ReLU (H, W, C), c)."""
        raise NotAvailable(self.missing("guided_backprop"))

    def ablated_scores(self, x: np.ndarray, layer: str, keep: np.ndarray, precision: str = "fp32") -> np.ndarray:
        """Scores (B, n_classes) with ``layer``'s activations multiplied by ``keep`` (B, K)."""
        raise NotAvailable(self.missing("layer_tail"))

    def prepare_precision(self, precision: str) -> str | None:
        """Make ``precision`` ready (e.g. build a bf16 copy); None if it is, else why not."""
        return None if precision in self.precisions else f"{self.kind} models run at {', '.join(self.precisions)} only"

    def missing(self, capability: str) -> str:
        """Why a method needing ``capability`` is not available, for the grid and the table."""
        what = {"gradients": "needs gradients", "guided_backprop": "needs gradients",
                "layer_tail": "needs the model from the layer to the scores"}.get(capability, f"needs {capability}")
        return f"{what} — not available for {self.kind} models"

    # ------------------------------------------------------------ facts
    @property
    def default_layer(self) -> str:
        """The last layer whose map has more than one spatial position."""
        return last_spatial_layer(self.layers)

    def layer_info(self, path: str) -> LayerInfo:
        """Validated info for ``path``; ValueError naming the problem otherwise."""
        if not isinstance(path, str):
            raise TypeError(f"layer must be a layer name or path string, got {type(path).__name__}")
        for info in self.layers:
            if info.path == path:
                if not info.spatial:
                    raise ValueError(f"layer {path!r} has a 1×1 map {info.shape}: no spatial map to localize with")
                return info
        names = ", ".join(i.path for i in self.layers[-6:])
        raise ValueError(f"layer {path!r} not found; layers with spatial maps include: {names}")

    def check_class(self, class_index: Any) -> int:
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
            raise TypeError(f"class_index must be an int, got {type(class_index).__name__}")
        index = int(class_index)
        if not 0 <= index < self.n_classes:
            raise ValueError(
                f"class_index {index} out of range: the model has {self.n_classes} classes (0..{self.n_classes - 1})"
            )
        return index
