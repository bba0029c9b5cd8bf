"""What an evaluation computes for every image (:class:`RunSettings`), checked once."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from camcore.evaluation.defaults import check_methods
from camcore.evaluation.spec import ModelSpec
from camcore.metrics import Metric, default_metric_keys, select_metrics
from camcore.metrics.faithfulness import DELETION_METRIC, DROP_INCREASE_METRIC, INSERTION_METRIC
from camcore.metrics.localization import METRIC as LOCALIZATION
from camcore.metrics.road import METRIC as ROAD
from camcore.metrics.sanity import METRIC as SANITY

logger = logging.getLogger(__name__)

# What every run computed before the metrics could be chosen: a journal of such a run records
# only "road" (and "sanity" when on), so the same choice must give the same configuration.
_LEGACY_METRICS = frozenset(m.key for m in (LOCALIZATION, DROP_INCREASE_METRIC, DELETION_METRIC, INSERTION_METRIC))


@dataclass(frozen=True)
class RunSettings:
    """What is computed for every image; with the model and the sources it makes up the
    configuration a journal belongs to. ``metrics`` are registry entries (not keys), so
    the Ray runner's actors compute what the driver chose."""

    methods: tuple[str, ...]
    max_n: int
    metrics: tuple[Metric, ...]
    curve_steps: int
    thresholds: tuple[float, ...]
    seed: int
    precision: str = "fp32"

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return tuple(metric.key for metric in self.metrics)

    def journal_config(self) -> dict[str, Any]:
        """The settings as recorded in a journal. Journals of earlier runs still resume: the
        metrics are written as they were then ("road", and "sanity" only when on) unless
        the choice differs from what every run computed then; a non-default precision
        only when used."""
        keys = {metric.key for metric in self.metrics if metric.compute is not None}
        config: dict[str, Any] = {
            "methods": list(self.methods),
            "max_n": self.max_n,
            "road": ROAD.key in keys,
            "curve_steps": self.curve_steps,
            "thresholds": list(self.thresholds),
            "seed": self.seed,
        }
        if SANITY.key in keys:
            config["sanity"] = True
        if keys - {ROAD.key, SANITY.key} != _LEGACY_METRICS:
            config["metrics"] = sorted(keys)
        if self.precision != "fp32":
            config["precision"] = self.precision
        return config


def metric_choice(metrics: Sequence[str] | None = None, *, road: bool = False, sanity: bool = False) -> list[str]:
    """The metric keys of a run: ``metrics`` (default: every non-optional one), plus ROAD
    and the sanity check when ``road`` / ``sanity`` (the flags that came before
    ``metrics``)."""
    keys = list(default_metric_keys() if metrics is None else metrics)
    keys += [ROAD.key] * bool(road) + [SANITY.key] * bool(sanity)
    return list(dict.fromkeys(keys))


def run_settings(
    methods: Sequence[str],
    *,
    max_n: int,
    metrics: Sequence[str] | None = None,
    curve_steps: int,
    thresholds: Sequence[float] | np.ndarray,
    seed: int = 0,
    precision: str = "fp32",
) -> RunSettings:
    """Checked :class:`RunSettings`: known methods and metrics (``metrics`` are registry
    keys, default the non-optional ones), ``curve_steps`` and ``max_n`` at least 1, and
    ``precision`` resolved ("auto" stays until the model is measured, see
    :func:`measured_precision`). ValueError naming the problem otherwise."""
    checked = check_methods(methods)
    if curve_steps < 1:
        raise ValueError(f"curve_steps must be >= 1, got {curve_steps}")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    grid = tuple(float(t) for t in np.asarray(thresholds, dtype=np.float64))
    from camcore.precision import resolve_precision

    return RunSettings(tuple(checked), int(max_n), select_metrics(metrics), int(curve_steps), grid, int(seed),
                       resolve_precision(precision))


def measured_precision(precision: str, spec: ModelSpec) -> str:
    """``precision`` with "auto" replaced by what auto chooses for ``spec``'s model and layer
    (recorded in the journal as such): the explainer's measured verdict, on a noise image."""
    from camcore.precision import resolve_precision

    resolved = resolve_precision(precision)
    if resolved != "auto":
        return resolved
    from camcore.explainer import Explainer

    height, width = spec.input_size
    noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    return Explainer(spec.model, cache_size=2, precision="auto").verdict(spec.preprocess(noise), spec.layer).precision


def unavailable_methods(spec: ModelSpec, methods: Sequence[str]) -> dict[str, str]:
    """The CAM methods of ``methods`` that ``spec``'s model cannot serve, with why (e.g.
    "needs gradients — not available for ONNX models"); controls are always available."""
    from camcore.backends import as_backend
    from camcore.methods import METHODS, unavailable_reason

    backend = as_backend(spec.model)
    found = {method: unavailable_reason(METHODS[method], backend) for method in methods if method in METHODS}
    return {method: reason for method, reason in found.items() if reason is not None}


def for_model(settings: RunSettings, spec: ModelSpec) -> RunSettings:
    """``settings`` as run on ``spec``'s model: auto precision measured, and the methods the
    model cannot serve left out (each logged with its reason) rather than failing the run."""
    missing = unavailable_methods(spec, settings.methods)
    for method, reason in missing.items():
        logger.warning("%s is not available for this model: %s", method, reason)
    methods = tuple(m for m in settings.methods if m not in missing)
    return dataclasses.replace(settings, methods=methods, precision=measured_precision(settings.precision, spec))
