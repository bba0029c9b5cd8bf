"""Dataset page: which CAM method finds defects best over many images, and at which threshold.

Data: a generated set, the user's own data set uploaded as a ``.zip`` (DAGM 2007 layout or
``images/`` + ``masks/``, see :mod:`camcore.evaluation.archives` for the rules and the zip
safety), a DAGM folder under ``CAMSTUDIO_DATA_DIR``, or a results file written by ``python -m
camcore.evaluate``. Model: a demo model or an uploaded one, with the Compare page's upload
widgets and loading (``sidebar.upload_model_inputs`` / ``sidebar.load_model``: safe mode,
the preprocessing and input-size prompts). Metrics: those of the registry
(:data:`camcore.metrics.METRICS`), the optional ones (ROAD, the sanity check) off by
default. Then it plots the distribution of any registered metric column, the mean
IoU-vs-threshold curves with each method's best threshold, the mean curve of every other
registered curve in the table (deletion, insertion, ROAD) and the time per image, flags
methods that do not beat the Sobel/random controls, exports the thresholds and the
results (CSV, Parquet) and opens the worst images in the Compare page. Every metric
column, label and direction comes from the registry.

The run goes to a background thread (:class:`camcore.evaluation.background.BackgroundEvaluation`):
the page follows it with a progress bar and a Cancel button (the run stops after the image
in flight; the finished images are kept and shown). Any click reruns the page, which picks
the running evaluation up again instead of losing it.

An uploaded set lives in its own temporary folder (``archives.SessionFolder``), removed
when another upload replaces it, when the user removes it, and when the session ends (the
session state is dropped, and the folder's ``weakref`` finalizer runs). Folders a crashed
server left behind are removed once older than ``archives.STALE_HOURS`` (checked when the
page first runs in a server process, then at most hourly); a live set is touched on every
page run. Its results carry ``source = "upload:<name>:<sha>"``, never a server path: its
worst images open in the Compare page by id, from this session's set only.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st

from camcore import evaluation as ev
from camcore.evaluation import archives
from camcore.evaluation.background import BackgroundEvaluation
from camcore.methods import ORIGINAL_STUDY
from camcore.metrics import (
    METRICS,
    default_metric_keys,
    find_column,
    registered_columns,
    registered_curves,
    selectable_metric_keys,
)
from camcore.metrics.localization import IOU_CURVE
from camcore.metrics.timing import SECONDS
from dashboard import state
from dashboard.components import charts, common, pair_results, sidebar

DATA_DIR_ENV = "CAMSTUDIO_DATA_DIR"
RESULTS = "ds_results"  # session key: {"table": DataFrame, "label": str, "note": str | None, ...}
RUN = "ds_active_run"  # session key: {"run": BackgroundEvaluation, "label": str}
DATASET = "ds_dataset"  # session key: {"marker": upload file id, "set": archives.UploadedDataset}
REFUSED = "ds_dataset_refused"  # session key: {"marker": upload file id, "message": str}
UPLOADER_GENERATION = "ds_uploader_generation"  # session key: int, see uploader_key()
UPLOADED_MODEL = "ds_uploaded_model"  # session key: the model key of the last uploaded model file
RUN_NOTICES = "ds_run_notices"  # session key: [(kind, text)] of the run that just ended, shown once
MAX_IN_PAGE = 100  # generated images / DAGM folder images
MAX_UPLOAD_RUN = 1000  # images of an uploaded set per run; larger sets belong to the CLI (or Ray)
POLL_SECONDS = 0.25
DEFAULT_METHODS = (*ORIGINAL_STUDY, *ev.CONTROLS)  # the newer methods are opt-in (Ablation-CAM: a pass per channel)
LAYOUT_HELP = (
    "A .zip holding either the DAGM 2007 layout (Class1/Train/0001.PNG … with Label/Labels.txt) or "
    "images/ with your images and, optionally, masks/ with one mask per image under the same name "
    "(any image extension; nonzero pixels = defect). An image without a mask, or with an empty one, "
    f"is clean. At most {archives.MAX_COMPRESSED / 2**20:g} MB, {archives.MAX_UNCOMPRESSED / 2**30:g} GB "
    f"unpacked and {archives.MAX_FILES:,} files; unpacked into a temporary folder of this session only."
)


def distribution_metrics() -> dict[str, str]:
    """Registered columns offered in the distribution chart -> their chart titles."""
    return {column.name: ev.column_label(column.name) for _, column in registered_columns() if column.distribution}


def worst_labels() -> dict[str, str]:
    """Registered columns the worst images can be ranked by -> how the menu says it."""
    return {column.name: column.worst for _, column in registered_columns() if column.worst}


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
def model_spec(model_key: str, layer: str | None = None, class_index: int | None = None) -> ev.ModelSpec:
    """An evaluation spec on the dashboard's cached model for ``model_key``: ``layer``
    (default: the model's) and the explained class (default: the one named "defective",
    else class 1)."""
    return ev.ModelSpec.of(state.get_model(model_key), layer=layer, class_index=class_index)


@st.cache_resource(show_spinner=False, max_entries=4)
def spatial_layers(model_key: str) -> list[str]:
    from camcore.backends import as_backend

    return [info.path for info in as_backend(state.get_model(model_key).model).layers if info.spatial]


@st.cache_resource(show_spinner=False, ttl=3600)
def remove_stale_folders() -> int:
    """Temporary folders left by a crashed server (once per process start, then hourly)."""
    return len(archives.remove_stale_folders())


@st.cache_data(show_spinner="Loading the image…", max_entries=16)
def result_image(source: str, image_id: str, index: int):
    root = data_dir()
    return ev.open_result_image(source, image_id, index, allowed_roots=[root] if root else [])


def active_run() -> BackgroundEvaluation | None:
    entry = st.session_state.get(RUN)
    return None if entry is None else entry["run"]


# ------------------------------------------------------------------------ model


def _keep_valid(key: str, options: list, default) -> None:
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def model_form() -> tuple[str, str | None, int | None] | None:
    """The model to evaluate: (model key, layer, explained class); None after a message when
    there is none yet. A demo model is loaded only when the run starts and uses its card's
    layer and its "defective" class (None, None); an uploaded one is loaded at once, for the
    Compare page's preprocessing and input-size prompts, and gets a layer and class picker."""
    kinds = {"demo": "Demo model", "upload": "Upload a model"}
    kind = st.radio("Model", list(kinds), format_func=kinds.get, horizontal=True, key="ds_model_source")
    if kind == "demo":
        demos = state.list_demos()
        if not demos:
            st.info("No demo model is installed yet (assets/models): upload a model, or load a results file instead.")
            return None
        keys = [state.demo_key(name) for name in demos]
        return st.selectbox("Demo model", keys, format_func=state.model_label, key="ds_model"), None, None
    choice = sidebar.upload_model_inputs("ds_")
    model_key = choice.key
    if model_key is not None:
        st.session_state[UPLOADED_MODEL] = model_key
    else:
        # the upload widget is empty again after a trip to the Compare page; the file is still
        # in the server's upload store (until evicted)
        remembered = st.session_state.get(UPLOADED_MODEL)
        parsed = state.parse_model_key(remembered) if remembered else None
        filename = state.upload_filename(parsed.name) if parsed else None
        if filename is None:
            st.info("Upload a .keras or .h5 image classifier (loaded in Keras safe mode, as on the Compare page).")
            return None
        st.caption(f"Using {filename}, uploaded earlier in this session.")
        model_key = state.upload_key(parsed.name, choice.preprocessing or parsed.option,
                                     choice.input_size or parsed.input_size)
    loaded = sidebar.load_model(model_key)
    if common.failed(loaded):
        return None
    try:
        layers = spatial_layers(model_key)
    except ValueError as exc:
        st.error(f"Cannot explain this model: {exc}")
        return None
    names = list(loaded.class_names)
    classes = list(range(len(names)))
    default_class = names.index("defective") if "defective" in names else min(1, len(names) - 1)
    left, right = st.columns(2)
    _keep_valid("ds_layer", layers, loaded.layer if loaded.layer in layers else layers[-1])
    layer = left.selectbox("Layer", layers, key="ds_layer",
                           help="The layer the CAMs explain; the default is the model's.")
    _keep_valid("ds_class", classes, default_class)
    class_index = right.selectbox("Explained class (the defect class)", classes, key="ds_class",
                                  format_func=lambda i: f"{i}: {names[i]}",
                                  help="Every map explains this class's score, on every image.")
    return model_key, str(layer), int(class_index)


# ------------------------------------------------------------------- data sets


def take_upload(file) -> None:
    """Unpack a newly uploaded archive. It replaces the current set (whose folder is removed
    at once); a refused archive leaves the current set in place."""
    marker = file.file_id
    current = st.session_state.get(DATASET)
    refused = st.session_state.get(REFUSED)
    if (current and current["marker"] == marker) or (refused and refused["marker"] == marker):
        return
    st.session_state.pop(REFUSED, None)
    try:
        with st.spinner(f"Unpacking {file.name}…"):
            dataset = archives.open_archive(  # the limits are read here, not frozen at import
                file, file.name, max_compressed=archives.MAX_COMPRESSED,
                max_uncompressed=archives.MAX_UNCOMPRESSED, max_files=archives.MAX_FILES,
            )
    except ValueError as exc:
        st.session_state[REFUSED] = {"marker": marker, "message": f"{file.name}: {exc}"}
        return
    if current:
        current["set"].close()
    st.session_state[DATASET] = {"marker": marker, "set": dataset}


def uploader_key() -> str:
    """The data-set uploader's key: "ds_data_zip", renewed by Remove, which empties the
    widget (Streamlit cannot clear an uploader's file otherwise)."""
    generation = st.session_state.get(UPLOADER_GENERATION, 0)
    return "ds_data_zip" if generation == 0 else f"ds_data_zip_{generation}"


def uploaded_dataset(busy: bool) -> archives.UploadedDataset | None:
    """The upload widget and the session's uploaded set (None, after a message, if none)."""
    file = st.file_uploader("Data set (.zip)", type=["zip"], key=uploader_key(), help=LAYOUT_HELP, disabled=busy)
    if file is not None and not busy:
        take_upload(file)
    refused = st.session_state.get(REFUSED)
    current = st.session_state.get(DATASET)
    if refused and file is not None and refused["marker"] == file.file_id:
        still = f" Still using {current['set'].name}." if current else ""
        st.error(refused["message"] + still, icon=":material/error:")
    if current is None:
        if file is None:
            st.info("Upload a .zip of your images: the DAGM layout, or images/ and (optionally) masks/. "
                    "Hover the ? above for the rules.")
        return None
    dataset: archives.UploadedDataset = current["set"]
    dataset.folder.touch()
    layout = "DAGM layout" if dataset.layout == "dagm" else "images/ + masks/"
    left, right = st.columns([5, 1], vertical_alignment="center")
    left.markdown(f"**{dataset.name}** · {layout} · {len(dataset.items)} images, {dataset.masked} with a mask")
    if right.button("Remove", key="ds_data_remove", disabled=busy, help="Delete the unpacked files now."):
        st.session_state.pop(DATASET)["set"].close()
        st.session_state[UPLOADER_GENERATION] = st.session_state.get(UPLOADER_GENERATION, 0) + 1
        st.rerun()
    return dataset


# ------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class DataChoice:
    """The images a run will evaluate: ``items()`` builds them (DagmFormatError/ValueError
    for a bad folder), ``what`` names them, ``seed`` seeds the random control."""

    items: Callable[[], list[ev.EvalItem]]
    what: str
    seed: int = 0


def generated_choice() -> DataChoice:
    left, middle, right = st.columns(3)
    n = left.slider("Images", 2, MAX_IN_PAGE, 12, key="ds_n")
    seed = int(middle.number_input("Seed", 0, 2**31 - 1, 0, key="ds_seed"))
    rate = right.slider("Share of defective images", 0.0, 1.0, 0.5, 0.1, key="ds_rate")
    return DataChoice(lambda: ev.synthetic_items(int(n), seed=seed, defect_rate=float(rate)),
                      f"{n} generated images (seed {seed})", seed)


def upload_choice(busy: bool) -> DataChoice | None:
    dataset = uploaded_dataset(busy)
    if dataset is None:
        return None
    most = min(len(dataset.items), MAX_UPLOAD_RUN)
    # keyed by the set, so that each new set starts at the default
    limit = int(st.number_input("Images (the first N of the archive)", 1, most, min(most, 20),
                                key=f"ds_upload_limit:{dataset.source}",
                                help=f"At most {MAX_UPLOAD_RUN} per run in the page; use `python -m camcore.evaluate` "
                                "(or its --ray mode) for more."))
    return DataChoice(lambda: list(dataset.items[:limit]), f"{dataset.name} ({limit} of {len(dataset.items)} images)")


def folder_choice() -> DataChoice | None:
    root = data_dir()
    folders = dagm_folders(root) if root else []
    if root is None or not folders:
        st.info(f"No DAGM-layout folder under {DATA_DIR_ENV}.")
        return None
    left, middle, right = st.columns(3)
    folder = left.selectbox("Folder", folders, key="ds_folder")
    split = middle.selectbox("Split", ["Test", "Train", "both"], key="ds_split")
    limit = right.slider("Images (first N)", 2, MAX_IN_PAGE, 20, key="ds_limit")
    return DataChoice(lambda: ev.dagm_items(root / folder, split=None if split == "both" else split)[: int(limit)],
                      f"{folder}/{split}")


def options_form() -> tuple[list[str], int, list[str]]:
    """Methods, Faster-Score-CAM's max_N and the metrics (keys of the registry) of the run."""
    with st.expander("Methods and metrics"):
        methods = st.multiselect(
            "Methods", list(ev.ALL_METHODS), default=list(DEFAULT_METHODS), format_func=label, key="ds_methods",
            help="Default: the four methods of the original study and the two controls every method must "
            "beat (Sobel edges, random blobs). Score-CAM and Ablation-CAM cost a model pass per channel.",
        )
        max_n = int(st.number_input("Faster-Score-CAM max_N", 1, 2048, ev.DEFAULT_MAX_N, key="ds_max_n"))
        metric_keys = st.multiselect(
            "Metrics", list(selectable_metric_keys()), default=list(default_metric_keys()), key="ds_metrics",
            format_func=lambda key: METRICS[key].label + (" (slower)" if METRICS[key].optional else ""),
            help="Off by default: " + "; ".join(f"{m.label}: {m.help}" for m in METRICS.values() if m.optional),
        )
    return list(methods), max_n, list(metric_keys)


def run_form(source: str) -> None:
    busy = active_run() is not None
    if source == "generated":
        data = generated_choice()
    elif source == "upload":
        data = upload_choice(busy)
    else:
        data = folder_choice()
    if data is None:
        return
    model = model_form()
    if model is None:
        return
    ready, second = pair_results.second_model_form()
    if not ready:
        return
    methods, max_n, metric_keys = options_form()
    if not methods:
        st.info("Choose at least one method.")
        return
    if not st.button("Run evaluation", type="primary", key="ds_run", disabled=busy):
        return
    start_run(data, model, methods, max_n, metric_keys, second)


def start_run(data: DataChoice, model: tuple[str, str | None, int | None], methods: list[str], max_n: int,
              metric_keys: list[str], second: pair_results.SecondChoice | None = None) -> None:
    """Build the images and the model spec (a message, not a traceback, if either fails)
    and start the evaluation in the background."""
    model_key, layer, class_index = model
    try:
        items = data.items()
    except (ev.DagmFormatError, ValueError) as exc:
        st.error(str(exc))
        return
    try:
        spec = model_spec(model_key, layer, class_index)
    except (ValueError, OSError) as exc:
        st.error(f"Cannot load the model: {exc}")
        return
    options = pair_results.evaluation_options(second)
    if options is None:
        return
    run = BackgroundEvaluation(spec, items, methods, max_n=max_n, metrics=metric_keys, seed=data.seed, **options)
    st.session_state[RUN] = {"run": run,
                             "label": f"{data.what}, {state.model_label(model_key)}{pair_results.run_label(second)}"}
    run.start()


def _progress_text(run: BackgroundEvaluation) -> str:
    if run.cancel_requested:
        return f"Cancelling after the image in progress… ({run.done} of {run.total} evaluated)"
    return f"Evaluated {run.done} of {run.total} images"


def follow_run() -> None:
    """Progress and Cancel of the session's running evaluation, until it ends; then its
    results replace the shown ones and the page reruns with its controls enabled again. A
    click anywhere reruns the page, which lands here again while the run goes on in its
    thread."""
    entry = st.session_state.get(RUN)
    if entry is None:
        for kind, text in st.session_state.pop(RUN_NOTICES, []):  # from the run that just ended
            (st.error if kind == "error" else st.warning)(text)
        return
    run: BackgroundEvaluation = entry["run"]
    panel = st.empty()
    with panel.container(border=True, key="ds_run_panel"):
        left, right = st.columns([5, 1], vertical_alignment="center")
        right.button("Cancel", key="ds_cancel", on_click=run.cancel, disabled=run.cancel_requested,
                     help="Stop after the image in progress; the finished images are kept.")
        bar = left.progress(0.0, text=_progress_text(run))
        while not run.wait(POLL_SECONDS):
            bar.progress(min(run.done / max(run.total, 1), 1.0), text=_progress_text(run))
    panel.empty()
    st.session_state.pop(RUN, None)
    notices = []
    if run.error:
        notices.append(("error", f"The evaluation stopped: {run.error}"))
    if run.table is not None:
        note = f"Cancelled: {run.done} of {run.total} images were evaluated." if run.cancelled else None
        st.session_state[RESULTS] = {"table": run.table, "label": entry["label"], "note": note}
    elif run.cancelled:
        notices.append(("warning", "Cancelled before the first image was finished: no results."))
    st.session_state[RUN_NOTICES] = notices
    st.rerun()


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


def shown_methods(rows: pd.DataFrame) -> list[str]:
    """The methods of ``rows`` in the evaluation's order (CAMs, then the controls)."""
    return [m for m in ev.ALL_METHODS if m in set(rows["method"])]


def method_labels(methods: list[str]) -> dict[str, str]:
    return {method: label(method) for method in methods}


def distribution_chart(rows: pd.DataFrame, metric: str):
    """The per-image values of the column ``metric`` per method (defective images only for
    a metric that needs a mask)."""
    found = find_column(metric)
    if found is not None and found[0].needs_mask:
        rows = rows[rows["defective"].fillna(False).astype(bool)]
    methods = shown_methods(rows)
    values = {m: rows.loc[rows["method"] == m, metric].dropna() for m in methods}
    return charts.box_figure(values, method_labels(methods), ev.column_label(metric))


def time_chart(rows: pd.DataFrame):
    methods = shown_methods(rows)
    values = {m: rows.loc[rows["method"] == m, SECONDS.name].dropna() for m in methods}
    return charts.box_figure(values, method_labels(methods), "seconds per image (log)", log=True, height=340)


def curve_chart(table: pd.DataFrame, prefix: str, x_title: str, y_title: str, marks: dict[str, float] | None = None):
    """The mean curve ``prefix`` per method; None when the table has none."""
    curves = ev.mean_curve(table, prefix)
    if curves.empty:
        return None
    return charts.mean_curve_figure(curves, method_labels(list(curves.columns)), x_title, y_title,
                                    dotted=ev.CONTROLS, marks=marks)


# ----------------------------------------------------------------------- results


def parquet_bytes(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def show_results(result: dict) -> None:
    table: pd.DataFrame = result["table"]
    rows = ev.results_only(table)
    results_header(result, rows, ev.errors(table))
    if rows.empty:
        return
    summary_section(table, rows)
    best = ev.global_thresholds(table)
    downloads_section(table, best)
    st.markdown("#### Metric distributions")
    metrics = {m: title for m, title in distribution_metrics().items() if m in rows.columns and rows[m].notna().any()}
    if metrics:
        metric = st.selectbox("Metric", list(metrics), format_func=metrics.get, key="ds_metric",
                              index=list(metrics).index(ev.HEADLINE_COLUMN) if ev.HEADLINE_COLUMN in metrics else 0)
        st.plotly_chart(distribution_chart(rows, metric), key="ds_chart_distribution")
    curves_section(table, best)
    st.markdown("#### Time per image")
    st.plotly_chart(time_chart(rows), key="ds_chart_time")
    worst_section(table)
    pair_results.pair_section(table, open_image)


def results_header(result: dict, rows: pd.DataFrame, failed: pd.DataFrame) -> None:
    """Which results these are, and the images that were skipped."""
    if rows.empty:
        st.error("No image could be evaluated.")
    n_images = rows["image_id"].nunique()
    n_defective = rows.loc[rows["defective"].fillna(False).astype(bool), "image_id"].nunique()
    model = rows["model"].iloc[0] if len(rows) else "?"
    layer = rows["layer"].iloc[0] if len(rows) and "layer" in rows else "?"
    st.subheader(f"Results: {result['label']}")
    st.caption(f"model `{model}`, layer `{layer}` · {n_images} images, {n_defective} defective · "
               f"{len(failed)} skipped")
    if result.get("note"):
        st.info(result["note"], icon=":material/cancel:")
    if len(failed):
        st.warning(f"{len(failed)} image(s) could not be read and were skipped.")
        with st.expander("Skipped images"):
            st.dataframe(failed, hide_index=True)
    if len(rows) and n_defective == 0:
        st.info("No defective image in this set: localization metrics and thresholds need defect masks.")


def summary_section(table: pd.DataFrame, rows: pd.DataFrame) -> None:
    """The flags of methods below the controls and the summary table."""
    summary = ev.summarize(table)
    for method, reason in ev.flagged_methods(summary).items():
        st.warning(f"**{label(method)}** {reason}: on this data set its maps are no better "
                   "than an edge detector or noise.", icon="⚠️")
    st.markdown("#### Summary")
    st.dataframe(ev.summary_table(summary).style.format("{:.3g}", na_rep="–"), width="stretch")
    st.caption("Localization (pointing game, IoU, Dice) over the defective images; faithfulness (Average "
               "Drop, Increase in Confidence, deletion/insertion AUC) over all images, explaining the "
               "“defective” score. Oracle IoU: best threshold chosen per image (an upper bound).")


def downloads_section(table: pd.DataFrame, best: dict[str, float]) -> None:
    """The threshold export and the results table, as files."""
    export = ev.threshold_export(table)
    left, middle, right = st.columns(3)
    left.download_button("Download thresholds (JSON)", json.dumps(export, indent=2), file_name="thresholds.json",
                         mime="application/json", key="ds_export", disabled=not best)
    middle.download_button("Download results (CSV)", table.to_csv(index=False), file_name="results.csv",
                           mime="text/csv", key="ds_download")
    right.download_button("Download results (Parquet)", parquet_bytes(table), file_name="results.parquet",
                          mime="application/vnd.apache.parquet", key="ds_download_parquet")
    if best:
        st.markdown("Best global threshold per method (maximizes the mean IoU over the defective images): "
                    + ", ".join(f"{label(m)} **{t:.2f}**" for m, t in best.items()))
        with st.expander("Threshold export"):
            st.code(json.dumps(export, indent=2), language="json")


def curves_section(table: pd.DataFrame, best: dict[str, float]) -> None:
    """The mean IoU-vs-threshold curves (★ each method's best global threshold), then every
    other registered curve present (deletion, insertion, ROAD ...), two side by side."""
    iou = curve_chart(table, IOU_CURVE.prefix, IOU_CURVE.x_title, IOU_CURVE.y_title, marks=best)
    if iou is not None:
        st.markdown("#### Mean IoU vs threshold (★ best threshold)")
        st.plotly_chart(iou, key="ds_chart_iou")
    figures = {curve.prefix: curve_chart(table, curve.prefix, curve.x_title, curve.y_title)
               for _, curve in registered_curves() if curve is not IOU_CURVE}
    figures = {prefix: figure for prefix, figure in figures.items() if figure is not None}
    if not figures:
        return
    st.markdown("#### Faithfulness curves (mean over all images)")
    prefixes = list(figures)
    for start in range(0, len(prefixes), 2):
        for column, prefix in zip(st.columns(2), prefixes[start:start + 2]):
            with column:
                st.plotly_chart(figures[prefix], key=f"ds_chart_{prefix}")


def open_image(source: str, image_id: str, index: int):
    """The image of a results row: from this session's uploaded set (by id) for an upload
    source, else regenerated or read from the configured data folder."""
    if not source.startswith(archives.UPLOAD_SOURCE):
        return result_image(source, image_id, index)
    current = st.session_state.get(DATASET)
    if current is None or current["set"].source != source:
        name = source[len(archives.UPLOAD_SOURCE):].rpartition(":")[0] or "an uploaded set"
        raise ValueError(f"{image_id} is from {name}, which is not loaded in this session any more: "
                         "upload it again to open its images")
    return current["set"].item(image_id).load()


def worst_section(table: pd.DataFrame) -> None:
    st.markdown("#### Worst images")
    rows = ev.results_only(table)
    methods = shown_methods(rows)
    left, right = st.columns(2)
    method = left.selectbox("Method", methods, format_func=label, key="ds_worst_method")
    names = worst_labels()
    choices = [m for m in ev.WORST_BY if m in rows.columns and rows[m].notna().any()]
    metric = right.selectbox("Worst by", choices, format_func=lambda m: names.get(m, m), key="ds_worst_metric",
                             index=choices.index(ev.HEADLINE_COLUMN) if ev.HEADLINE_COLUMN in choices else 0)
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
        loaded = open_image(str(row["source"]), str(image_id), int(row["index"]))
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
remove_stale_folders()
sources = {"generated": "Run on a generated set", "upload": "Upload a data set (.zip)"}
if data_dir() is not None:
    sources["dagm"] = f"Run on a folder of {DATA_DIR_ENV}"
sources["results"] = "Load a results file"
source = st.radio("Data", list(sources), format_func=sources.get, horizontal=True, key="ds_source")
if source == "results":
    load_form()
    st.caption("Write one with e.g. `python -m camcore.evaluate --synthetic 300 --out results.parquet`.")
else:
    run_form(source)
follow_run()

if RESULTS in st.session_state:
    show_results(st.session_state[RESULTS])
