"""camcore: class-activation-map methods for Keras 3 image classifiers.

The public API is re-exported here. Imports are lazy so that the data tools
(``camcore.synth``, ``camcore.dagm``, ``camcore.metrics``) do not pay for
importing TensorFlow.

    >>> import camcore
    >>> demo = camcore.load_demo("vgg_defect")
    >>> x = demo.preprocess(image)
    >>> cam = camcore.grad_cam(demo.model, x, demo.layer)          # (14, 14) in [0, 1]
    >>> explainer = camcore.Explainer(demo.model)                  # shares work between methods
    >>> fast = explainer.score_cam(x, demo.layer, max_n=32)        # Faster-Score-CAM
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # model adapter
    "ModelAdapter": "camcore.adapter",
    "LayerInfo": "camcore.adapter",
    # engine and plain-function methods
    "Explainer": "camcore.explainer",
    "CamResult": "camcore.explainer",
    "grad_cam": "camcore.explainer",
    "grad_cam_plus_plus": "camcore.explainer",
    "score_cam": "camcore.explainer",
    "faster_score_cam": "camcore.explainer",
    "guided_backprop": "camcore.explainer",
    # image-space maps and their combinations with CAMs
    "sobel_gradient": "camcore.methods.sobel",
    "guided_variant": "camcore.methods.combine",
    "sobel_variant": "camcore.methods.combine",
    "upsample": "camcore.methods.combine",
    "METHODS": "camcore.methods",
    "MethodSpec": "camcore.methods",
    # images and preprocessing
    "PREPROCESSING_MODES": "camcore.preprocess",
    "preprocess_image": "camcore.preprocess",
    "read_image": "camcore.preprocess",
    # demo models and other model sources
    "list_demos": "camcore.demos",
    "load_demo": "camcore.demos",
    "Demo": "camcore.demos",
    "ModelBundle": "camcore.zoo",
    "load_application": "camcore.zoo",
    "load_model_bytes": "camcore.zoo",
    "bundle_from_model": "camcore.zoo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'camcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
