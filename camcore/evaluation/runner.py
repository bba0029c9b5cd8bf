"""Per-image evaluation: every method's map and the registry's metrics of it
(:class:`ImageRunner`), the run's journal and table, and :func:`evaluate`."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ParamSpec, Protocol, Sequence, TypeVar

import cv2
import numpy as np
import pandas as pd

from camcore.dagm import DagmFormatError
from camcore.evaluation.defaults import (
    ALL_METHODS,
    BLUR_SIGMA,
    DEFAULT_CURVE_STEPS,
    DEFAULT_MAX_N,
    DEFAULT_WORKERS,
    RANDOM_SIGMA_FRACTION,
    Progress,
)
from camcore.evaluation.journal import Journal, MemoryJournal, journal_path
from camcore.evaluation.pair import PairRunner, SecondModel, second_model
from camcore.evaluation.pair_table import finish_pair_table, is_pair_table
from camcore.evaluation.results import add_global_threshold, check_writable, records_to_frame, write_results
from camcore.evaluation.settings import RunSettings, for_model, metric_choice, run_settings
from camcore.evaluation.sources import EvalItem, LoadedImage
from camcore.evaluation.spec import ModelSpec, check_spec
from camcore.methods import METHODS
from camcore.methods.combine import upsample
from camcore.methods.sobel import sobel_gradient
from camcore.metrics import DEFAULT_THRESHOLDS, Metric, MetricInputs, PredictFn, RunContext, random_map
from camcore.metrics.agreement import DEFAULT_AGREEMENT_THRESHOLD
from camcore.metrics.timing import METRIC_SECONDS, MODEL_PASSES, SECONDS
from camcore.preprocess import resize_for_model

if TYPE_CHECKING:  # TensorFlow is imported only when a model is run
    from camcore.explainer import Explainer

logger = logging.getLogger(__name__)

UNREADABLE_ERRORS = (DagmFormatError, ValueError, OSError)
"""What loading or preprocessing an image raises when the image, not the code, is at fault."""


_P = ParamSpec("_P")
_T = TypeVar("_T")
ModelInput = TypeVar("ModelInput")


def _stable_seed(seed: int, text: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class InlineExecutor(Executor):
    """An executor that runs submitted work at once, in the caller's thread (one worker)."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller via the future
            future.set_exception(exc)
        return future


def metric_pool(workers: int) -> Executor:
    """The threads that compute the metrics of an image's maps (inline for one worker)."""
    return ThreadPoolExecutor(max_workers=workers) if workers > 1 else InlineExecutor()


def metric_row(chosen: Sequence[Metric], states: dict[str, Any], inputs: MetricInputs) -> dict[str, float]:
    """Every chosen metric's columns for one map (``states``: each metric's prepared state),
    and the seconds they took. A metric that needs a mask is skipped on a clean image;
    ValueError if a metric returns a column it does not declare."""
    start = time.perf_counter()
    row: dict[str, float] = {}
    for metric in chosen:
        if metric.compute is None or (metric.needs_mask and inputs.mask is None):
            continue
        found = metric.compute(dataclasses.replace(inputs, state=states.get(metric.key)))
        stray = [name for name in found if not metric.writes(name)]
        if stray:
            raise ValueError(f"metric {metric.key!r} returned columns it does not declare: {stray}")
        row.update({name: float(value) for name, value in found.items()})
    row[METRIC_SECONDS.name] = time.perf_counter() - start
    return row


@dataclass(frozen=True, eq=False)
class MethodMap:
    """One method's map of one image: ``saliency`` at the model input size (what the
    faithfulness metrics perturb with), ``cam`` as the method made it (what localization
    and the two-model agreement score), the seconds and model passes it took."""

    saliency: np.ndarray
    cam: np.ndarray
    seconds: float
    passes: int


class ImageRunner:
    """Computes every method's map and metrics for one image (:meth:`run`), with the
    metric work of its maps spread over ``pool``."""

    def __init__(self, spec: ModelSpec, settings: RunSettings, pool: Executor) -> None:
        from camcore.explainer import Explainer

        self.spec = spec
        self.settings = settings
        self.thresholds = np.asarray(settings.thresholds, dtype=np.float64)
        self.pool = pool
        self.cam_methods = [m for m in settings.methods if m in METHODS]
        # One explainer for every CAM method, its cached tensors dropped before each method
        # (:meth:`_map`): each method's time is its cost alone, and each compiled pass is
        # traced once. (An explainer per method traced the shared gradient pass five times,
        # ~2 s of every run on vgg_defect.)
        self.explainer = Explainer(spec.model, cache_size=8, precision=settings.precision)
        # the metric passes run at the same precision as the methods' forward passes
        scorer = Explainer(spec.model, cache_size=1, precision=settings.precision)
        scorer.layer_info(spec.layer)
        scorer.check_class(spec.class_index)
        self.predict_fn: PredictFn = scorer.probabilities_fn()
        context = RunContext(
            model=spec.model, layer=spec.layer, class_index=spec.class_index,
            input_size=(int(spec.input_size[0]), int(spec.input_size[1])),
            preprocessing=spec.preprocessing, preprocess=spec.preprocess, methods=tuple(self.cam_methods),
            seed=settings.seed, max_n=settings.max_n, precision=settings.precision,
        )
        self.states = {m.key: m.prepare(context) for m in settings.metrics if m.prepare is not None}

    def warm_up(self) -> None:
        """Trace every compiled pass once on a noise image, so no timing pays for it."""
        height, width = self.spec.input_size
        noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
        x = self.spec.preprocess(noise)
        self.predict_fn(x)
        for method in self.cam_methods:
            self._map(self.explainer, method, x)

    def _map(self, explainer: "Explainer", method: str, x: np.ndarray, class_index: int | None = None):
        """``method``'s result on ``x`` for ``class_index`` (default the spec's), computed
        from nothing but the compiled passes."""
        explainer.clear_cache()
        index = self.spec.class_index if class_index is None else class_index
        return explainer.compute(method, x, self.spec.layer, index, self.settings.max_n)

    def model_input(self, loaded: LoadedImage) -> np.ndarray:
        """The model input of an image (ValueError, e.g., for an image too small to use)."""
        return self.spec.preprocess(loaded.image)

    def record(self, item: EvalItem, loaded: LoadedImage, x: np.ndarray, class_index: int) -> dict[str, Any]:
        """What every row of the image holds: the model, the image and the prediction."""
        spec = self.spec
        probabilities = self.predict_fn(x)[0]
        return {
            "model": spec.key,
            "layer": spec.layer,
            "source": item.source,
            "image_id": item.id,
            "index": item.index,
            "path": item.path,
            "class_name": loaded.class_name,
            "defect_kind": loaded.detail,
            "defective": bool(loaded.defective),
            "target_class": class_index,
            "p_target": float(probabilities[class_index]),
            "predicted": int(np.argmax(probabilities)),
        }

    def _method_map(self, method: str, item: EvalItem, model_image: np.ndarray, x: np.ndarray,
                    class_index: int) -> MethodMap:
        """One method's map of the image: a CAM, or a control (Sobel edges, seeded random blobs)."""
        size = self.spec.input_size
        start = time.perf_counter()
        if method in METHODS:
            result = self._map(self.explainer, method, x, class_index)
            return MethodMap(upsample(result.cam, size), result.cam, result.seconds, result.model_passes)
        if method == "sobel":
            saliency = sobel_gradient(model_image)
        else:
            sigma = RANDOM_SIGMA_FRACTION * min(size)
            saliency = random_map(size, seed=_stable_seed(self.settings.seed, item.id), sigma=sigma)
        return MethodMap(saliency, saliency, time.perf_counter() - start, 0)

    def run(self, item: EvalItem, loaded: LoadedImage, x: np.ndarray) -> list[dict[str, Any]]:
        """Rows of every method for ``loaded``, whose model input is ``x``. The maps are
        computed one after the other, then their metrics in the pool."""
        return self.rows_and_maps(item, loaded, x)[0]

    def rows_and_maps(self, item: EvalItem, loaded: LoadedImage, x: np.ndarray,
                      class_index: int | None = None) -> tuple[list[dict[str, Any]], dict[str, MethodMap]]:
        """:meth:`run`'s rows and the maps they score, by method; every map explains
        ``class_index`` (default: the spec's class)."""
        spec = self.spec
        index = spec.class_index if class_index is None else int(class_index)
        model_image = resize_for_model(loaded.image, spec.input_size, spec.channels)
        mask = np.asarray(loaded.mask, bool) if loaded.defective else None
        base = self.record(item, loaded, x, index)
        maps = {method: self._method_map(method, item, model_image, x, index) for method in self.settings.methods}
        blurred = cv2.GaussianBlur(x[0], (0, 0), BLUR_SIGMA).reshape(x.shape[1:])
        futures = {
            method: self.pool.submit(
                metric_row, self.settings.metrics, self.states,
                MetricInputs(self.predict_fn, x, blurred, found.saliency, found.cam, mask, index,
                             self.thresholds, self.settings.curve_steps, method),
            )
            for method, found in maps.items()
        }
        rows = [
            base | {"method": method, SECONDS.name: found.seconds, MODEL_PASSES.name: found.passes}
            | futures[method].result()
            for method, found in maps.items()
        ]
        return rows, maps


class Runner(Protocol[ModelInput]):
    """A run's per-image runner, :class:`ImageRunner` or :class:`~camcore.evaluation.pair.PairRunner`
    (whose model input is a pair): :meth:`run` takes the input :meth:`model_input` makes."""

    def warm_up(self) -> None: ...

    def model_input(self, loaded: LoadedImage) -> ModelInput: ...

    def run(self, item: EvalItem, loaded: LoadedImage, x: ModelInput) -> list[dict[str, Any]]: ...


def make_runner(spec: ModelSpec, settings: RunSettings, pool: Executor,
                second: SecondModel | None = None) -> Runner[Any]:
    """The per-image runner of a run: ``spec``'s, or with a ``second`` model both models'
    and their agreement (:class:`~camcore.evaluation.pair.PairRunner`)."""
    runner = ImageRunner(spec, settings, pool)
    if second is None:
        return runner
    assert second.spec is not None
    return PairRunner(runner, ImageRunner(second.spec, second.settings, pool), second)


def open_journal(
    model: ModelSpec,
    items: Sequence[EvalItem],
    settings: RunSettings,
    out: str | os.PathLike[str] | None,
    overwrite: bool,
    second: SecondModel | None = None,
) -> tuple[Journal | MemoryJournal, Path | None]:
    """Check a run (unique item ids, a writable ``out``, the model's layer and class) and
    open its journal, in memory without ``out``; also returns ``out`` checked. A pair run
    records model B's configuration under ``"pair"`` (a single-model run's configuration
    is what it always was, so its journals still resume)."""
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    out_path = None if out is None else check_writable(out, journal_path(out))
    check_spec(model)  # a bad layer or class must fail before a journal is started
    config = {
        "model": model.key,
        "layer": model.layer,
        "class_index": model.class_index,
        "preprocessing": model.preprocessing,
        "input_size": list(model.input_size),
        **settings.journal_config(),
        "sources": sorted({item.source for item in items}),
    }
    if second is not None:
        config["pair"] = second.journal_config()
    if out_path is None:
        return MemoryJournal(), None
    return Journal(journal_path(out_path), config, overwrite), out_path


def results_table(records: Sequence[dict[str, Any]], out_path: Path | None) -> pd.DataFrame:
    """The results table of journal ``records`` (global thresholds added; a pair run's
    completed by :func:`~camcore.evaluation.pair_table.finish_pair_table`), written to
    ``out_path`` when given."""
    table = add_global_threshold(records_to_frame(records))
    if is_pair_table(table):
        table = finish_pair_table(table)
    if out_path is not None:
        write_results(table, out_path)
    return table


def evaluate(
    model: ModelSpec,
    items: Sequence[EvalItem],
    methods: Sequence[str] = ALL_METHODS,
    *,
    max_n: int = DEFAULT_MAX_N,
    metrics: Sequence[str] | None = None,
    road: bool = False,
    curve_steps: int = DEFAULT_CURVE_STEPS,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
    seed: int = 0,
    sanity: bool = False,
    precision: str = "fp32",
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
    model_b: ModelSpec | None = None,
    agreement_threshold: float = DEFAULT_AGREEMENT_THRESHOLD,
) -> pd.DataFrame:
    """Evaluate ``methods`` on ``items`` with ``model``; return one row per image and method.

    ``metrics`` are keys of :data:`camcore.metrics.METRICS` (default: every non-optional
    one); ``road=True`` / ``sanity=True`` add ROAD and the sanity check to them.
    With ``out`` (``.parquet`` or ``.csv``) every finished image goes to the journal
    :func:`journal_path` (``out``) at once, images already there are skipped, and ``out``
    is (re)written from the journal at the end; without it nothing is written. An image
    that cannot be read (:class:`DagmFormatError`, or ``ValueError`` from decoding) is
    logged, recorded as an error row (``method`` empty, ``error`` set) and skipped.
    ``progress(done, total)`` is called after each image; an exception it raises (e.g.
    ``KeyboardInterrupt``) stops the run with every finished image saved.
    The returned table has the global-threshold columns of :func:`add_global_threshold`.
    With ``model_b`` every image is evaluated by both models and each method's two maps
    compared at ``agreement_threshold``: the table of :mod:`camcore.evaluation.pair_table`.
    See :func:`camcore.evaluation.ray_runner.evaluate_ray` for the same run on Ray.
    """
    requested = run_settings(methods, max_n=max_n, metrics=metric_choice(metrics, road=road, sanity=sanity),
                             curve_steps=curve_steps, thresholds=thresholds, seed=seed, precision=precision)
    settings, second = settings_of_run(requested, model, model_b, agreement_threshold)
    journal, out_path = open_journal(model, items, settings, out, overwrite, second)
    try:
        todo = [item for item in items if not journal.done(item.id)]
        total = len(items)
        if progress is not None:
            progress(total - len(todo), total)
        if todo:
            _run_local(model, settings, todo, journal, workers, progress, total, second)
    finally:
        journal.close()
    wanted = {item.id for item in items}
    records = [record for key, record in journal.records.items() if key in wanted]
    return results_table(records, out_path)


def settings_of_run(requested: RunSettings, model: ModelSpec, model_b: ModelSpec | None,
                    agreement_threshold: float) -> tuple[RunSettings, SecondModel | None]:
    """The settings as run on ``model`` (:func:`for_model`) and, with ``model_b``, the
    second model of the pair run (on the methods ``model`` serves)."""
    settings = for_model(requested, model)
    if model_b is None:
        return settings, None
    on_a = dataclasses.replace(requested, methods=settings.methods)
    return settings, second_model(on_a, model, model_b, agreement_threshold)


def _run_local(model: ModelSpec, settings: RunSettings, todo: Sequence[EvalItem], journal: Journal | MemoryJournal,
               workers: int, progress: Progress | None, total: int, second: SecondModel | None = None) -> None:
    """Evaluate ``todo`` one image after the other into ``journal`` (with ``second``: by
    both models)."""
    pool = metric_pool(workers)
    try:
        runner = make_runner(model, settings, pool, second)
        runner.warm_up()
        finished = total - len(todo)
        for item in todo:
            journal.add(evaluate_item(runner, item))
            finished += 1
            if progress is not None:
                progress(finished, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def evaluate_item(runner: Runner[ModelInput], item: EvalItem) -> dict[str, Any]:
    """The journal record of one image: its rows, or its error if it cannot be read."""
    try:
        loaded = item.load()
        x = runner.model_input(loaded)  # e.g. an image too small to use
    except UNREADABLE_ERRORS as exc:
        return error_record(item, exc)
    return {"id": item.id, "rows": runner.run(item, loaded, x)}


def error_record(item: EvalItem, exc: BaseException) -> dict[str, Any]:
    """The journal record of an image that could not be read (logged here)."""
    message = str(exc) if item.path and item.path in str(exc) else f"{item.path or item.id}: {exc}"
    logger.warning("skipping %s: %s", item.id, message)
    return {
        "id": item.id,
        "error": message,
        "item": {
            "source": item.source,
            "index": item.index,
            "path": item.path,
            "class_name": item.class_name,
            "defective": item.defective,
        },
    }
