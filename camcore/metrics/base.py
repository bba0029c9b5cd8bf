"""What a metric of the registry is: :class:`Metric`, the :class:`Column` and :class:`Curve`
it writes into the results table, and what its compute function gets (:class:`MetricInputs`).

A metric is described once, here and nowhere else: the batch evaluation computes it for
every map of every image, the results table orders its columns, the summaries aggregate
them, and the Dataset page plots and lists them, all by reading these descriptions from
:data:`camcore.metrics.registry.METRICS`. Each metric family module defines its entries
(``METRIC = Metric(...)``); this module imports nothing from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camcore.metrics._common import PredictFn

__all__ = [
    "SUMMARY_KINDS",
    "Column",
    "ComputeFn",
    "Curve",
    "Metric",
    "MetricInputs",
    "PrepareFn",
    "RunContext",
    "curve_column",
    "x_label",
]

SUMMARY_KINDS: dict[str, str] = {
    "mean_median": "mean and median over the images (``<name>_mean``, ``<name>_median``)",
    "rate": "share in % of the images where the 0/1 column is 1 (``<name>``)",
    "first": "one value per method, the same on every image (``<name>``)",
    "": "not summarized",
}
"""How :func:`camcore.evaluation.summarize` aggregates a column, by :attr:`Column.summary`."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def x_label(value: float) -> str:
    """The x of a curve column as written in its name: two decimals (``0.05``)."""
    return f"{value:.2f}"


def curve_column(prefix: str, x: float) -> str:
    """The column of a curve's point at ``x``: ``"<prefix>@<x with two decimals>"``."""
    return f"{prefix}@{x_label(x)}"


@dataclass(frozen=True)
class Column:
    """One scalar column of the results table, one value per image and method.

    ``title`` heads the summary tables (short, e.g. ``"IoU@best"``); ``description`` names
    it in charts and menus (e.g. ``"IoU at the best global threshold"``).
    ``higher_is_better`` is None when neither is (a threshold, a count). ``summary`` is a
    key of :data:`SUMMARY_KINDS`; ``summary_name`` the name of its summary entries
    (default ``name``); ``fmt`` formats them. ``distribution``: offered in the Dataset
    page's distribution chart. ``worst``: the label of "the worst images by this column"
    (empty: not offered). ``beat_controls``: a method whose summary of this column does not
    beat both controls is flagged, the text naming the column in the flag (empty: not
    checked). ``per_image`` is False for a column computed over the whole set once every
    image is known (the global-threshold columns of :mod:`camcore.evaluation.results`).
    """

    name: str
    title: str
    description: str
    higher_is_better: bool | None = None
    summary: str = "mean_median"
    summary_name: str = ""
    fmt: str = "{:.3f}"
    distribution: bool = False
    worst: str = ""
    beat_controls: str = ""
    per_image: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"column name {self.name!r} must be lower case letters, digits and _")
        if self.summary not in SUMMARY_KINDS:
            raise ValueError(f"column {self.name!r}: summary must be one of {list(SUMMARY_KINDS)}")
        if self.worst and self.higher_is_better is None:
            raise ValueError(f"column {self.name!r}: a worst-images order needs higher_is_better")
        if not self.summary_name:
            object.__setattr__(self, "summary_name", self.name)

    @property
    def summary_key(self) -> str | None:
        """The summary entry holding the column's rate, value or mean (None if not summarized)."""
        if not self.summary:
            return None
        return f"{self.summary_name}_mean" if self.summary == "mean_median" else self.summary_name

    @property
    def median_key(self) -> str | None:
        """The summary entry holding the column's median (None unless ``mean_median``)."""
        return f"{self.summary_name}_median" if self.summary == "mean_median" else None


@dataclass(frozen=True)
class Curve:
    """A curve sampled at a few x, one column per point (:func:`curve_column`):
    ``<prefix>@0.00``, ``<prefix>@0.05`` ...; the Dataset page plots its mean per method
    with these axis titles."""

    prefix: str
    x_title: str
    y_title: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.prefix):
            raise ValueError(f"curve prefix {self.prefix!r} must be lower case letters, digits and _")

    def column(self, x: float) -> str:
        """The column of the point at ``x``."""
        return curve_column(self.prefix, x)


@dataclass(frozen=True)
class RunContext:
    """What a metric's ``prepare`` gets, once per run, before the first image: the model
    and what the run explains. ``preprocess`` turns a uint8 image into the model input
    ``(1, H, W, C)``; ``methods`` are the run's CAM methods (keys of
    :data:`camcore.methods.METHODS`; the controls are not among them)."""

    model: Any
    layer: str
    class_index: int
    input_size: tuple[int, int]
    preprocessing: str
    preprocess: Callable[[np.ndarray], np.ndarray]
    methods: tuple[str, ...]
    seed: int
    max_n: int
    precision: str


@dataclass(frozen=True, eq=False)  # holds arrays
class MetricInputs:
    """What a metric's compute function gets for one map of one image.

    ``predict_fn`` maps a float32 batch ``(N, H, W, C)`` to class probabilities; ``x`` is
    the image's model input ``(1, H, W, C)`` and ``blurred`` its Gaussian blur ``(H, W, C)``
    (the deletion baseline and insertion canvas); ``saliency`` the map upsampled to the
    model input ``(H, W)`` (what faithfulness metrics perturb the input with); ``cam`` the
    map as the method made it (what localization scores, see
    :func:`camcore.metrics.localization`); ``mask`` the defect mask at the image's native
    resolution (None for a clean image); ``thresholds`` the localization threshold grid;
    ``steps`` the deletion/insertion curve steps; ``method`` the map's method key (a CAM
    method or a control, ``"sobel"`` / ``"random"``); ``state`` what the metric's
    ``prepare`` returned for this run (None without one).
    """

    predict_fn: PredictFn
    x: np.ndarray
    blurred: np.ndarray
    saliency: np.ndarray
    cam: np.ndarray
    mask: np.ndarray | None
    class_index: int
    thresholds: np.ndarray
    steps: int
    method: str
    state: Any = None


ComputeFn = Callable[[MetricInputs], Mapping[str, float]]
"""``compute(inputs) -> {column: value}``: the metric's columns (and curve points) for one map."""
PrepareFn = Callable[[RunContext], Any]
"""``prepare(context) -> state``, once per run; ``state`` reaches every compute call as
:attr:`MetricInputs.state` (e.g. a randomized copy of the model, a noise level)."""


@dataclass(frozen=True)
class Metric:
    """One entry of the metric registry.

    ``key`` names it (``--metrics`` of ``python -m camcore.evaluate``, ``metrics=`` of
    :func:`camcore.evaluation.evaluate`); ``label`` is its name for people. ``columns``
    and ``curves`` are what it writes; ``compute`` (:data:`ComputeFn`) computes them for
    one map and may return a subset (e.g. nothing for a control it does not apply to),
    never a column it does not declare. ``needs_mask``: computed on defective images
    only, and summarized over them. ``optional``: computed only when asked for (slow
    ones, like ROAD and the sanity check). ``prepare`` (:data:`PrepareFn`): per-run state.
    An entry without ``compute`` describes columns the runner records itself (the time a
    map and its metrics took); it is part of every run.

    Compute functions run in the evaluation's metric threads, several maps at once, so
    they must not change shared state (a ``state`` that does guards it with a lock). The
    Ray runner ships the chosen entries to its actors by pickling: a ``compute`` defined
    in a module the worker nodes cannot import must be picklable by value (a function
    nested in another one is).
    """

    key: str
    label: str
    columns: tuple[Column, ...]
    compute: ComputeFn | None
    curves: tuple[Curve, ...] = ()
    needs_mask: bool = False
    optional: bool = False
    prepare: PrepareFn | None = None
    help: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.key):
            raise ValueError(f"metric key {self.key!r} must be lower case letters, digits and _")
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "curves", tuple(self.curves))
        names = [c.name for c in self.columns]
        if not names and not self.curves:
            raise ValueError(f"metric {self.key!r} declares no column")
        if len(set(names)) != len(names):
            raise ValueError(f"metric {self.key!r} declares a column twice")
        if self.compute is None and (self.optional or self.prepare is not None):
            raise ValueError(f"metric {self.key!r}: an entry without compute is always recorded")

    def names(self) -> tuple[str, ...]:
        """Its column names and curve prefixes."""
        return tuple(c.name for c in self.columns) + tuple(c.prefix for c in self.curves)

    def writes(self, column: str) -> bool:
        """Whether ``column`` is one of its per-image columns or a point of one of its curves."""
        if any(c.name == column and c.per_image for c in self.columns):
            return True
        prefix, at, x = column.partition("@")
        return bool(at) and any(c.prefix == prefix for c in self.curves) and _is_number(x)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
