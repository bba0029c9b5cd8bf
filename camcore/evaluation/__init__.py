"""Batch evaluation of CAM methods over a data set of defect images.

Modules: ``spec`` (the model), ``sources`` (the images), ``settings`` (what is computed),
``runner`` (per-image maps and metrics, :func:`evaluate`), ``ray_runner`` (the same on a
Ray cluster, :func:`evaluate_ray`), ``journal`` (resuming), ``results`` (the table and its
global thresholds), ``summary`` (per-method summaries and Markdown), ``pair``,
``pair_table`` and ``pair_summary`` (a second model: ``evaluate(..., model_b=)``, its
table and where the two models differ), ``background`` (a run in a thread, for the
dashboard), ``archives`` (uploaded data sets), ``cli`` (``python -m camcore.evaluate``).

    python -m camcore.evaluate [--model vgg_defect | --model path/to/model.keras --preprocessing unit]
        (--data DAGM_DIR | --synthetic N [--seed S] [--defect-rate R] [--size PX])
        [--layer L] [--methods grad_cam score_cam ...] [--max-n 10]
        [--metrics localization deletion ... | all] [--road] [--sanity]
        [--limit N] [--workers 2] [--overwrite] --out results.parquet|results.csv
        [--ray [--ray-address ADDR] [--ray-actors N] [--ray-cpus-per-actor C]]
        [--model-b B [--layer-b L] [--preprocessing-b P] [--agreement-threshold 0.5]]

For every image and every method - each CAM of the registry :data:`camcore.methods.METHODS`
(nine built in) plus two sanity controls, ``"sobel"`` (the image's Sobel gradient, which
ignores the model) and ``"random"`` (:func:`camcore.metrics.random_map`) - it records the
metrics of the registry :data:`camcore.metrics.METRICS` (``metrics=`` / ``--metrics``;
by default every non-optional one):

* ``localization``, against the defect mask (defective images only, clean ones have no
  mask): the pointing game (Zhang et al. 2016), the energy-based pointing game
  (Wang et al. 2020, sec. 5.2), the IoU at every threshold of
  :data:`camcore.metrics.DEFAULT_THRESHOLDS` (columns ``iou@0.05`` ...), the best
  per-image threshold and its IoU (an oracle), and - once the whole set is known -
  IoU and Dice at the method's best *global* threshold, the one that maximizes the
  mean IoU over the set;
* faithfulness (every image): ``drop_increase``, Average Drop % and Increase in
  Confidence (Chattopadhyay et al. 2018, sec. 5.1); ``deletion`` and ``insertion``
  curves and their AUC (Petsiuk et al. 2018, sec. 4.1; ``curve_steps`` + 1 points,
  columns ``deletion@0.00`` ...; both between the image and its blurred copy, see
  :data:`BLUR_SIGMA`); optionally ``road``, ROAD MoRF/LeRF (Rong et al. 2022);
* optionally ``sanity``, the model-randomization check (Adebayo et al. 2018) of each CAM;
* ``time``, always: the seconds the map took, the model passes it ran, and the seconds
  of its metrics.

Every metric is computed at the model's input resolution: the map is upsampled
bilinearly and the mask is resized like the image (area interpolation, a pixel is
defective when at least half of it was) - except localization, which scores the map at
its own resolution against the mask at the image's, the one protocol of
:func:`camcore.metrics.localization` that the Compare page uses too. Every map explains
the ``class_index`` ("defective") score on every image, clean ones included.

Timing: each CAM method runs from an empty cache (the run's one
:class:`~camcore.explainer.Explainer` drops its cached tensors before each method), so
a method's time is what it costs alone (in the dashboard the methods share caches, and
e.g. Faster-Score-CAM after Score-CAM costs nothing). Tracing is paid by a warm-up
before the first image.

Cores: model passes run in TensorFlow, whose intra-op thread pool already uses every
core. The per-method metric work of an image (building perturbed batches, sorting
pixels, ROAD's imputation solves, IoU curves) is NumPy/OpenCV that releases the GIL,
so the methods' metrics of an image run in a small thread pool (``workers``,
default 2) and overlap with each other's model calls; threads rather than processes
keep one copy of the model. The CAMs themselves are computed one after the other,
without metric work running beside them, so their timings are not inflated by
contention.

A second model (``model_b=`` / ``--model-b``): every image is evaluated by both models with
the same settings and each CAM method's two maps are compared (:mod:`camcore.evaluation.pair`);
the table keeps one row per image and method, model A's columns as in a single-model run,
then the agreement columns, then model B's as ``b_<name>`` (:mod:`camcore.evaluation.pair_table`).

Resuming: each finished image is appended as one JSON line (all its methods, or its
error) to a journal beside the output (``results.parquet.rows.jsonl``), flushed and
fsync'd before the next image starts. A rerun with the same configuration skips the
images already in the journal; a torn last line (the process died while writing it)
is dropped. The output file is rebuilt from the journal at the end (written to a
temporary file, then renamed), so it is always complete and never half written.
"""

from camcore.dagm import DagmFormatError
from camcore.evaluation.cli import main
from camcore.evaluation.defaults import (
    ALL_METHODS,
    BLUR_SIGMA,
    CAM_METHODS,
    CONTROLS,
    DEFAULT_CURVE_STEPS,
    DEFAULT_MAX_N,
    DEFAULT_WORKERS,
    METHOD_LABELS,
    RANDOM_SIGMA_FRACTION,
    Progress,
    check_methods,
)
from camcore.evaluation.journal import JOURNAL_SUFFIX, Journal, journal_path
from camcore.evaluation.pair import B_PREFIX, PairMaps, SecondModel, pair_maps
from camcore.evaluation.pair_summary import (
    format_pair_summary,
    least_agreeing,
    summarize_agreement,
    top1_disagreement,
    unavailable_for_b,
)
from camcore.evaluation.pair_table import is_pair_table, side_table
from camcore.evaluation.ray_runner import evaluate_ray
from camcore.evaluation.results import (
    RECORD_COLUMNS,
    REQUIRED_COLUMNS,
    add_global_threshold,
    curve_columns,
    errors,
    global_thresholds,
    iou_column,
    read_results,
    records_to_frame,
    results_only,
    write_results,
)
from camcore.evaluation.runner import evaluate
from camcore.evaluation.settings import RunSettings, for_model, run_settings, unavailable_methods
from camcore.evaluation.sources import (
    SYNTHETIC_SIZE,
    EvalItem,
    LoadedImage,
    dagm_items,
    open_result_image,
    synthetic_image,
    synthetic_items,
    synthetic_source,
)
from camcore.evaluation.spec import ModelSpec, load_model_spec
from camcore.evaluation.summary import (
    HEADLINE_COLUMN,
    WORST_BY,
    column_label,
    flagged_methods,
    format_summary,
    mean_curve,
    summarize,
    summary_table,
    threshold_export,
    worst_images,
)

__all__ = [
    "ALL_METHODS", "BLUR_SIGMA", "B_PREFIX", "CAM_METHODS", "CONTROLS", "DEFAULT_CURVE_STEPS", "DEFAULT_MAX_N",
    "DEFAULT_WORKERS", "HEADLINE_COLUMN", "JOURNAL_SUFFIX", "METHOD_LABELS", "RANDOM_SIGMA_FRACTION",
    "RECORD_COLUMNS", "REQUIRED_COLUMNS", "SYNTHETIC_SIZE", "WORST_BY", "DagmFormatError", "EvalItem", "Journal",
    "LoadedImage", "ModelSpec", "Progress", "RunSettings", "add_global_threshold", "check_methods",
    "column_label", "curve_columns", "dagm_items", "errors", "evaluate", "evaluate_ray", "flagged_methods",
    "format_summary",
    "global_thresholds", "iou_column", "journal_path", "load_model_spec", "main", "mean_curve", "open_result_image",
    "read_results", "records_to_frame", "results_only", "run_settings", "summarize", "summary_table",
    "for_model", "unavailable_methods",
    "PairMaps", "SecondModel", "format_pair_summary", "is_pair_table", "least_agreeing", "pair_maps", "side_table",
    "summarize_agreement", "top1_disagreement", "unavailable_for_b",
    "synthetic_image", "synthetic_items", "synthetic_source", "threshold_export", "worst_images", "write_results",
]
