"""A toy metric for tests that add a metric through the registry alone."""

from __future__ import annotations

import numpy as np

from camcore.metrics import Column, Curve, Metric, MetricInputs


def map_mean_metric(key: str = "map_mean") -> Metric:
    """The mean of the map as the method made it (column ``key``, worst = highest) and a
    two-point curve ``<key>_curve`` ending at that mean. The compute function is nested,
    so that Ray pickles it by value: the worker nodes cannot import the tests."""

    def compute(inputs: MetricInputs) -> dict[str, float]:
        value = float(np.mean(inputs.cam))
        return {key: value, f"{key}_curve@0.00": 0.0, f"{key}_curve@1.00": value}

    column = Column(key, "map mean", "Mean of the map", False, distribution=True, worst="highest map mean")
    return Metric(key, "Mean of the map", (column,), compute=compute, curves=(Curve(f"{key}_curve", "x", "y"),))
