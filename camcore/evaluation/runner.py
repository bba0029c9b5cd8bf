"""Per-image evaluation: every method's map and metrics, and :func:`evaluate`."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np
import pandas as pd

from camcore import metrics
from camcore.dagm import DagmFormatError
from camcore.evaluation.defaults import (
    _INPUT_RANGE,
    ALL_METHODS,
    BLUR_SIGMA,
    DEFAULT_CURVE_STEPS,
    DEFAULT_MAX_N,
    DEFAULT_WORKERS,
    RANDOM_SIGMA_FRACTION,
    Progress,
    _check_methods,
)
from camcore.evaluation.journal import Journal, _MemoryJournal, journal_path
from camcore.evaluation.results import (
    _x_label,
    add_global_threshold,
    check_writable,
    iou_column,
    records_to_frame,
    write_results,
)
from camcore.evaluation.sources import EvalItem, LoadedImage
from camcore.evaluation.spec import ModelSpec, _check_spec
from camcore.methods import METHODS
from camcore.methods.combine import upsample
from camcore.methods.sobel import sobel_gradient
from camcore.preprocess import resize_for_model

if TYPE_CHECKING:  # TensorFlow is imported only when a model is run
    from camcore.explainer import Explainer

logger = logging.getLogger(__name__)



def _stable_seed(seed: int, text: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _method_metrics(
    predict_fn: metrics.PredictFn,
    x: np.ndarray,
    blurred: np.ndarray,
    saliency: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None,
    class_index: int,
    thresholds: np.ndarray,
    steps: int,
    road: bool,
    road_noise: float,
) -> dict[str, float]:
    """All metrics of one map of one image. Localization follows the one protocol of
    :func:`camcore.metrics.localization` (``cam`` at its own resolution against the mask at
    the image's native resolution, as the Compare page scores it); faithfulness perturbs
    the model input with ``saliency`` (the map at the model's input size). ``blurred`` is
    ``x`` blurred, the deletion baseline."""
    start = time.perf_counter()
    row: dict[str, float] = {}
    if mask is not None:
        curve, _ = metrics.localization_curves(cam, mask, thresholds)
        best = int(np.argmax(curve))
        found = metrics.localization(cam, mask, float(thresholds[best]))
        row["pointing_game"] = float(found.pointing_hit)
        row["energy_pointing_game"] = found.energy_pointing
        row["oracle_threshold"] = float(thresholds[best])
        row["oracle_iou"] = float(curve[best])
        row.update({iou_column(t): float(v) for t, v in zip(thresholds, curve)})
    drop = metrics.average_drop_increase(predict_fn, x, saliency, class_index)
    row["average_drop"] = drop.drop
    row["increased_confidence"] = float(drop.increased)
    deletion = metrics.deletion_curve(predict_fn, x, saliency, class_index, steps=steps, baseline=blurred)
    insertion = metrics.insertion_curve(
        predict_fn, x, saliency, class_index, steps=steps, start="blur", blur_sigma=BLUR_SIGMA
    )
    row["deletion_auc"] = metrics.auc(deletion)
    row["insertion_auc"] = metrics.auc(insertion)
    fractions = np.arange(steps + 1) / steps
    row.update({f"deletion@{_x_label(f)}": float(v) for f, v in zip(fractions, deletion)})
    row.update({f"insertion@{_x_label(f)}": float(v) for f, v in zip(fractions, insertion)})
    if road:
        for order in ("morf", "lerf"):
            curve = metrics.road_curve(predict_fn, x, saliency, class_index, order=order, noise_std=road_noise)
            row[f"road_{order}_auc"] = metrics.auc(curve)
            pcts = metrics.DEFAULT_ROAD_PERCENTAGES
            row.update({f"road_{order}@{_x_label(p)}": float(v) for p, v in zip(pcts, curve)})
    row["metric_seconds"] = time.perf_counter() - start
    return row


class _InlineExecutor(Executor):
    """Runs submitted work at once (``workers <= 1``)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller via the future
            future.set_exception(exc)
        return future


class _Runner:
    """Computes every method's map and metrics for one image."""

    def __init__(
        self,
        spec: ModelSpec,
        methods: Sequence[str],
        max_n: int,
        thresholds: np.ndarray,
        steps: int,
        road: bool,
        seed: int,
        pool: Executor,
        sanity: bool = False,
        precision: str = "fp32",
    ) -> None:
        from camcore.explainer import Explainer

        self.spec = spec
        self.methods = list(methods)
        self.max_n = max_n
        self.thresholds = thresholds
        self.steps = steps
        self.road = road
        self.seed = seed
        self.pool = pool
        self.road_noise = 0.01 * _INPUT_RANGE.get(spec.preprocessing, 1.0)
        self.cam_methods = [m for m in self.methods if m in METHODS]
        # One explainer for every CAM method, its cached tensors dropped before each method
        # (:meth:`_map`): each method's time is its cost alone, and each compiled pass is
        # traced once. (An explainer per method traced the shared gradient pass five times,
        # ~2 s of every run on vgg_defect.)
        self.explainer = Explainer(spec.model, cache_size=8, precision=precision)
        # the metric passes run at the same precision as the methods' forward passes
        scorer = Explainer(spec.model, cache_size=1, precision=precision)
        scorer.adapter.layer_info(spec.layer)
        scorer.adapter.check_class(spec.class_index)
        self.predict_fn: metrics.PredictFn = scorer.probabilities_fn()
        # Sanity check (Adebayo et al. 2018): one randomized copy for the whole run, seeded
        self.sanity_explainer: Explainer | None = None
        if sanity:
            from camcore.metrics.sanity import randomized_copy

            copy, _ = randomized_copy(spec.model, spec.layer, seed=seed)
            self.sanity_explainer = Explainer(copy, cache_size=8, precision=precision)

    def warm_up(self) -> None:
        """Trace every compiled pass once on a noise image, so no timing pays for it."""
        height, width = self.spec.input_size
        noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
        x = self.spec.preprocess(noise)
        self.predict_fn(x)
        for explainer in (self.explainer, self.sanity_explainer):
            for method in self.cam_methods if explainer is not None else ():
                self._map(explainer, method, x)

    def _map(self, explainer: "Explainer", method: str, x: np.ndarray):
        """``method``'s result on ``x``, computed from nothing but the compiled passes."""
        explainer.clear_cache()
        return explainer.compute(method, x, self.spec.layer, self.spec.class_index, self.max_n)

    def _sanity(self, method: str, x: np.ndarray, cam: np.ndarray) -> dict[str, float]:
        """The method's map on the randomized copy against ``cam`` (camcore.metrics.sanity)."""
        from camcore.metrics.sanity import compare_maps

        randomized = self._map(self.sanity_explainer, method, x).cam
        rho, structure, passed = compare_maps(cam, randomized, self.spec.input_size)
        return {"sanity_spearman": rho, "sanity_ssim": structure, "sanity_pass": float(passed)}

    def run(self, item: EvalItem, loaded: LoadedImage, x: np.ndarray) -> list[dict[str, Any]]:
        """Rows of every method for ``loaded``, whose model input is ``x``."""
        spec = self.spec
        model_image = resize_for_model(loaded.image, spec.input_size, spec.channels)
        mask = np.asarray(loaded.mask, bool) if loaded.defective else None
        probabilities = self.predict_fn(x)[0]
        base = {
            "model": spec.key,
            "layer": spec.layer,
            "source": item.source,
            "image_id": item.id,
            "index": item.index,
            "path": item.path,
            "class_name": loaded.class_name,
            "defect_kind": loaded.detail,
            "defective": bool(loaded.defective),
            "target_class": spec.class_index,
            "p_target": float(probabilities[spec.class_index]),
            "predicted": int(np.argmax(probabilities)),
        }
        maps: dict[str, tuple[np.ndarray, float, int]] = {}
        cams: dict[str, np.ndarray] = {}
        sanity_rows: dict[str, dict[str, float]] = {}
        for method in self.methods:
            if method in METHODS:
                result = self._map(self.explainer, method, x)
                cams[method] = result.cam
                if self.sanity_explainer is not None:
                    sanity_rows[method] = self._sanity(method, x, result.cam)
                maps[method] = (upsample(result.cam, spec.input_size), result.seconds, result.model_passes)
            elif method == "sobel":
                start = time.perf_counter()
                saliency = sobel_gradient(model_image)
                maps[method] = (saliency, time.perf_counter() - start, 0)
            elif method == "random":
                start = time.perf_counter()
                sigma = RANDOM_SIGMA_FRACTION * min(spec.input_size)
                saliency = metrics.random_map(spec.input_size, seed=_stable_seed(self.seed, item.id), sigma=sigma)
                maps[method] = (saliency, time.perf_counter() - start, 0)
        blurred = cv2.GaussianBlur(x[0], (0, 0), BLUR_SIGMA).reshape(x.shape[1:])
        futures = {
            method: self.pool.submit(
                _method_metrics, self.predict_fn, x, blurred, saliency, cams.get(method, saliency), mask,
                spec.class_index,
                self.thresholds, self.steps, self.road, self.road_noise,
            )
            for method, (saliency, _, _) in maps.items()
        }
        rows = []
        for method, (_, seconds, passes) in maps.items():
            rows.append(base | {"method": method, "seconds": seconds, "model_passes": passes}
                        | futures[method].result() | sanity_rows.get(method, {}))
        return rows


@dataclass(frozen=True)
class _Settings:
    """What is computed for every image; with the model and the sources it makes up the
    configuration a journal belongs to."""

    methods: tuple[str, ...]
    max_n: int
    road: bool
    curve_steps: int
    thresholds: tuple[float, ...]
    seed: int
    sanity: bool = False
    precision: str = "fp32"

    def runner(self, spec: ModelSpec, pool: Executor) -> _Runner:
        return _Runner(spec, self.methods, self.max_n, np.asarray(self.thresholds, dtype=np.float64),
                       self.curve_steps, self.road, self.seed, pool, self.sanity, self.precision)

    def journal_config(self) -> dict[str, Any]:
        """The settings as recorded in a journal (the sanity check and a non-default precision
        only when used, so journals of earlier runs still resume)."""
        config: dict[str, Any] = {
            "methods": list(self.methods),
            "max_n": self.max_n,
            "road": self.road,
            "curve_steps": self.curve_steps,
            "thresholds": list(self.thresholds),
            "seed": self.seed,
        }
        if self.sanity:
            config["sanity"] = True
        if self.precision != "fp32":
            config["precision"] = self.precision
        return config


def _settings(
    methods: Sequence[str],
    max_n: int,
    road: bool,
    curve_steps: int,
    thresholds: Sequence[float] | np.ndarray,
    seed: int,
    sanity: bool = False,
    precision: str = "fp32",
) -> _Settings:
    checked = _check_methods(methods)
    if curve_steps < 1:
        raise ValueError(f"curve_steps must be >= 1, got {curve_steps}")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    grid = tuple(float(t) for t in np.asarray(thresholds, dtype=np.float64))
    from camcore.precision import resolve_precision

    resolved = resolve_precision(precision)  # "auto" stays only where the model must be measured
    return _Settings(tuple(checked), int(max_n), bool(road), int(curve_steps), grid, int(seed), bool(sanity), resolved)


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


def _open_journal(
    model: ModelSpec,
    items: Sequence[EvalItem],
    settings: _Settings,
    out: str | os.PathLike[str] | None,
    overwrite: bool,
) -> tuple[Journal | _MemoryJournal, Path | None]:
    """Check the run and open its journal (in memory without ``out``)."""
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    out_path = None if out is None else check_writable(out, journal_path(out))
    _check_spec(model)  # a bad layer or class must fail before a journal is started
    config = {
        "model": model.key,
        "layer": model.layer,
        "class_index": model.class_index,
        "preprocessing": model.preprocessing,
        "input_size": list(model.input_size),
        **settings.journal_config(),
        "sources": sorted({item.source for item in items}),
    }
    if out_path is None:
        return _MemoryJournal(), None
    return Journal(journal_path(out_path), config, overwrite), out_path


def _results_table(records: Sequence[dict[str, Any]], out_path: Path | None) -> pd.DataFrame:
    table = add_global_threshold(records_to_frame(records))
    if out_path is not None:
        write_results(table, out_path)
    return table


def evaluate(
    model: ModelSpec,
    items: Sequence[EvalItem],
    methods: Sequence[str] = ALL_METHODS,
    *,
    max_n: int = DEFAULT_MAX_N,
    road: bool = False,
    curve_steps: int = DEFAULT_CURVE_STEPS,
    thresholds: Sequence[float] | np.ndarray = metrics.DEFAULT_THRESHOLDS,
    seed: int = 0,
    sanity: bool = False,
    precision: str = "fp32",
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Evaluate ``methods`` on ``items`` with ``model``; return one row per image and method.

    With ``out`` (``.parquet`` or ``.csv``) every finished image goes to the journal
    :func:`journal_path` (``out``) at once, images already there are skipped, and ``out``
    is (re)written from the journal at the end; without it nothing is written. An image
    that cannot be read (:class:`DagmFormatError`, or ``ValueError`` from decoding) is
    logged, recorded as an error row (``method`` empty, ``error`` set) and skipped.
    ``progress(done, total)`` is called after each image; an exception it raises (e.g.
    ``KeyboardInterrupt``) stops the run with every finished image saved.
    The returned table has the global-threshold columns of :func:`add_global_threshold`.
    See :func:`camcore.evaluation.ray_runner.evaluate_ray` for the same run on Ray.
    """
    settings = _settings(methods, max_n, road, curve_steps, thresholds, seed, sanity, precision)
    settings = dataclasses.replace(settings, precision=measured_precision(settings.precision, model))
    journal, out_path = _open_journal(model, items, settings, out, overwrite)
    try:
        todo = [item for item in items if not journal.done(item.id)]
        total = len(items)
        if progress is not None:
            progress(total - len(todo), total)
        if todo:
            pool: Executor = ThreadPoolExecutor(max_workers=workers) if workers > 1 else _InlineExecutor()
            try:
                runner = settings.runner(model, pool)
                runner.warm_up()
                finished = total - len(todo)
                for item in todo:
                    journal.add(_evaluate_item(runner, item))
                    finished += 1
                    if progress is not None:
                        progress(finished, total)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        journal.close()
    wanted = {item.id for item in items}
    records = [record for key, record in journal.records.items() if key in wanted]
    return _results_table(records, out_path)


_UNREADABLE = (DagmFormatError, ValueError, OSError)
"""What loading or preprocessing an image raises when the image, not the code, is at fault."""


def _evaluate_item(runner: _Runner, item: EvalItem) -> dict[str, Any]:
    try:
        loaded = item.load()
        x = runner.spec.preprocess(loaded.image)  # e.g. an image too small to use
    except _UNREADABLE as exc:
        return _error_record(item, exc)
    return {"id": item.id, "rows": runner.run(item, loaded, x)}


def _error_record(item: EvalItem, exc: BaseException) -> dict[str, Any]:
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
