"""The Dataset page with a second model: the run form's "Compare with a second model" and
the results of a two-model evaluation (``camcore.evaluation.evaluate(..., model_b=...)``).

Run form (:func:`second_model_form`): a toggle, then model B from any source of the Compare
sidebar's model picker (``sidebar.model_picker`` with the widget keys prefixed ``ds_b_``,
as the Compare page keys its model B ``b_``), B's layer (default: its own) and the
threshold of the two regions whose IoU is reported. :func:`evaluation_options` turns the
choice into ``evaluate``'s ``model_b=`` / ``agreement_threshold=``.

Results (:func:`pair_section`, a no-op for a single-model table): the agreement per method,
B's own summary, the agreement distributions per method (``charts.agreement_figure``),
the classes where the two models' top-1 differ, and a gallery of the images where the two
maps agree least, each with A's overlay, B's overlay and the difference A − B (recomputed
with ``camcore.evaluation.pair.pair_maps``: the run's maps, at fp32 as the run computed them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st

from camcore import evaluation as ev
from camcore import visualize
from camcore.evaluation import pair_summary
from camcore.evaluation.pair import pair_maps
from camcore.evaluation.pair_table import is_pair_table, side_table
from camcore.methods import METHODS
from camcore.metrics.agreement import (
    AGREEMENT_COLUMNS,
    DEFAULT_AGREEMENT_THRESHOLD,
    MAP_CORRELATION,
    MAP_IOU,
)
from dashboard import state
from dashboard.components import charts, sidebar
from dashboard.components.common import attempt, failed
from dashboard.components.grid import show_panels

COMPARE_B = "ds_compare_b"  # the run form's toggle
B_PREFIX = "ds_b_"  # model B's widgets: "ds_b_model_source", "ds_b_demo_name", "ds_b_layer", ...
DEFAULT_B_DEMO = "resnet_defect"
GALLERY_MAX = 8
OUTLINE = (0, 255, 0)  # the ground truth, green as on the Compare page
RANKED_BY = {MAP_CORRELATION.name: "correlation r", MAP_IOU.name: "IoU of the regions"}
DIFFERENCE_LEGEND = "A − B: red where A's map is higher, blue where B's is, the image unchanged where they agree."


@dataclass(frozen=True)
class SecondChoice:
    """Model B of a run as the form chose it."""

    model_key: str
    layer: str
    threshold: float


# ------------------------------------------------------------------- run form
@st.cache_resource(show_spinner=False, max_entries=4)
def _spatial_layers(model_key: str) -> list[str]:
    from camcore.backends import as_backend

    return [info.path for info in as_backend(state.get_model(model_key).model).layers if info.spatial]


def second_model_form() -> tuple[bool, SecondChoice | None]:
    """The run form's second model: ``(ready, choice)``; ``(True, None)`` when the toggle is
    off, ``(False, None)`` after a message while model B is not usable yet."""
    on = st.toggle("Compare with a second model", key=COMPARE_B,
                   help="Every image is evaluated by both models; the results add how far their maps agree "
                   "(correlation, IoU of the thresholded regions, peaks in the defect) and where their top-1 differ.")
    if not on:
        return True, None
    with st.container(border=True):
        model_key = sidebar.model_picker(B_PREFIX, "Model B", default_demo=DEFAULT_B_DEMO)
        if model_key is None:
            return False, None
        bundle = sidebar.load_model(model_key)
        if failed(bundle):
            return False, None
        layers = attempt("Cannot explain model B", _spatial_layers, model_key)
        if failed(layers):
            return False, None
        if not layers:
            st.error("Model B has no layer with a spatial map: CAMs cannot be computed.")
            return False, None
        key = f"{B_PREFIX}layer"
        if st.session_state.get(key) not in layers:
            st.session_state[key] = bundle.layer if bundle.layer in layers else layers[-1]
        left, right = st.columns(2)
        layer = left.selectbox("Model B's layer", layers, key=key, help="Default: model B's own layer.")
        threshold = right.slider("Threshold of the two regions", 0.0, 1.0, DEFAULT_AGREEMENT_THRESHOLD, 0.05,
                                 key=f"{B_PREFIX}threshold",
                                 help="The IoU of A's and B's regions map ≥ threshold is reported per image.")
        st.caption("Same number of classes: B explains A's class; otherwise B explains its own top-1 on each image.")
    return True, SecondChoice(model_key, str(layer), float(threshold))


def evaluation_options(second: SecondChoice | None) -> dict[str, Any] | None:
    """``evaluate``'s keyword arguments for model B (empty without one); None after a
    message when model B cannot be loaded."""
    if second is None:
        return {}
    try:
        spec_b = ev.ModelSpec.of(state.get_model(second.model_key), layer=second.layer)
    except (ValueError, OSError) as exc:
        st.error(f"Cannot load model B: {exc}")
        return None
    return {"model_b": spec_b, "agreement_threshold": second.threshold}


def run_label(second: SecondChoice | None) -> str:
    """What a run's label adds for model B."""
    return "" if second is None else f" against {state.model_label(second.model_key)}"


# -------------------------------------------------------------------- results
def _label(method: str) -> str:
    return ev.METHOD_LABELS.get(method, method)


def agreement_label(name: str) -> str:
    """An agreement column as charts name it: its description and which way is better."""
    column = next(c for c in AGREEMENT_COLUMNS if c.name == name)
    better = {True: " (higher: the models agree more)", False: " (lower is better)", None: ""}
    return column.description + better[column.higher_is_better]


def pair_section(table: pd.DataFrame, open_image: Callable[[str, str, int], Any]) -> None:
    """The results of a two-model run (nothing for a single-model table); ``open_image(source,
    image_id, index)`` loads a results row's image for the gallery."""
    if not is_pair_table(table):
        return
    rows = ev.results_only(table)
    if rows.empty:
        return
    first = rows.iloc[0]
    st.markdown("### Model A against model B")
    st.caption(f"A: `{first['model']}`, layer `{first['layer']}` · B: `{first['b_model']}`, layer "
               f"`{first['b_layer']}`. The sections above are model A's; model B's summary is below.")
    for method, why in pair_summary.unavailable_for_b(table).items():
        st.info(f"**{_label(method)}** is not available for model B ({why}): model A's rows only.")
    agreement_summary(table)
    with st.expander("Model B's summary"):
        st.dataframe(ev.summary_table(ev.summarize(side_table(table, "b"))).style.format("{:.3g}", na_rep="–"),
                     width="stretch")
    agreement_charts(table)
    gallery(table, open_image)


def agreement_summary(table: pd.DataFrame) -> None:
    """Per method, how far the two models' maps agree."""
    summary = pair_summary.summarize_agreement(table)
    if summary.empty:
        st.info("No method has a map of both models to compare.")
        return
    shown = pd.DataFrame(index=[_label(m) for m in summary.index])
    shown.index.name = "method"
    for name, title in (("map_correlation_mean", "r mean"), ("map_correlation_median", "r median"),
                        ("map_iou_mean", "IoU(A, B) mean"), ("map_iou_median", "IoU(A, B) median"),
                        ("peak_a_in_defect_rate", "A's peak in defect %"), ("peak_b_in_defect_rate",
                                                                            "B's peak in defect %"),
                        ("both_peaks_in_defect_rate", "both peaks in defect %")):
        if name in summary:
            shown[title] = summary[name].to_numpy()
    st.dataframe(shown.style.format("{:.3f}", na_rep="–"), width="stretch", key="ds_pair_summary")
    threshold = summary.get("agreement_threshold", pd.Series([DEFAULT_AGREEMENT_THRESHOLD])).iloc[0]
    st.caption(f"r: Pearson correlation of the two maps at the image's resolution; IoU of the regions "
               f"map ≥ {threshold:.2f} of A and of B; peaks: the pointing game of each map (defective images).")


def agreement_charts(table: pd.DataFrame) -> None:
    """The agreement distributions per method and the classes where top-1 differs."""
    rows = ev.results_only(table)
    compared = rows[rows["method"].isin(list(METHODS)) & rows[MAP_CORRELATION.name].notna()]
    methods = [m for m in ev.ALL_METHODS if m in set(compared["method"])]
    if methods:
        column = st.selectbox("Agreement", list(RANKED_BY), format_func=agreement_label, key="ds_pair_metric")
        values = {m: compared.loc[compared["method"] == m, column].dropna() for m in methods}
        st.plotly_chart(charts.agreement_figure(values, {m: _label(m) for m in methods}, agreement_label(column)),
                        key="ds_chart_agreement")
    classes = pair_summary.top1_disagreement(table)
    if classes.empty:
        st.caption("Top-1 is not compared: the two models have different classes.")
        return
    differs, images = int(classes["top1_differs"].sum()), int(classes["images"].sum())
    st.markdown(f"**Top-1**: the two models predict different classes on {differs} of {images} images.")
    if differs:
        st.plotly_chart(charts.top1_disagreement_figure(classes["class_name"].tolist(), classes["share"].tolist(),
                                                        classes["top1_differs"].tolist(), classes["images"].tolist()),
                        key="ds_chart_top1")


# -------------------------------------------------------------------- gallery
@st.cache_data(show_spinner="Recomputing both models' maps…", max_entries=32)
def _pair_tiles(models: tuple[str, str], layers: tuple[str, str], classes: tuple[int, int], method: str,
                threshold: float, image_key: tuple, _image: np.ndarray, _mask: np.ndarray | None) -> list:
    """The gallery tiles of one image: the input with its ground truth, A's overlay, B's
    overlay and the difference A − B."""
    specs = [ev.ModelSpec.of(state.get_model(key), layer=layer, class_index=index)
             for key, layer, index in zip(models, layers, classes)]
    explainers = [state.get_explainer(key, "fp32") for key in models]
    found = pair_maps(explainers, specs, _image, method, classes=classes, max_n=ev.DEFAULT_MAX_N,
                      threshold=threshold, mask=_mask)
    rgb = visualize.to_rgb(_image)
    truth = rgb if _mask is None else visualize.draw_outline(rgb, _mask, OUTLINE)
    name = METHODS[method].label
    return [("Input" + (" (ground truth in green)" if _mask is not None else ""), truth),
            (f"{name} · A", visualize.overlay(rgb, found.cam_a)),
            (f"{name} · B", visualize.overlay(rgb, found.cam_b)),
            (f"{name} · A − B", visualize.difference_overlay(truth, found.agreement.difference))]


def _models_available(first: pd.Series) -> bool:
    try:
        for key in (first["model"], first["b_model"]):
            state.parse_model_key(str(key))
    except ValueError:
        return False
    return True


def gallery(table: pd.DataFrame, open_image: Callable[[str, str, int], Any]) -> None:
    """The images where the two models' maps agree least, for one method, with both overlays."""
    st.markdown("#### Where the two models disagree most")
    rows = ev.results_only(table)
    methods = [m for m in ev.ALL_METHODS
               if m in METHODS and rows.loc[rows["method"] == m, MAP_CORRELATION.name].notna().any()]
    if not methods:
        return
    left, middle, right = st.columns(3)
    method = left.selectbox("Method", methods, format_func=_label, key="ds_pair_gallery_method")
    by = middle.selectbox("Least agreeing by", list(RANKED_BY), format_func=RANKED_BY.get, key="ds_pair_gallery_by")
    n = int(right.number_input("Images", 1, GALLERY_MAX, 4, key="ds_pair_gallery_n"))
    least = pair_summary.least_agreeing(table, method, by=by, n=n)
    st.dataframe(least.drop(columns=[c for c in ("source", "index") if c in least]), hide_index=True,
                 key="ds_pair_least")
    if not _models_available(rows.iloc[0]):
        st.info("The models of these results are not available in the dashboard: no overlays.")
        return
    for _, row in least.iterrows():
        gallery_row(rows, row, method, open_image)
    st.caption(DIFFERENCE_LEGEND + (f" Faster-Score-CAM is recomputed with max_N = {ev.DEFAULT_MAX_N}."
                                    if method == "faster_score_cam" else ""))


def gallery_row(rows: pd.DataFrame, row: pd.Series, method: str, open_image: Callable[[str, str, int], Any]) -> None:
    """One gallery image: its figures and its four tiles."""
    full = rows[(rows["image_id"] == row["image_id"]) & (rows["method"] == method)].iloc[0]
    try:
        loaded = open_image(str(full["source"]), str(full["image_id"]), int(full["index"]))
    except (PermissionError, ValueError, OSError) as exc:
        st.warning(f"{full['image_id']}: {exc}")
        return
    mask = np.asarray(loaded.mask, bool) if loaded.defective else None
    tiles = attempt(f"Could not recompute the maps of {full['image_id']}", _pair_tiles,
                    (str(full["model"]), str(full["b_model"])), (str(full["layer"]), str(full["b_layer"])),
                    (int(full["target_class"]), int(full["b_target_class"])), method,
                    float(full.get("agreement_threshold", DEFAULT_AGREEMENT_THRESHOLD)),
                    (str(full["source"]), str(full["image_id"])), loaded.image, mask)
    if failed(tiles):
        return
    st.markdown(f"**{full['image_id']}** · {full.get('class_name', '')} · r = {full['map_correlation']:.3f} · "
                f"IoU = {full['map_iou']:.3f} · p(A) = {full['p_target']:.3f}, p(B) = {full['b_p_target']:.3f}")
    for column, tile in zip(st.columns(len(tiles)), tiles):
        with column:
            show_panels([tile])
