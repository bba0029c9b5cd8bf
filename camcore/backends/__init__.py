"""Model backends: one module per kind of model (see :mod:`camcore.backends.base`).

:func:`as_backend` turns what a user hands the engine into a backend: a
:class:`~camcore.backends.base.Backend` as it is, a Keras model into a
:class:`~camcore.backends.keras.KerasBackend`. Importing this package does not import
TensorFlow or ONNX Runtime; the Keras backend imports TensorFlow when a Keras model arrives,
the ONNX backend (:mod:`camcore.backends.onnx`) ONNX Runtime when an ONNX model does.
"""

from __future__ import annotations

from typing import Any

from camcore.backends.base import CAPABILITIES, Backend, LayerInfo, NotAvailable, masks_from_maps

__all__ = ["CAPABILITIES", "Backend", "LayerInfo", "NotAvailable", "as_backend", "masks_from_maps"]


def as_backend(model: Any, target: str = "logit") -> Backend:
    """The backend serving ``model``: a Backend itself, a Keras model's KerasBackend, or an
    ``onnx.ModelProto`` / fixed-size ``OnnxGraph``'s OnnxBackend."""
    if isinstance(model, Backend):
        return model
    if type(model).__module__.startswith(("onnx.", "camcore.backends.onnx")):
        from camcore.backends.onnx import OnnxBackend

        return OnnxBackend(model)
    import keras

    if isinstance(model, keras.Model):
        from camcore.backends.keras import KerasBackend

        return KerasBackend(model, target=target)
    raise TypeError(f"expected a keras.Model, an ONNX model or a camcore Backend, got {type(model).__name__}")
