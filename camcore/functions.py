"""The plain functions: ``camcore.<method>(model, x, layer, class_index=None)``.

One per registered method, all with the same signature and result: a float32 map in
[0, 1] at the layer's resolution (at the input's when ``layer`` is a list of layers to
fuse). Each call builds a fresh :class:`~camcore.explainer.Explainer`; keep one
explainer to share passes between methods and calls.

    >>> camcore.layer_cam(model, x, "top_down56", class_index=1).shape          # the vgg_defect demo
    (56, 56)
    >>> camcore.layer_cam(model, x, ["top_down28", "top_down56"], 1).shape    # fused at the input's size
    (224, 224)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np

from camcore.defaults import DEFAULT_MAX_N
from camcore.explainer import Explainer
from camcore.methods import get as get_method

PlainFunction = Callable[..., np.ndarray]


def plain_function(key: str) -> PlainFunction:
    """``f(model, x, layer, class_index=None, **options) -> map`` for registered method ``key``."""
    def run(model: keras.Model, x: Any, layer: str | Sequence[str], class_index: int | None = None,
            **options: Any) -> np.ndarray:
        return Explainer(model).compute(key, x, layer, class_index, **options).cam

    run.__name__ = run.__qualname__ = key
    spec = get_method(key)
    run.__doc__ = (
        f"{spec.label} ({spec.reference}): {spec.definition}.\n\n"
        "Returns a float32 map in [0, 1] at the layer's resolution (input resolution for a list "
        f"of layers, fused). See :mod:`camcore.methods.{spec.cam.__module__.rsplit('.', 1)[-1]}`."
    )
    return run


grad_cam = plain_function("grad_cam")
grad_cam_plus_plus = plain_function("grad_cam_plus_plus")
layer_cam = plain_function("layer_cam")
xgrad_cam = plain_function("xgrad_cam")
hires_cam = plain_function("hires_cam")
eigen_cam = plain_function("eigen_cam")
ablation_cam = plain_function("ablation_cam")


def score_cam(model: keras.Model, x: Any, layer: str, class_index: int | None = None,
              max_n: int | None = None, **options: Any) -> np.ndarray:
    """Score-CAM (Wang et al. 2020, eq. 3-5); ``max_n=k`` gives Faster-Score-CAM on the k
    channels of largest activation std. (h, w) float32 in [0, 1]."""
    method = "score_cam" if max_n is None else "faster_score_cam"
    return Explainer(model).compute(method, x, layer, class_index, max_n=max_n, **options).cam


def faster_score_cam(model: keras.Model, x: Any, layer: str, class_index: int | None = None,
                     max_n: int = DEFAULT_MAX_N, **options: Any) -> np.ndarray:
    """Faster-Score-CAM: Score-CAM on the ``max_n`` channels of largest activation std."""
    return Explainer(model).compute("faster_score_cam", x, layer, class_index, max_n=max_n, **options).cam


def guided_backprop(model: keras.Model, x: Any, class_index: int | None = None) -> np.ndarray:
    """Guided backpropagation saliency (Springenberg et al. 2015): (H, W, C) float32."""
    return Explainer(model).guided_backprop(x, class_index)
