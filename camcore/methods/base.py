"""What a CAM method is, to the engine: a :class:`MethodSpec` and a function of
:class:`CamInputs`.

The engine (:class:`camcore.Explainer`) computes the tensors a method asks for
lazily and caches them per (layer, image[, class]); a method never runs the model
itself. Its function returns the *raw* map (h, w); the engine then applies the
common tail of every CAM paper - ReLU, then scaling to [0, 1] by the maximum (an
all-zero map stays zeros, never NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np

FAMILIES = ("gradient", "masked", "activation")
"""gradient: one forward+backward per (image, layer, class), shared by the family;
masked: one forward pass per channel (masked input or ablated channel), batched;
activation: one forward pass per (image, layer), class-agnostic maps included."""

NEEDS = ("activations", "gradients", "masked_passes", "ablation_passes")
"""The built-in needs; a provider registered with :func:`camcore.passes.register_provider`
adds its own (:func:`camcore.passes.needs` lists them all)."""


class CamInputs(Protocol):
    """The tensors of one (image, layer, class) a method may read; each is computed on
    first access and cached by the engine."""

    @property
    def activations(self) -> np.ndarray:
        """A: the layer's activations, (h, w, K) float32."""

    @property
    def gradients(self) -> np.ndarray:
        """G = dy_c/dA: gradient of the class score (pre-softmax/pre-sigmoid by default)."""

    @property
    def class_index(self) -> int:
        """The explained class c (top-1 resolved)."""

    @property
    def max_n(self) -> int:
        """Channels a max_N method may use, clamped to K (K when not given)."""

    @property
    def probability_kind(self) -> str:
        """"softmax" or "sigmoid": how the model turns scores into probabilities."""

    @property
    def options(self) -> Mapping[str, Any]:
        """Method options passed through ``Explainer.compute(..., **options)``."""

    def masked_scores(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Score-CAM's masked passes for the first ``n`` channels in decreasing-std order:
        (channel indices, pre-activation scores (n', n_classes) of X∘H^k). All-zero channels
        are left out (their term is 0); constant channels share the all-zero-mask pass."""

    def ablation_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Ablation-CAM's passes: (scores (n_classes,) of the image, scores (K, n_classes)
        with channel k of the layer set to zero; all-zero channels get the image's scores)."""

    def read(self, need: str, **arguments: Any) -> Any:
        """What the provider of ``need`` gives (for kinds of pass registered later)."""


CamFunction = Callable[[CamInputs], np.ndarray]


@dataclass(frozen=True)
class MethodSpec:
    """One CAM method, described once.

    Attributes:
        key: identifier (``Explainer.compute(key, ...)``, the plain function's name).
        label: column title.
        family: one of :data:`FAMILIES`; decides how the dashboard schedules it.
        cam: ``cam(inputs) -> (h, w)`` raw map, before ReLU and scaling.
        needs: the tensors ``cam`` reads, from :data:`NEEDS`.
        reference: authors, year, venue.
        definition: one line (the equation in words), shown as a tooltip.
        url: the paper.
        uses_max_n: the max_N slider applies (Faster-Score-CAM).
        class_specific: False for class-agnostic maps (Eigen-CAM).
    """

    key: str
    label: str
    family: str
    cam: CamFunction
    needs: frozenset[str]
    reference: str
    definition: str
    url: str = ""
    uses_max_n: bool = False
    class_specific: bool = True

    def __post_init__(self) -> None:
        if not self.key.isidentifier():
            raise ValueError(f"method key must be an identifier, got {self.key!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        from camcore.passes import needs

        unknown = set(self.needs) - set(needs())
        if unknown:
            raise ValueError(f"unknown needs {sorted(unknown)}; choose from {needs()}")
        object.__setattr__(self, "needs", frozenset(self.needs))

    @property
    def per_channel_passes(self) -> bool:
        """True when the cost grows with the channel count (one model pass per channel)."""
        return bool(self.needs & {"masked_passes", "ablation_passes"})

    @property
    def fusable(self) -> bool:
        """Multi-layer fusion is offered for methods that cost one pass per layer."""
        return not self.per_channel_passes


def weighted_sum(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_k w_k A^k (Selvaraju et al. 2017, eq. 2 before its ReLU): (h, w) float32."""
    return np.tensordot(activations, np.asarray(weights, np.float32), axes=([-1], [0])).astype(np.float32)
