"""Compare: CAM methods side by side on one image, one column per method.

The columns are the methods chosen in the sidebar, any of ``camcore.methods.METHODS``
(nine today: the gradient, activation and masked-pass families); the default is
``camcore.methods.ORIGINAL_STUDY``, the four methods of the 2019 Faster-Score-CAM study
(Grad-CAM, Grad-CAM++, Score-CAM, Faster-Score-CAM). More than ``MAX_METHOD_COLUMNS``
methods wrap into further rows of columns, each led by the input column. The rows of
each column are ``dashboard.components.grid.ROWS``.

How a page run unfolds
----------------------
1. Sidebar: model → layer → image → class → display settings (cached resources from
   ``dashboard.state``; every choice has a stable widget key).
2. The grid, progressively: the input column; the one-pass methods (gradient and
   activation families: one shared forward+backward pass, or one forward pass); then the
   *live fragment*: a max_N method (Faster-Score-CAM) runs only the masked passes of its
   max_N channels (progress bar) and shows its map; then the per-channel methods
   (Score-CAM, Ablation-CAM), queued in their columns until then, run with a progress bar
   each; Score-CAM continues from the masked passes Faster-Score-CAM already ran.
3. Below the grid, still drawn by the live fragment: compute times, the max_N
   trade-off, threshold tuning, the sanity check, downloads.

Compare with a second model (the sidebar's toggle, off by default): model B, from any
source the sidebar offers and with its own layer, explains the same image
(``dashboard.components.pair``). Each method's column then shows A's overlay, B's overlay
and their signed difference (``pair.PAIR_ROWS``) over a small agreement table; the
one-pass methods run A then B at once, the max_N and per-channel methods (B's after A's)
in the live fragment :func:`live_pair`, and below the grid come the agreement of every
method and the comparison's downloads. The guided and Sobel rows, the timing, trade-off,
threshold and sanity sections are the single-model page's.

Live max_N: the live fragment (``@st.fragment``) draws the max_N slider into the
sidebar, the max_N columns, the per-channel columns and the analysis. Moving the
slider reruns that fragment only, not the page; the explainer's Score-CAM prefix cache
makes any max_N up to the computed channels cost no model pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from camcore.methods import METHODS
from dashboard import state
from dashboard.components import analysis, pair, sidebar
from dashboard.components.common import attempt, failed
from dashboard.components.computing import compute, passes_progress
from dashboard.components.grid import (
    MAX_METHOD_COLUMNS,
    View,
    column_header,
    input_panels,
    label,
    make_view,
    method_help,
    method_panels,
    precision_text,
    result_detail,
    show_panels,
    show_placeholders,
)

if TYPE_CHECKING:  # annotations only: camcore.explainer imports TensorFlow
    from streamlit.delta_generator import DeltaGenerator

    from camcore.explainer import CamResult, Explainer
    from camcore.models import LoadedModel
    from dashboard.components.pair import Pair, SecondModel

Slots = tuple["DeltaGenerator", "DeltaGenerator", "DeltaGenerator"]  # a column's header, progress bar, panels


# ------------------------------------------------------------------ computing
class _Sharing:
    """Remembers, within one run, the first result of each family, so that a method that
    reused its passes can show whose they were in the timing chart."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, CamResult]] = {}

    def note(self, view: View, method: str, result: CamResult, max_n: int | None = None) -> None:
        family = METHODS[method].family
        earlier = self.first.get(family)
        if earlier is None:
            if not result.cached:
                self.first[family] = (method, result)
            return
        if result.reused and not earlier[1].cached:
            state.timing_log().record(view.record_key(method, max_n), earlier[1], shared_from=label(earlier[0]))


# -------------------------------------------------------------------- columns
def _input_column(view: View) -> None:
    column_header("Input", view.image_name)
    show_panels(input_panels(view))


def _header(view: View, method: str, detail: str) -> None:
    column_header(label(method), detail, help=method_help(method))


def _one_pass_column(view: View, method: str, sharing: _Sharing) -> None:
    """A method that costs one pass per layer (gradient and activation families)."""
    result = attempt(f"{label(method)} failed", compute, view, method)
    if failed(result):
        return
    sharing.note(view, method, result)
    _header(view, method, result_detail(result))
    show_panels(method_panels(view, method, result.cam))


def _unavailable_column(view: View, method: str, reason: str) -> None:
    """A method this model cannot serve (e.g. a gradient method on an ONNX model): its
    column says why, with gray tiles keeping the rows aligned."""
    _header(view, method, reason)
    show_placeholders(view, method, "not available", waiting=False)


def _max_n_column(view: View, method: str, n: int, sharing: _Sharing) -> None:
    """A max_N method (Faster-Score-CAM) at max_N = n (runs only the passes not cached)."""
    with st.container(key=f"{method}_header"):
        head = st.empty()
    with head.container():
        _header(view, method, f"max_N = {n} · computing…")
    bar = st.empty()
    result = attempt(f"{label(method)} failed", compute, view, method, n, passes_progress(bar))
    bar.empty()
    if failed(result):
        head.empty()
        return
    sharing.note(view, method, result, n)
    with head.container():
        _header(view, method, f"max_N = {result.max_n} · {result_detail(result)}")
    with st.container(key=f"{method}_panels"):
        show_panels(method_panels(view, method, result.cam))


def _queued_slots(view: View, method: str, box: DeltaGenerator) -> Slots:
    """Header, progress and panel slots of a per-channel method ("queued" until it runs)."""
    with box:
        head, bar, panels = st.empty(), st.empty(), st.empty()
    if view.explainer.peek(method, view.x, view.layers_for(method), view.class_index) is None:
        with head.container():
            _header(view, method, "queued…")
        with panels.container():
            show_placeholders(view, method, "queued")
    return head, bar, panels


def _per_channel_column(view: View, method: str, slots: Slots, sharing: _Sharing) -> None:
    """Score-CAM, Ablation-CAM: one pass per channel, with progress; Score-CAM continues
    from whatever masked passes a max_N method already ran."""
    head, bar, panels = slots
    if view.explainer.peek(method, view.x, view.layers_for(method), view.class_index) is None:
        with head.container():
            _header(view, method, f"{view.channels} channels · running…")
        with panels.container():
            show_placeholders(view, method, "computing")
    before = view.explainer.score_cam_channels_done(view.x, view.layer) if method == "score_cam" else 0
    result = attempt(f"{label(method)} failed", compute, view, method, None, passes_progress(bar, before))
    bar.empty()
    if failed(result):
        head.empty()
        panels.empty()
        return
    sharing.note(view, method, result)
    with head.container():
        _header(view, method, result_detail(result))
    with panels.container():
        show_panels(method_panels(view, method, result.cam))


@st.fragment
def live(view: View, slider_box: DeltaGenerator, max_n_boxes: dict[str, DeltaGenerator],
         per_channel: dict[str, DeltaGenerator], analysis_box: DeltaGenerator) -> None:
    """Everything that depends on max_N. Its widget (the slider) lives here, so a slider
    move reruns only this fragment: it redraws the max_N columns (the first one is its own
    body), the per-channel columns queued behind them (their passes are cached after the
    first run), the slider and the analysis (containers of the page)."""
    max_n_methods = [m for m in view.methods if METHODS[m].uses_max_n]
    with slider_box:
        n = sidebar.max_n_slider(view.channels, bool(max_n_methods))
    sharing = _Sharing()
    slots = {method: _queued_slots(view, method, box) for method, box in per_channel.items()}
    for method in max_n_methods:
        box = max_n_boxes.get(method)
        if box is None:  # the fragment's own body
            _max_n_column(view, method, n, sharing)
        else:
            with box:
                _max_n_column(view, method, n, sharing)
    for method, method_slots in slots.items():
        _per_channel_column(view, method, method_slots, sharing)
    with analysis_box:
        attempt("Could not draw the analysis", analysis.render, view, n)


def _rows_of_methods(methods: tuple[str, ...]) -> list[tuple[str, ...]]:
    size = MAX_METHOD_COLUMNS
    return [methods[i : i + size] for i in range(0, len(methods), size)] or [()]


def render_grid(view: View, slider_box: DeltaGenerator, analysis_box: DeltaGenerator) -> None:
    """One column per method, in rows of at most MAX_METHOD_COLUMNS, each row led by the
    input column. One-pass methods draw at once; the live fragment then draws the max_N
    methods and the per-channel methods queued in their columns."""
    sharing = _Sharing()
    max_n_boxes: dict[str, DeltaGenerator] = {}
    per_channel: dict[str, DeltaGenerator] = {}
    fragment_column = None
    rows = _rows_of_methods(view.methods)
    for row in rows:
        columns = st.columns(1 + (MAX_METHOD_COLUMNS if len(rows) > 1 else len(row)), gap="small")
        with columns[0]:
            _input_column(view)
        for column, method in zip(columns[1:], row):
            spec = METHODS[method]
            with column:
                missing = view.explainer.unavailable_reason(method)
                if missing is not None:
                    _unavailable_column(view, method, missing)
                elif spec.uses_max_n:
                    if fragment_column is None:
                        fragment_column = column
                    else:
                        max_n_boxes[method] = st.container()
                elif spec.per_channel_passes:
                    per_channel[method] = st.container()
                else:
                    _one_pass_column(view, method, sharing)
    if fragment_column is not None:
        with fragment_column:
            live(view, slider_box, max_n_boxes, per_channel, analysis_box)
    else:
        with analysis_box:
            live(view, slider_box, max_n_boxes, per_channel, analysis_box)


# ------------------------------------------------------- with a second model
@st.fragment
def live_pair(two: Pair, slider_box: DeltaGenerator, boxes: dict[str, DeltaGenerator],
              analysis_box: DeltaGenerator) -> None:
    """The comparison's max_N and per-channel columns (A's map, then B's) and the analysis,
    like :func:`live`: a max_N move reruns only this fragment."""
    with slider_box:
        n = sidebar.max_n_slider(two.channels, any(METHODS[m].uses_max_n for m in two.a.methods))
    slots = {method: pair.queued_slots(two, method, box, n) for method, box in boxes.items()}
    ordered = sorted(boxes, key=lambda method: not METHODS[method].uses_max_n)  # max_N columns first
    for method in ordered:
        with boxes[method]:
            pair.pair_column(two, method, slots[method], n)
    with analysis_box:
        attempt("Could not draw the comparison", pair.render_analysis, two, n)


def render_pair_grid(two: Pair, slider_box: DeltaGenerator, analysis_box: DeltaGenerator) -> None:
    """One column per method with A's map, B's map and their difference (``pair.PAIR_ROWS``)
    and the agreement table; one-pass methods at once, the others in the live fragment."""
    boxes: dict[str, DeltaGenerator] = {}
    rows = _rows_of_methods(two.a.methods)
    for row in rows:
        columns = st.columns(1 + (MAX_METHOD_COLUMNS if len(rows) > 1 else len(row)), gap="small")
        with columns[0]:
            pair.input_column(two)
        for column, method in zip(columns[1:], row):
            with column:
                box = st.container(key=f"pair_{method}")
            spec = METHODS[method]
            if spec.uses_max_n or spec.per_channel_passes:
                boxes[method] = box
            else:
                with box:
                    pair.pair_column(two, method, pair.new_slots())
    with analysis_box:
        live_pair(two, slider_box, boxes, analysis_box)


# ----------------------------------------------------------------------- page
def _model_and_layer() -> tuple[str, LoadedModel, Explainer, str, str] | None:
    """Sidebar, first part: the model, its precision, its explainer and the layer
    (model key, bundle, explainer, layer, requested precision); None after a message."""
    model_key = sidebar.model_picker()
    if model_key is None:
        return None
    bundle = sidebar.load_model(model_key)
    if failed(bundle):
        return None
    if bundle.note:
        st.caption(bundle.note)
    precision = sidebar.precision_toggle()
    explainer = attempt("Could not prepare the model", state.get_explainer, model_key, precision)
    if failed(explainer):
        return None
    default_layer = getattr(bundle, "default_layer", None) or explainer.default_layer
    layer = sidebar.layer_picker(explainer, default_layer, model_key)
    if layer is None:
        return None
    return model_key, bundle, explainer, layer, precision


def _second_model(precision: str, model_a: str) -> SecondModel | None:
    """Sidebar: the "Compare with a second model" toggle and, when it is on, model B (any
    source, its widgets keyed "b_…") and its layer; None when off or not ready."""
    if not sidebar.second_model_toggle():
        return None
    others = [name for name in state.list_demos() if state.demo_key(name) != model_a]
    key = sidebar.model_picker(prefix=sidebar.B_PREFIX, title="Model B", default_demo=next(iter(others), None))
    if key is None:
        return None
    bundle = sidebar.load_model(key)
    if failed(bundle):
        return None
    if bundle.note:
        st.caption(bundle.note)
    explainer = attempt("Could not prepare model B", state.get_explainer, key, precision)
    if failed(explainer):
        return None
    default_layer = getattr(bundle, "default_layer", None) or explainer.default_layer
    layer = sidebar.layer_picker(explainer, default_layer, key, key=f"{sidebar.B_PREFIX}layer")
    if layer is None:
        return None
    return pair.SecondModel(key, bundle, explainer, layer)


def build_view() -> tuple[View, DeltaGenerator, Pair | None] | None:
    """Run the sidebar and gather what the grid needs (the View, the sidebar's slot for the
    max_N slider, and the Pair when a second model is compared); None (after a message) if
    not ready."""
    sidebar.apply_open_in_compare()
    with st.sidebar:
        chosen = _model_and_layer()
        if chosen is None:
            return None
        model_key, bundle, explainer, layer, precision = chosen
        second_box = st.container()
        with second_box:
            second = _second_model(precision, model_key)
        choice = sidebar.image_picker()
        if choice is None:
            return None
        fused = sidebar.fuse_layers_picker(explainer, layer, model_key)
        prepared = attempt("Could not prepare the image for this model", state.prepare_input,
                           model_key, bundle, explainer, choice)
        if failed(prepared):
            return None
        top = attempt("Could not run the model", explainer.top_classes, prepared, explainer.n_classes)
        if failed(top):
            return None
        class_index = sidebar.class_picker(top, bundle.class_names, (model_key, prepared.key))
        controls = sidebar.display_controls()

    view = attempt(
        "Could not prepare the maps", make_view, model_key=model_key, bundle=bundle, explainer=explainer,
        layer=layer, image_name=choice.name, detail=choice.detail, image=choice.image, mask=choice.mask,
        prepared=prepared, class_index=class_index, probability=dict(top)[class_index],
        display=controls.display, fused_layers=fused, requested_precision=precision, guided=second is None,
    )
    if failed(view):
        return None
    two = None
    if second is not None:
        with second_box:
            two = pair.make_pair(view, top, bundle.class_names, second, choice)
    return view, controls.max_n_slot, two


def _headline(view: View, side: str = "", image: bool = True) -> None:
    info = view.explainer.layer_info(view.layer)
    fused = f" (one-pass methods fuse {len(view.fused_layers)} layers)" if view.fused_layers else ""
    shown_image = f"image **{view.image_name}** · " if image else ""
    st.markdown(
        f"**{side}{view.model_name}** · layer `{view.layer}` ({info.height}×{info.width}×{info.channels}){fused} · "
        f"{shown_image}explaining **{view.class_name}** (p = {view.probability:.1%}) · {precision_text(view)} · "
        f"{state.passes_placement(view.explainer)}"
    )


def main() -> None:
    st.title("CAM Studio", anchor=False)
    st.caption("Why did the classifier decide what it decided? Class-activation-map methods, side by side.")
    built = build_view()
    if built is None:
        st.info(
            "Choose a model and an image in the sidebar to see the comparison; any problem with your "
            "choices is explained there.",
            icon=":material/arrow_back:",
        )
        return
    view, slider_box, two = built
    if two is None:
        _headline(view)
        if st.session_state.get(sidebar.COMPARE_B):
            st.info("Model B is not ready: choose it under **Compare with a second model** in the sidebar. "
                    "Model A alone meanwhile.", icon=":material/compare_arrows:")
    else:
        _headline(view, "A: ")
        _headline(two.b, "B: ", image=False)
        st.caption(two.class_note())
    if not view.methods:
        st.info("Select at least one method in the sidebar.")
        return
    grid_box = st.container(key="grid")
    st.divider()
    analysis_box = st.container(key="analysis")
    with grid_box:
        if two is None:
            render_grid(view, slider_box, analysis_box)
        else:
            render_pair_grid(two, slider_box, analysis_box)


main()
