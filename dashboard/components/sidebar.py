"""The Compare page's sidebar: model, layer, image, class and display controls.

Every widget has a stable ``key`` (tests and the Dataset page rely on them) and keeps
its value across a trip to the Dataset page (``persist_state="session"``). The model
upload widgets (:func:`upload_model_inputs`) and the loading with its prompts
(:func:`load_model`) serve the Dataset page too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Sequence

import numpy as np
import streamlit as st

from camcore.defaults import DEFAULT_MAX_N
from dashboard import state
from dashboard.components.common import FAILED, attempt, failed, show_error

if TYPE_CHECKING:  # annotations only: camcore.explainer imports TensorFlow
    from streamlit.delta_generator import DeltaGenerator

    from camcore.explainer import Explainer
    from camcore.samples import SampleInfo

MODEL_SOURCES = {"demo": "Demo models", "app": "Keras Applications", "upload": "Upload a model"}
IMAGE_SOURCES = {"sample": "Bundled samples", "upload": "Upload an image", "dataset": "From Dataset page"}
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"]
AUTO = "auto"
TOP_K = 5
THUMBNAIL = 96
DEFAULT_INPUT_SIZE = 224  # suggested (placeholder) input height and width for variable-size uploads
INPUT_SIZE_KEYS = ("upload_height", "upload_width")

# session-state keys that are not widgets
EXTERNAL_IMAGE = "_external_image"  # the image sent by the Dataset page
UPLOAD_SHAS = "_upload_shas"  # uploaded file id -> sha, so big files are hashed once
PENDING_LAYER = "_pending_layer"
PENDING_CLASS = "_pending_class"  # the class the Dataset page explained, for the class picker
FIXED_SIZES = "_fixed_input_sizes"  # upload sha -> (H, W) of a model that fixes its input size
PERSIST: Final = "session"  # a Literal for the widgets' persist_state


@dataclass(frozen=True)
class ImageChoice:
    name: str
    image: np.ndarray  # uint8 (H, W) or (H, W, 3), any size
    mask: np.ndarray | None  # bool ground truth, any size
    source: str  # a key of IMAGE_SOURCES
    detail: str = ""  # e.g. "scratch", shown next to the name


@dataclass(frozen=True)
class Display:
    methods: tuple[str, ...]
    threshold: float
    colormap: str
    alpha: float


def _reset_if(key: str, options: Sequence[Any], default: Any, context: Any = None) -> None:
    """Put ``default`` in the widget state when its value is gone from ``options`` or
    when ``context`` (e.g. the model) changed since the widget was last drawn."""
    marker = f"_{key}_context"
    if st.session_state.get(key) not in options or (
        context is not None and st.session_state.get(marker) != context
    ):
        st.session_state[key] = default
    if context is not None:
        st.session_state[marker] = context


# ----------------------------------------------------------- open in compare
def apply_open_in_compare() -> None:
    """Take over a request from the Dataset page (see dashboard.state's docstring)."""
    request = st.session_state.pop(state.OPEN_IN_COMPARE, None)
    if not isinstance(request, dict) or request.get("image") is None:
        return
    mask = request.get("mask")
    st.session_state[EXTERNAL_IMAGE] = ImageChoice(
        name=str(request.get("name") or "image from the Dataset page"),
        image=np.asarray(request["image"]),
        mask=None if mask is None else np.asarray(mask, bool),
        source="dataset",
    )
    st.session_state["image_source"] = "dataset"
    model = request.get("model")
    if model:
        try:
            key = state.parse_model_key(model)
        except ValueError as exc:
            st.session_state["_open_error"] = str(exc)
        else:
            st.session_state["model_source"] = key.kind
            if key.kind == "demo":
                st.session_state["demo_name"] = key.name
            elif key.kind == "app":
                st.session_state["app_name"] = key.name
                st.session_state["app_random"] = key.option == state.RANDOM
            else:
                _take_upload_options(key)
    st.session_state[PENDING_LAYER] = request.get("layer")
    st.session_state[PENDING_CLASS] = request.get("class_index")


def _take_upload_options(key: state.ModelKey) -> None:
    """An uploaded model from the Dataset page, with the preprocessing and input size it ran
    with shown in the upload widgets (not "auto" while "unit" is in use)."""
    st.session_state["_uploaded_model"] = str(key)
    st.session_state["upload_preprocessing"] = key.option or AUTO
    if key.input_size is not None:
        for name, value in zip(INPUT_SIZE_KEYS, key.input_size):
            st.session_state[name] = value


# --------------------------------------------------------------------- model
def model_picker(prefix: str = "", title: str = "Model", default_demo: str | None = None) -> str | None:
    """The chosen model key, or None (with a message) when none is usable yet. ``prefix``
    keys a second picker's widgets apart (model B: "b_"); ``default_demo`` is its first
    demo choice (default: the first demo)."""
    st.subheader(title)
    source = st.radio(
        "Model source", list(MODEL_SOURCES), format_func=MODEL_SOURCES.get, key=f"{prefix}model_source",
        label_visibility="collapsed", persist_state=PERSIST,
    )
    if not prefix and (error := st.session_state.pop("_open_error", None)):
        st.error(f"The Dataset page asked for an unknown model: {error}")
    if source == "demo":
        return _demo_picker(prefix, default_demo)
    if source == "app":
        return _application_picker(prefix)
    return _upload_model_picker(prefix)


def _demo_picker(prefix: str = "", default: str | None = None) -> str | None:
    demos = state.list_demos()
    if not demos:
        st.warning("No demo model is installed (assets/models is empty): run `make train-demos`, "
                   "or choose a Keras Application.")
        return None
    _reset_if(f"{prefix}demo_name", demos, default if default in demos else demos[0])
    name = st.selectbox("Demo model", demos, key=f"{prefix}demo_name", persist_state=PERSIST)
    return state.demo_key(name)


def _application_picker(prefix: str = "") -> str | None:
    from camcore import zoo

    names = list(zoo.APPLICATIONS)
    _reset_if(f"{prefix}app_name", names, names[0])
    name = st.selectbox("Architecture", names, key=f"{prefix}app_name", persist_state=PERSIST)
    cached = zoo.imagenet_weights_cached(name)
    if cached:
        st.caption("ImageNet weights found in the local Keras cache.")
        random = st.checkbox("Use random weights instead", key=f"{prefix}app_random", persist_state=PERSIST)
        return state.app_key(name, random)
    st.warning(
        f"ImageNet weights for {name} are not in the local Keras cache (~/.keras/models) "
        "and nothing is downloaded here.",
        icon=":material/info:",
    )
    random = st.checkbox(
        "Use random weights (architecture only: for layers and timing)", key=f"{prefix}app_random",
        persist_state=PERSIST,
    )
    if not random:
        return None
    return state.app_key(name, True)


def _uploaded_sha(file: Any) -> str:
    shas = st.session_state.setdefault(UPLOAD_SHAS, {})
    sha = shas.get(file.file_id)
    if sha is None or state.upload_filename(sha) is None:
        sha = shas[file.file_id] = state.register_upload(file.getvalue(), file.name)
    return sha


@dataclass(frozen=True)
class UploadChoice:
    """What the model-upload widgets say: the uploaded file's model key (None before a file
    is uploaded), the preprocessing (None: infer it) and the input size (None: not set)."""

    key: str | None
    preprocessing: str | None
    input_size: tuple[int, int] | None


def model_types() -> tuple[str, ...]:
    """The model file extensions camcore reads (its format registry: .keras, .h5, .hdf5, ...)."""
    from camcore.models import model_extensions

    return model_extensions()


def upload_model_inputs(prefix: str = "", earlier: str | None = None) -> UploadChoice:
    """The model upload widgets (file, preprocessing, input height and width), shared by the
    Compare sidebar (no prefix: keys "model_file", "upload_preprocessing", "upload_height",
    "upload_width") and the Dataset page (prefix "ds_"). ``earlier``: the key of a model
    uploaded earlier in the session, used while the file widget is empty. The input size
    fields give way to the model's own size once the model turned out to fix it."""
    from camcore.preprocess import PREPROCESSING_MODES

    file = st.file_uploader(
        f"Model file ({', '.join(model_types())})", type=[t.lstrip(".") for t in model_types()],
        key=f"{prefix}model_file",
        help="Keras files load in Keras safe mode (no custom code runs); every format camcore reads is accepted.",
    )
    modes = [AUTO, *PREPROCESSING_MODES]
    labels = {AUTO: "auto: infer from the model", **{k: f"{k}: {v}" for k, v in PREPROCESSING_MODES.items()}}
    preprocessing = st.selectbox(
        "Preprocessing", modes, format_func=labels.get, key=f"{prefix}upload_preprocessing", persist_state=PERSIST,
        help="How 0..255 pixels become the model's input. Asked for when it cannot be inferred.",
    )
    mode = None if preprocessing == AUTO else preprocessing
    sha = _uploaded_sha(file) if file is not None else (state.parse_model_key(earlier).name if earlier else None)
    fixed = st.session_state.get(FIXED_SIZES, {}).get(sha)
    if fixed is not None:
        st.caption(f"Input size {fixed[0]} × {fixed[1]}, fixed by the model.")
        size = None
    else:
        size = _input_size_inputs(prefix)
    key = None if file is None else state.upload_key(sha, mode, size)
    return UploadChoice(key, mode, size)


def _upload_model_picker(prefix: str = "") -> str | None:
    remembered = None if prefix else st.session_state.get("_uploaded_model")  # from the Dataset page
    choice = upload_model_inputs(prefix, remembered)
    if choice.key is not None:
        return choice.key
    if remembered:
        key = state.parse_model_key(remembered)
        filename = state.upload_filename(key.name)
        if filename is not None:
            st.caption(f"Using {filename}, uploaded on the Dataset page.")
            return state.upload_key(key.name, choice.preprocessing or key.option, choice.input_size or key.input_size)
    st.info("Upload an image classifier (" + ", ".join(model_types()) + ").")
    return None


def _input_size_inputs(prefix: str = "") -> tuple[int, int] | None:
    """Input height and width for a model that does not fix its input size: (H, W) once
    both are set, else None. Empty at first, so such a model prompts for them (the Compare
    page's warning) instead of silently running at a size nobody chose."""
    from camcore.models import MAX_INPUT_SIZE, MIN_INPUT_SIZE

    help_text = (
        "Used only when the model accepts any size (e.g. keras.Input((None, None, 3))): images "
        f"are resized to it. A model with a fixed input size ignores it. Typical: {DEFAULT_INPUT_SIZE}."
    )
    values = []
    for column, label, key in zip(st.columns(2), ("Input height", "Input width"), INPUT_SIZE_KEYS):
        with column:
            values.append(st.number_input(
                label, min_value=MIN_INPUT_SIZE, max_value=MAX_INPUT_SIZE, value=None, step=1,
                placeholder=str(DEFAULT_INPUT_SIZE), key=f"{prefix}{key}", persist_state=PERSIST, help=help_text,
            ))
    if any(v is None for v in values):
        return None
    return int(values[0]), int(values[1])


def load_model(model_key: str):
    """The model bundle (``state.get_model``), or FAILED after a message. An upload whose
    preprocessing or input size cannot be inferred gets a prompt to choose it (in the upload
    widgets above), not an error. Shared by the Compare and Dataset pages."""
    from camcore.models import NeedsInputSize, NeedsPreprocessing

    try:
        loaded = state.get_model(model_key)
    except Exception as exc:  # noqa: BLE001 - shown as a message, never a traceback
        if isinstance(exc, NeedsInputSize):
            st.warning(
                "This model does not fix its input size: set **Input height** and **Input width** "
                "above to the size it was trained at (224 × 224 for most ImageNet models).",
                icon=":material/aspect_ratio:",
            )
        elif isinstance(exc, NeedsPreprocessing):
            if exc.input_size is not None:
                _note_fixed_size(model_key, exc.input_size)
            st.warning(
                "This model does not say how its input is scaled: choose its **Preprocessing** above "
                "(VGG16/ResNet50: caffe; MobileNet/Xception: symmetric; DenseNet: torch; "
                "own Rescaling layer: none).",
                icon=":material/tune:",
            )
        else:
            show_error("Could not load the model", exc)
            if state.parse_model_key(model_key).kind == "upload":
                st.caption("Fix the file or pick another model: the rest of the app keeps working.")
        return FAILED
    _note_fixed_size(model_key, loaded.input_size)
    return loaded


def _note_fixed_size(model_key: str, input_size: Sequence[int]) -> None:
    """Remember that an uploaded model fixes its input size (it took ``input_size`` without
    being given one, or with another than asked), and rerun once so that its size fields
    give way to that size."""
    key = state.parse_model_key(model_key)
    size = (int(input_size[0]), int(input_size[1]))
    if key.kind != "upload" or (key.input_size is not None and tuple(key.input_size) == size):
        return
    known = st.session_state.setdefault(FIXED_SIZES, {})
    if key.name not in known:
        known[key.name] = size
        st.rerun()


# ----------------------------------------------------------- second model
COMPARE_B = "compare_b"  # the toggle's key
B_PREFIX = "b_"  # model B's widgets: "b_model_source", "b_demo_name", "b_model_file", "b_layer", ...


def second_model_toggle() -> bool:
    """Whether to compare the model with a second one (off by default)."""
    return bool(st.toggle(
        "Compare with a second model", key=COMPARE_B, persist_state=PERSIST,
        help="Model B explains the same image: per method, A's map, B's map, their difference and how far "
        "they agree (correlation, IoU of the thresholded regions, peaks in the defect). For a retrained, "
        "exported or candidate model against the one you know.",
    ))


def precision_toggle() -> str:
    """"fp32" when the user asks for exact passes, else the dashboard's default ("auto")."""
    from camcore.precision import detect_bf16

    support = detect_bf16()
    exact = st.toggle(
        "exact (fp32)", key="exact_fp32", persist_state=PERSIST,
        help="Score-CAM, Faster-Score-CAM and Ablation-CAM run many forward passes. By default "
        "(auto) they use a bfloat16 copy of the model only where a short probe on this model and "
        "layer measured bf16 clearly faster than fp32 and faithful to it (the header says what it "
        "measured). This server: "
        + ("its CPU has bf16 instructions, so auto measures each model once"
           if support.native else f"fp32, nothing to measure ({support.reason})")
        + ". Gradient methods are always fp32. Switch on for exact fp32 everywhere.",
    )
    return "fp32" if exact else state.DEFAULT_PRECISION


# --------------------------------------------------------------------- layer
def layer_picker(explainer: Explainer, default: str, model_key: str, key: str = "layer") -> str | None:
    """A layer with a spatial map (nested layers by path), camcore's default first chosen.
    ``key``: the widget's (model B's picker: "b_layer"); the Dataset page's request goes to
    the main picker only."""
    infos = [info for info in explainer.layers if info.spatial]
    if not infos:
        st.error("This model has no layer with a spatial map: CAMs cannot be computed.")
        return None
    options = [info.path for info in infos]
    labels = {info.path: f"{info.path} · {info.height}×{info.width}×{info.channels}" for info in infos}
    by_path = {info.path: info for info in infos}
    pending = st.session_state.pop(PENDING_LAYER, None) if key == "layer" else None
    if default not in options:
        default = options[-1]
    _reset_if(key, options, default, context=model_key)
    if pending in options:
        st.session_state[key] = pending
    layer = st.selectbox(
        "Layer", options, format_func=labels.get, key=key, persist_state=PERSIST,
        help="Every layer with an H×W×channels map; nested models' layers appear by path. "
        "The default is camcore's proposal: the last layer with a spatial map.",
    )
    info = by_path[layer]
    st.caption(
        f"{info.class_name} · {info.channels} channels"
        + (" · default layer" if layer == default else f" · default: `{default}`")
    )
    return layer


def fuse_layers_picker(explainer: Explainer, layer: str, model_key: str) -> tuple[str, ...]:
    """Layers to fuse with ``layer`` for the one-pass methods (empty: no fusion)."""
    options = [info.path for info in explainer.layers if info.spatial and info.path != layer]
    marker, context = "_fuse_layers_context", (model_key, layer)
    if st.session_state.get(marker) != context:
        st.session_state.pop("fuse_layers", None)  # another model or layer: start unfused
    st.session_state[marker] = context
    chosen = st.multiselect(
        "Fuse layers", options, key="fuse_layers", placeholder="none: the layer above only", persist_state=PERSIST,
        help="Gradient and activation methods are computed on each of these layers and the layer "
        "above, each map upsampled to the input and scaled to [0, 1], then averaged (finer layers "
        "give finer maps). Score-CAM, Faster-Score-CAM and Ablation-CAM stay on the layer above: "
        "they cost one pass per channel.",
    )
    ordered = [path for path in (info.path for info in explainer.layers) if path in set(chosen) | {layer}]
    return tuple(ordered) if len(ordered) > 1 else ()


# --------------------------------------------------------------------- image
def _sample_label(info: SampleInfo) -> str:
    return (info.defect or "defective") if info.defective else "clean"


@st.cache_data(max_entries=32, show_spinner=False)
def _thumbnail(name: str) -> bytes:
    from camcore.preprocess import resize_for_model
    from camcore.visualize import png_bytes

    image, _ = state.load_sample(name)
    return png_bytes(resize_for_model(image, (THUMBNAIL, THUMBNAIL), 1)[..., 0])


def image_picker() -> ImageChoice | None:
    st.subheader("Image")
    external = st.session_state.get(EXTERNAL_IMAGE)
    sources = ["sample", "upload"] + (["dataset"] if external is not None else [])
    _reset_if("image_source", sources, "sample")
    source = st.radio(
        "Image source", sources, format_func=IMAGE_SOURCES.get, key="image_source",
        label_visibility="collapsed", persist_state=PERSIST,
    )
    if source == "dataset":
        st.caption(f"{external.name}" + (" · with ground truth" if external.mask is not None else ""))
        return external
    if source == "upload":
        return _uploaded_image()
    return _sample_picker()


def _sample_picker() -> ImageChoice | None:
    index = state.sample_index()
    textures = list(dict.fromkeys(info.texture for info in index))
    if not textures:
        st.warning("No bundled samples found.")
        return None
    _reset_if("texture", textures, textures[0])
    texture = st.selectbox(
        "Texture", textures, format_func=str.capitalize, key="texture", bind="query-params",
        persist_state=PERSIST,
    )
    group = sorted((i for i in index if i.texture == texture), key=lambda i: not i.defective)
    names = [info.name for info in group]
    labels = {info.name: _sample_label(info) for info in group}
    columns = st.columns(len(group), gap="small")
    for column, info in zip(columns, group):
        column.image(_thumbnail(info.name), caption=labels[info.name], width="stretch", output_format="PNG")
    _reset_if("sample", names, names[0])
    name = st.radio(
        "Sample", names, format_func=labels.get, key="sample", horizontal=True,
        label_visibility="collapsed", bind="query-params", persist_state=PERSIST,
    )
    info = next(i for i in group if i.name == name)
    loaded = attempt("Could not read the sample", state.load_sample, name)
    if failed(loaded):
        return None
    image, mask = loaded
    return ImageChoice(name=name, image=image, mask=mask, source="sample", detail=_sample_label(info))


@st.cache_data(max_entries=8, show_spinner=False)
def _decode(data: bytes) -> np.ndarray:
    from camcore.preprocess import read_image

    return read_image(data)


def _uploaded_image() -> ImageChoice | None:
    file = st.file_uploader(
        "Image (PNG, JPEG, BMP, TIFF; gray, RGB or RGBA; 8 or 16 bit)", type=IMAGE_TYPES, key="image_file",
    )
    if file is None:
        st.info("Upload an image; it is resized to the model's input.")
        return None
    image = attempt(f"Could not read {file.name}", _decode, file.getvalue())
    if failed(image):
        return None
    return ImageChoice(name=file.name, image=image, mask=None, source="upload")


# --------------------------------------------------------------------- class
def class_picker(top: list[tuple[int, float]], class_names: Sequence[str], context: Any) -> int:
    """The class to explain: any class, ordered by probability, top-1 by default (the
    Dataset page's explained class for an image it opened)."""
    st.subheader("Class")

    def name(index: int) -> str:
        return str(class_names[index]) if 0 <= index < len(class_names) else f"class {index}"

    options = [index for index, _ in top]
    probability = dict(top)
    _reset_if("class", options, options[0], context=context)
    pending = st.session_state.pop(PENDING_CLASS, None)  # the class the Dataset page explained
    if pending in options:
        st.session_state["class"] = pending
    choice = st.selectbox(
        "Class to explain", options, key="class", persist_state=PERSIST,
        format_func=lambda i: f"{name(i)} — {probability[i]:.1%}",
        help="Every class, most probable first. The CAMs explain this class's score (its logit).",
    )
    st.caption("Top: " + " · ".join(f"{name(i)} {p:.1%}" for i, p in top[: min(TOP_K, len(top))]))
    return int(choice)


# ------------------------------------------------------------------- display
@dataclass(frozen=True)
class Controls:
    display: Display
    max_n_slot: DeltaGenerator  # sidebar container the live fragment draws the max_N slider into


def display_controls() -> Controls:
    """Methods to show, a place for max_N, threshold, colormap and opacity."""
    from camcore.methods import METHODS, ORIGINAL_STUDY
    from camcore.visualize import COLORMAPS

    st.subheader("Display")
    methods = st.pills(
        "Methods", list(METHODS), selection_mode="multi", default=list(ORIGINAL_STUDY), key="methods",
        format_func=lambda k: METHODS[k].label, persist_state=PERSIST,
        help="Each selected method is a column of the grid. " + " · ".join(
            f"{spec.label}: {spec.definition} ({spec.reference})" for spec in METHODS.values()
        ),
    )
    max_n_slot = st.container()
    threshold = st.slider(
        "Heatmap threshold", 0.0, 1.0, 0.5, 0.05, key="threshold", persist_state=PERSIST,
        help="Regions with map ≥ threshold form the thresholded view and the IoU/Dice numbers.",
    )
    colormap = st.selectbox("Colormap", list(COLORMAPS), key="colormap", persist_state=PERSIST)
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="alpha", persist_state=PERSIST)
    ordered = tuple(k for k in METHODS if k in (methods or []))
    return Controls(Display(ordered, float(threshold), str(colormap), float(alpha)), max_n_slot)


MAX_N_LABEL = "max_N (Faster-Score-CAM channels)"
MAX_N_RANGE = "_max_n_range"  # the slider's last maximum


def max_n_slider(channels: int, enabled: bool) -> int:
    """The max_N slider (1 … the layer's channel count). Drawn by the live fragment, so
    moving it reruns only that fragment."""
    value = st.session_state.get("max_n")
    valid = isinstance(value, int) and 1 <= value <= channels
    # A slider whose range changed (another model or layer, a second model) is a new widget
    # to the browser, which then sent its minimum: max_N fell to 1. So the value is set again
    # when the range changes; not on every run, where it would undo keys the user pressed
    # while the fragment ran.
    if not valid or st.session_state.get(MAX_N_RANGE) != channels:
        st.session_state["max_n"] = value if valid else min(DEFAULT_MAX_N, channels)
    st.session_state[MAX_N_RANGE] = channels
    if channels < 2:
        st.caption("max_N: this layer has a single channel.")
        return 1
    return int(
        st.slider(
            MAX_N_LABEL, 1, channels, key="max_n", disabled=not enabled, persist_state=PERSIST,
            help="Faster-Score-CAM runs masked passes only for the max_N channels of largest activation "
            "std. Moving it reuses Score-CAM's cached passes: no new model pass when they cover it.",
        )
    )
