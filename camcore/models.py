"""One model type, :class:`LoadedModel`, model keys and model files.

Whatever a model comes from (a bundled demo, a Keras Application, an uploaded file, a file
on disk, a model in memory) it arrives as a ``LoadedModel``: the model plus how to
feed it (preprocessing, input size, channels), its class names and the layer to explain.
:func:`camcore.loading.load_model` is the one loader for every source; this module holds
what every source shares (the type, the keys, the upload store, reading model files).

    >>> loaded = camcore.load_model("vgg_defect")
    >>> x = loaded.preprocess(uint8_image)                            # any size, gray or RGB
    >>> camcore.grad_cam(loaded.model, x, loaded.layer, 1).shape
    (56, 56)

Model files are read in Keras safe mode (no code from the file runs), by their content:
a zip archive is read as ``.keras``, an HDF5 file as ``.h5``, whatever the name says.
``.onnx`` files are read by :mod:`camcore.backends.onnx` (standard operators only, no
external data, dry-run before use) and served by ONNX Runtime, gradient-free methods only.

When the loader needs a decision only the user can make it raises a typed error, a
``ValueError`` subclass: :class:`NeedsInputSize` (the model accepts any height × width)
or :class:`NeedsPreprocessing` (nothing in the model says how its pixels are scaled).

Model keys
----------
One string names a model that can be loaded again; ``load_model`` accepts it and
``LoadedModel.key`` records it:

===================================  ===========================================================
``"demo:<name>"``                    a bundled demo model, e.g. ``"demo:vgg_defect"``
``"app:<Name>"``                     a Keras Application with ImageNet weights from the local
                                     Keras cache (an error when they are not there)
``"app:<Name>:random"``              the same architecture with random weights
``"upload:<sha>"``                   a model file kept in an :class:`UploadStore`,
                                     preprocessing inferred
``"upload:<sha>:<mode>"``            the same with preprocessing ``<mode>`` (a key of
                                     ``camcore.PREPROCESSING_MODES``)
``"upload:<sha>:<mode>:<H>x<W>"``    the same with input size H×W (``"-"`` as mode: inferred);
                                     used only when the model does not fix its input size
``"file:<path>"``                    a model file on disk (command line only)
===================================  ===========================================================

In-memory models get ``"memory:<name>"``, which cannot be loaded again.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from camcore.preprocess import PREPROCESSING_MODES, preprocess_image

if TYPE_CHECKING:  # TensorFlow is imported only when a model is loaded
    import keras

SOURCES = ("demo", "application", "upload", "file", "memory")
KEY_KINDS = ("demo", "app", "upload", "file")
RANDOM = "random"  # the application key option for random weights
INFERRED = "-"  # the preprocessing of an upload key that carries a size but infers the mode
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 2048
MODEL_EXTENSIONS = (".keras", ".h5", ".hdf5")
ONNX_EXTENSION = ".onnx"  # read by camcore.backends.onnx, imported when such a file arrives
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_UPLOAD_PREFIX = "camcore-upload-"  # temporary folder of a file being read (never shown)
_SIZE = re.compile(r"([0-9]{1,4})x([0-9]{1,4})")
# layers that leave pixel values alone at inference, so a Rescaling or
# Normalization behind them still is the model's first word on the input
_TRANSPARENT_PREFIXES = ("Random", "Resizing", "CenterCrop")


# ------------------------------------------------------------------ errors
class NeedsInputSize(ValueError):
    """The model accepts images of any height × width: pass ``input_size=(height, width)``."""

    def __init__(self, name: str, input_shape: tuple) -> None:
        self.name = name
        self.input_shape = input_shape
        super().__init__(
            f"cannot infer the input size of {name}: the model accepts images of any height × width "
            f"(input {input_shape}); choose one (input_size=(height, width))"
        )


class NeedsPreprocessing(ValueError):
    """Nothing in the model says how 0..255 pixels become its input: pass ``preprocessing=``.
    ``input_size`` is the (height, width) the model takes, known by then."""

    def __init__(self, name: str, input_size: tuple[int, int] | None = None) -> None:
        self.name = name
        self.input_size = input_size
        self.choices = sorted(PREPROCESSING_MODES)
        super().__init__(f"cannot infer the preprocessing of {name}: choose one of {self.choices}")


# -------------------------------------------------------------- the model type
@dataclass(frozen=True)
class LoadedModel:
    """A Keras image classifier and everything needed to feed and explain it.

    ``layer`` is the layer to explain by default (a demo card's, an application's, or
    the last one with a spatial map); ``default_layer`` is the same. ``card`` is a demo
    model's card (empty otherwise), ``note`` a remark for the user (e.g. random weights).
    """

    name: str
    model: Any  # a keras.Model, or a camcore.backends.Backend (e.g. an ONNX model)
    preprocessing: str
    input_size: tuple[int, int]
    channels: int
    class_names: tuple[str, ...]
    layer: str
    source: str  # one of SOURCES
    key: str  # a model key (see the module docstring), "memory:<name>" for in-memory models
    note: str = ""
    card: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def default_layer(self) -> str:
        return self.layer

    @property
    def label(self) -> str:
        """Short human name, e.g. "vgg_defect (demo)", "VGG16 (random weights)", "mine.keras (upload)"."""
        if self.source == "memory":
            return self.name
        return parse_model_key(self.key).label(self.name)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """uint8 gray or RGB image of any size → the model's input batch (1, H, W, C)."""
        return preprocess_image(image, self.input_size, self.channels, self.preprocessing)


# ------------------------------------------------------------------ model keys
@dataclass(frozen=True)
class ModelKey:
    """A parsed model key (see the module docstring)."""

    kind: str  # one of KEY_KINDS
    name: str  # demo name, application name, upload sha or file path
    option: str | None = None  # "random" for applications, a preprocessing mode for uploads
    input_size: tuple[int, int] | None = None  # uploads only: (H, W) for a variable-size model

    def __str__(self) -> str:
        text = f"{self.kind}:{self.name}"
        if self.input_size is not None:
            height, width = self.input_size
            return f"{text}:{self.option or INFERRED}:{height}x{width}"
        return text + (f":{self.option}" if self.option else "")

    def label(self, filename: str | None = None) -> str:
        """Short human name; ``filename`` names an upload (its key holds only a hash)."""
        if self.kind == "demo":
            return f"{self.name} (demo)"
        if self.kind == "app":
            return f"{self.name} ({'random weights' if self.option == RANDOM else 'ImageNet'})"
        if self.kind == "upload":
            return f"{filename or 'uploaded model'} (upload)"
        return f"{Path(self.name).name} (file)"


def parse_model_key(key: str) -> ModelKey:
    """Split and validate a model key; ValueError with a readable message otherwise."""
    if not isinstance(key, str):
        raise ValueError(f"a model key must be a string, got {type(key).__name__}")
    kind, _, rest = key.partition(":")
    if kind == "file" and rest:  # a path may hold colons itself
        return ModelKey("file", rest)
    parts = key.split(":")
    sizes = (2, 3, 4) if kind == "upload" else (2, 3)
    if len(parts) not in sizes or kind not in KEY_KINDS or kind == "file" or not parts[1]:
        raise ValueError(
            f"bad model key {key!r}: expected 'demo:<name>', 'app:<Name>[:random]', "
            "'upload:<sha>[:<preprocessing>[:<H>x<W>]]' or 'file:<path>'"
        )
    option = parts[2] if len(parts) >= 3 else None
    input_size = None
    if kind == "demo" and option is not None:
        raise ValueError(f"bad model key {key!r}: demo keys have no option")
    if kind == "app" and option not in (None, RANDOM):
        raise ValueError(f"bad model key {key!r}: the only application option is ':random'")
    if kind == "upload":
        if len(parts) == 4:
            input_size = _parse_size(parts[3], key)
            option = None if option == INFERRED else option
        if option is not None and option not in PREPROCESSING_MODES:
            raise ValueError(f"bad model key {key!r}: unknown preprocessing {option!r}")
    return ModelKey(kind, parts[1], option, input_size)


def _parse_size(text: str, key: str) -> tuple[int, int]:
    found = _SIZE.fullmatch(text)
    size = (int(found[1]), int(found[2])) if found else None
    if size is None or not all(MIN_INPUT_SIZE <= v <= MAX_INPUT_SIZE for v in size):
        raise ValueError(
            f"bad model key {key!r}: the input size must be <H>x<W>, each from "
            f"{MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, got {text!r}"
        )
    return size


def demo_key(name: str) -> str:
    return str(ModelKey("demo", name))


def app_key(name: str, random_weights: bool = False) -> str:
    return str(ModelKey("app", name, RANDOM if random_weights else None))


def upload_key(sha: str, preprocessing: str | None = None, input_size: tuple[int, int] | None = None) -> str:
    size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
    return str(ModelKey("upload", sha, preprocessing, size))


def upload_sha(data: bytes) -> str:
    """The name of an uploaded file in keys and stores: its content's SHA-256, 20 hex digits."""
    return hashlib.sha256(bytes(data)).hexdigest()[:20]


class UploadStore:
    """Uploaded model files kept in memory by content, so that ``"upload:<sha>"`` keys can be
    loaded again: the ``capacity`` most recently added, safe to share between threads."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, filename: str) -> str:
        """Keep ``data`` (the oldest file goes when full); return its sha for :func:`upload_key`."""
        sha = upload_sha(data)
        with self._lock:
            self._files[sha] = (bytes(data), str(filename))
            self._files.move_to_end(sha)
            while len(self._files) > self.capacity:
                self._files.popitem(last=False)
        return sha

    def get(self, sha: str) -> tuple[bytes, str]:
        """(bytes, filename) of a kept file; ValueError once it has been dropped."""
        with self._lock:
            entry = self._files.get(sha)
        if entry is None:
            raise ValueError("the uploaded model is no longer in memory: please upload it again")
        return entry

    def filename(self, sha: str) -> str | None:
        with self._lock:
            entry = self._files.get(sha)
        return None if entry is None else entry[1]


# ------------------------------------------------------------------ file formats
@dataclass(frozen=True)
class ModelFormat:
    """A kind of model file, chosen by the file name's extension.

    ``read(data, filename)`` turns the file's bytes into a model (a ``keras.Model`` or a
    :class:`camcore.backends.Backend`), raising ValueError with a user-facing message for
    a bad file; ``describe(model, name, preprocessing, class_names, input_size, source=,
    key=)`` makes the checked :class:`LoadedModel` of what ``read`` returned, ``key(size)``
    giving its model key (with the input size for a model that accepts any size, else None).
    """

    name: str
    extensions: tuple[str, ...]
    read: Callable[[bytes, str], Any]
    describe: Callable[..., LoadedModel]


MODEL_FORMATS: dict[str, ModelFormat] = {}
"""Registered model file formats by extension (".keras", ".h5", ".hdf5", ...)."""


def register_model_format(model_format: ModelFormat, *, replace: bool = False) -> ModelFormat:
    """Make files with ``model_format``'s extensions loadable everywhere a model file is."""
    for extension in model_format.extensions:
        if not extension.startswith(".") or extension != extension.lower():
            raise ValueError(f"extensions are lower-case and start with a dot, got {extension!r}")
        if extension in MODEL_FORMATS and not replace:
            raise ValueError(f"{extension} files are already read as {MODEL_FORMATS[extension].name}")
    for extension in model_format.extensions:
        MODEL_FORMATS[extension] = model_format
    return model_format


def unregister_model_format(extension: str) -> None:
    """Forget the format of ``extension`` (Keras and ONNX files stay)."""
    if extension in (*MODEL_EXTENSIONS, ONNX_EXTENSION):
        raise ValueError(f"{extension} is a built-in model format")
    MODEL_FORMATS.pop(extension, None)


def model_extensions() -> tuple[str, ...]:
    """Every extension a model file may have."""
    return tuple(MODEL_FORMATS)


def model_format_of(filename: str) -> ModelFormat:
    """The format of ``filename`` by its extension; ValueError naming the accepted ones."""
    found = MODEL_FORMATS.get(Path(str(filename)).suffix.lower())
    if found is None:
        raise ValueError(f"{Path(str(filename)).name}: expected a model file ({', '.join(MODEL_FORMATS)})")
    return found


def from_bytes(data: bytes, filename: str, preprocessing: str | None = None, input_size: tuple[int, int] | None = None,
               class_names: Sequence[str] | None = None) -> LoadedModel:
    """The bytes of a model file (its format chosen by ``filename``) as a checked :class:`LoadedModel`."""
    model_format = model_format_of(filename)
    model = model_format.read(data, filename)
    sha = upload_sha(data)
    name = Path(str(filename)).name or "upload"
    return model_format.describe(model, name, preprocessing, class_names, input_size, source="upload",
                                 key=lambda size: upload_key(sha, preprocessing, size))


def from_file(path: Path, preprocessing: str | None = None, input_size: tuple[int, int] | None = None,
              class_names: Sequence[str] | None = None) -> LoadedModel:
    """A model file on disk (its format chosen by its name) as a checked :class:`LoadedModel`."""
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    model_format = model_format_of(path.name)
    model = model_format.read(path.read_bytes(), path.name)
    return model_format.describe(model, path.name, preprocessing, class_names, input_size, source="file",
                                 key=lambda size: f"file:{path.resolve()}")


def _describe_keras(model: keras.Model, name: str, preprocessing: str | None, class_names: Sequence[str] | None,
                    input_size: tuple[int, int] | None, *, source: str,
                    key: Callable[[tuple[int, int] | None], str]) -> LoadedModel:
    """A Keras model read from a file, checked to run (the input size counts only for a model
    that accepts any size)."""
    size = input_size if input_size_is_variable(model) else None
    return _runs(from_keras(model, name, preprocessing, class_names, size, source=source, key=key(size)))


_INT32 = 2**31 - 1  # TensorFlow's kernels read integer layer attributes as int32
_NOT_ATTRIBUTES = ("seed",)  # integers of a configuration that never reach a kernel


def _config_integers(value: Any, where: str = "") -> Iterator[tuple[str, int]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_ATTRIBUTES:
                yield from _config_integers(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _config_integers(item, where)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        yield where, int(value)


def _runs(loaded: LoadedModel) -> LoadedModel:
    """``loaded``, checked to run: no integer of a layer's configuration beyond int32, then
    one forward pass on a blank input. A damaged configuration can load and still fail on
    its first image: a stride of 2**31 made oneDNN's graph pass abort the whole process (a
    CHECK failure, not an exception), a smaller damage fails deep in a compiled pass."""
    import keras

    for layer in _first_layers(loaded.model):
        try:
            config = layer.get_config()
        except Exception:  # noqa: BLE001 - a layer without a config has no attributes to check
            continue
        for name, number in _config_integers(config):
            if abs(number) > _INT32:
                raise ValueError(
                    f"{loaded.name} cannot run: layer {layer.name!r} has {name} = {number}, "
                    "beyond the 32-bit integers TensorFlow's kernels take (a damaged file?)"
                )
    blank = np.zeros((1, *loaded.input_size, loaded.channels), np.float32)
    try:
        keras.ops.convert_to_numpy(loaded.model(blank, training=False))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is a user message
        raise ValueError(f"{loaded.name} loads but cannot run on an image: {_run_error(exc)}") from exc
    return loaded


def _run_error(exc: BaseException) -> str:
    """The line of a Keras/TensorFlow call error that says what went wrong."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", _exception_text(exc))
    for line in (line.strip() for line in text.splitlines()):
        if line and not line.startswith(("Exception encountered when calling", "in user code", "File ", "{{")):
            return _first_line(line)
    return _first_line(text)


# ------------------------------------------------------------------ model files
def model_file_format(data: bytes, filename: str = "model") -> str:
    """".keras" for a zip archive, ".h5" for an HDF5 file, by content; ValueError otherwise."""
    if data.startswith(_ZIP_MAGIC):
        # Keras reports a damaged archive as "File not found"; say what it is
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise ValueError(f"{filename} is a damaged zip archive, not a readable .keras model")
        return ".keras"
    if data.startswith(_HDF5_MAGIC):
        return ".h5"
    raise ValueError(
        f"{filename} is not a Keras model file (expected a .keras zip archive or an HDF5 .h5 file)"
    )


def load_model_bytes(data: bytes, filename: str) -> Any:
    """The bytes of a model file → the model, read by the format its name's extension
    chooses (:data:`MODEL_FORMATS`): a ``keras.Model`` for ``.keras`` / ``.h5`` / ``.hdf5``
    (loaded in Keras safe mode), a :class:`camcore.backends.Backend` for other formats (an
    :class:`~camcore.backends.onnx.OnnxBackend` for ``.onnx``; a graph that accepts any input
    size gives its ``OnnxGraph``, built at a size by ``load_model(..., input_size=)``).
    Raises ValueError with a user-facing message for a wrong extension or a bad file."""
    filename = Path(str(filename)).name or "upload"
    return model_format_of(filename).read(data, filename)


def _read_keras_bytes(data: bytes, filename: str) -> keras.Model:
    """The bytes of a ``.keras`` or ``.h5`` file → the Keras model, loaded in safe mode.

    The reader follows the content, not the name, so a ``.h5`` renamed ``.keras`` still
    loads. Raises ValueError with a user-facing message for an empty, damaged or
    unreadable file, Lambda layers / code that safe mode refuses, and custom layers
    camcore does not know; no message shows the temporary copy's path.
    """
    import keras

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{filename}: expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError(f"{filename} is empty")
    suffix = model_file_format(data, filename)
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
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        parts.append(str(link))
        link = link.__cause__ or link.__context__
    return "\n".join(parts)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
            f"refused: {filename} contains a Lambda layer or custom code, which safe mode does not "
            "load (it would run code from the file on this server); re-save the model without Lambda "
            "layers, using standard Keras layers only"
        )
    oversized = re.search(r"OOM when allocating tensor with shape\[([0-9,]+)\]", text)
    if oversized:
        # a damaged or hostile config can declare a layer of billions of weights
        shape = "×".join(oversized[1].split(","))
        return ValueError(
            f"could not read {filename} as a Keras model: it declares a weight tensor of {shape} "
            "values, too large for this server's memory"
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
def _first_layers(model: "keras.Model") -> list:
    """The model's layers in graph order, nested models expanded, inputs left out."""
    import keras

    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            layers.extend(_first_layers(layer))
        else:
            layers.append(layer)
    return layers


def guess_preprocessing(model: "keras.Model") -> str | None:
    """"none" when the model begins with its own Rescaling/Normalization, else None (ask the user)."""
    import keras

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


def _check_input_size(input_size: Any) -> tuple[int, int]:
    ok = isinstance(input_size, (tuple, list)) and len(input_size) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in input_size
    )
    if not ok or not all(MIN_INPUT_SIZE <= int(v) <= MAX_INPUT_SIZE for v in input_size):
        raise ValueError(
            f"input size must be (height, width), whole numbers from {MIN_INPUT_SIZE} to "
            f"{MAX_INPUT_SIZE}, got {input_size!r}"
        )
    return int(input_size[0]), int(input_size[1])


def _image_input_shape(model: "keras.Model") -> tuple | None:
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


def input_size_is_variable(model: "keras.Model") -> bool:
    """Whether the model's image input leaves its height or width open (None), so that
    :func:`from_keras` needs an ``input_size``."""
    shape = _image_input_shape(model)
    return shape is not None and (shape[1] is None or shape[2] is None)


def _nested_graph_models(model: "keras.Model") -> list:
    import keras

    return [
        layer for layer in model.layers
        if isinstance(layer, keras.Model) and (
            isinstance(layer, keras.Sequential) or hasattr(layer, "_run_through_graph")
        )
    ]


def with_fixed_input(model: "keras.Model", shape: tuple[int, int, int]) -> "keras.Model":
    """A copy of a Functional or Sequential ``model`` whose input is fixed to ``shape``
    (H, W, C), same layer names and weights; nested models with a variable input are
    fixed too, so every layer has a concrete output shape (the user's model is untouched)."""
    import keras

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
            inner[layer.name] = (int(fed[1]), int(fed[2]), int(fed[3]))
    fixed = first
    if inner:
        def clone(layer):
            if layer.name in inner:
                return with_fixed_input(layer, inner[layer.name])
            return layer.__class__.from_config(layer.get_config())

        fixed = keras.models.clone_model(model, input_tensors=keras.Input(shape), clone_function=clone)
    fixed.set_weights(model.get_weights())
    return fixed


def from_keras(
    model: "keras.Model",
    name: str,
    preprocessing: str | None = None,
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    *,
    layer: str | None = None,
    source: str = "memory",
    key: str | None = None,
    note: str = "",
    card: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Any Keras image classifier as a :class:`LoadedModel`; ValueError (user-facing) if it
    cannot be explained.

    ``preprocessing`` None: inferred (:func:`guess_preprocessing`), else
    :class:`NeedsPreprocessing`. ``input_size`` (H, W) is needed, and only allowed to
    differ from the model's, when the model accepts any size (``keras.Input((None, None,
    3))``): the result then holds a copy of the model with that input fixed (same layers
    and weights); without it :class:`NeedsInputSize`. ``layer`` defaults to the last one
    with a spatial map; ``class_names`` to "class 0", "class 1", ...
    """
    from camcore.adapter import ModelAdapter

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    model = _with_input_size(model, name, None if input_size is None else _check_input_size(input_size))
    adapter = ModelAdapter(model)
    # a model that cannot be explained fails before the user is asked anything
    if layer is None:
        layer = _default_layer(adapter, name)
    else:
        adapter.layer_info(layer)  # ValueError naming the layers when it does not exist
    height, width, channels = adapter.input_shape
    if channels not in (1, 3):
        raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
    preprocessing = _checked_preprocessing(name, preprocessing or guess_preprocessing(model), channels,
                                           (height, width))
    return LoadedModel(
        name=name,
        model=model,
        preprocessing=preprocessing,
        input_size=(height, width),
        channels=channels,
        class_names=_class_names(name, adapter.n_classes, class_names),
        layer=layer,
        source=source,
        key=key or f"memory:{name}",
        note=note,
        card=dict(card or {}),
    )


def _with_input_size(model: keras.Model, name: str, input_size: tuple[int, int] | None) -> keras.Model:
    """``model``, or a copy with its input fixed at ``input_size`` when it accepts any size."""
    shape = _image_input_shape(model)
    if shape is not None and input_size_is_variable(model):  # a variable input has a shape
        if input_size is None:
            raise NeedsInputSize(name, shape)
        if shape[3] is None:
            raise ValueError(f"the number of input channels of {name} is not fixed (input {shape})")
        try:
            return with_fixed_input(model, (*input_size, int(shape[3])))
        except Exception as exc:  # noqa: BLE001 - a Keras failure becomes a user message
            raise ValueError(
                f"could not fix the input size of {name} to {input_size[0]}×{input_size[1]}: "
                f"{_first_line(str(exc))}"
            ) from exc
    if shape is not None and input_size is not None and tuple(shape[1:3]) != input_size:
        raise ValueError(
            f"{name} fixes its input size at {shape[1]}×{shape[2]}, not {input_size[0]}×{input_size[1]}"
        )
    return model


def _class_names(name: str, n: int, class_names: Sequence[str] | None) -> tuple[str, ...]:
    if class_names is None:
        return tuple(f"class {i}" for i in range(n))
    if len(class_names) != n:
        raise ValueError(f"{name} has {n} classes but {len(class_names)} class names were given")
    return tuple(str(c) for c in class_names)



def from_backend(
    backend: Any,
    name: str,
    preprocessing: str | None = None,
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    *,
    layer: str | None = None,
    source: str = "memory",
    key: str | None = None,
    note: str = "",
) -> LoadedModel:
    """A model served by a :class:`camcore.backends.Backend` (e.g. an ONNX file) as a
    :class:`LoadedModel`; ValueError (user-facing) if it cannot be explained.

    The input size is the backend's own (a different ``input_size`` is an error);
    ``preprocessing`` None uses the backend's ``preprocessing`` attribute when it has
    one, else raises :class:`NeedsPreprocessing`.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    height, width, channels = backend.input_shape
    if input_size is not None and tuple(_check_input_size(input_size)) != (height, width):
        raise ValueError(f"{name} fixes its input size at {height}×{width}, not {input_size[0]}×{input_size[1]}")
    layer = _default_layer(backend, name) if layer is None else backend.layer_info(layer).path
    if channels not in (1, 3):
        raise ValueError(f"models with {channels} input channels are not supported (1 or 3)")
    preprocessing = _checked_preprocessing(name, preprocessing or getattr(backend, "preprocessing", None), channels,
                                           (height, width))
    return LoadedModel(name=name, model=backend, preprocessing=preprocessing, input_size=(height, width),
                       channels=channels, class_names=_class_names(name, backend.n_classes, class_names),
                       layer=layer, source=source, key=key or f"memory:{name}", note=note)


def _default_layer(model: Any, name: str) -> str:
    """The model's default layer; a ValueError naming the model when it has no spatial map."""
    try:
        return model.default_layer
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _checked_preprocessing(name: str, preprocessing: str | None, channels: int,
                           input_size: tuple[int, int] | None = None) -> str:
    if preprocessing is None:
        raise NeedsPreprocessing(name, input_size)
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"unknown preprocessing {preprocessing!r}; choose one of {sorted(PREPROCESSING_MODES)}")
    if preprocessing in ("caffe", "torch") and channels != 3:
        raise ValueError(f"{preprocessing!r} preprocessing needs an RGB model, {name} has {channels} channel(s)")
    return preprocessing


def _read_onnx_bytes(data: bytes, filename: str) -> Any:
    """An ``.onnx`` file → its :class:`~camcore.backends.onnx.OnnxBackend` (checked, dry-run), or
    the :class:`~camcore.backends.onnx_graph.OnnxGraph` of a graph that accepts any input size.
    ONNX and ONNX Runtime are imported here, when an ONNX file arrives."""
    from camcore.backends.onnx import read_onnx_bytes

    return read_onnx_bytes(data, filename)


def _describe_onnx(model: Any, name: str, preprocessing: str | None, class_names: Sequence[str] | None,
                   input_size: tuple[int, int] | None, *, source: str,
                   key: Callable[[tuple[int, int] | None], str]) -> LoadedModel:
    """An ONNX model as a LoadedModel: a graph that accepts any size is built at ``input_size``
    (:class:`NeedsInputSize` without one); preprocessing and class names default to the
    file's metadata."""
    from camcore.backends.onnx import OnnxBackend, OnnxGraph

    size = None
    if isinstance(model, OnnxGraph):
        if input_size is None:
            raise NeedsInputSize(name, model.image.shape)
        size = _check_input_size(input_size)
        model = OnnxBackend(model, size)
    return from_backend(model, name, preprocessing, class_names or model.class_names, input_size,
                        source=source, key=key(size))


register_model_format(ModelFormat("Keras", MODEL_EXTENSIONS, _read_keras_bytes, _describe_keras))
register_model_format(ModelFormat("ONNX", (ONNX_EXTENSION,), _read_onnx_bytes, _describe_onnx))
