"""camcore: class-activation-map methods for Keras 3 image classifiers.

The public API is re-exported here. Imports are lazy so that the data tools
(``camcore.synth``, ``camcore.dagm``, ``camcore.metrics``) do not pay for
importing TensorFlow.

    >>> import camcore
    >>> demo = camcore.load_demo("vgg_defect")
    >>> x = demo.preprocess(image)
    >>> camcore.grad_cam(demo.model, x, demo.layer, 1).shape       # in [0, 1], at the layer's size
    (56, 56)
    >>> explainer = camcore.Explainer(demo.model)                  # shares work between methods
    >>> fast = explainer.compute("faster_score_cam", x, demo.layer, 1, max_n=32).cam
    >>> found = camcore.localize(images, {"model": "vgg_defect", "method": "grad_cam", "threshold": 0.3})
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # model adapter
    "ModelAdapter": "camcore.adapter",
    "LayerInfo": "camcore.adapter",
    # engine, registry and plain-function methods
    "Explainer": "camcore.explainer",
    "CamResult": "camcore.explainer",
    "Prepared": "camcore.prepared",
    "prepare": "camcore.prepared",
    "grad_cam": "camcore.functions",
    "grad_cam_plus_plus": "camcore.functions",
    "score_cam": "camcore.functions",
    "faster_score_cam": "camcore.functions",
    "layer_cam": "camcore.functions",
    "xgrad_cam": "camcore.functions",
    "hires_cam": "camcore.functions",
    "eigen_cam": "camcore.functions",
    "ablation_cam": "camcore.functions",
    "guided_backprop": "camcore.functions",
    "plain_function": "camcore.functions",
    "register_method": "camcore.methods",
    # image-space maps and their combinations with CAMs
    "sobel_gradient": "camcore.methods.sobel",
    "guided_variant": "camcore.methods.combine",
    "sobel_variant": "camcore.methods.combine",
    "upsample": "camcore.maps",
    "METHODS": "camcore.methods",
    "MethodSpec": "camcore.methods",
    # images and preprocessing
    "PREPROCESSING_MODES": "camcore.preprocess",
    "preprocess_image": "camcore.preprocess",
    "read_image": "camcore.preprocess",
    # models: one type, one loader (demos, Keras Applications, uploads, files)
    "LoadedModel": "camcore.models",
    "load_model": "camcore.loading",
    "NeedsInputSize": "camcore.models",
    "NeedsPreprocessing": "camcore.models",
    "load_model_bytes": "camcore.models",
    "list_demos": "camcore.demos",
    "load_demo": "camcore.demos",
    "load_application": "camcore.zoo",
    # two maps (e.g. two models' maps of one image) against each other
    "compare_maps": "camcore.metrics.agreement",
    "MapAgreement": "camcore.metrics.agreement",
    "pair_classes": "camcore.pairing",
    "ClassPairing": "camcore.pairing",
    # the tuned threshold put to use (``camcore.localize`` itself is the module, callable)
    "Localizer": "camcore.localize",
    "LocalizeSettings": "camcore.localize_settings",
    "find_regions": "camcore.regions",
    # a self-contained HTML report
    "write_report": "camcore.report",
}

__all__ = sorted([*_EXPORTS, "localize"])


_RENAMED = {"register_method": "register"}
_SUBMODULES = frozenset({
    "adapter", "autoprecision", "backends", "bench", "dagm", "defaults", "demos", "evaluate", "evaluation",
    "explainer", "functions", "loading", "localize", "localize_settings", "maps", "methods", "metrics", "models",
    "pairing", "passes", "precision", "prepared", "preprocess", "regions", "report", "samples", "synth", "visualize",
    "zoo",
})


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        if name in _SUBMODULES:  # camcore.metrics.localization(...) after a bare `import camcore`
            return importlib.import_module(f"camcore.{name}")
        raise AttributeError(f"module 'camcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
