"""Where models come from: the bundled demos, Keras applications, and uploads.

Everything here works offline. ImageNet weights are used only when the file is
already in the local Keras cache, and are then loaded from that path, so Keras
never gets the chance to download anything.

    >>> bundle = load_application("MobileNetV2")       # ImageNet if cached, else random
    >>> x = bundle.preprocess(uint8_image)
    >>> cam = camcore.grad_cam(bundle.model, x, bundle.default_layer)
"""

from __future__ import annotations

import io
import zipfile

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from camcore.adapter import ModelAdapter
from camcore.demos import load_demo
from camcore.preprocess import PREPROCESSING_MODES, preprocess_image


@dataclass(frozen=True)
class ModelBundle:
    """A model plus everything needed to feed it and explain it."""

    name: str
    model: keras.Model
    class_names: list[str]
    input_size: tuple[int, int]
    channels: int
    preprocessing: str
    default_layer: str
    note: str = ""

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """uint8 gray or RGB image of any size → the model's input batch (1, H, W, C)."""
        return preprocess_image(image, self.input_size, self.channels, self.preprocessing)


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
_WEIGHT_CHOICES = ("auto", "imagenet", "random")
_MODEL_EXTENSIONS = (".keras", ".h5", ".hdf5")
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_UPLOAD_PREFIX = "camcore-upload-"  # temporary folder of an upload being read (never shown)

# layers that leave pixel values alone at inference, so a Rescaling or
# Normalization behind them still is the model's first word on the input
_TRANSPARENT_PREFIXES = ("Random", "Resizing", "CenterCrop")


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


def _generic_class_names(n: int) -> list[str]:
    return [f"class {i}" for i in range(n)]


def load_application(name: str, weights: str = "auto") -> ModelBundle:
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
    if weights != "random":
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
    if model is None:
        model = spec.builder(weights=None, input_shape=shape)
        note = note or "Random weights, architecture only (for layers and timing)"
    class_names = _imagenet_class_names() or _generic_class_names(1000)
    display = f"{name} (ImageNet)" if not note else f"{name} (random weights)"
    return ModelBundle(
        name=display,
        model=model,
        class_names=class_names,
        input_size=spec.input_size,
        channels=3,
        preprocessing=spec.preprocessing,
        default_layer=spec.layer,
        note=note,
    )


# ------------------------------------------------------------------------ demos
def demo_bundle(name: str) -> ModelBundle:
    """A bundled demo model (``assets/models/<name>.keras`` and its card) as a bundle."""
    name = name.removesuffix(" (demo)")
    demo = load_demo(name)
    card = demo.card
    parts = [str(card["architecture"])] if card.get("architecture") else []
    heldout = card.get("heldout") or {}
    if isinstance(heldout.get("accuracy"), (int, float)):
        parts.append(
            f"held-out accuracy {heldout['accuracy']:.1%} on {heldout.get('images', '?')} synthetic images"
        )
    return ModelBundle(
        name=f"{demo.name} (demo)",
        model=demo.model,
        class_names=list(demo.class_names),
        input_size=(int(demo.input_size[0]), int(demo.input_size[1])),
        channels=demo.channels,
        preprocessing=demo.preprocessing,
        default_layer=demo.layer,
        note="; ".join(parts),
    )


# ---------------------------------------------------------------------- uploads
def _custom_object_names(message: str) -> list[str]:
    patterns = (
        r"Could not locate (?:class|function) '([^']+)'",
        r"Unknown (?:layer|object|activation|initializer|regularizer|constraint|loss|metric)[^:]*: '([^']+)'",
    )
    names: list[str] = []
    for pattern in patterns:
        for found in re.findall(pattern, message):
            if found not in names:
                names.append(found)
    return names


def _exception_text(exc: BaseException) -> str:
    # .keras loading wraps the real reason in a generic TypeError: read the whole chain
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_model_bytes(data: bytes, filename: str) -> keras.Model:
    """An uploaded ``.keras`` or ``.h5`` file → the Keras model, loaded in safe mode.

    Raises ValueError with a user-facing message for a wrong extension, an empty
    or unreadable file, Lambda layers / code that safe mode refuses, and custom
    layers camcore does not know.
    """
    filename = Path(str(filename)).name or "upload"
    suffix = Path(filename).suffix.lower()
    if suffix not in _MODEL_EXTENSIONS:
        raise ValueError(f"{filename}: expected a .keras or .h5 file")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{filename}: expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError(f"{filename} is empty")
    # Keras picks the reader by extension; trust the content, so a .h5 renamed
    # .keras (or the reverse) still loads instead of failing with "file not found"
    if data.startswith(_ZIP_MAGIC):
        suffix = ".keras"
        # Keras reports a damaged archive as "File not found"; say what it is
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise ValueError(f"{filename} is a damaged zip archive, not a readable .keras model")
    elif data.startswith(_HDF5_MAGIC):
        suffix = ".h5"
    else:
        raise ValueError(
            f"{filename} is not a Keras model file (expected a .keras zip archive or an HDF5 .h5 file)"
        )
    with tempfile.TemporaryDirectory(prefix=_UPLOAD_PREFIX) as folder:
        path = Path(folder) / f"model{suffix}"
        path.write_bytes(data)
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - every reader failure becomes a user message
            raise _load_error(filename, exc, (str(path), folder)) from exc
    if not isinstance(model, keras.Model):
        raise ValueError(f"could not read {filename} as a Keras model: it holds a {type(model).__name__}")
    return model


def _load_error(filename: str, exc: Exception, private: tuple[str, ...] = ()) -> ValueError:
    """A user-facing ValueError for a reader failure. ``private``: paths (the temporary
    copy, its folder) that must not reach the user; they become the file's name."""
    text = _exception_text(exc)
    for secret in sorted((p for p in private if p), key=len, reverse=True):
        text = text.replace(secret, filename)
    # anything still naming the temporary folder (a resolved or quoted form of it)
    text = re.sub(r"[^\s'\"`]*" + re.escape(_UPLOAD_PREFIX) + r"[^\s'\"`]*", filename, text)
    if "safe_mode" in text or "unsafe_deserialization" in text or "`Lambda` layer" in text:
        return ValueError(
            f"refused: the model contains a Lambda layer or custom code, which safe mode does "
            f"not load ({filename}); rebuild it with standard Keras layers"
        )
    names = _custom_object_names(text)
    if names or "custom_object_scope" in text or "register_keras_serializable" in text:
        listed = ", ".join(names) if names else "unnamed objects"
        return ValueError(
            f"{filename} needs custom objects ({listed}) that camcore does not know; "
            "only models made of standard Keras layers can be loaded"
        )
    return ValueError(f"could not read {filename} as a Keras model: {_first_line(text)}")


# ---------------------------------------------------------------- any model
def _first_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in graph order, nested models expanded, inputs left out."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            layers.extend(_first_layers(layer))
        else:
            layers.append(layer)
    return layers


def guess_preprocessing(model: keras.Model) -> str | None:
    """"none" when the model begins with its own Rescaling/Normalization, else None (ask the user)."""
    for layer in _first_layers(model):
        if type(layer).__name__.startswith(_TRANSPARENT_PREFIXES):
            continue
        if isinstance(layer, keras.layers.Normalization):
            return "none"
        if isinstance(layer, keras.layers.Rescaling):
            # scaling *up* (e.g. ×255) means the model wants already-scaled
            # input, which none of the modes can be known to match
            scale = np.asarray(layer.scale, dtype=np.float64)
            return "none" if np.all(np.abs(scale) <= 1.0) else None
        return None
    return None


MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 2048


def _check_input_size(input_size) -> tuple[int, int]:
    ok = isinstance(input_size, (tuple, list)) and len(input_size) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in input_size
    )
    if not ok or not all(MIN_INPUT_SIZE <= int(v) <= MAX_INPUT_SIZE for v in input_size):
        raise ValueError(
            f"input size must be (height, width), whole numbers from {MIN_INPUT_SIZE} to "
            f"{MAX_INPUT_SIZE}, got {input_size!r}"
        )
    return int(input_size[0]), int(input_size[1])


def _image_input_shape(model: keras.Model) -> tuple | None:
    """The (batch, H, W, C) shape of the model's single image input, or None when the
    model has no such input (ModelAdapter then says what is wrong)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        return None
    shape = tuple(inputs[0].shape)
    return shape if len(shape) == 4 else None


def input_size_is_variable(model: keras.Model) -> bool:
    """Whether the model's image input leaves its height or width open (None), so that
    ``bundle_from_model`` needs an ``input_size``."""
    shape = _image_input_shape(model)
    return shape is not None and (shape[1] is None or shape[2] is None)


def _nested_graph_models(model: keras.Model) -> list[keras.Model]:
    return [
        layer for layer in model.layers
        if isinstance(layer, keras.Model) and (
            isinstance(layer, keras.Sequential) or hasattr(layer, "_run_through_graph")
        )
    ]


def with_fixed_input(model: keras.Model, shape: tuple[int, int, int]) -> keras.Model:
    """A copy of a Functional or Sequential ``model`` whose input is fixed to ``shape``
    (H, W, C), same layer names and weights; nested models with a variable input are
    fixed too, so every layer has a concrete output shape (the user's model is untouched)."""
    first = keras.models.clone_model(model, input_tensors=keras.Input(shape))
    # A nested model keeps its own (variable) input in the copy; what the outer graph
    # feeds it is concrete now: fix each such model to that shape, in a second copy.
    inner: dict[str, tuple[int, int, int]] = {}
    for layer in _nested_graph_models(first):
        own = _image_input_shape(layer)
        if own is None or all(d is not None for d in own[1:]):
            continue
        nodes = getattr(layer, "_inbound_nodes", None) or []
        fed = tuple(nodes[0].input_tensors[0].shape) if nodes and nodes[0].input_tensors else ()
        if len(fed) == 4 and all(isinstance(d, int) for d in fed[1:]):
            inner[layer.name] = tuple(int(d) for d in fed[1:])
    fixed = first
    if inner:
        def clone(layer):
            if layer.name in inner:
                return with_fixed_input(layer, inner[layer.name])
            return layer.__class__.from_config(layer.get_config())

        fixed = keras.models.clone_model(model, input_tensors=keras.Input(shape), clone_function=clone)
    fixed.set_weights(model.get_weights())
    return fixed


def bundle_from_model(
    model: keras.Model,
    name: str,
    preprocessing: str | None = None,
    class_names: list[str] | None = None,
    input_size: tuple[int, int] | None = None,
) -> ModelBundle:
    """Any Keras image classifier as a bundle; ValueError (user-facing) if it cannot be explained.

    ``input_size`` (height, width) is needed, and only used, when the model accepts any
    size (``keras.Input((None, None, 3))``): the bundle then holds a copy of the model
    with that input fixed (same layers and weights). For a model that fixes its size,
    a different ``input_size`` is an error.
    """
    if input_size is not None:
        input_size = _check_input_size(input_size)
    shape = _image_input_shape(model)
    if input_size_is_variable(model):
        if input_size is None:
            raise ValueError(
                f"cannot infer the input size of {name}: the model accepts images of any "
                f"height × width (input {shape}); choose one (Input height/width in the sidebar)"
            )
        if shape[3] is None:
            raise ValueError(f"the number of input channels of {name} is not fixed (input {shape})")
        try:
            model = with_fixed_input(model, (*input_size, int(shape[3])))
        except Exception as exc:  # noqa: BLE001 - a Keras failure becomes a user message
            raise ValueError(
                f"could not fix the input size of {name} to {input_size[0]}×{input_size[1]}: "
                f"{_first_line(str(exc))}"
            ) from exc
    elif shape is not None and input_size is not None and tuple(shape[1:3]) != input_size:
        raise ValueError(
            f"{name} fixes its input size at {shape[1]}×{shape[2]}, not "
            f"{input_size[0]}×{input_size[1]}"
        )
    adapter = ModelAdapter(model)
    layer = adapter.default_layer
    height, width, channels = adapter.input_shape
    if channels not in (1, 3):
        raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
    modes = sorted(PREPROCESSING_MODES)
    if preprocessing is None:
        preprocessing = guess_preprocessing(model)
        if preprocessing is None:
            raise ValueError(
                f"cannot infer the preprocessing of {name}: choose one of {modes}"
            )
    elif preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"unknown preprocessing {preprocessing!r}; choose one of {modes}")
    if preprocessing in ("caffe", "torch") and channels != 3:
        raise ValueError(
            f"{preprocessing!r} preprocessing needs an RGB model, {name} has {channels} channel(s)"
        )
    n = adapter.n_classes
    if class_names is None:
        class_names = _generic_class_names(n)
    else:
        class_names = [str(c) for c in class_names]
        if len(class_names) != n:
            raise ValueError(f"{name} has {n} classes but {len(class_names)} class names were given")
    return ModelBundle(
        name=name,
        model=model,
        class_names=class_names,
        input_size=(height, width),
        channels=channels,
        preprocessing=preprocessing,
        default_layer=layer,
    )
