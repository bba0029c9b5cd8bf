"""The model under evaluation: :class:`ModelSpec` and ``--model`` resolution."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from camcore.loading import load_model
from camcore.models import LoadedModel, NeedsPreprocessing, from_keras
from camcore.preprocess import PREPROCESSING_MODES

if TYPE_CHECKING:  # TensorFlow is imported only when a model is run
    import keras


@dataclass(frozen=True)
class ModelSpec(LoadedModel):
    """A :class:`camcore.LoadedModel` plus what the evaluation explains: ``layer`` (the
    model's default unless chosen) and ``class_index``, the class every map explains
    (``"defective"``). ``key`` names the model in results: ``"demo:<name>"`` for a demo
    model, ``"file:<absolute path>"`` for a model file, ``"memory:<name>"`` or the given
    key for an in-memory model.
    """

    class_index: int = 1

    @classmethod
    def of(cls, loaded: LoadedModel, *, layer: str | None = None, class_index: int | None = None) -> ModelSpec:
        """The spec explaining ``layer`` (default: the model's) and ``class_index`` (default:
        the class named "defective", else 1) of a loaded model."""
        from camcore.backends import as_backend

        adapter = as_backend(loaded.model)
        layer = loaded.layer if layer is None else layer
        adapter.layer_info(layer)
        if class_index is None:
            names = list(loaded.class_names)
            class_index = names.index("defective") if "defective" in names else 1
        fields = {f.name: getattr(loaded, f.name) for f in dataclasses.fields(LoadedModel)}
        fields["layer"] = layer
        return cls(**fields, class_index=adapter.check_class(class_index))

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
        loaded = from_keras(model, model.name, preprocessing, class_names, layer=layer, key=key)
        return cls.of(loaded, class_index=class_index)


def load_model_spec(
    model: str | None = None,
    *,
    preprocessing: str | None = None,
    layer: str | None = None,
    class_index: int | None = None,
) -> ModelSpec:
    """Resolve ``--model`` with :func:`camcore.load_model`: a demo name (default: the
    default demo), a Keras Application or a ``.keras`` / ``.h5`` file, loaded in Keras
    safe mode (no arbitrary code from the file).

    A model file needs ``preprocessing`` (see :data:`camcore.preprocess.PREPROCESSING_MODES`)
    unless it starts with its own Rescaling/Normalization; its input size is read from
    the model. ``class_index`` defaults to the class named "defective", else 1.
    """
    from camcore.demos import DEFAULT_DEMO

    name = DEFAULT_DEMO if model is None else model
    try:
        loaded = load_model(name, preprocessing=preprocessing)
    except NeedsPreprocessing as exc:
        raise ValueError(
            f"{Path(name).name}: a model file needs --preprocessing, one of {sorted(PREPROCESSING_MODES)}"
        ) from exc
    return ModelSpec.of(loaded, layer=layer, class_index=class_index)


def check_spec(spec: ModelSpec) -> None:
    """ValueError if ``spec``'s layer is not in its model or its class index is out of range."""
    from camcore.backends import as_backend

    backend = as_backend(spec.model)
    backend.layer_info(spec.layer)
    backend.check_class(spec.class_index)
