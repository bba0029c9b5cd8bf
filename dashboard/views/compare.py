"""Compare: Grad-CAM, Grad-CAM++, Score-CAM and Faster-Score-CAM side by side.

How a page run unfolds
----------------------
1. Sidebar: model → layer → image → class → display settings (cached resources from
   ``dashboard.state``; every choice has a stable widget key).
2. The grid, progressively: the input column; Grad-CAM and Grad-CAM++ (one shared
   forward+backward pass); then the *live fragment*: the Faster-Score-CAM column runs
   only the masked passes of its max_N channels (progress bar) and shows its map; then
   Score-CAM continues from those passes to every channel (progress bar in its column).
3. Below the grid, still drawn by the live fragment: compute times, the max_N
   trade-off, threshold tuning, downloads.

Live max_N: the live fragment (``@st.fragment``) draws the max_N slider into the
sidebar, the Faster-Score-CAM column, the Score-CAM column and the analysis. Moving the
slider reruns that fragment only, not the page; the explainer's Score-CAM prefix cache
makes any max_N up to the computed channels cost no model pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # when this page is run on its own (tests)
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from dashboard import state  # noqa: E402
from dashboard.components import analysis, sidebar  # noqa: E402
from dashboard.components.common import FAILED, attempt, failed, show_error  # noqa: E402
from dashboard.components.grid import (  # noqa: E402
    View,
    column_header,
    make_view,
    input_panels,
    label,
    method_panels,
    placeholder_panels,
    result_detail,
    show_panels,
)

FSC_RESULT = "_fsc_result"  # (record key, CamResult) of the last Faster-Score-CAM call


# ------------------------------------------------------------------ computing
def compute(view: View, method: str, max_n: int | None = None, progress=None):
    """One CAM through the shared explainer; its timings are logged when computed."""
    result = view.explainer.compute(
        method, view.x, view.layer, view.class_index, max_n=max_n, progress=progress
    )
    state.timing_log().record(view.record_key(method, max_n), result)
    return result


def _passes_progress(bar, prefix: str, before: int = 0):
    def progress(done: int, total: int) -> None:
        if total > 0:
            value = min(max((before + done) / (before + total), 0.0), 1.0)
            text = f"masked passes {before + done}/{before + total}"
            bar.progress(value, text=f"{prefix}: {text}" if prefix else text)

    return progress


# -------------------------------------------------------------------- columns
def _input_column(view: View) -> None:
    column_header("Input", view.image_name)
    show_panels(input_panels(view))


def _gradient_column(view: View, method: str, shared_from=None) -> object:
    result = attempt(f"{label(method)} failed", compute, view, method)
    if failed(result):
        return result
    if shared_from is not None and not shared_from.cached and result.timings.get("forward+gradients", 1.0) == 0.0:
        state.timing_log().record(view.record_key(method), shared_from, shared_from=label("grad_cam"))
    column_header(label(method), result_detail(result))
    show_panels(method_panels(view, method, result.cam))
    return result


def _faster_score_cam(view: View, n: int) -> None:
    """The Faster-Score-CAM column at max_N = n (runs only the passes not cached)."""
    with st.container(key="fsc_header"):
        head = st.empty()
    with head.container():
        column_header(label("faster_score_cam"), f"max_N = {n} · computing…")
    bar = st.empty()
    result = attempt(
        "Faster-Score-CAM failed", compute, view, "faster_score_cam", n, _passes_progress(bar, "")
    )
    bar.empty()
    if failed(result):
        head.empty()
        return
    st.session_state[FSC_RESULT] = (view.record_key("faster_score_cam", n), result)
    with head.container():
        column_header(label("faster_score_cam"), f"max_N = {n} · {result_detail(result)}")
    with st.container(key="fsc_panels"):
        show_panels(method_panels(view, "faster_score_cam", result.cam))


def _score_cam_slots(view: View, box) -> tuple:
    """Header, progress and panel slots of the Score-CAM column ("queued" until it runs)."""
    with box:
        head, bar, panels = st.empty(), st.empty(), st.empty()
    if view.explainer.score_cam_channels_done(view.x, view.layer) < view.channels:
        with head.container():
            column_header(label("score_cam"), "queued after Faster-Score-CAM…")
        with panels.container():
            show_panels(placeholder_panels(view, "score_cam", "queued"))
    return head, bar, panels


def _score_cam(view: View, slots: tuple) -> None:
    """Full Score-CAM, continuing from whatever masked passes are cached."""
    head, bar, panels = slots
    before = view.explainer.score_cam_channels_done(view.x, view.layer)
    if before < view.channels:
        with head.container():
            column_header(label("score_cam"), f"{view.channels} channels · running…")
        with panels.container():
            show_panels(placeholder_panels(view, "score_cam", "computing"))
    result = attempt("Score-CAM failed", compute, view, "score_cam", None, _passes_progress(bar, "", before))
    bar.empty()
    if failed(result):
        head.empty()
        panels.empty()
        return
    fsc = st.session_state.get(FSC_RESULT)
    same_map = fsc is not None and fsc[0][:4] == view.record_key("score_cam")[:4]
    if same_map and not fsc[1].cached and not result.cached:
        state.timing_log().record(view.record_key("score_cam"), fsc[1], shared_from=label("faster_score_cam"))
    with head.container():
        column_header(label("score_cam"), result_detail(result))
    with panels.container():
        show_panels(method_panels(view, "score_cam", result.cam))


@st.fragment
def live(view: View, slider_box, score_box, analysis_box) -> None:
    """Everything that depends on max_N. Its widget (the slider) lives here, so a slider
    move reruns only this fragment: it redraws the Faster-Score-CAM column (its own
    body), the Score-CAM column, the slider and the analysis (containers of the page)."""
    with slider_box:
        n = sidebar.max_n_slider(view.channels, "faster_score_cam" in view.methods)
    slots = _score_cam_slots(view, score_box) if score_box is not None else None
    if "faster_score_cam" in view.methods:
        _faster_score_cam(view, n)
    if slots is not None:
        _score_cam(view, slots)
    with analysis_box:
        attempt("Could not draw the analysis", analysis.render, view, n)


def render_grid(view: View, slider_box, analysis_box) -> None:
    columns = st.columns(1 + len(view.methods), gap="small")
    with columns[0]:
        _input_column(view)
    score_box, grad_cam, fragment_drawn = None, None, False
    for column, method in zip(columns[1:], view.methods):
        with column:
            if method == "grad_cam":
                grad_cam = _gradient_column(view, method)
            elif method == "grad_cam_plus_plus":
                _gradient_column(view, method, shared_from=None if failed(grad_cam) else grad_cam)
            elif method == "score_cam":
                score_box = st.container()
            elif method == "faster_score_cam":
                live(view, slider_box, score_box, analysis_box)
                fragment_drawn = True
    if not fragment_drawn:
        with analysis_box:
            live(view, slider_box, score_box, analysis_box)


# ----------------------------------------------------------------------- page
def _load_bundle(model_key: str):
    """The model bundle, or FAILED after a message. An upload whose preprocessing or input
    size cannot be inferred gets a prompt to choose it, not an error."""
    try:
        return state.get_bundle(model_key)
    except Exception as exc:  # noqa: BLE001 - shown as a message, never a traceback
        if isinstance(exc, ValueError) and "cannot infer the input size" in str(exc):
            st.warning(
                "This model does not fix its input size: set **Input height** and **Input width** "
                "above to the size it was trained at (224 × 224 for most ImageNet models).",
                icon=":material/aspect_ratio:",
            )
        elif isinstance(exc, ValueError) and "cannot infer the preprocessing" in str(exc):
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


def build_view() -> tuple[View, object] | tuple[None, None]:
    """Run the sidebar and gather what the grid needs; None (after a message) if not ready."""
    from camcore.explainer import image_key

    sidebar.apply_open_in_compare()
    with st.sidebar:
        model_key = sidebar.model_picker()
        if model_key is None:
            return None, None
        bundle = _load_bundle(model_key)
        if failed(bundle):
            return None, None
        if bundle.note:
            st.caption(bundle.note)
        explainer = attempt("Could not prepare the model", state.get_explainer, model_key)
        if failed(explainer):
            return None, None
        default_layer = getattr(bundle, "default_layer", None) or explainer.default_layer
        layer = sidebar.layer_picker(explainer, default_layer, model_key)
        if layer is None:
            return None, None
        choice = sidebar.image_picker()
        if choice is None:
            return None, None
        x = attempt("Could not prepare the image for this model", bundle.preprocess, choice.image)
        if failed(x):
            return None, None
        image_id = image_key(x)
        top = attempt("Could not run the model", explainer.top_classes, x, explainer.n_classes)
        if failed(top):
            return None, None
        class_index = sidebar.class_picker(top, bundle.class_names, (model_key, image_id))
        controls = sidebar.display_controls()
        display = controls.display

    view = attempt(
        "Could not prepare the maps", make_view, model_key, bundle, explainer, layer, choice.name,
        choice.detail, choice.image, choice.mask, x, class_index, dict(top)[class_index], display,
    )
    if failed(view):
        return None, None
    return view, controls.max_n_slot


def _headline(view: View) -> None:
    info = view.explainer.adapter.layer_info(view.layer)
    st.markdown(
        f"**{view.model_name}** · layer `{view.layer}` ({info.height}×{info.width}×{info.channels}) · "
        f"image **{view.image_name}** · explaining **{view.class_name}** (p = {view.probability:.1%})"
    )


def main() -> None:
    st.title("CAM Studio", anchor=False)
    st.caption("Why did the classifier decide what it decided? Four class-activation-map methods, side by side.")
    view, slider_box = build_view()
    if view is None:
        st.info(
            "Choose a model and an image in the sidebar to see the comparison; any problem with your "
            "choices is explained there.",
            icon=":material/arrow_back:",
        )
        return
    _headline(view)
    if not view.methods:
        st.info("Select at least one method in the sidebar.")
        return
    grid_box = st.container(key="grid")
    st.divider()
    analysis_box = st.container(key="analysis")
    with grid_box:
        render_grid(view, slider_box, analysis_box)


main()
