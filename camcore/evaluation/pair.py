"""Two models on the same images: the per-image code of an evaluation with a second model
(``evaluate(..., model_b=spec_b)``, ``python -m camcore.evaluate --model A --model-b B``).

Each image is evaluated by model A exactly as in a single-model run, then by model B with
the same settings (its own layer, input size, preprocessing and, for ``precision="auto"``,
its own measured precision), and every CAM method's two maps are compared by
:func:`camcore.compare_maps` at the image's native resolution (the mask's), at
:attr:`SecondModel.threshold`.

The table keeps one row per image and method (see :mod:`camcore.evaluation.pair_table`):
A's columns under their usual names - so every single-model tool reads a pair table as A's
evaluation - then the agreement columns (:data:`camcore.metrics.agreement.AGREEMENT_COLUMNS`),
then each of B's columns as A's name with the prefix :data:`B_PREFIX` (``b_p_target``,
``b_iou@0.50``, ``b_seconds`` ...).

Which class B explains is :func:`camcore.pair_classes`' rule: A's class when both models
have the same number of classes, else B's own top-1 on each image. A method model B cannot
serve (e.g. a gradient method on an ONNX model) keeps A's row with B's prediction and the
reason in ``b_unavailable`` instead of B's metrics; the controls are compared to nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from camcore.evaluation.settings import RunSettings, for_model, unavailable_methods
from camcore.evaluation.sources import EvalItem, LoadedImage
from camcore.evaluation.spec import ModelSpec, check_spec
from camcore.methods import METHODS
from camcore.metrics.agreement import (
    TOP1_AGREE,
    MapAgreement,
    agreement_values,
    compare_maps,
)
from camcore.pairing import pair_classes

__all__ = [
    "B_PREFIX", "IMAGE_COLUMNS", "UNAVAILABLE", "PairMaps", "PairRunner", "SecondModel", "pair_maps",
    "second_model",
]

B_PREFIX = "b_"
"""Model B's columns are model A's names with this prefix (a prefix, not a suffix: a curve's
point ``b_iou@0.50`` stays a point of the curve ``b_iou``)."""
IMAGE_COLUMNS: tuple[str, ...] = (
    "source", "image_id", "index", "path", "class_name", "defect_kind", "defective", "method", "error",
)
"""The columns about the image and the method, the same for both models (not prefixed)."""
UNAVAILABLE = B_PREFIX + "unavailable"
"""Why model B has no map of a row's method (empty when it has one)."""


@dataclass(frozen=True, eq=False)
class SecondModel:
    """Model B of a pair run: its spec (``class_index`` A's when both models have the same
    classes), its settings (the methods of A's run it can serve, its precision), the
    threshold of the two regions, both models' numbers of classes, and the methods it
    cannot serve with why. ``spec`` is None while the pair travels to Ray actors."""

    spec: ModelSpec | None
    settings: RunSettings
    threshold: float
    n_classes: tuple[int, int]
    unavailable: Mapping[str, str] = field(default_factory=dict)

    @property
    def same_classes(self) -> bool:
        """Whether a class index names the same class in both models (:func:`camcore.pair_classes`)."""
        return self.n_classes[0] == self.n_classes[1]

    def class_of(self, class_a: int, probabilities_b: np.ndarray) -> int:
        """The class B explains on an image where A explains ``class_a`` and B predicts
        ``probabilities_b``: :func:`camcore.pair_classes`' rule."""
        top1_b = int(np.argmax(probabilities_b))
        return pair_classes(class_a, self.n_classes[0], self.n_classes[1], top1_b).class_b

    def journal_config(self) -> dict[str, Any]:
        """B's part of the run's configuration, as the journal records it (``"pair"``)."""
        assert self.spec is not None
        spec = self.spec
        config: dict[str, Any] = {
            "model": spec.key,
            "layer": spec.layer,
            "class_index": spec.class_index if self.same_classes else "top-1 of model B",
            "preprocessing": spec.preprocessing,
            "input_size": list(spec.input_size),
            "methods": list(self.settings.methods),
            "threshold": self.threshold,
        }
        if self.settings.precision != "fp32":
            config["precision"] = self.settings.precision
        return config


def second_model(requested: RunSettings, spec_a: ModelSpec, spec_b: ModelSpec, threshold: float) -> SecondModel:
    """Model B of a run whose settings are ``requested`` with A's methods (those A serves):
    B's layer and class checked, the class rule of :func:`camcore.pair_classes`, and the
    methods B cannot serve left out of B's settings (logged) rather than failing the run.
    ValueError for a threshold outside [0, 1]."""
    threshold = float(threshold)
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"the agreement threshold must be in [0, 1], got {threshold}")
    check_spec(spec_b)
    from camcore.backends import as_backend

    n_classes = (int(as_backend(spec_a.model).n_classes), int(as_backend(spec_b.model).n_classes))
    if n_classes[0] == n_classes[1]:
        spec_b = dataclasses.replace(spec_b, class_index=spec_a.class_index)
    missing = unavailable_methods(spec_b, requested.methods)
    return SecondModel(spec_b, for_model(requested, spec_b), threshold, n_classes, missing)


class ImageEvaluator(Protocol):
    """What :class:`PairRunner` asks of each model's :class:`~camcore.evaluation.runner.ImageRunner`."""

    spec: ModelSpec
    predict_fn: Any

    def warm_up(self) -> None: ...

    def model_input(self, loaded: LoadedImage) -> np.ndarray: ...

    def record(self, item: EvalItem, loaded: LoadedImage, x: np.ndarray, class_index: int) -> dict[str, Any]: ...

    def rows_and_maps(self, item: EvalItem, loaded: LoadedImage, x: np.ndarray,
                      class_index: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]: ...


class PairRunner:
    """One image through both models (``a``: model A's runner, ``b``: model B's, sharing
    the metric pool) and the agreement of their maps; used as an
    :class:`~camcore.evaluation.runner.ImageRunner` is (:meth:`model_input`, :meth:`run`)."""

    def __init__(self, a: ImageEvaluator, b: ImageEvaluator, second: SecondModel) -> None:
        self.a, self.b, self.second = a, b, second

    @property
    def spec(self) -> ModelSpec:
        return self.a.spec

    def warm_up(self) -> None:
        self.a.warm_up()
        self.b.warm_up()

    def model_input(self, loaded: LoadedImage) -> tuple[np.ndarray, np.ndarray]:
        """Both models' inputs of the image (ValueError if either cannot use it)."""
        return self.a.model_input(loaded), self.b.model_input(loaded)

    def run(self, item: EvalItem, loaded: LoadedImage, x: tuple[np.ndarray, np.ndarray]) -> list[dict[str, Any]]:
        """One row per method of A's run: A's columns, the agreement, B's columns."""
        x_a, x_b = x
        rows_a, maps_a = self.a.rows_and_maps(item, loaded, x_a)
        class_b = self.second.class_of(self.a.spec.class_index, self.b.predict_fn(x_b)[0])
        rows_b, maps_b = self.b.rows_and_maps(item, loaded, x_b, class_b)
        record_b = self.b.record(item, loaded, x_b, class_b)
        by_method = {row["method"]: row for row in rows_b}
        mask = np.asarray(loaded.mask, bool) if loaded.defective else None
        size = tuple(np.asarray(loaded.image).shape[:2])
        rows = []
        for row_a in rows_a:
            method = row_a["method"]
            row_b = by_method.get(method)
            merged = row_a | self._top1(row_a, record_b)
            if method in METHODS and method in maps_a and method in maps_b:
                merged |= agreement_values(_agreement(maps_a[method].cam, maps_b[method].cam,
                                                      self.second.threshold, mask, size))
            merged |= _prefixed(record_b if row_b is None else row_b)
            merged[UNAVAILABLE] = self.second.unavailable.get(method, "") if row_b is None else ""
            rows.append(merged)
        return rows

    def _top1(self, row_a: Mapping[str, Any], record_b: Mapping[str, Any]) -> dict[str, float]:
        if not self.second.same_classes:  # class indices of two class lists do not correspond
            return {}
        return {TOP1_AGREE.name: float(int(row_a["predicted"]) == int(record_b["predicted"]))}


def _prefixed(row: Mapping[str, Any]) -> dict[str, Any]:
    return {B_PREFIX + name: value for name, value in row.items() if name not in IMAGE_COLUMNS}


def _agreement(cam_a: np.ndarray, cam_b: np.ndarray, threshold: float, mask: np.ndarray | None,
               size: tuple[int, ...]) -> MapAgreement:
    # a map may leave [0, 1] by a rounding error; compare_maps refuses anything outside
    a, b = (np.clip(np.asarray(cam, np.float32), 0.0, 1.0) for cam in (cam_a, cam_b))
    return compare_maps(a, b, threshold, mask=mask, size=(int(size[0]), int(size[1])))


@dataclass(frozen=True, eq=False)
class PairMaps:
    """One method's maps of one image on both models (as the method made them) and their
    agreement, as a pair run computed them."""

    cam_a: np.ndarray
    cam_b: np.ndarray
    agreement: MapAgreement


def pair_maps(explainers: Sequence[Any], specs: Sequence[ModelSpec], image: np.ndarray, method: str, *,
              classes: Sequence[int], max_n: int, threshold: float, mask: np.ndarray | None = None) -> PairMaps:
    """Recompute one row of a pair run: ``method``'s map of ``image`` on each model
    (``explainers`` and ``specs`` of A and B: their layers, preprocessing; ``classes``: the
    row's ``target_class`` and ``b_target_class``) and their agreement at ``threshold``,
    compared at the image's resolution as the run did (e.g. for a gallery of the images
    where the models disagree most). An fp32 explainer gives the run's maps."""
    if method not in METHODS:
        raise ValueError(f"{method!r} is not a CAM method; only CAM methods are compared")
    cams = []
    for explainer, spec, class_index in zip(explainers, specs, classes):
        cams.append(explainer.compute(method, spec.preprocess(image), spec.layer, int(class_index), max_n).cam)
    agreement = _agreement(cams[0], cams[1], threshold, mask, tuple(np.asarray(image).shape[:2]))
    return PairMaps(cams[0], cams[1], agreement)
