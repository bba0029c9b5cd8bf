"""Dataset page: which CAM method finds defects best over many images, and at which threshold.

Runs ``camcore.evaluate`` in-process on a generated set (or on a DAGM folder under
``CAMSTUDIO_DATA_DIR``), or loads a results file written by ``python -m
camcore.evaluate``; then plots the metric distributions, the mean IoU-vs-threshold
curves with each method's best threshold, the mean deletion/insertion curves and the
time per image, flags methods that do not beat the Sobel/random controls, exports the
thresholds as JSON and opens the worst images in the Compare page.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from camcore import evaluate as ev
from dashboard import state
from dashboard.components.charts import method_color

DATA_DIR_ENV = "CAMSTUDIO_DATA_DIR"
RESULTS = "ds_results"  # session key: {"table": DataFrame, "label": str}
MAX_IN_PAGE = 100  # images; larger sets belong to the CLI
DISTRIBUTION_METRICS = {
    "iou_at_global": "IoU at the best global threshold (defective images)",
    "dice_at_global": "Dice at the best global threshold (defective images)",
    "energy_pointing_game": "Energy pointing game (defective images)",
    "oracle_iou": "Best per-image IoU (oracle, defective images)",
    "average_drop": "Average Drop % (lower is better)",
    "deletion_auc": "Deletion AUC (lower is better)",
    "insertion_auc": "Insertion AUC (higher is better)",
    "road_morf_auc": "ROAD MoRF AUC (lower is better)",
    "road_lerf_auc": "ROAD LeRF AUC (higher is better)",
}
WORST_LABELS = {
    "iou_at_global": "lowest IoU at the best global threshold",
    "energy_pointing_game": "lowest energy pointing game",
    "pointing_game": "pointing game misses",
    "insertion_auc": "lowest insertion AUC",
    "deletion_auc": "highest deletion AUC",
    "average_drop": "highest Average Drop",
}
LOCALIZATION = {"iou_at_global", "dice_at_global", "energy_pointing_game", "oracle_iou"}


def label(method: str) -> str:
    return ev.METHOD_LABELS.get(method, method)


def data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).resolve() if value and Path(value).is_dir() else None


def dagm_folders(root: Path) -> list[str]:
    """Subfolders of the data root in DAGM layout (names only, never a typed path)."""
    names = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and any(p.is_dir() and p.name.startswith("Class") for p in child.iterdir()):
            names.append(child.name)
    return names


@st.cache_resource(show_spinner=False, max_entries=4)
def model_spec(model_key: str) -> ev.ModelSpec:
    """An evaluation spec on the dashboard's cached model for ``model_key``: its default
    layer, and the class named "defective" (else class 1)."""
    return ev.ModelSpec.of(state.get_model(model_key))


@st.cache_data(show_spinner="Loading the image…", max_entries=16)
def result_image(source: str, image_id: str, index: int):
    root = data_dir()
    return ev.open_result_image(source, image_id, index, allowed_roots=[root] if root else [])


def run(model_key: str, items: list, methods: list[str], max_n: int, road: bool, seed: int, what: str) -> None:
    try:
        spec = model_spec(model_key)
    except (ValueError, OSError) as exc:
        st.error(f"Cannot load the model: {exc}")
        return
    bar = st.progress(0.0, text=f"Evaluating {len(items)} images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Evaluated {done} of {total} images")

    table = ev.evaluate(spec, items, [*methods, *ev.CONTROLS], max_n=max_n, road=road, seed=seed, progress=progress)
    bar.empty()
    st.session_state[RESULTS] = {"table": table, "label": f"{what}, {state.model_label(model_key)}"}


def run_form(source: str) -> None:
    demos = state.list_demos()
    if not demos:
        st.info("No demo model is installed yet (assets/models): load a results file instead.")
        return
    keys = [state.demo_key(name) for name in demos]
    model_key = st.selectbox("Model", keys, format_func=state.model_label, key="ds_model")
    items = None
    if source == "generated":
        left, middle, right = st.columns(3)
        n = left.slider("Images", 2, MAX_IN_PAGE, 12, key="ds_n")
        seed = middle.number_input("Seed", 0, 2**31 - 1, 0, key="ds_seed")
        rate = right.slider("Share of defective images", 0.0, 1.0, 0.5, 0.1, key="ds_rate")
        what = f"{n} generated images (seed {seed})"
    else:
        root = data_dir()
        folders = dagm_folders(root) if root else []
        if not folders:
            st.info(f"No DAGM-layout folder under {DATA_DIR_ENV}.")
            return
        left, middle, right = st.columns(3)
        folder = left.selectbox("Folder", folders, key="ds_folder")
        split = middle.selectbox("Split", ["Test", "Train", "both"], key="ds_split")
        limit = right.slider("Images (first N)", 2, MAX_IN_PAGE, 20, key="ds_limit")
        seed = 0
        what = f"{folder}/{split}"
    with st.expander("Methods"):
        cams = [m for m in ev.CAM_METHODS]
        methods = st.multiselect("CAM methods", cams, default=cams, format_func=label, key="ds_methods")
        max_n = st.number_input("Faster-Score-CAM max_N", 1, 2048, ev.DEFAULT_MAX_N, key="ds_max_n")
        road = st.checkbox("ROAD (slower)", value=False, key="ds_road")
        st.caption("The Sobel and random controls are always evaluated.")
    if not st.button("Run evaluation", type="primary", key="ds_run"):
        return
    try:
        if source == "generated":
            items = ev.synthetic_items(int(n), seed=int(seed), defect_rate=float(rate))
        else:
            items = ev.dagm_items(root / folder, split=None if split == "both" else split)[: int(limit)]
    except (ev.DagmFormatError, ValueError) as exc:
        st.error(str(exc))
        return
    run(model_key, items, list(methods), int(max_n), bool(road), int(seed), what)


def load_form() -> None:
    uploaded = st.file_uploader(
        "Results file from `python -m camcore.evaluate` (.parquet or .csv)", type=["parquet", "csv"], key="ds_upload"
    )
    if uploaded is None:
        return
    marker = (uploaded.name, uploaded.size)
    current = st.session_state.get(RESULTS)
    if current is not None and current.get("upload") == marker:
        return
    try:
        table = ev.read_results(uploaded, name=uploaded.name)
    except ValueError as exc:
        st.error(str(exc))
        return
    st.session_state[RESULTS] = {"table": table, "label": uploaded.name, "upload": marker}


# ------------------------------------------------------------------------ charts


def distribution_chart(rows: pd.DataFrame, metric: str) -> go.Figure:
    if metric in LOCALIZATION:
        rows = rows[rows["defective"].fillna(False).astype(bool)]
    fig = go.Figure()
    for method in [m for m in ev.ALL_METHODS if m in set(rows["method"])]:
        values = rows.loc[rows["method"] == method, metric].dropna()
        fig.add_trace(go.Box(y=values, name=label(method), marker_color=method_color(method), boxmean=True))
    fig.update_layout(yaxis_title=DISTRIBUTION_METRICS[metric], showlegend=False, height=380,
                      margin=dict(t=30, b=30))
    return fig


def curve_chart(curves: pd.DataFrame, x_title: str, y_title: str, marks: dict[str, float] | None = None) -> go.Figure:
    fig = go.Figure()
    for method in curves.columns:
        dash = "dot" if method in ev.CONTROLS else "solid"
        fig.add_trace(go.Scatter(x=curves.index, y=curves[method], mode="lines", name=label(method),
                                 line=dict(color=method_color(method), dash=dash)))
        if marks and method in marks:
            x = marks[method]
            fig.add_trace(go.Scatter(
                x=[x], y=[curves.loc[x, method]], mode="markers", showlegend=False,
                marker=dict(symbol="star", size=14, color=method_color(method), line=dict(width=1, color="black")),
                name=f"{label(method)} best", hovertemplate=f"{label(method)}: best threshold {x:.2f}, "
                "mean IoU %{y:.3f}<extra></extra>",
            ))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, height=380, margin=dict(t=30, b=30),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def time_chart(rows: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for method in [m for m in ev.ALL_METHODS if m in set(rows["method"])]:
        seconds = rows.loc[rows["method"] == method, "seconds"].dropna()
        fig.add_trace(go.Box(y=seconds, name=label(method), marker_color=method_color(method), boxmean=True))
    fig.update_layout(yaxis_title="seconds per image (log)", yaxis_type="log", showlegend=False, height=340,
                      margin=dict(t=30, b=30))
    return fig


# ----------------------------------------------------------------------- results


def show_results(result: dict) -> None:
    table: pd.DataFrame = result["table"]
    rows = ev.results_only(table)
    failed = ev.errors(table)
    if rows.empty:
        st.error("No image could be evaluated.")
    n_images = rows["image_id"].nunique()
    n_defective = rows.loc[rows["defective"].fillna(False).astype(bool), "image_id"].nunique()
    model = rows["model"].iloc[0] if len(rows) else "?"
    layer = rows["layer"].iloc[0] if len(rows) and "layer" in rows else "?"
    st.subheader(f"Results: {result['label']}")
    st.caption(f"model `{model}`, layer `{layer}` · {n_images} images, {n_defective} defective · "
               f"{len(failed)} skipped")
    if len(failed):
        st.warning(f"{len(failed)} image(s) could not be read and were skipped.")
        with st.expander("Skipped images"):
            st.dataframe(failed, hide_index=True)
    if rows.empty:
        return

    summary = ev.summarize(table)
    for method, reason in ev.flagged_methods(summary).items():
        st.warning(f"**{label(method)}** {reason}: on this data set its maps are no better "
                   "than an edge detector or noise.", icon="⚠️")
    if n_defective == 0:
        st.info("No defective image in this set: localization metrics and thresholds need defect masks.")

    st.markdown("#### Summary")
    st.dataframe(ev.summary_table(summary).style.format("{:.3g}", na_rep="–"), width="stretch")
    st.caption("Localization (pointing game, IoU, Dice) over the defective images; faithfulness (Average "
               "Drop, Increase in Confidence, deletion/insertion AUC) over all images, explaining the "
               "“defective” score. Oracle IoU: best threshold chosen per image (an upper bound).")

    best = ev.global_thresholds(table)
    export = ev.threshold_export(table)
    left, right = st.columns([1, 1])
    left.download_button("Download thresholds (JSON)", json.dumps(export, indent=2), file_name="thresholds.json",
                         mime="application/json", key="ds_export", disabled=not best)
    right.download_button("Download results (CSV)", table.to_csv(index=False), file_name="results.csv",
                          mime="text/csv", key="ds_download")
    if best:
        st.markdown("Best global threshold per method (maximizes the mean IoU over the defective images): "
                    + ", ".join(f"{label(m)} **{t:.2f}**" for m, t in best.items()))
        with st.expander("Threshold export"):
            st.code(json.dumps(export, indent=2), language="json")

    st.markdown("#### Metric distributions")
    metrics = [m for m in DISTRIBUTION_METRICS if m in rows.columns and rows[m].notna().any()]
    metric = st.selectbox("Metric", metrics, format_func=DISTRIBUTION_METRICS.get, key="ds_metric")
    st.plotly_chart(distribution_chart(rows, metric), key="ds_chart_distribution")

    iou = ev.mean_curve(table, "iou")
    if not iou.empty:
        st.markdown("#### Mean IoU vs threshold (★ best threshold)")
        st.plotly_chart(curve_chart(iou, "threshold on the map", "mean IoU", marks=best), key="ds_chart_iou")

    st.markdown("#### Deletion and insertion (mean over all images)")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(curve_chart(ev.mean_curve(table, "deletion"), "fraction of pixels deleted",
                                    "class probability (lower AUC is better)"), key="ds_chart_deletion")
    with right:
        st.plotly_chart(curve_chart(ev.mean_curve(table, "insertion"), "fraction of pixels inserted",
                                    "class probability (higher AUC is better)"), key="ds_chart_insertion")

    st.markdown("#### Time per image")
    st.plotly_chart(time_chart(rows), key="ds_chart_time")

    worst_section(table)


def worst_section(table: pd.DataFrame) -> None:
    st.markdown("#### Worst images")
    rows = ev.results_only(table)
    methods = [m for m in ev.ALL_METHODS if m in set(rows["method"])]
    left, right = st.columns(2)
    method = left.selectbox("Method", methods, format_func=label, key="ds_worst_method")
    choices = [m for m in ev.WORST_BY if m in rows.columns and rows[m].notna().any()]
    metric = right.selectbox("Worst by", choices, format_func=WORST_LABELS.get, key="ds_worst_metric")
    worst = ev.worst_images(table, method, metric)
    if worst.empty:
        st.info("No image to list for this metric.")
        return
    st.dataframe(worst.drop(columns=[c for c in ("source", "index", "layer", "model") if c in worst]),
                 hide_index=True)
    image_id = st.selectbox("Image", list(worst["image_id"]), key="ds_worst_image")
    if not st.button("Open in Compare", key="ds_open"):
        return
    row = worst[worst["image_id"] == image_id].iloc[0]
    try:
        loaded = result_image(str(row["source"]), str(image_id), int(row["index"]))
    except (PermissionError, ValueError, OSError) as exc:
        st.error(str(exc))
        return
    model_key, layer = str(row.get("model", "")), row.get("layer")
    try:
        state.parse_model_key(model_key)
    except ValueError:
        model_key, layer = state.default_model_key(), None
        st.info(f"The model of these results is not available in the dashboard; opening with {model_key}.")
    st.session_state[state.OPEN_IN_COMPARE] = {
        "name": str(image_id),
        "image": loaded.image,
        "mask": loaded.mask if loaded.defective else None,
        "model": model_key,
        "layer": None if layer is None or pd.isna(layer) else str(layer),
    }
    st.switch_page("views/compare.py")


# -------------------------------------------------------------------------- page

st.title("Dataset evaluation")
st.caption(
    "A threshold tuned on one image is noise. Evaluate every CAM method over many images: "
    "localization against the defect masks, faithfulness to the model, time — and the Sobel and "
    "random controls every method must beat."
)
sources = {"generated": "Run on a generated set", "results": "Load a results file"}
if data_dir() is not None:
    sources = {"generated": sources["generated"], "dagm": f"Run on a folder of {DATA_DIR_ENV}",
               "results": sources["results"]}
source = st.radio("Data", list(sources), format_func=sources.get, horizontal=True, key="ds_source")
if source == "results":
    load_form()
    st.caption("Write one with e.g. `python -m camcore.evaluate --synthetic 300 --out results.parquet`.")
else:
    run_form(source)

if RESULTS in st.session_state:
    show_results(st.session_state[RESULTS])
