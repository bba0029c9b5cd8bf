"""Batch evaluation of CAM methods over a data set of defect images.

    python -m camcore.evaluate [--model vgg_defect | --model path/to/model.keras --preprocessing unit]
        (--data DAGM_DIR | --synthetic N [--seed S] [--defect-rate R] [--size PX])
        [--layer L] [--methods grad_cam score_cam ...] [--max-n 10] [--road]
        [--limit N] [--workers 2] [--overwrite] --out results.parquet|results.csv

For every image and every method - the four CAMs of :data:`camcore.methods.METHODS`
plus two sanity controls, ``"sobel"`` (the image's Sobel gradient, which ignores the
model) and ``"random"`` (:func:`camcore.metrics.random_map`) - it records:

* localization against the defect mask (defective images only, clean ones have no
  mask): the pointing game (Zhang et al. 2016), the energy-based pointing game
  (Wang et al. 2020, sec. 5.2), the IoU at every threshold of
  :data:`camcore.metrics.DEFAULT_THRESHOLDS` (columns ``iou@0.05`` ...), the best
  per-image threshold and its IoU (an oracle), and - once the whole set is known -
  IoU and Dice at the method's best *global* threshold, the one that maximizes the
  mean IoU over the set;
* faithfulness (every image): Average Drop % and Increase in Confidence
  (Chattopadhyay et al. 2018, sec. 5.1), deletion and insertion curves and their AUC
  (Petsiuk et al. 2018, sec. 4.1; ``curve_steps`` + 1 points, columns
  ``deletion@0.00`` ...; both between the image and its blurred copy, see
  :data:`BLUR_SIGMA`), optionally ROAD MoRF/LeRF (Rong et al. 2022);
* the seconds the map took and the model passes it ran.

Every metric is computed at the model's input resolution: the map is upsampled
bilinearly and the mask is resized like the image (area interpolation, a pixel is
defective when at least half of it was). Every map explains the ``class_index``
("defective") score on every image, clean ones included.

Timing: each CAM method gets its own :class:`~camcore.explainer.Explainer`, so a
method's time is what it costs alone (in the dashboard the methods share caches, and
e.g. Faster-Score-CAM after Score-CAM costs nothing). Tracing is paid by a warm-up
before the first image.

Cores: model passes run in TensorFlow, whose intra-op thread pool already uses every
core. The per-method metric work of an image (building perturbed batches, sorting
pixels, ROAD's imputation solves, IoU curves) is NumPy/OpenCV that releases the GIL,
so the six methods' metrics of an image run in a small thread pool (``workers``,
default 2) and overlap with each other's model calls; threads rather than processes
keep one copy of the model. The CAMs themselves are computed one after the other,
without metric work running beside them, so their timings are not inflated by
contention.

Resuming: each finished image is appended as one JSON line (all its methods, or its
error) to a journal beside the output (``results.parquet.rows.jsonl``), flushed and
fsync'd before the next image starts. A rerun with the same configuration skips the
images already in the journal; a torn last line (the process died while writing it)
is dropped. The output file is rebuilt from the journal at the end (written to a
temporary file, then renamed), so it is always complete and never half written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import time
import uuid
import zipfile
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from camcore import metrics
from camcore.dagm import DagmFormatError, DagmItem, load_item, read_dagm
from camcore.methods import METHODS
from camcore.methods.combine import upsample
from camcore.methods.sobel import sobel_gradient
from camcore.preprocess import PREPROCESSING_MODES, preprocess_image, resize_for_model

if TYPE_CHECKING:  # TensorFlow is imported only when a model is run
    import keras

    from camcore.explainer import Explainer

logger = logging.getLogger(__name__)

CAM_METHODS: tuple[str, ...] = tuple(METHODS)
CONTROLS: tuple[str, ...] = ("sobel", "random")
ALL_METHODS: tuple[str, ...] = CAM_METHODS + CONTROLS
METHOD_LABELS: dict[str, str] = {key: spec.label for key, spec in METHODS.items()} | {
    "sobel": "Sobel (control)",
    "random": "Random (control)",
}
DEFAULT_MAX_N = 10
DEFAULT_CURVE_STEPS = 20
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))
SYNTHETIC_SIZE = 512  # DAGM 2007 images are 512 x 512
# The random control is Gaussian-smoothed so that it has blobs of about the size of an
# upsampled 14 x 14 CAM (sigma = side / 28, 8 px at 224), a fairer control than
# per-pixel noise.
RANDOM_SIGMA_FRACTION = 1 / 28
# ROAD imputation noise: 1 % of the input range for each preprocessing mode
# (Rong et al. 2022 use 0.01 on inputs of about unit range).
_INPUT_RANGE = {"unit": 1.0, "symmetric": 2.0, "none": 255.0, "caffe": 255.0, "torch": 1.0 / 0.226}
# Deletion replaces pixels by a Gaussian blur of the image (sigma in pixels at the model's
# input size), the canvas insertion starts from (Petsiuk et al. 2018 use it for
# insertion). RISE's constant-0 deletion baseline paints black holes, which a defect
# classifier reads as defects: on the demo models the "defective" probability goes to 1
# at every step for every map, so all deletion AUCs come out equal.
BLUR_SIGMA = 5.0
JOURNAL_SUFFIX = ".rows.jsonl"
_JOURNAL_VERSION = 1

Progress = Callable[[int, int], None]
"""``progress(done, total)``: images finished (resumed ones included) out of all."""


# ------------------------------------------------------------------------ model spec


@dataclass(frozen=True)
class ModelSpec:
    """A model and how to feed and explain it.

    ``key`` names the model in results: ``"demo:<name>"`` for a demo model,
    ``"file:<absolute path>"`` for a model file, anything else for an in-memory model.
    ``class_index`` is the class every map explains (``"defective"``).
    """

    key: str
    model: Any  # keras.Model
    layer: str
    class_index: int
    preprocessing: str
    input_size: tuple[int, int]
    channels: int
    class_names: tuple[str, ...] | None = None

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """uint8 gray/RGB image of any size -> model input batch (1, H, W, C)."""
        return preprocess_image(image, self.input_size, self.channels, self.preprocessing)

    @classmethod
    def from_model(
        cls,
        model: "keras.Model",
        preprocessing: str,
        *,
        layer: str | None = None,
        class_index: int = 1,
        key: str | None = None,
        class_names: Sequence[str] | None = None,
    ) -> ModelSpec:
        """Spec of an in-memory Keras model; the input size is read from the model and
        the layer defaults to the last one with a spatial map."""
        from camcore.adapter import ModelAdapter

        if preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"unknown preprocessing {preprocessing!r}; choose one of {sorted(PREPROCESSING_MODES)}"
            )
        adapter = ModelAdapter(model)
        height, width, channels = adapter.input_shape
        if channels not in (1, 3):
            raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
        layer = adapter.default_layer if layer is None else layer
        adapter.layer_info(layer)
        return cls(
            key=key or f"model:{model.name}",
            model=model,
            layer=layer,
            class_index=adapter.check_class(class_index),
            preprocessing=preprocessing,
            input_size=(height, width),
            channels=channels,
            class_names=None if class_names is None else tuple(class_names),
        )


def load_model_spec(
    model: str | None = None,
    *,
    preprocessing: str | None = None,
    layer: str | None = None,
    class_index: int | None = None,
) -> ModelSpec:
    """Resolve ``--model``: a demo name (default: the default demo) or a ``.keras`` /
    ``.h5`` file, loaded in Keras safe mode (no arbitrary code from the file).

    A model file needs ``preprocessing`` (see :data:`camcore.preprocess.PREPROCESSING_MODES`);
    its input size is read from the model. ``class_index`` defaults to the demo card's
    "defective" class, and to 1 for a model file.
    """
    from camcore.demos import DEFAULT_DEMO, list_demos, load_demo

    name = DEFAULT_DEMO if model is None else model
    path = Path(name)
    if path.suffix.lower() in (".keras", ".h5"):
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} not found")
        if preprocessing is None:
            raise ValueError(
                f"{path}: a model file needs --preprocessing, one of {sorted(PREPROCESSING_MODES)}"
            )
        if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a .keras model file (a .keras file is a zip archive)")
        import keras

        try:
            loaded = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # keras raises many types for a bad file
            raise ValueError(f"{path}: cannot load the model: {exc}") from exc
        return ModelSpec.from_model(
            loaded,
            preprocessing,
            layer=layer,
            class_index=1 if class_index is None else class_index,
            key=f"file:{path.resolve()}",
        )
    demos = list_demos()
    if name not in demos:
        raise ValueError(
            f"unknown model {name!r}: give a demo name ({', '.join(demos) or 'none installed'}) "
            "or a .keras/.h5 file"
        )
    demo = load_demo(name)
    if preprocessing is not None and preprocessing != demo.preprocessing:
        raise ValueError(f"demo {name} uses {demo.preprocessing!r} preprocessing, not {preprocessing!r}")
    if class_index is None:
        class_index = demo.class_names.index("defective") if "defective" in demo.class_names else 1
    return ModelSpec.from_model(
        demo.model,
        demo.preprocessing,
        layer=demo.layer if layer is None else layer,
        class_index=class_index,
        key=f"demo:{name}",
        class_names=demo.class_names,
    )


# ----------------------------------------------------------------------------- items


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: uint8 (H, W) or (H, W, 3), bool (H, W) mask (all False if clean)."""

    image: np.ndarray
    mask: np.ndarray
    defective: bool
    class_name: str
    detail: str = ""  # e.g. the synthetic defect kind


@dataclass(frozen=True)
class EvalItem:
    """One image to evaluate. ``id`` is stable across runs (it is what resuming
    matches on); ``source`` names the data set (DAGM root or synthetic parameters);
    ``load()`` decodes it and may raise :class:`DagmFormatError`."""

    id: str
    source: str
    index: int
    load: Callable[[], LoadedImage] = field(repr=False, compare=False)
    path: str = ""
    class_name: str | None = None
    defective: bool | None = None


def dagm_items(
    root: str | os.PathLike[str], split: str | None = None, classes: Sequence[str] | None = None
) -> list[EvalItem]:
    """Every image of a DAGM folder (see :func:`camcore.dagm.read_dagm`, which raises
    :class:`DagmFormatError` naming the file for a bad layout or index). Ids are the
    image paths relative to ``root``."""
    root = Path(root).resolve()
    entries = read_dagm(root, split=split, classes=classes)
    return [
        EvalItem(
            id=entry.image_path.relative_to(root).as_posix(),
            source=str(root),
            index=i,
            load=_dagm_loader(entry),
            path=str(entry.image_path),
            class_name=entry.class_name,
            defective=entry.defective,
        )
        for i, entry in enumerate(entries)
    ]


def _dagm_loader(entry: DagmItem) -> Callable[[], LoadedImage]:
    def load() -> LoadedImage:
        image, mask = load_item(entry)
        return LoadedImage(image, mask, entry.defective, entry.class_name)

    return load


def synthetic_source(seed: int = 0, size: int = SYNTHETIC_SIZE, defect_rate: float = 0.5) -> str:
    """The ``source`` string of a generated set (parsed back by :func:`synthetic_image`)."""
    return f"synthetic:seed={int(seed)}:size={int(size)}:defect_rate={float(defect_rate)!r}"


def _parse_synthetic_source(source: str) -> dict[str, Any]:
    parts = source.split(":")
    if parts[0] != "synthetic":
        raise ValueError(f"not a synthetic source: {source!r}")
    values = dict(part.split("=", 1) for part in parts[1:])
    return {"seed": int(values["seed"]), "size": int(values["size"]), "defect_rate": float(values["defect_rate"])}


def _synthetic_load(index: int, seed: int, size: int, defect_rate: float) -> LoadedImage:
    from camcore.synth import sample_at

    sample = sample_at(index, seed=seed, size=size, defect_rate=defect_rate)
    return LoadedImage(sample.image, sample.mask, sample.defective, sample.texture, sample.defect or "")


def synthetic_items(
    n: int, seed: int = 0, size: int = SYNTHETIC_SIZE, defect_rate: float = 0.5
) -> list[EvalItem]:
    """``n`` generated DAGM-style images (:func:`camcore.synth.generate`), produced lazily
    as they are evaluated. Sample ``i`` depends only on ``(seed, i)``, so ids
    ``synthetic/00000`` ... stay valid when ``n`` grows."""
    if n < 1:
        raise ValueError(f"need at least one synthetic image, got {n}")
    source = synthetic_source(seed, size, defect_rate)
    return [
        EvalItem(id=f"synthetic/{i:05d}", source=source, index=i, load=(lambda i=i: _synthetic_load(i, seed, size, defect_rate)))
        for i in range(n)
    ]


def synthetic_image(source: str, index: int) -> LoadedImage:
    """Regenerate image ``index`` of a synthetic set from its ``source`` string (as found in
    a results table), e.g. to open it in the comparison view."""
    params = _parse_synthetic_source(source)
    return _synthetic_load(int(index), params["seed"], params["size"], params["defect_rate"])


# ------------------------------------------------------------------------- per image


def _stable_seed(seed: int, text: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _mask_at(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The defect mask resized like the image: area interpolation, defective when at least
    half of the pixel was; a mask that would vanish (a thin scratch) keeps every touched
    pixel instead."""
    resized = resize_for_model(mask.astype(np.uint8) * np.uint8(255), size, 1)[..., 0]
    out = resized >= 128
    return out if out.any() else resized > 0


def _x_label(value: float) -> str:
    return f"{value:.2f}"


def iou_column(threshold: float) -> str:
    return f"iou@{_x_label(threshold)}"


def curve_columns(df: pd.DataFrame, prefix: str) -> list[tuple[float, str]]:
    """``[(x, column)]`` of the curve ``prefix`` ("iou", "deletion", "insertion",
    "road_morf", "road_lerf") present in ``df``, sorted by x."""
    found = []
    for column in df.columns:
        name, _, x = str(column).partition("@")
        if name == prefix and x:
            try:
                found.append((float(x), column))
            except ValueError:
                continue
    return sorted(found)


def _method_metrics(
    predict_fn: metrics.PredictFn,
    x: np.ndarray,
    blurred: np.ndarray,
    saliency: np.ndarray,
    mask: np.ndarray | None,
    class_index: int,
    thresholds: np.ndarray,
    steps: int,
    road: bool,
    road_noise: float,
) -> dict[str, float]:
    """All metrics of one map (model-resolution ``saliency`` in [0, 1]) of one image;
    ``blurred`` is ``x`` blurred, the deletion baseline."""
    start = time.perf_counter()
    row: dict[str, float] = {}
    if mask is not None:
        curve = metrics.iou_curve(saliency, mask, thresholds)
        best = int(np.argmax(curve))
        row["pointing_game"] = float(metrics.pointing_game(saliency, mask))
        row["energy_pointing_game"] = metrics.energy_pointing_game(saliency, mask)
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
    ) -> None:
        import tensorflow as tf

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
        # One explainer per CAM method: each method's time is its cost alone.
        self.explainers: dict[str, Explainer] = {
            m: Explainer(spec.model, cache_size=8) for m in self.methods if m in METHODS
        }
        adapter = next(iter(self.explainers.values())).adapter if self.explainers else None
        if adapter is None:
            from camcore.adapter import ModelAdapter

            adapter = ModelAdapter(spec.model)
        adapter.layer_info(spec.layer)
        adapter.check_class(spec.class_index)

        @tf.function(input_signature=[tf.TensorSpec((None, *adapter.input_shape), tf.float32)])
        def probabilities(batch):
            return adapter.probabilities(adapter.forward(batch)[1])

        self.predict_fn: metrics.PredictFn = lambda batch: probabilities(tf.constant(batch)).numpy()

    def warm_up(self) -> None:
        """Trace every compiled pass once on a noise image, so no timing pays for it."""
        height, width = self.spec.input_size
        noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
        x = self.spec.preprocess(noise)
        self.predict_fn(x)
        for method, explainer in self.explainers.items():
            explainer.compute(method, x, self.spec.layer, self.spec.class_index, self.max_n)

    def run(self, item: EvalItem, loaded: LoadedImage, x: np.ndarray) -> list[dict[str, Any]]:
        """Rows of every method for ``loaded``, whose model input is ``x``."""
        spec = self.spec
        model_image = resize_for_model(loaded.image, spec.input_size, spec.channels)
        mask = _mask_at(loaded.mask, spec.input_size) if loaded.defective else None
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
        for method in self.methods:
            if method in METHODS:
                result = self.explainers[method].compute(method, x, spec.layer, spec.class_index, self.max_n)
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
                _method_metrics, self.predict_fn, x, blurred, saliency, mask, spec.class_index,
                self.thresholds, self.steps, self.road, self.road_noise,
            )
            for method, (saliency, _, _) in maps.items()
        }
        rows = []
        for method, (_, seconds, passes) in maps.items():
            rows.append(base | {"method": method, "seconds": seconds, "model_passes": passes} | futures[method].result())
        return rows


# --------------------------------------------------------------------------- journal


def journal_path(out: str | os.PathLike[str]) -> Path:
    """Where the per-image journal of ``out`` lives: ``<out>.rows.jsonl``."""
    return Path(str(out) + JOURNAL_SUFFIX)


class Journal:
    """Append-only JSON-lines record of finished images, durable line by line.

    Line 1 is ``{"version", "config"}``; every other line is one image:
    ``{"id", "rows": [...]}`` or ``{"id", "error", "item"}``. The last record of an id
    wins (an image that failed may be retried and succeed).
    """

    def __init__(self, path: Path, config: Mapping[str, Any], overwrite: bool = False) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        config = json.loads(json.dumps(config))  # normalize (tuples -> lists) for comparison
        if overwrite or not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as handle:
                self._append(handle, {"version": _JOURNAL_VERSION, "config": config})
        else:
            self._load(config)
        self._handle: IO[str] = open(self.path, "a", encoding="utf-8")

    def _load(self, config: Mapping[str, Any]) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            logger.warning("%s: dropping a partially written last line (%d bytes)", self.path, len(data) - end)
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        lines = data[:end].decode("utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or "config" not in header:
            raise ValueError(f"{self.path}: not an evaluation journal; delete it or pass --overwrite")
        if header["config"] != config:
            changed = sorted(
                key for key in set(config) | set(header["config"]) if config.get(key) != header["config"].get(key)
            )
            raise ValueError(
                f"{self.path} holds results of another configuration (differs in: {', '.join(changed)}); "
                "use another --out, or --overwrite to start over"
            )
        for line_no, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                self.records[str(record["id"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s:%d: unreadable record skipped; that image will be redone", self.path, line_no)

    @staticmethod
    def _append(handle: IO[str], record: Mapping[str, Any]) -> None:
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def done(self, item_id: str) -> bool:
        return "rows" in self.records.get(item_id, {})

    def add(self, record: dict[str, Any]) -> None:
        self._append(self._handle, record)
        self.records[str(record["id"])] = record

    def close(self) -> None:
        self._handle.close()


class _MemoryJournal:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def done(self, item_id: str) -> bool:
        return "rows" in self.records.get(item_id, {})

    def add(self, record: dict[str, Any]) -> None:
        self.records[str(record["id"])] = record

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------ evaluation


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
    """
    methods = _check_methods(methods)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if curve_steps < 1:
        raise ValueError(f"curve_steps must be >= 1, got {curve_steps}")
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    out_path = None if out is None else _check_out(out)
    _check_spec(model)  # a bad layer or class must fail before a journal is started
    config = {
        "model": model.key,
        "layer": model.layer,
        "class_index": model.class_index,
        "preprocessing": model.preprocessing,
        "input_size": list(model.input_size),
        "methods": list(methods),
        "max_n": int(max_n),
        "road": bool(road),
        "curve_steps": int(curve_steps),
        "thresholds": [float(t) for t in thresholds],
        "seed": int(seed),
        "sources": sorted({item.source for item in items}),
    }
    journal: Journal | _MemoryJournal
    journal = _MemoryJournal() if out_path is None else Journal(journal_path(out_path), config, overwrite)
    try:
        todo = [item for item in items if not journal.done(item.id)]
        total = len(items)
        if progress is not None:
            progress(total - len(todo), total)
        if todo:
            pool: Executor = ThreadPoolExecutor(max_workers=workers) if workers > 1 else _InlineExecutor()
            try:
                runner = _Runner(model, methods, max_n, thresholds, curve_steps, road, seed, pool)
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
    wanted = set(ids)
    records = [record for key, record in journal.records.items() if key in wanted]
    table = add_global_threshold(records_to_frame(records))
    if out_path is not None:
        write_results(table, out_path)
    return table


def _evaluate_item(runner: _Runner, item: EvalItem) -> dict[str, Any]:
    try:
        loaded = item.load()
        x = runner.spec.preprocess(loaded.image)  # e.g. an image too small to use
    except (DagmFormatError, ValueError, OSError) as exc:
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
    return {"id": item.id, "rows": runner.run(item, loaded, x)}


def _check_spec(spec: ModelSpec) -> None:
    from camcore.adapter import ModelAdapter

    adapter = ModelAdapter(spec.model)
    adapter.layer_info(spec.layer)
    adapter.check_class(spec.class_index)


def _check_methods(methods: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(ALL_METHODS)}")
    if not chosen:
        raise ValueError("no method to evaluate")
    return chosen


def _check_out(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, got {path.name}")
    return path


# --------------------------------------------------------------------------- tables

_FIRST_COLUMNS = [
    "model", "layer", "source", "image_id", "index", "path", "class_name", "defect_kind", "defective",
    "method", "error", "target_class", "p_target", "predicted", "seconds", "model_passes",
    "pointing_game", "energy_pointing_game", "global_threshold", "iou_at_global", "dice_at_global",
    "oracle_threshold", "oracle_iou", "average_drop", "increased_confidence",
    "deletion_auc", "insertion_auc", "road_morf_auc", "road_lerf_auc", "metric_seconds",
]


def records_to_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Journal records -> one row per (image, method) plus one row per failed image."""
    rows: list[dict[str, Any]] = []
    for record in records:
        if "rows" in record:
            rows.extend(record["rows"])
        else:
            item = record.get("item", {})
            rows.append({"image_id": record["id"], **item, "method": None, "error": record.get("error", "")})
    return _normalize(pd.DataFrame(rows))


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Column order and dtypes that survive both Parquet and CSV."""
    df = df.copy()
    for column in ("method", "error", "path", "class_name", "defect_kind", "model", "layer", "source", "image_id"):
        if column not in df.columns:
            df[column] = None
    df["method"] = df["method"].where(df["method"].notna() & (df["method"].astype(str) != ""), None)
    if "defective" in df.columns:
        df["defective"] = df["defective"].map(_to_bool).astype("boolean")
    first = [c for c in _FIRST_COLUMNS if c in df.columns]
    curves = [c for c in df.columns if "@" in str(c)]
    rest = [c for c in df.columns if c not in first and c not in curves]
    return df[first + rest + curves].reset_index(drop=True)


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower(), pd.NA)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return pd.NA
    return bool(value)


def results_only(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of evaluated (image, method) pairs, without error rows."""
    return df[df["method"].notna()]


def errors(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image that could not be evaluated: ``image_id``, ``path``, ``error``."""
    failed = df[df["method"].isna()] if "method" in df.columns else df.iloc[:0]
    return failed[["image_id", "path", "error"]].reset_index(drop=True)


def global_thresholds(df: pd.DataFrame) -> dict[str, float]:
    """Per method, the threshold maximizing the mean IoU over the defective images
    (first maximum on ties); methods without defective images are left out."""
    columns = curve_columns(df, "iou")
    if not columns:
        return {}
    rows = results_only(df)
    rows = rows[rows["defective"].fillna(False).astype(bool)]
    best: dict[str, float] = {}
    for method, group in rows.groupby("method", sort=False):
        mean = group[[c for _, c in columns]].mean(axis=0, skipna=True).to_numpy()
        if np.all(np.isnan(mean)):
            continue
        best[str(method)] = columns[int(np.nanargmax(mean))][0]
    return best


def add_global_threshold(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``global_threshold``, ``iou_at_global`` and ``dice_at_global`` (Dice from IoU:
    ``2 IoU / (1 + IoU)``, exact per image) for defective rows."""
    df = df.copy()
    best = global_thresholds(df)
    columns = dict((x, c) for x, c in curve_columns(df, "iou"))
    df["global_threshold"] = df["method"].map(best).astype("float64")
    iou = np.full(len(df), np.nan)
    for method, threshold in best.items():
        selected = (df["method"] == method).to_numpy() & df["defective"].fillna(False).astype(bool).to_numpy()
        iou[selected] = df.loc[selected, columns[threshold]].to_numpy(dtype=np.float64)
    df["iou_at_global"] = iou
    df["dice_at_global"] = 2.0 * iou / (1.0 + iou)
    return _normalize(df)


def write_results(df: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``out`` (.parquet or .csv) atomically: a temporary file in the same
    folder, then a rename, so a reader never sees a half-written file."""
    path = _check_out(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name beside the target (not mkstemp: its 0600 mode would stick to the result).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if path.suffix.lower() == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


REQUIRED_COLUMNS = ("image_id", "method", "defective", "seconds")


def read_results(data: str | os.PathLike[str] | IO[bytes], name: str | None = None) -> pd.DataFrame:
    """Read a results table written by :func:`evaluate` (Parquet or CSV, chosen by the
    file name's extension; ``name`` gives it for a file-like object). ValueError with a
    readable message if it is not one."""
    label = name or str(data)
    suffix = Path(label).suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(data)
        elif suffix == ".csv":
            df = pd.read_csv(data)
        else:
            raise ValueError(f"{label}: expected a .parquet or .csv results file")
    except ValueError:
        raise
    except Exception as exc:  # pyarrow / parser errors
        raise ValueError(f"{label}: cannot read the results table: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{label}: not a camcore.evaluate results table (missing columns {missing})")
    df = _normalize(df)
    models = results_only(df)["model"].dropna().unique()
    if len(models) > 1:
        raise ValueError(f"{label}: holds results of several models ({', '.join(map(str, models))}); one expected")
    return add_global_threshold(df)


# -------------------------------------------------------------------------- summary


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per method (CAMs first, then controls): mean and median of every metric, the best
    global threshold with the IoU/Dice it gives, the time per image, and whether the
    method fails to beat both controls (:func:`camcore.metrics.flag_below_controls`) on
    mean IoU at its best threshold or on the pointing game.

    Binary metrics (pointing game, increase in confidence) are given as rates in %.
    """
    if "iou_at_global" not in df.columns:
        df = add_global_threshold(df)
    rows = results_only(df)
    models = rows["model"].dropna().unique() if "model" in rows.columns else []
    if len(models) > 1:
        raise ValueError(f"summarize one model at a time; the table holds {list(models)}")
    order = [m for m in ALL_METHODS if m in set(rows["method"])]
    summary: dict[str, dict[str, float]] = {}
    for method in order:
        group = rows[rows["method"] == method]
        defective = group[group["defective"].fillna(False).astype(bool)]
        entry: dict[str, float] = {"images": float(len(group)), "defective_images": float(len(defective))}
        if len(defective):
            entry["pointing_game"] = 100.0 * float(defective["pointing_game"].mean())
            _mean_median(entry, "energy_pointing_game", defective["energy_pointing_game"])
            entry["best_threshold"] = float(defective["global_threshold"].iloc[0])
            _mean_median(entry, "iou_at_best", defective["iou_at_global"])
            _mean_median(entry, "dice_at_best", defective["dice_at_global"])
            _mean_median(entry, "oracle_iou", defective["oracle_iou"])
        if len(group):
            drop = metrics.summarize_drop_increase(
                zip(group["average_drop"].astype(float), group["increased_confidence"].astype(float) > 0.5)
            )
            entry["average_drop_mean"] = drop["average_drop"]
            entry["average_drop_median"] = float(group["average_drop"].median())
            entry["increase_in_confidence"] = drop["increase_in_confidence"]
            for name in ("deletion_auc", "insertion_auc", "road_morf_auc", "road_lerf_auc"):
                if name in group.columns and group[name].notna().any():
                    _mean_median(entry, name, group[name])
            _mean_median(entry, "seconds", group["seconds"])
        summary[method] = entry
    table = pd.DataFrame.from_dict(summary, orient="index")
    table.index.name = "method"
    table["below_controls"] = pd.Series(pd.NA, index=table.index, dtype="boolean")
    table["flag"] = ""
    if all(c in summary for c in CONTROLS) and "iou_at_best_mean" in table.columns:
        localized = {m: {k: table.loc[m, k] for k in ("iou_at_best_mean", "pointing_game")} for m in order}
        by_iou = metrics.flag_below_controls(localized, "iou_at_best_mean")
        by_pointing = metrics.flag_below_controls(localized, "pointing_game")
        for method in by_iou:
            reasons = [name for name, flags in (("mean IoU", by_iou), ("pointing game", by_pointing)) if flags[method]]
            table.loc[method, "below_controls"] = bool(reasons)
            if reasons:
                table.loc[method, "flag"] = "does not beat the Sobel and random controls on " + " and ".join(reasons)
    return table


def flagged_methods(summary: pd.DataFrame) -> dict[str, str]:
    """``{method: reason}`` for the methods of a :func:`summarize` table that do not beat
    the controls."""
    flags = summary.get("below_controls", pd.Series(dtype="boolean")).fillna(False).astype(bool)
    return {str(m): str(summary.loc[m, "flag"]) for m in summary.index[flags.to_numpy()]}


def _mean_median(entry: dict[str, float], name: str, values: pd.Series) -> None:
    values = values.astype(float)
    entry[f"{name}_mean"] = float(values.mean())
    entry[f"{name}_median"] = float(values.median())


def mean_curve(df: pd.DataFrame, prefix: str, defective_only: bool | None = None) -> pd.DataFrame:
    """The curve ``prefix`` ("iou", "deletion", "insertion", "road_morf", "road_lerf")
    averaged over the set: index x (threshold or fraction removed), one column per
    method in :data:`ALL_METHODS` order. IoU curves average the defective images only
    (``defective_only`` default), faithfulness curves every image."""
    columns = curve_columns(df, prefix)
    rows = results_only(df)
    if defective_only is None:
        defective_only = prefix == "iou"
    if defective_only:
        rows = rows[rows["defective"].fillna(False).astype(bool)]
    if not columns or rows.empty:
        return pd.DataFrame()
    names = [c for _, c in columns]
    means = rows.groupby("method", sort=False)[names].mean()
    means = means.loc[[m for m in ALL_METHODS if m in means.index]]
    out = means.T
    out.index = pd.Index([x for x, _ in columns], name=prefix)
    return out.dropna(axis=1, how="all")


# metric -> (worst first when sorted ascending, defective images only)
WORST_BY: dict[str, tuple[bool, bool]] = {
    "iou_at_global": (True, True),
    "energy_pointing_game": (True, True),
    "pointing_game": (True, True),
    "insertion_auc": (True, False),
    "deletion_auc": (False, False),
    "average_drop": (False, False),
}


def worst_images(df: pd.DataFrame, method: str, metric: str = "iou_at_global", n: int = 10) -> pd.DataFrame:
    """The ``n`` images on which ``method`` does worst by ``metric`` (see :data:`WORST_BY`)."""
    if metric not in WORST_BY:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(WORST_BY)}")
    ascending, defective_only = WORST_BY[metric]
    rows = results_only(df)
    rows = rows[rows["method"] == method]
    if defective_only:
        rows = rows[rows["defective"].fillna(False).astype(bool)]
    rows = rows[rows[metric].notna()] if metric in rows.columns else rows.iloc[:0]
    keep = [c for c in ("image_id", "class_name", "defective", metric, "iou_at_global", "pointing_game",
                        "average_drop", "insertion_auc", "p_target", "source", "index", "layer", "model")
            if c in rows.columns]
    keep = list(dict.fromkeys(keep))
    return rows.sort_values(metric, ascending=ascending, kind="stable").head(n)[keep].reset_index(drop=True)


def threshold_export(df: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready record of each method's best global threshold (the one maximizing mean
    IoU over the defective images) with the mean IoU and Dice it gives, and the
    control flags, for use as a deployment threshold."""
    summary = summarize(df)
    rows = results_only(df)
    methods: dict[str, Any] = {}
    for method, entry in summary.iterrows():
        if "best_threshold" not in summary.columns or pd.isna(entry.get("best_threshold")):
            continue
        flagged = entry.get("below_controls")
        methods[str(method)] = {
            "threshold": float(entry["best_threshold"]),
            "mean_iou": float(entry["iou_at_best_mean"]),
            "mean_dice": float(entry["dice_at_best_mean"]),
            "defective_images": int(entry["defective_images"]),
            "below_controls": None if flagged is None or pd.isna(flagged) else bool(flagged),
        }
    first = rows.iloc[0] if len(rows) else {}
    return {
        "model": None if len(rows) == 0 else str(first.get("model")),
        "layer": None if len(rows) == 0 else str(first.get("layer")),
        "criterion": "threshold on the [0, 1] map maximizing the mean IoU over the defective images",
        "grid": [x for x, _ in curve_columns(df, "iou")],
        "methods": methods,
    }


def open_result_image(
    source: str, image_id: str, index: int, allowed_roots: Sequence[str | os.PathLike[str]] = ()
) -> LoadedImage:
    """The image of a results row: regenerated for a synthetic set, read from its DAGM
    folder otherwise - only if that folder lies inside one of ``allowed_roots`` (a results
    file must not make the caller read arbitrary paths). The image is looked up by id
    in the folder's own index, never opened by a path taken from the table."""
    if str(source).startswith("synthetic:"):
        return synthetic_image(str(source), int(index))
    root = Path(str(source)).resolve()
    allowed = [Path(a).resolve() for a in allowed_roots]
    if not any(root == a or a in root.parents for a in allowed):
        raise PermissionError(f"{root} is outside the configured data folder; its images cannot be opened here")
    for item in dagm_items(root):
        if item.id == image_id:
            return item.load()
    raise ValueError(f"{image_id} is not listed in {root}")


# (title, mean column, median column or None, format): the printed tables, one for
# localization (defective images) and one for faithfulness and time (all images).
_LOCALIZATION_COLUMNS = [
    ("defective images", "defective_images", None, "{:.0f}"),
    ("pointing game %", "pointing_game", None, "{:.1f}"),
    ("energy PG", "energy_pointing_game_mean", "energy_pointing_game_median", "{:.3f}"),
    ("best thr.", "best_threshold", None, "{:.2f}"),
    ("IoU@best", "iou_at_best_mean", "iou_at_best_median", "{:.3f}"),
    ("Dice@best", "dice_at_best_mean", "dice_at_best_median", "{:.3f}"),
    ("oracle IoU", "oracle_iou_mean", "oracle_iou_median", "{:.3f}"),
]
_FAITHFULNESS_COLUMNS = [
    ("images", "images", None, "{:.0f}"),
    ("Avg Drop % ↓", "average_drop_mean", "average_drop_median", "{:.1f}"),
    ("Increase % ↑", "increase_in_confidence", None, "{:.1f}"),
    ("deletion AUC ↓", "deletion_auc_mean", "deletion_auc_median", "{:.3f}"),
    ("insertion AUC ↑", "insertion_auc_mean", "insertion_auc_median", "{:.3f}"),
    ("ROAD MoRF ↓", "road_morf_auc_mean", "road_morf_auc_median", "{:.3f}"),
    ("ROAD LeRF ↑", "road_lerf_auc_mean", "road_lerf_auc_median", "{:.3f}"),
    ("s/image", "seconds_mean", "seconds_median", "{:.3f}"),
]


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's mean (and median) columns under readable titles, methods by their
    labels (⚠ marks a method below the controls); numbers are left unformatted."""
    flagged = flagged_methods(summary)
    titles: dict[str, str] = {}
    for title, mean, median, _ in _LOCALIZATION_COLUMNS + _FAITHFULNESS_COLUMNS:
        if median is None:
            titles.setdefault(mean, title)
        else:
            titles.setdefault(mean, f"{title} mean")
            titles.setdefault(median, f"{title} median")
    keys = [key for key in titles if key in summary.columns]
    table = summary[keys].astype(float)
    table.columns = [titles[key] for key in keys]
    table.index = [METHOD_LABELS.get(str(m), str(m)) + (" ⚠" if m in flagged else "") for m in summary.index]
    table.index.name = "method"
    return table


def _markdown(summary: pd.DataFrame, columns: list, flagged: Mapping[str, str]) -> list[str]:
    columns = [c for c in columns if c[1] in summary.columns]
    header = [title + (" mean / median" if median and median in summary.columns else "")
              for title, _, median, _ in columns]
    lines = ["| method | " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    for method, row in summary.iterrows():
        label = METHOD_LABELS.get(str(method), str(method)) + (" ⚠" if method in flagged else "")
        cells = []
        for _, mean, median, fmt in columns:
            cell = "–" if pd.isna(row[mean]) else fmt.format(float(row[mean]))
            if median and median in summary.columns and not pd.isna(row[median]):
                cell += " / " + fmt.format(float(row[median]))
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as two Markdown tables, localization (defective images; IoU and Dice at
    the best global threshold) and faithfulness and time (all images), with mean /
    median cells; methods below the controls are marked ⚠ and explained below."""
    flagged = flagged_methods(summary)
    lines: list[str] = []
    if "best_threshold" in summary.columns:
        lines += ["Localization (defective images):", ""]
        lines += _markdown(summary, _LOCALIZATION_COLUMNS, flagged) + [""]
    lines += ["Faithfulness (every image, explaining the target class) and time per image:", ""]
    lines += _markdown(summary, _FAITHFULNESS_COLUMNS, flagged)
    if flagged:
        lines.append("")
        lines += [f"⚠ {METHOD_LABELS.get(m, m)}: {reason}." for m, reason in flagged.items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m camcore.evaluate",
        description="Evaluate CAM methods over a DAGM-layout folder or a generated set.",
    )
    parser.add_argument("--model", default=None, help="demo name or .keras/.h5 file (default: the default demo)")
    parser.add_argument("--preprocessing", choices=sorted(PREPROCESSING_MODES), help="needed for a model file")
    parser.add_argument("--class-index", type=int, default=None, help='index of the "defective" class (default 1)')
    parser.add_argument("--layer", default=None, help="layer to explain (default: the demo's, or the last spatial one)")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="DAGM-layout folder")
    data.add_argument("--synthetic", type=int, metavar="N", help="generate N DAGM-style images instead")
    parser.add_argument("--split", choices=("Train", "Test"), default=None, help="DAGM split (default both)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated set and the random control")
    parser.add_argument("--defect-rate", type=float, default=0.5, help="share of defective generated images")
    parser.add_argument("--size", type=int, default=SYNTHETIC_SIZE, help="side of generated images in pixels")
    parser.add_argument(
        "--methods", nargs="+", default=None,
        help=f"methods (space or comma separated; default all: {', '.join(ALL_METHODS)}); "
        "the sobel and random controls are always added",
    )
    parser.add_argument("--max-n", type=int, default=DEFAULT_MAX_N, help="Faster-Score-CAM channels")
    parser.add_argument("--road", action="store_true", help="also compute ROAD MoRF/LeRF (slower)")
    parser.add_argument("--steps", type=int, default=DEFAULT_CURVE_STEPS, help="deletion/insertion curve steps")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads for metric work")
    parser.add_argument("--overwrite", action="store_true", help="discard the journal of an earlier run")
    parser.add_argument("--out", type=Path, required=True, help="results file, .parquet or .csv")
    return parser


def _methods_arg(values: Sequence[str] | None) -> list[str]:
    if not values:
        return list(ALL_METHODS)
    chosen = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return _check_methods([*chosen, *CONTROLS])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        _check_out(args.out)
        methods = _methods_arg(args.methods)
        if args.data is not None:
            items = dagm_items(args.data, split=args.split)
        else:
            items = synthetic_items(args.synthetic, seed=args.seed, size=args.size, defect_rate=args.defect_rate)
        if args.limit is not None:
            if args.limit < 1:
                raise ValueError(f"--limit must be >= 1, got {args.limit}")
            items = items[: args.limit]
        spec = load_model_spec(
            args.model, preprocessing=args.preprocessing, layer=args.layer, class_index=args.class_index
        )
    except (DagmFormatError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=len(items), unit="image", desc=spec.key, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    start = time.perf_counter()
    try:
        with logging_redirect_tqdm():
            table = evaluate(
                spec, items, methods, max_n=args.max_n, road=args.road, curve_steps=args.steps,
                seed=args.seed, out=args.out, overwrite=args.overwrite, workers=args.workers, progress=progress,
            )
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\ninterrupted: {bar.n} of {len(items)} images are saved in {journal_path(args.out)}; "
            "run the same command again to finish",
            file=sys.stderr,
        )
        return 130
    except (DagmFormatError, ValueError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    wall = time.perf_counter() - start
    failed = errors(table)
    evaluated = results_only(table)["image_id"].nunique()
    print(f"\n{spec.key}, layer {spec.layer}: {evaluated} images evaluated, {len(failed)} skipped, "
          f"{wall:.1f} s wall time this run")
    if evaluated:
        print()
        print(format_summary(summarize(table)))
    if len(failed):
        print(f"\n{len(failed)} image(s) could not be read and were skipped:")
        for _, row in failed.iterrows():
            print(f"  {row['error']}")
    print(f"\nresults: {args.out} (journal: {journal_path(args.out)})")
    return 0 if evaluated else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
