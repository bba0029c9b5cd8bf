"""The cost of a map, as registry columns: the seconds it took, the model passes it ran,
and the seconds its metrics took. The evaluation's runner measures them itself, so the
entry has no compute function and is part of every run."""

from __future__ import annotations

from camcore.metrics.base import Column, Metric

__all__ = ["METRIC", "METRIC_SECONDS", "MODEL_PASSES", "SECONDS"]

SECONDS = Column("seconds", "s/image", "Seconds per image", False)
MODEL_PASSES = Column("model_passes", "passes", "Model passes per image", False, summary="")
METRIC_SECONDS = Column("metric_seconds", "metric s", "Seconds of the metrics per image", False, summary="")

METRIC = Metric(
    key="time",
    label="Time",
    columns=(SECONDS, MODEL_PASSES, METRIC_SECONDS),
    compute=None,
    help="the map's seconds and model passes, and the seconds of its metrics (always recorded)",
)
