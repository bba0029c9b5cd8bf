"""Keras Applications (VGG16, ResNet50, ...) as camcore models, offline.

ImageNet weights are used only when the file is already in the local Keras cache,
and are then loaded from that path, so Keras never gets the chance to download
anything.

    >>> app = load_application("MobileNetV2", "random")   # "auto": ImageNet if cached, else random
    >>> x = app.preprocess(uint8_image)
    >>> camcore.grad_cam(app.model, x, app.layer, 1).shape
    (7, 7)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from camcore.models import RANDOM, LoadedModel, app_key, from_keras


@dataclass(frozen=True)
class ApplicationSpec:
    """A ``keras.applications`` architecture and how to use it."""

    builder: Callable[..., keras.Model]
    input_size: tuple[int, int]
    preprocessing: str
    weights_file: str  # ImageNet weights (include_top=True) as named in the Keras cache
    layer: str  # the last convolutional block's output, the usual CAM layer


# File names are the ones keras.applications passes to keras.utils.get_file
# (Keras 3.15) for include_top=True.
APPLICATIONS: dict[str, ApplicationSpec] = {
    "VGG16": ApplicationSpec(
        keras.applications.VGG16, (224, 224), "caffe",
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "block5_conv3",
    ),
    "ResNet50": ApplicationSpec(
        keras.applications.ResNet50, (224, 224), "caffe",
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "conv5_block3_out",
    ),
    "MobileNetV2": ApplicationSpec(
        keras.applications.MobileNetV2, (224, 224), "symmetric",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", "out_relu",
    ),
    "EfficientNetB0": ApplicationSpec(
        keras.applications.EfficientNetB0, (224, 224), "none",
        "efficientnetb0.h5", "top_activation",
    ),
    "DenseNet121": ApplicationSpec(
        keras.applications.DenseNet121, (224, 224), "torch",
        "densenet121_weights_tf_dim_ordering_tf_kernels.h5", "relu",
    ),
    "Xception": ApplicationSpec(
        keras.applications.Xception, (299, 299), "symmetric",
        "xception_weights_tf_dim_ordering_tf_kernels.h5", "block14_sepconv2_act",
    ),
}

_CLASS_INDEX_FILE = "imagenet_class_index.json"
_WEIGHT_CHOICES = ("auto", "imagenet", RANDOM)


# ------------------------------------------------------------------ applications
def keras_cache_dir() -> Path:
    """The folder where Keras caches downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".keras"
    return base / "models"


def _spec(name: str) -> ApplicationSpec:
    spec = APPLICATIONS.get(name)
    if spec is None:
        raise ValueError(f"unknown application {name!r}; choose one of {list(APPLICATIONS)}")
    return spec


def imagenet_weights_cached(name: str) -> bool:
    """Whether the ImageNet weights of application ``name`` are in the local cache (never downloads)."""
    return (keras_cache_dir() / _spec(name).weights_file).is_file()


def _imagenet_class_names() -> list[str] | None:
    """Readable ImageNet class names from the cached index file, or None if absent or unusable."""
    path = keras_cache_dir() / _CLASS_INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
        names = [str(index[str(i)][1]).replace("_", " ") for i in range(1000)]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None  # a broken cache file must not stop the model from loading
    return names


def load_application(name: str, weights: str = "auto") -> LoadedModel:
    """Build a ``keras.applications`` classifier (1000 ImageNet classes) without downloading.

    ``weights``: "auto" uses ImageNet weights if cached, else random weights (with
    a note); "imagenet" requires them (ValueError if not cached); "random" never
    uses them.
    """
    spec = _spec(name)
    if weights not in _WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {list(_WEIGHT_CHOICES)}, got {weights!r}")
    shape = (*spec.input_size, 3)
    path = keras_cache_dir() / spec.weights_file
    model = None
    note = ""
    if weights != RANDOM:
        if path.is_file():
            try:
                # a local path, never "imagenet": Keras would fetch that from the internet
                model = spec.builder(weights=str(path), input_shape=shape)
            except Exception as exc:  # noqa: BLE001 - any failure means a bad cache file
                if weights == "imagenet":
                    raise ValueError(
                        f"the cached ImageNet weights {path} could not be loaded: {exc}"
                    ) from exc
                note = (
                    f"The cached ImageNet weights {path} could not be loaded ({type(exc).__name__}): "
                    "random weights, architecture only (for layers and timing)"
                )
        elif weights == "imagenet":
            raise ValueError(
                f"ImageNet weights for {name} are not in the local Keras cache ({path}) and "
                "CAM Studio works offline, so they cannot be downloaded; copy "
                f"{spec.weights_file} into {keras_cache_dir()} or use random weights"
            )
        else:
            note = (
                "ImageNet weights are not in the local Keras cache: random weights, "
                "architecture only (for layers and timing)"
            )
    pretrained = model is not None
    if not pretrained:
        model = spec.builder(weights=None, input_shape=shape)
        note = note or "Random weights, architecture only (for layers and timing)"
    return from_keras(
        model,
        name,
        spec.preprocessing,
        _imagenet_class_names(),  # None: "class 0", "class 1", ...
        layer=spec.layer,
        source="application",
        key=app_key(name, random_weights=not pretrained),
        note=note,
    )
