"""The registry of evaluation metrics: every consumer (the evaluation's runner and Ray
runner, the results table, the summaries, ``python -m camcore.evaluate --metrics`` and
the Dataset page) iterates :data:`METRICS`.

A metric is described once, by a :class:`~camcore.metrics.base.Metric`: its key, label,
columns and curves (each column with its label, direction, summary and charts), whether
it needs a defect mask, whether it is optional, and a compute function of one uniform
signature, ``compute(inputs: MetricInputs) -> {column: value}``.

Adding a metric is one module that defines ``METRIC = Metric(...)`` and one line in
:data:`_BUILTIN` below - or, from outside the package, ``register_metric(metric)``::

    >>> import numpy as np
    >>> from camcore.metrics import Column, Metric, register_metric, unregister_metric
    >>> def map_mean(inputs):
    ...     return {"map_mean": float(np.mean(inputs.cam))}
    >>> entry = register_metric(Metric("map_mean", "Mean of the map",
    ...     (Column("map_mean", "map mean", "Mean of the map", None),), compute=map_mean))
    >>> "map_mean" in default_metric_keys()
    True
    >>> unregister_metric("map_mean")
"""

from __future__ import annotations

from collections.abc import Sequence

from camcore.metrics.base import Column, Curve, Metric
from camcore.metrics.faithfulness import DELETION_METRIC, DROP_INCREASE_METRIC, INSERTION_METRIC
from camcore.metrics.localization import METRIC as LOCALIZATION
from camcore.metrics.road import METRIC as ROAD
from camcore.metrics.sanity import METRIC as SANITY
from camcore.metrics.timing import METRIC as TIME

__all__ = [
    "METRICS",
    "default_metric_keys",
    "find_column",
    "find_curve",
    "get_metric",
    "registered_columns",
    "registered_curves",
    "register_metric",
    "select_metrics",
    "selectable_metric_keys",
    "unregister_metric",
]

_BUILTIN: tuple[Metric, ...] = (
    LOCALIZATION,
    DROP_INCREASE_METRIC,
    DELETION_METRIC,
    INSERTION_METRIC,
    ROAD,
    TIME,
    SANITY,
)

METRICS: dict[str, Metric] = {metric.key: metric for metric in _BUILTIN}
"""Every known metric by key, in the order of the results table's columns and summaries."""


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` to :data:`METRICS` (``replace=True`` to redefine a key). ValueError if
    another metric already writes one of its columns or curves."""
    if not isinstance(metric, Metric):
        raise TypeError(f"expected a Metric, got {type(metric).__name__}")
    if metric.key in METRICS and not replace:
        raise ValueError(f"a metric {metric.key!r} is already registered")
    taken = {name: other.key for other in METRICS.values() if other.key != metric.key for name in other.names()}
    clashes = [f"{name} (of {taken[name]})" for name in metric.names() if name in taken]
    if clashes:
        raise ValueError(f"metric {metric.key!r}: its columns are already written: {', '.join(clashes)}")
    METRICS[metric.key] = metric
    return metric


def unregister_metric(key: str) -> None:
    """Remove a metric added with :func:`register_metric` (built-in metrics stay)."""
    if key in {metric.key for metric in _BUILTIN}:
        raise ValueError(f"{key!r} is a built-in metric and cannot be removed")
    METRICS.pop(key, None)


def get_metric(key: str) -> Metric:
    """The entry of ``key``; ValueError naming the known keys otherwise."""
    metric = METRICS.get(key) if isinstance(key, str) else None
    if metric is None:
        raise ValueError(f"unknown metric {key!r}; choose from {list(selectable_metric_keys())}")
    return metric


def selectable_metric_keys() -> tuple[str, ...]:
    """The metrics a run may choose (those with a compute function), in registry order."""
    return tuple(key for key, metric in METRICS.items() if metric.compute is not None)


def default_metric_keys() -> tuple[str, ...]:
    """The metrics a run computes unless told otherwise: every non-optional one."""
    return tuple(key for key in selectable_metric_keys() if not METRICS[key].optional)


def select_metrics(keys: Sequence[str] | None = None) -> tuple[Metric, ...]:
    """The entries a run computes, in registry order: ``keys`` (default
    :func:`default_metric_keys`) and every entry the runner records itself (no compute).
    ValueError naming an unknown key."""
    chosen = set(default_metric_keys() if keys is None else keys)
    for key in chosen:
        get_metric(key)
    return tuple(metric for key, metric in METRICS.items() if key in chosen or metric.compute is None)


def registered_columns() -> list[tuple[Metric, Column]]:
    """``(metric, column)`` of every registered column, in registry order."""
    return [(metric, column) for metric in METRICS.values() for column in metric.columns]


def registered_curves() -> list[tuple[Metric, Curve]]:
    """``(metric, curve)`` of every registered curve, in registry order."""
    return [(metric, curve) for metric in METRICS.values() for curve in metric.curves]


def find_column(name: str) -> tuple[Metric, Column] | None:
    """The metric and description of the column ``name``; None if no metric writes it."""
    return next(((metric, column) for metric, column in registered_columns() if column.name == name), None)


def find_curve(prefix: str) -> tuple[Metric, Curve] | None:
    """The metric and description of the curve ``prefix``; None if no metric writes it."""
    return next(((metric, curve) for metric, curve in registered_curves() if curve.prefix == prefix), None)
