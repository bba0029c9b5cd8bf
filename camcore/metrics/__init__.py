"""Evaluation metrics for saliency / class-activation maps, one family per module.

* :mod:`~camcore.metrics.localization` - against a ground-truth mask: **the localization
  protocol** :func:`localization` (IoU, Dice, pointing game, energy pointing at one stated
  resolution and tolerance; the rule is in that module's docstring),
  :func:`localization_curves`, :func:`best_threshold`, and the older per-metric functions
  (:func:`iou`, :func:`dice`, :func:`iou_curve`, :func:`dice_curve`, :func:`threshold_map`,
  :func:`pointing_game`, :func:`energy_pointing_game`).
* :mod:`~camcore.metrics.faithfulness` - against the model, any ``predict_fn`` mapping a
  float32 batch ``(N, H, W, C)`` to class probabilities ``(N, n_classes)``: Average Drop /
  Increase in Confidence, deletion / insertion curves, :func:`auc`.
* :mod:`~camcore.metrics.road` - ROAD (remove and debias) and its imputation solver.
* :mod:`~camcore.metrics.controls` - random and Sobel control maps, and
  :func:`flag_below_controls`.
* :mod:`~camcore.metrics.sanity` - Adebayo et al.'s model-parameter randomization check
  (:func:`parameter_randomization`) with :func:`spearman_correlation` and :func:`ssim`.
* :mod:`~camcore.metrics.timing` - the cost of a map (seconds, model passes) as columns.

**The registry** (:mod:`~camcore.metrics.registry`, types in :mod:`~camcore.metrics.base`):
each family module describes its metrics for the batch evaluation once - key, columns and
curves, labels, direction, needs a mask, optional, and a compute function
``compute(inputs: MetricInputs) -> {column: value}`` - and :data:`METRICS` lists them; the
evaluation, its summaries, its command line and the Dataset page read nothing else.
Adding a metric is one module plus one entry (or :func:`register_metric`).

Shared conventions: maps are 2-D and expected in ``[0, 1]``; thresholds are absolute on
that scale, not quantiles; non-finite map values raise ``ValueError``; degenerate inputs
have defined results and never produce NaN (each function states its convention). Map
helpers (:func:`resize_map`, :func:`map_correlation`, ...) live in :mod:`camcore.maps`.

Importing this package needs only numpy and OpenCV, never TensorFlow (the sanity check
imports Keras when it runs).
"""

from __future__ import annotations

from camcore.maps import map_correlation, resize_map
from camcore.metrics._common import PredictFn
from camcore.metrics.base import Column, Curve, Metric, MetricInputs, RunContext, curve_column
from camcore.metrics.controls import control_maps, flag_below_controls, random_map
from camcore.metrics.faithfulness import (
    DropIncrease,
    auc,
    average_drop_increase,
    deletion_curve,
    insertion_curve,
    summarize_drop_increase,
)
from camcore.metrics.localization import (
    DEFAULT_THRESHOLDS,
    POINTING_TOLERANCE,
    Localization,
    best_threshold,
    dice,
    dice_curve,
    energy_pointing_game,
    iou,
    iou_curve,
    localization,
    localization_curves,
    pointing_game,
    threshold_map,
)
from camcore.metrics.registry import (
    METRICS,
    default_metric_keys,
    find_column,
    find_curve,
    get_metric,
    register_metric,
    registered_columns,
    registered_curves,
    select_metrics,
    selectable_metric_keys,
    unregister_metric,
)
from camcore.metrics.road import DEFAULT_ROAD_PERCENTAGES, noisy_linear_impute, road_curve
from camcore.metrics.sanity import (
    SANITY_THRESHOLD,
    SanityResult,
    parameter_randomization,
    randomized_copy,
    spearman_correlation,
    ssim,
)

__all__ = [
    # the registry
    "METRICS",
    "Column",
    "Curve",
    "Metric",
    "MetricInputs",
    "RunContext",
    "curve_column",
    "default_metric_keys",
    "find_column",
    "find_curve",
    "get_metric",
    "register_metric",
    "registered_columns",
    "registered_curves",
    "select_metrics",
    "selectable_metric_keys",
    "unregister_metric",
    # localization
    "DEFAULT_THRESHOLDS",
    "POINTING_TOLERANCE",
    "Localization",
    "localization",
    "localization_curves",
    "best_threshold",
    "threshold_map",
    "iou",
    "dice",
    "iou_curve",
    "dice_curve",
    "pointing_game",
    "energy_pointing_game",
    # faithfulness
    "PredictFn",
    "DropIncrease",
    "average_drop_increase",
    "summarize_drop_increase",
    "deletion_curve",
    "insertion_curve",
    "auc",
    # ROAD
    "DEFAULT_ROAD_PERCENTAGES",
    "noisy_linear_impute",
    "road_curve",
    # controls
    "random_map",
    "control_maps",
    "flag_below_controls",
    # sanity check
    "SANITY_THRESHOLD",
    "SanityResult",
    "parameter_randomization",
    "randomized_copy",
    "spearman_correlation",
    "ssim",
    # map helpers, re-exported from camcore.maps
    "resize_map",
    "map_correlation",
]
