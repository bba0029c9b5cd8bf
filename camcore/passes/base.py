"""What a pass provider is, and the context it works in.

A *provider* runs one kind of model pass for the methods that need it (``need``: the name
a :class:`~camcore.methods.base.MethodSpec` lists in ``needs``), caching what it ran in
the engine's cache: the gradient family's forward+backward, Score-CAM's masked passes,
Ablation-CAM's ablated passes. It reads the model only through the engine's backend and
may require one of the backend's optional capabilities (``capability``).

A method's map function sees a :class:`PassContext` (the ``CamInputs`` of one image,
layer and class): its named accessors (``activations``, ``gradients``,
``masked_scores(n)``, ``ablation_scores()``) and, for a provider added later,
``context.read(need, **arguments)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable, Mapping, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from camcore.backends.base import Backend
    from camcore.prepared import Prepared

Progress = Callable[[int, int], None]


class NeedsModelPass(Exception):
    """Raised inside an offline call (``Explainer.peek``) when a result is not cached."""


class CallRecord:
    """Bookkeeping of one ``compute`` call: timings by stage, model passes, reuse notes, and
    who asked (``owner``: with a scheduler, owners take turns for per-channel work)."""

    def __init__(self, offline: bool = False, owner: Hashable | None = None) -> None:
        self.offline = offline
        self.owner = owner
        self.timings: dict[str, float] = {}
        self.passes = 0
        self.reused: list[str] = []

    def need_pass(self) -> None:
        """Called before any model pass: an offline call stops here."""
        if self.offline:
            raise NeedsModelPass

    def spent(self, stage: str, seconds: float, passes: int) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        self.passes += passes


class Cache(Protocol):
    def get(self, key: Any) -> Any: ...
    def put(self, key: Any, value: Any) -> None: ...


class Engine(Protocol):
    """What providers may use of the engine (:class:`camcore.Explainer`)."""

    # Read-only to providers (so an engine's own cache type, e.g. the Explainer's LRUCache, is one)
    @property
    def backend(self) -> Backend: ...
    @property
    def cache(self) -> Cache: ...
    @property
    def batch_size(self) -> int: ...

    def activations_of(self, prepared: Prepared, layer: str, call: CallRecord) -> np.ndarray: ...
    def scores_of(self, prepared: Prepared, call: CallRecord | None = None) -> np.ndarray: ...
    def pass_precision(self, prepared: Prepared, layer: str) -> str: ...
    def known_verdict(self, layer: str) -> Any: ...
    def prepare(self, x: Any, image: np.ndarray | None = None) -> Prepared: ...
    def provider(self, need: str) -> Provider: ...
    def flight(self, key: Any, wait: bool = True) -> Any: ...
    def run_steps(self, owner: Hashable | None, steps: Sequence[Callable[[], None]], progress: Progress | None,
                  sizes: Sequence[int]) -> None: ...


class Provider:
    """One kind of model pass. Subclasses set ``need`` and implement :meth:`read`."""

    need: ClassVar[str]
    capability: ClassVar[str | None] = None  # the backend capability it requires, if any

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self, context: PassContext, **arguments: Any) -> Any:
        """What a method reads of this kind of pass for ``context``'s image, layer and class."""
        raise NotImplementedError


class PassContext:
    """The tensors of one (image, layer, class) request, each computed on first access by
    its provider (the engine's lock is held). Implements ``camcore.methods.base.CamInputs``."""

    def __init__(self, engine: Engine, prepared: Prepared, layer: str, class_index: int, max_n: int | None,
                 progress: Progress | None, options: Mapping[str, Any], call: CallRecord) -> None:
        self.engine = engine
        self.prepared = prepared
        self.layer = layer
        self.class_hint = class_index  # -1: top-1, resolved by the first pass that sees the scores
        self.requested_max_n = max_n
        self.progress = progress
        self.options = options
        self.call = call
        self._activations: np.ndarray | None = None
        self._gradients: np.ndarray | None = None

    @property
    def probability_kind(self) -> str:
        return self.engine.backend.probability_kind

    @property
    def class_index(self) -> int:
        if self.class_hint < 0:
            self.class_hint = int(np.argmax(self.engine.scores_of(self.prepared, self.call)))
        return self.class_hint

    @property
    def max_n(self) -> int:
        return clamp_max_n(self.requested_max_n, self.activations.shape[-1])

    @property
    def activations(self) -> np.ndarray:
        if self._activations is None:
            self._activations = self.engine.activations_of(self.prepared, self.layer, self.call)
        return self._activations

    @property
    def gradients(self) -> np.ndarray:
        if self._gradients is None:
            self._activations, self._gradients, self.class_hint = self.read("gradients")
        return self._gradients

    def masked_scores(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.read("masked_passes", n=n)

    def ablation_scores(self) -> tuple[np.ndarray, np.ndarray]:
        return self.read("ablation_passes")

    def read(self, need: str, **arguments: Any) -> Any:
        """What the provider of ``need`` gives for this request."""
        return self.engine.provider(need).read(self, **arguments)


def clamp_max_n(max_n: int | None, n_channels: int) -> int:
    """``None`` means every channel; larger than the channel count is clamped."""
    if max_n is None:
        return n_channels
    if isinstance(max_n, bool) or not isinstance(max_n, (int, np.integer)):
        raise TypeError(f"max_n must be an int or None, got {type(max_n).__name__}")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    return min(int(max_n), n_channels)


def finite_scores(scores: np.ndarray) -> np.ndarray:
    """``scores``, or a ValueError saying why nothing can be explained: a model whose output
    is NaN or infinite would otherwise give all-zero maps and NaN probabilities silently."""
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            "the model's output for this image contains NaN or infinite values, so its classes "
            "cannot be explained: check the model's weights and the preprocessing of its input"
        )
    return scores


def one_row_per_copy(scores: np.ndarray, copies: int, method: str) -> np.ndarray:
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
