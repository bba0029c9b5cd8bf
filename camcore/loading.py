"""One loader for every source of a model: :func:`load_model`.

A model key (``camcore.models``' grammar), a demo name, a Keras Application name, the
bytes of a model file, a file path or an in-memory model: each arrives as a
:class:`~camcore.models.LoadedModel`. This module sits above :mod:`camcore.models`,
:mod:`camcore.demos` and :mod:`camcore.zoo` (which build on ``models``), so none of them
imports another that imports it back.

    >>> load_model("vgg_defect").source                                # a bundled demo
    'demo'
    >>> load_model("app:MobileNetV2:random").note[:14]                 # a Keras Application, offline
    'Random weights'
    >>> load_model(data, filename="mine.keras", preprocessing="unit").key[:7]   # uploaded bytes
    'upload:'
    >>> load_model(Path("mine.keras"), preprocessing="unit").source   # a file (command line)
    'file'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from camcore.models import (
    KEY_KINDS,
    RANDOM,
    LoadedModel,
    UploadStore,
    from_backend,
    from_bytes,
    from_file,
    from_keras,
    input_size_is_variable,
    model_extensions,
    parse_model_key,
)

__all__ = ["load_model"]


def load_model(
    source: Any,
    *,
    filename: str | None = None,
    preprocessing: str | None = None,
    input_size: tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    weights: str = "auto",
    uploads: UploadStore | None = None,
) -> LoadedModel:
    """Load a model from any source, as a :class:`LoadedModel`.

    ``source`` is a model key (module docstring), a demo name, a Keras Application name
    (``weights``: see :func:`camcore.zoo.load_application`), the bytes of a ``.keras`` /
    ``.h5`` / ``.onnx`` file (``filename`` names it, its extension the format), a file path,
    or a ``keras.Model``; ``"upload:<sha>"`` keys are read from ``uploads``.

    ``preprocessing``: demos and applications know theirs (a different one is an error);
    for other models None infers it when the model starts with its own Rescaling or
    Normalization, else raises :class:`NeedsPreprocessing`. ``input_size`` (H, W) is
    used only by a model that accepts any size, which raises :class:`NeedsInputSize`
    without it. ``class_names`` name the classes of an upload, file or in-memory model.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return from_bytes(bytes(source), filename or "upload", preprocessing, input_size, class_names)
    if isinstance(source, os.PathLike):
        return from_file(Path(source), preprocessing, input_size, class_names)
    if not isinstance(source, str):
        return _from_object(source, preprocessing, input_size, class_names)
    if source.partition(":")[0] in KEY_KINDS and ":" in source:
        return _from_key(source, preprocessing, input_size, class_names, uploads)
    return _from_name(source, preprocessing, input_size, class_names, weights)


def _from_object(model: Any, preprocessing: str | None, input_size: tuple[int, int] | None,
                 class_names: Sequence[str] | None) -> LoadedModel:
    """An in-memory Keras model or camcore backend."""
    from camcore.backends import Backend

    if isinstance(model, Backend):
        return from_backend(model, model.kind, preprocessing, class_names, input_size)
    import keras

    if isinstance(model, keras.Model):
        size = input_size if input_size_is_variable(model) else None
        return from_keras(model, model.name, preprocessing, class_names, size)
    raise ValueError(f"cannot load a model from a {type(model).__name__}")


def _from_key(source: str, preprocessing: str | None, input_size: tuple[int, int] | None,
              class_names: Sequence[str] | None, uploads: UploadStore | None) -> LoadedModel:
    key = parse_model_key(source)
    if key.kind == "demo":
        return _from_demo(key.name, preprocessing)
    if key.kind == "app":
        return _from_application(key.name, RANDOM if key.option == RANDOM else "imagenet", preprocessing)
    if key.kind == "file":
        return from_file(Path(key.name), preprocessing, input_size, class_names)
    if uploads is None:
        raise ValueError(f"{source!r} names an uploaded file, but no upload store was given")
    data, name = uploads.get(key.name)
    return from_bytes(data, name, key.option or preprocessing, key.input_size or input_size, class_names)


def _from_name(source: str, preprocessing: str | None, input_size: tuple[int, int] | None,
               class_names: Sequence[str] | None, weights: str) -> LoadedModel:
    """A demo name, a Keras Application name or a file path."""
    from camcore.demos import list_demos
    from camcore.zoo import APPLICATIONS

    if source in list_demos():
        return _from_demo(source, preprocessing)
    if source in APPLICATIONS:
        return _from_application(source, weights, preprocessing)
    path = Path(source)
    if path.suffix.lower() in model_extensions() or path.is_file():
        return from_file(path, preprocessing, input_size, class_names)
    raise ValueError(
        f"unknown model {source!r}: give a demo name ({', '.join(list_demos()) or 'none installed'}), "
        f"a Keras Application ({', '.join(APPLICATIONS)}) or a model file ({', '.join(model_extensions())})"
    )


def _same_preprocessing(loaded: LoadedModel, preprocessing: str | None) -> LoadedModel:
    if preprocessing is not None and preprocessing != loaded.preprocessing:
        raise ValueError(
            f"{loaded.label} uses {loaded.preprocessing!r} preprocessing, not {preprocessing!r}"
        )
    return loaded


def _from_demo(name: str, preprocessing: str | None) -> LoadedModel:
    from camcore.demos import load_demo

    return _same_preprocessing(load_demo(name), preprocessing)


def _from_application(name: str, weights: str, preprocessing: str | None) -> LoadedModel:
    from camcore.zoo import load_application

    return _same_preprocessing(load_application(name, weights), preprocessing)
