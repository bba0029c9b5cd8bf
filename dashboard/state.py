"""Cached resources shared by the dashboard pages (and by every browser session).

Model keys
----------
A model is named by one string, the *model key*, whose grammar is
``camcore.models``' (``"demo:vgg_defect"``, ``"app:VGG16[:random]"``,
``"upload:<sha>[:<mode>[:<H>x<W>]]"``). The Compare page's sidebar resolves to one,
``get_model`` / ``get_explainer`` take one, and the Dataset page passes one in
``st.session_state["open_in_compare"]["model"]``. Uploaded files live in one
``camcore.models.UploadStore`` for the whole server (:func:`uploads`).

Sharing
-------
``get_model(key)`` and ``get_explainer(key)`` are ``st.cache_resource``: one model and
one ``camcore.Explainer`` per key for the whole server. The Explainer is thread-safe
and caches activations, gradients and Score-CAM's masked passes by image content, so
two sessions looking at the same image share work and never see each other's state.
Per-channel passes run on the server's one :func:`pass_scheduler`: sessions take turns
batch by batch, and a cached map is read without waiting for anyone's Score-CAM. With
``$RAY_ADDRESS`` set (``cam-studio run --ray-address``), those batches run on the Ray
cluster's workers (:func:`ray_pool`, ``camcore.backends.ray``), or here if it is unreachable.

The open-in-compare contract (Dataset page → Compare page)::

    st.session_state["open_in_compare"] = {
        "name": "grain_0042.png",              # shown as the image's name
        "image": uint8 array (H, W) or (H, W, 3),
        "mask": bool array (H, W) or None,     # ground truth, any resolution
        "model": "demo:vgg_defect",            # a model key (see above)
        "layer": "block5_conv3" or None,       # None: the model's default layer
        "class_index": 1 or None,              # the class to explain; None: top-1
    }
    st.switch_page("views/compare.py")
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

# the model-key grammar and the upload store are camcore's; the pages use them through here
from camcore import models
from camcore.models import (  # noqa: F401 - RANDOM and the key builders are for the pages
    RANDOM,
    LoadedModel,
    ModelKey,
    UploadStore,
    app_key,
    demo_key,
    upload_key,
)

if TYPE_CHECKING:  # annotations only: camcore.explainer imports TensorFlow
    from camcore.backends.ray import RayPool
    from camcore.explainer import CamResult, Explainer
    from camcore.prepared import Prepared
    from camcore.scheduler import PassScheduler

OPEN_IN_COMPARE = "open_in_compare"
MODEL_KINDS = ("demo", "app", "upload")  # never "file": a browser must not name server paths
MAX_UPLOADS = 4  # model files kept in memory for re-loading by key
MAX_MODELS = 4  # models (and explainers) kept loaded at once

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ model keys
def parse_model_key(key: str) -> ModelKey:
    """``camcore.models.parse_model_key``, limited to the kinds a browser may ask for."""
    parsed = models.parse_model_key(key)
    if parsed.kind not in MODEL_KINDS:
        raise ValueError(f"bad model key {key!r}: the dashboard loads only {', '.join(MODEL_KINDS)} models")
    return parsed


def list_demos() -> list[str]:
    from camcore.demos import list_demos as _list

    return _list()


def default_model_key() -> str | None:
    """The default demo model's key (None when no demo model is installed)."""
    demos = list_demos()
    return demo_key(demos[0]) if demos else None


# ------------------------------------------------------------------- the process
@st.cache_resource(show_spinner=False)
def freeze_long_lived_objects() -> bool:
    """Streamlit ends every script run (a fragment's too) with a full garbage collection
    (``runner.postScriptGC``; also keras.backend.clear_session()): over TensorFlow's ~250k
    and the other libraries' import-time objects it held the GIL for 0.15-0.44 s per rerun,
    stalling every session of the server. Those objects live as long as the process:
    gc.freeze() moves them out of the collector's sight. Called once, before any model is
    loaded (by the page, and first by the warm-up when there is one), so models and their
    traces stay collectable when they leave the caches. The imports are named here: since the
    backend split ``camcore.explainer`` no longer imports TensorFlow, and a freeze before it
    froze 91k objects and left 240k for every rerun's collection (found 2026-12-07)."""
    import gc

    import keras  # noqa: F401
    import pandas  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import pyarrow  # noqa: F401 - the data frames' transport
    import tensorflow  # noqa: F401

    import camcore.backends.keras  # noqa: F401
    import camcore.explainer  # noqa: F401

    gc.collect()
    gc.freeze()
    return True


@st.cache_resource(show_spinner=False)
def keep_compiled_passes_across_reruns() -> bool:
    """Streamlit also ends every script run with keras.backend.clear_session() (its
    ``_clean_problem_modules``, meant for apps that build Keras layers on each run). That
    empties TensorFlow's kernel cache, so the next run instantiated every compiled pass
    again: vgg_defect's grid computations took 375 ms per rerun instead of 65 ms, and a
    small uploaded model paid 25-45 ms per pass. The dashboard builds no layers per run
    (models and explainers are cached resources), so the reset only cost time. The hook
    keeps its other duty (closing pyplot figures). Evicted models still free their
    compiled passes: dropping a function removes it from TensorFlow's runtime (see
    tests/test_hardening_memory.py). Returns False if this Streamlit has no such hook."""
    import sys

    from streamlit.runtime.scriptrunner import script_runner

    if not callable(getattr(script_runner, "_clean_problem_modules", None)):
        return False

    def close_pyplot_figures() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")

    script_runner._clean_problem_modules = close_pyplot_figures
    return True


# --------------------------------------------------------------------- uploads
@st.cache_resource(show_spinner=False)
def uploads() -> UploadStore:
    """The uploaded model files of the whole server, by sha (``"upload:<sha>"`` keys)."""
    return UploadStore(MAX_UPLOADS)


def register_upload(data: bytes, filename: str) -> str:
    """Keep an uploaded model file in memory; return its sha (for ``upload_key``)."""
    return uploads().add(data, filename)


def upload_filename(sha: str) -> str | None:
    return uploads().filename(sha)


# ---------------------------------------------------------- models, explainers
@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Loading the model…")
def get_model(model_key: str) -> LoadedModel:
    """The ``camcore.LoadedModel`` for a model key (cached for the whole server).

    Raises ValueError with a user-facing message for a bad key or a bad model file, and
    its subclasses ``NeedsInputSize`` / ``NeedsPreprocessing`` when the user must choose.
    """
    parse_model_key(model_key)  # refuses file keys
    from camcore.loading import load_model

    return load_model(model_key, uploads=uploads())


DEFAULT_PRECISION = "auto"  # bf16 forward passes only where measured faster and faithful, else exact fp32


def get_explainer(model_key: str, precision: str = DEFAULT_PRECISION) -> Explainer:
    """One ``camcore.Explainer`` per (model key, precision as far as it is known without
    measuring, Ray address), shared by all sessions (it is thread-safe): "auto" and "fp32"
    share one explainer where the CPU's flags rule bf16 out."""
    from camcore.precision import resolve_precision

    return _explainer(model_key, resolve_precision(precision), precision, ray_address())


@st.cache_resource(max_entries=MAX_MODELS, show_spinner="Preparing the explainer…")
def _explainer(model_key: str, resolved: str, _requested: str, address: str | None) -> Explainer:
    from camcore.backends import as_backend
    from camcore.backends.ray import on_cluster
    from camcore.explainer import Explainer

    pool = ray_pool(address)[0] if address else None
    backend = on_cluster(as_backend(get_model(model_key).model), pool)
    return Explainer(backend, precision=_requested, scheduler=pass_scheduler())


# ------------------------------------------------------------------ Ray cluster
def ray_address() -> str | None:
    """The Ray cluster the per-channel passes go to: ``$RAY_ADDRESS`` (``cam-studio run
    --ray-address`` sets it), None to run them on this server."""
    return os.environ.get("RAY_ADDRESS") or None


@st.cache_resource(show_spinner="Connecting to the Ray cluster…")
def ray_pool(address: str) -> tuple[RayPool | None, str | None]:
    """The server's actors on the cluster at ``address`` (``camcore.backends.ray.RayPool``),
    or (None, why not): an unreachable cluster leaves the passes on this server."""
    from camcore.backends.ray import ClusterUnavailable, RayPool

    try:
        return RayPool.connect(address), None
    except (ClusterUnavailable, ImportError) as exc:
        logger.warning("per-channel passes stay on this server: %s", exc)
        return None, str(exc)


def passes_placement(explainer: Explainer) -> str:
    """Where the explainer's per-channel passes run, for the page's header (e.g.
    "per-channel passes on Ray (2 workers)", or on this server and why)."""
    from camcore.backends.ray import passes_placement as placement

    address = ray_address()
    failure = ray_pool(address)[1] if address else None
    return placement(explainer.backend, failure)


@st.cache_resource(show_spinner=False)
def pass_scheduler() -> PassScheduler:
    """The server's one scheduler of per-channel passes (camcore.scheduler): sessions take
    turns batch by batch, a cached map is read without waiting, and a request the user
    replaced stops after its current batch."""
    from camcore.scheduler import PassScheduler

    return PassScheduler()


def session_owner() -> str:
    """This browser session's id: whose turn a batch of passes is, for the scheduler."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    return context.session_id if context is not None else "script"


def model_label(model_key: str) -> str:
    """Short human name of a model key, e.g. "vgg_defect (demo)", "VGG16 (random weights)"."""
    try:
        key = parse_model_key(model_key)
    except ValueError:
        return str(model_key)
    return key.label(upload_filename(key.name) if key.kind == "upload" else None)


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
_NO_MAP = np.zeros((0, 0), np.float32)


class TimingLog:
    """How each map was first computed: CamResults by (context, method, max_n).

    A map served from the explainer's cache has no timings of its own; the timing
    chart shows the computation that produced it and marks it as cached. An entry
    may also name work another method did for it (``shared_from``): Grad-CAM++ reuses
    Grad-CAM's forward+backward pass, Score-CAM continues Faster-Score-CAM's passes.
    """

    def __init__(self, maxsize: int = 512, per_key: int = 4) -> None:
        self._data: OrderedDict[Any, list[tuple[CamResult, str | None]]] = OrderedDict()
        self._lock = threading.Lock()
        self.maxsize = maxsize
        self.per_key = per_key

    def record(self, key: Any, result: CamResult, shared_from: str | None = None) -> None:
        """Remember ``result`` (a CamResult, its map dropped: the chart needs its timings)
        under ``key``: every computed result, and a cached one only if nothing is recorded
        for ``key`` yet. At most ``maxsize`` keys and the last ``per_key`` results of each."""
        import dataclasses

        with self._lock:
            if result.cached and key in self._data:
                return
            entries = self._data.setdefault(key, [])
            entries.append((dataclasses.replace(result, cam=_NO_MAP), shared_from))
            del entries[: -self.per_key]
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Any) -> list[tuple[CamResult, str | None]]:
        """[(CamResult, shared_from or None), ...] recorded under ``key``."""
        with self._lock:
            return list(self._data.get(key, []))


@st.cache_resource(show_spinner=False)
def timing_log() -> TimingLog:
    return TimingLog()


# ------------------------------------------------------------------ model input
def prepare_input(model_key: str, bundle: LoadedModel, explainer: Explainer, choice: Any) -> Prepared:
    """The chosen image as this model's input, prepared once per page run
    (``camcore.Prepared``: preprocessed, checked and hashed a single time)."""
    return explainer.prepare(bundle.preprocess(choice.image), choice.image)
