"""Cached resources shared by the dashboard pages (and by every browser session).

Model-choice keys
-----------------
A model is named by one string, the *model key*. The Compare page's sidebar resolves
to one, ``get_bundle`` / ``get_explainer`` take one, and the Dataset page passes one
in ``st.session_state["open_in_compare"]["model"]``:

===================================  ============================================================
``"demo:<name>"``                    a bundled demo model, e.g. ``"demo:vgg_defect"``
                                     (``camcore.demos.list_demos()`` lists them)
``"app:<Name>"``                     a Keras Application with ImageNet weights from the local Keras
                                     cache, e.g. ``"app:VGG16"`` (only when
                                     ``camcore.zoo.imagenet_weights_cached(Name)``)
``"app:<Name>:random"``              the same architecture with random weights (layers and timing)
``"upload:<sha>"``                   a model file registered with :func:`register_upload`,
                                     preprocessing inferred by ``camcore.zoo.bundle_from_model``
``"upload:<sha>:<mode>"``            the same with preprocessing ``<mode>``, a key of
                                     ``camcore.PREPROCESSING_MODES`` ("unit", "symmetric", ...)
``"upload:<sha>:<mode>:<H>x<W>"``    the same with input size H×W (e.g. ``"upload:ab12:unit:224x224"``,
                                     or ``"upload:ab12:-:224x224"`` with the preprocessing inferred);
                                     used only when the model's input size is not fixed
                                     (``keras.Input((None, None, 3))``), ignored otherwise
===================================  ============================================================

``parse_model_key`` validates a key; ``demo_key`` / ``app_key`` / ``upload_key`` build one.

Sharing
-------
``get_bundle(key)`` and ``get_explainer(key)`` are ``st.cache_resource``: one model and
one ``camcore.Explainer`` per key for the whole server. The Explainer is thread-safe
and caches activations, gradients and Score-CAM's masked passes by image content, so
two sessions looking at the same image share work and never see each other's state.

The open-in-compare contract (Dataset page → Compare page)::

    st.session_state["open_in_compare"] = {
        "name": "grain_0042.png",              # shown as the image's name
        "image": uint8 array (H, W) or (H, W, 3),
        "mask": bool array (H, W) or None,     # ground truth, any resolution
        "model": "demo:vgg_defect",            # a model key (see above)
        "layer": "block5_conv3" or None,       # None: the model's default layer
    }
    st.switch_page("views/compare.py")
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

OPEN_IN_COMPARE = "open_in_compare"
MODEL_KINDS = ("demo", "app", "upload")
RANDOM = "random"
MAX_UPLOADS = 4  # model files kept in memory for re-loading by key
MAX_MODELS = 4  # models (and explainers) kept loaded at once


# ------------------------------------------------------------------ model keys
INFERRED = "-"  # upload keys with an input size: preprocessing inferred from the model
_SIZE = re.compile(r"([0-9]{1,4})x([0-9]{1,4})")


@dataclass(frozen=True)
class ModelKey:
    kind: str  # "demo" | "app" | "upload"
    name: str  # demo name, application name, or upload sha
    option: str | None = None  # "random" for apps, a preprocessing mode for uploads
    input_size: tuple[int, int] | None = None  # uploads only: (H, W) for a variable-size model

    def __str__(self) -> str:
        text = f"{self.kind}:{self.name}"
        if self.input_size is not None:
            height, width = self.input_size
            return f"{text}:{self.option or INFERRED}:{height}x{width}"
        return text + (f":{self.option}" if self.option else "")


def _parse_size(text: str, key: str) -> tuple[int, int]:
    from camcore.zoo import MAX_INPUT_SIZE, MIN_INPUT_SIZE

    found = _SIZE.fullmatch(text)
    size = (int(found[1]), int(found[2])) if found else None
    if size is None or not all(MIN_INPUT_SIZE <= v <= MAX_INPUT_SIZE for v in size):
        raise ValueError(
            f"bad model key {key!r}: the input size must be <H>x<W>, each from "
            f"{MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, got {text!r}"
        )
    return size


def parse_model_key(key: str) -> ModelKey:
    """Split and validate a model key; ValueError with a readable message otherwise."""
    if not isinstance(key, str):
        raise ValueError(f"a model key must be a string, got {type(key).__name__}")
    parts = key.split(":")
    sizes = (2, 3, 4) if parts[0] == "upload" else (2, 3)
    if len(parts) not in sizes or parts[0] not in MODEL_KINDS or not parts[1]:
        raise ValueError(
            f"bad model key {key!r}: expected 'demo:<name>', 'app:<Name>[:random]' "
            "or 'upload:<sha>[:<preprocessing>[:<H>x<W>]]'"
        )
    option = parts[2] if len(parts) >= 3 else None
    input_size = None
    if parts[0] == "demo" and option is not None:
        raise ValueError(f"bad model key {key!r}: demo keys have no option")
    if parts[0] == "app" and option not in (None, RANDOM):
        raise ValueError(f"bad model key {key!r}: the only application option is ':random'")
    if parts[0] == "upload":
        if len(parts) == 4:
            input_size = _parse_size(parts[3], key)
            option = None if option == INFERRED else option
        if option is not None:
            from camcore.preprocess import PREPROCESSING_MODES

            if option not in PREPROCESSING_MODES:
                raise ValueError(f"bad model key {key!r}: unknown preprocessing {option!r}")
    return ModelKey(parts[0], parts[1], option, input_size)


def demo_key(name: str) -> str:
    return str(ModelKey("demo", name))


def app_key(name: str, random_weights: bool = False) -> str:
    return str(ModelKey("app", name, RANDOM if random_weights else None))


def upload_key(sha: str, preprocessing: str | None = None, input_size: tuple[int, int] | None = None) -> str:
    size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
    return str(ModelKey("upload", sha, preprocessing, size))


def list_demos() -> list[str]:
    from camcore.demos import list_demos as _list

    return _list()


def default_model_key() -> str | None:
    """The default demo model's key (None when no demo model is installed)."""
    demos = list_demos()
    return demo_key(demos[0]) if demos else None


# --------------------------------------------------------------------- uploads
_uploads: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
_uploads_lock = threading.Lock()


def register_upload(data: bytes, filename: str) -> str:
    """Keep an uploaded model file in memory; return its sha (for ``upload_key``)."""
    sha = hashlib.sha256(bytes(data)).hexdigest()[:20]
    with _uploads_lock:
        _uploads[sha] = (bytes(data), str(filename))
        _uploads.move_to_end(sha)
        while len(_uploads) > MAX_UPLOADS:
            _uploads.popitem(last=False)
    return sha


def upload_filename(sha: str) -> str | None:
    with _uploads_lock:
        entry = _uploads.get(sha)
    return None if entry is None else entry[1]


def _upload_bytes(sha: str) -> tuple[bytes, str]:
    with _uploads_lock:
        entry = _uploads.get(sha)
    if entry is None:
        raise ValueError("the uploaded model is no longer in memory: please upload it again")
    return entry


# ---------------------------------------------------------- models, explainers
@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Loading the model…")
def get_bundle(model_key: str):
    """The ``camcore.zoo.ModelBundle`` for a model key (cached for the whole server).

    Raises ValueError with a user-facing message for a bad key or a bad model file.
    """
    from camcore import zoo

    key = parse_model_key(model_key)
    if key.kind == "demo":
        if key.name not in list_demos():
            raise ValueError(f"unknown demo model {key.name!r}; available: {list_demos()}")
        return zoo.demo_bundle(key.name)
    if key.kind == "app":
        if key.name not in zoo.APPLICATIONS:
            raise ValueError(f"unknown Keras application {key.name!r}; choose one of {list(zoo.APPLICATIONS)}")
        return zoo.load_application(key.name, weights=RANDOM if key.option == RANDOM else "imagenet")
    data, filename = _upload_bytes(key.name)
    model = zoo.load_model_bytes(data, filename)
    # the key's input size is for models that do not fix theirs; a fixed one wins
    size = key.input_size if zoo.input_size_is_variable(model) else None
    return zoo.bundle_from_model(model, filename, preprocessing=key.option, input_size=size)


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Preparing the explainer…")
def get_explainer(model_key: str):
    """One ``camcore.Explainer`` per model key, shared by all sessions (it is thread-safe)."""
    from camcore.explainer import Explainer

    return Explainer(get_bundle(model_key).model)


def model_label(model_key: str) -> str:
    """Short human name of a model key, e.g. "vgg_defect (demo)", "VGG16 (random weights)"."""
    try:
        key = parse_model_key(model_key)
    except ValueError:
        return str(model_key)
    if key.kind == "demo":
        return f"{key.name} (demo)"
    if key.kind == "app":
        return f"{key.name} ({'random weights' if key.option == RANDOM else 'ImageNet'})"
    return f"{upload_filename(key.name) or 'uploaded model'} (upload)"


# ---------------------------------------------------------------------- samples
@st.cache_resource(show_spinner=False)
def sample_index() -> list:
    """The bundled samples (``camcore.samples.SampleInfo``), in index order."""
    from camcore.samples import load_sample_index

    return load_sample_index()


def sample_by_name(name: str):
    for info in sample_index():
        if info.name == name:
            return info
    raise ValueError(f"unknown sample {name!r}")


@st.cache_data(max_entries=32, show_spinner=False)
def load_sample(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A bundled sample's uint8 image and bool mask (None when clean), by name only."""
    from camcore.samples import load_sample as _load

    return _load(sample_by_name(name))


# --------------------------------------------------------------- timing records
class TimingLog:
    """How each map was first computed: CamResults by (context, method, max_n).

    A map served from the explainer's cache has no timings of its own; the timing
    chart shows the computation that produced it and marks it as cached. An entry
    may also name work another method did for it (``shared_from``): Grad-CAM++ reuses
    Grad-CAM's forward+backward pass, Score-CAM continues Faster-Score-CAM's passes.
    """

    def __init__(self, maxsize: int = 512) -> None:
        self._data: OrderedDict[Any, list] = OrderedDict()
        self._lock = threading.Lock()
        self.maxsize = maxsize

    def record(self, key: Any, result: Any, shared_from: str | None = None) -> None:
        """Remember ``result`` (a CamResult) under ``key``: every computed result, and a
        cached one only if nothing is recorded for ``key`` yet."""
        with self._lock:
            if result.cached and key in self._data:
                return
            self._data.setdefault(key, []).append((result, shared_from))
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get(self, key: Any) -> list[tuple[Any, str | None]]:
        """[(CamResult, shared_from or None), ...] recorded under ``key``."""
        with self._lock:
            return list(self._data.get(key, []))


@st.cache_resource(show_spinner=False)
def timing_log() -> TimingLog:
    return TimingLog()
