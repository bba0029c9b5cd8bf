"""Warm the default page while the server starts, so the first visitor does not wait.

A fresh server's first grid used to take 8-9 s: importing TensorFlow, loading the
demo model, tracing every compiled pass, computing the maps. ``start()`` does all of
that in a background thread of the server process (``cam-studio run`` calls it before
Streamlit serves): the model and explainer land in the same ``st.cache_resource``
entries the page reads, and the default sample's maps land in the explainer's caches,
so the first page run finds them ready. The page never waits for the thread: if a
visitor arrives first, the page simply computes what is still missing itself.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

_started = threading.Event()


def warm_default_page() -> None:
    """Load the default model and compute the default page's maps (what a first visit needs)."""
    from camcore.methods import ORIGINAL_STUDY
    from dashboard import state

    state.freeze_long_lived_objects()  # before the model: it must stay collectable
    model_key = state.default_model_key()
    if model_key is None:
        return
    loaded = state.get_model(model_key)
    explainer = state.get_explainer(model_key, state.DEFAULT_PRECISION)
    info = state.sample_index()[0]  # the page's default sample
    from camcore.samples import load_sample

    image, _ = load_sample(info)
    prepared = explainer.prepare(loaded.preprocess(image), image)
    layer = loaded.default_layer
    top = explainer.top_classes(prepared, explainer.n_classes)
    explainer.guided_backprop(prepared, top[0][0])
    for method in ORIGINAL_STUDY:
        explainer.compute(method, prepared, layer, top[0][0])
    prepay_first_page_run()


def prepay_first_page_run() -> None:
    """What a process's first page run paid once and later runs did not (measured on
    2026-12-07: 1.17 s against 0.26 s), paid here instead: Streamlit's emoji catalog, which
    the page icon's check loads (0.25 s), and the map from every loaded module to its file
    that Python's ``inspect`` builds the first time a call stack is walked, as Streamlit
    does at a process's first element to tell how it was started (0.5 s with TensorFlow
    loaded; later walks only map modules loaded since), and the Compare page's own modules
    (~0.2 s; imported here, not by ``dashboard.state``, which they import)."""
    import inspect

    import streamlit.emojis  # noqa: F401

    from dashboard.components import analysis, pair, sidebar  # noqa: F401

    inspect.stack()


def _run() -> None:
    try:
        warm_default_page()
    except Exception:  # noqa: BLE001 - a failed warm-up only means a slower first page
        logger.warning("warming the default page failed; the first visit computes it", exc_info=True)


def start() -> threading.Thread | None:
    """Start the warm-up once per process, in a daemon thread; returns it (None if started)."""
    if _started.is_set():
        return None
    _started.set()
    thread = threading.Thread(target=_run, name="camstudio-warmup", daemon=True)
    thread.start()
    return thread
