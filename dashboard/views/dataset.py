"""Dataset page: which CAM method finds defects best over many images, and at which threshold.

Data: a generated set, the user's own data set uploaded as a ``.zip`` (DAGM 2007, MVTec AD
or ``images/`` + ``masks/`` layout, see :mod:`camcore.evaluation.archives` for the rules and
the zip safety; an MVTec AD set offers its categories and its ``train/good`` images), a DAGM
folder under ``CAMSTUDIO_DATA_DIR``, or a results file written by ``python -m
camcore.evaluate``. Model: a demo model or an uploaded one, with the Compare page's upload
widgets and loading (``sidebar.upload_model_inputs`` / ``sidebar.load_model``: safe mode,
the preprocessing and input-size prompts), its layer and the explained (defect) class.
Metrics: those of the registry (:data:`camcore.metrics.METRICS`), the optional ones (ROAD,
the sanity check) off by default. Then it plots the distribution of any registered metric
column, the mean IoU-vs-threshold curves with each method's best threshold, the mean curve
of every other registered curve in the table (deletion, insertion, ROAD) and the time per
image (maps and metrics), flags methods that do not beat the Sobel/random controls (one
notice), exports the thresholds, the results (CSV, Parquet), a self-contained HTML report
and a settings file for ``cam-studio localize`` (a method at its best global threshold),
and opens the worst images in the Compare page (with the run's layer, class and
preprocessing). Every metric column, label and direction comes from the registry.

The page's widgets keep their values for the whole session (``persist_state="session"``):
a trip to the Compare page and back finds the same data, model and methods as the results
on screen. The result widgets (metric, worst images) start from their defaults for each new
results table.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import streamlit as st

from camcore import evaluation as ev
from camcore.evaluation import archives, mvtec
from camcore.evaluation.background import BackgroundEvaluation
from camcore.methods import METHODS, ORIGINAL_STUDY
from camcore.metrics import (
    METRICS,
    default_metric_keys,
    find_column,
    registered_columns,
    registered_curves,
    selectable_metric_keys,
)
from camcore.metrics.localization import IOU_CURVE
from camcore.metrics.timing import METRIC_SECONDS, SECONDS
from dashboard import state
from dashboard.components import charts, common, exports, pair_results, sidebar
from dashboard.components.dataset_text import (
    control_notice,
    full_stop,
    plural,
    set_notes,
    skipped_notice,
    summary_parts,
    time_caption,
)

DATA_DIR_ENV = "CAMSTUDIO_DATA_DIR"
RESULTS = "ds_results"  # session key: {"table": DataFrame, "label": str, "note": str | None, "serial": int, ...}
RESULTS_SERIAL = "ds_results_serial"  # session key: the number of the last results table shown
SHOWN_RESULTS = "_ds_shown_results"  # session key: the serial the result widgets belong to
RUN = "ds_active_run"  # session key: {"run": BackgroundEvaluation, "label": str, "name": str, ...}
DATASET = "ds_dataset"  # session key: {"marker": upload file id, "set": archives.UploadedDataset}
REFUSED = "ds_dataset_refused"  # session key: {"marker": upload file id, "message": str}
UPLOADER_GENERATION = "ds_uploader_generation"  # session key: int, see uploader_key()
UPLOADED_MODEL = "ds_uploaded_model"  # session key: the model key of the last uploaded model file
RUN_NOTICES = "ds_run_notices"  # session key: [(kind, text)] of the run that just ended, shown once
RESULT_WIDGETS = ("ds_metric", "ds_worst_method", "ds_worst_metric", "ds_worst_image", "ds_localize_method")
PERSIST = sidebar.PERSIST  # every input widget keeps its value across a trip to the Compare page
MAX_IN_PAGE = 100  # generated images / DAGM folder images
MAX_UPLOAD_RUN = 1000  # images of an uploaded set per run; larger sets belong to the CLI (or Ray)
POLL_SECONDS = 0.25
DEFAULT_METHODS = (*ORIGINAL_STUDY, *ev.CONTROLS)  # the newer methods are opt-in (Ablation-CAM: a pass per channel)
ALL_CATEGORIES = ""  # the category picker's "every category"
LAYOUTS = {"dagm": "DAGM layout", "mvtec": "MVTec AD layout", "flat": "images/ + masks/"}
LAYOUT_HELP = (
    "A .zip in one of three layouts. DAGM 2007: Class1/Train/0001.PNG … with Label/Labels.txt. "
    "MVTec AD: <category>/test/<defect type>/000.png with the masks in "
    "<category>/ground_truth/<defect type>/000_mask.png, test/good/ for clean images and optionally "
    "train/good/ (one folder per category, or a category's folders at the top). Flat: images/ with your "
    "images and, optionally, masks/ with one mask per image under the same name (any image extension; "
    "nonzero pixels = defect); an image without a mask, or with an empty one, is clean. "
    f"At most {archives.MAX_COMPRESSED / 2**20:g} MB, {archives.MAX_UNCOMPRESSED / 2**30:g} GB "
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


def keep_valid(key: str, options: list, default, context: Any = None) -> None:
    """Put ``default`` in the widget's state when its value is not among ``options`` or when
    ``context`` (e.g. the model) changed since the widget was last drawn."""
    marker = f"_{key}_context"
    if st.session_state.get(key) not in options or (context is not None and st.session_state.get(marker) != context):
        st.session_state[key] = default
    if context is not None:
        st.session_state[marker] = context


# ------------------------------------------------------------------------ model


def model_form() -> tuple[str, str, int] | None:
    """The model to evaluate: (model key, layer, explained class); None after a message when
    there is none yet. A demo model or an uploaded one (loaded at once, for the Compare
    page's preprocessing and input-size prompts); either gets a layer and class picker."""
    kinds = {"demo": "Demo model", "upload": "Upload a model"}
    kind = st.radio("Model", list(kinds), format_func=kinds.get, horizontal=True, key="ds_model_source",
                    persist_state=PERSIST)
    model_key = demo_model_key() if kind == "demo" else uploaded_model_key()
    if model_key is None:
        return None
    loaded = sidebar.load_model(model_key)
    if common.failed(loaded):
        return None
    return layer_and_class(model_key, loaded)


def demo_model_key() -> str | None:
    demos = state.list_demos()
    if not demos:
        st.info("No demo model is installed yet (assets/models): upload a model, or load a results file instead.")
        return None
    keys = [state.demo_key(name) for name in demos]
    keep_valid("ds_model", keys, keys[0])
    return st.selectbox("Demo model", keys, format_func=state.model_label, key="ds_model", persist_state=PERSIST)


def uploaded_model_key() -> str | None:
    """The uploaded model's key: the file in the upload widget, else the one uploaded earlier
    in this session (the widget is empty again after a trip to the Compare page; the file
    is still in the server's upload store until evicted)."""
    remembered = st.session_state.get(UPLOADED_MODEL)
    choice = sidebar.upload_model_inputs("ds_", remembered)
    if choice.key is not None:
        st.session_state[UPLOADED_MODEL] = choice.key
        return choice.key
    parsed = state.parse_model_key(remembered) if remembered else None
    filename = state.upload_filename(parsed.name) if parsed else None
    if filename is None:
        st.info("Upload an image classifier (" + ", ".join(sidebar.model_types()) + "; Keras files are loaded "
                "in safe mode, as on the Compare page).")
        return None
    st.caption(f"Using {filename}, uploaded earlier in this session.")
    return state.upload_key(parsed.name, choice.preprocessing or parsed.option, choice.input_size or parsed.input_size)


def layer_and_class(model_key: str, loaded) -> tuple[str, str, int] | None:
    """The layer and the explained class pickers (defaults: the model's layer and the class
    named "defective", else class 1); they start over for another model."""
    try:
        layers = spatial_layers(model_key)
    except ValueError as exc:
        st.error(f"Cannot explain this model: {exc}")
        return None
    names = list(loaded.class_names)
    classes = list(range(len(names)))
    default_class = names.index("defective") if "defective" in names else min(1, len(names) - 1)
    model = state.parse_model_key(model_key).name  # the model file, whatever its preprocessing
    left, right = st.columns(2)
    keep_valid("ds_layer", layers, loaded.layer if loaded.layer in layers else layers[-1], context=model)
    layer = left.selectbox("Layer", layers, key="ds_layer", persist_state=PERSIST,
                           help="The layer the CAMs explain; the default is the model's.")
    keep_valid("ds_class", classes, default_class, context=model)
    class_index = right.selectbox("Explained class (the defect class)", classes, key="ds_class",
                                  format_func=lambda i: f"{i}: {names[i]}", persist_state=PERSIST,
                                  help="Every map explains this class's score, on every image.")
    return model_key, str(layer), int(class_index)


# ------------------------------------------------------------------- data sets


def take_upload(file) -> None:
    """Unpack a newly uploaded archive (an MVTec AD set with its ``train/good`` images, which
    the page adds on request). It replaces the current set (whose folder is removed at once);
    a refused archive leaves the current set in place."""
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
                max_uncompressed=archives.MAX_UNCOMPRESSED, max_files=archives.MAX_FILES, train_good=True,
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


def dataset_line(dataset: archives.UploadedDataset) -> str:
    """e.g. "**parts.zip** · MVTec AD layout · 3 categories · 12 images, 8 with a mask (+ 3 in train/good)"."""
    training = sum(mvtec.is_training_image(item) for item in dataset.items)
    parts = [f"**{dataset.name}**", LAYOUTS.get(dataset.layout, dataset.layout)]
    if len(dataset.categories) > 1:
        parts.append(plural(len(dataset.categories), "category", "categories"))
    images = f"{plural(len(dataset.items) - training, 'image')}, {dataset.masked} with a mask"
    parts.append(images + (f" (+ {training} in train/good)" if training else ""))
    return " · ".join(parts)


def uploaded_dataset(busy: bool) -> archives.UploadedDataset | None:
    """The upload widget and the session's uploaded set (None, after a message, if none)."""
    file = st.file_uploader("Data set (.zip)", type=["zip"], key=uploader_key(), help=LAYOUT_HELP, disabled=busy)
    if file is not None and not busy:
        take_upload(file)
    refused = st.session_state.get(REFUSED)
    current = st.session_state.get(DATASET)
    if refused and file is not None and refused["marker"] == file.file_id:
        still = f" Still using {current['set'].name}." if current else ""
        st.error(full_stop(refused["message"]) + still, icon=":material/error:")
    if current is None:
        if file is None:
            st.info("Upload a .zip of your images: the DAGM or MVTec AD layout, or images/ and (optionally) "
                    "masks/. Hover the ? above for the rules.")
        return None
    dataset: archives.UploadedDataset = current["set"]
    dataset.folder.touch()
    left, right = st.columns([5, 1], vertical_alignment="center")
    left.markdown(dataset_line(dataset))
    if right.button("Remove", key="ds_data_remove", disabled=busy, help="Delete the unpacked files now."):
        st.session_state.pop(DATASET)["set"].close()
        st.session_state[UPLOADER_GENERATION] = st.session_state.get(UPLOADER_GENERATION, 0) + 1
        st.rerun()
    if dataset.notes:
        st.warning(set_notes(dataset.notes), icon=":material/info:")
    return dataset


# ------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class DataChoice:
    """The images a run will evaluate: ``items()`` builds them (DagmFormatError/ValueError
    for a bad folder); ``name`` says what they are ("line.zip", "generated set, seed 0"),
    ``of`` how many the set holds when a run takes the first N; ``seed`` seeds the random
    control; ``settings`` say how to choose the same images again (for the report)."""

    items: Callable[[], list[ev.EvalItem]]
    name: str
    of: int | None = None
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def counted(self, n: int) -> str:
        """e.g. "line.zip (20 of 120 images)", "generated set, seed 0 (12 images)"."""
        return f"{self.name} ({n} of {plural(self.of, 'image')})" if self.of else f"{self.name} ({plural(n, 'image')})"


def generated_choice() -> DataChoice:
    left, middle, right = st.columns(3)
    n = left.slider("Images", 2, MAX_IN_PAGE, 12, key="ds_n", persist_state=PERSIST)
    seed = int(middle.number_input("Seed", 0, 2**31 - 1, 0, key="ds_seed", persist_state=PERSIST))
    rate = right.slider("Share of defective images", 0.0, 1.0, 0.5, 0.1, key="ds_rate", persist_state=PERSIST)
    return DataChoice(lambda: ev.synthetic_items(int(n), seed=seed, defect_rate=float(rate)),
                      f"generated set, seed {seed}", seed=seed,
                      settings={"data": "generated", "images": int(n), "seed": seed, "defect_rate": float(rate)})


def mvtec_items(dataset: archives.UploadedDataset) -> tuple[list[ev.EvalItem], str, dict[str, Any]]:
    """An MVTec AD set's category (when it holds several) and whether to add its
    ``train/good`` images as clean ones: (the chosen items, their name, the settings)."""
    left, right = st.columns(2)
    category = None
    if len(dataset.categories) > 1:
        options = [ALL_CATEGORIES, *dataset.categories]
        keep_valid("ds_category", options, ALL_CATEGORIES, context=dataset.source)
        chosen = left.selectbox("Category", options, key="ds_category", persist_state=PERSIST,
                                format_func=lambda c: c or f"all {len(dataset.categories)} categories",
                                help="A product of the set; every category is one set by default (its name "
                                "stays in the class names, e.g. bottle/broken_large).")
        category = chosen or None
    items = list(dataset.items_of(category))
    training = sum(mvtec.is_training_image(item) for item in items)
    add = right.checkbox(f"Add train/good as clean images ({training})", key="ds_train_good", persist_state=PERSIST,
                         disabled=not training, help="The training folder's good images, as more clean samples: "
                         "they weigh in the faithfulness metrics and the worst images, not in localization.")
    chosen_items = [item for item in items if add or not mvtec.is_training_image(item)]
    name = dataset.name + (f", {category}" if category else "") + (" with train/good" if add and training else "")
    return chosen_items, name, {"category": category, "train_good": bool(add and training)}


def upload_choice(busy: bool) -> DataChoice | None:
    dataset = uploaded_dataset(busy)
    if dataset is None:
        return None
    if dataset.layout == "mvtec":
        items, name, extra = mvtec_items(dataset)
    else:
        items, name, extra = list(dataset.items), dataset.name, {}
    most = min(len(items), MAX_UPLOAD_RUN)
    # per set (and MVTec choice), so that each starts at the default
    choice = f":{extra['category'] or ''}:{int(extra['train_good'])}" if extra else ""
    key = f"ds_upload_limit:{dataset.source}{choice}"
    if not 1 <= st.session_state.get(key, 0) <= most:
        st.session_state[key] = min(most, 20)
    limit = int(st.number_input("Images (the first N of the archive)", 1, most, key=key, persist_state=PERSIST,
                                help=f"At most {MAX_UPLOAD_RUN} per run in the page; use `python -m camcore.evaluate` "
                                "(or its --ray mode) for more."))
    settings = {"data": "upload", "archive": dataset.name, "layout": dataset.layout, **extra, "images": limit}
    return DataChoice(lambda: items[:limit], name, of=len(items), settings=settings)


def folder_choice() -> DataChoice | None:
    root = data_dir()
    folders = dagm_folders(root) if root else []
    if root is None or not folders:
        st.info(f"No DAGM-layout folder under {DATA_DIR_ENV}.")
        return None
    left, middle, right = st.columns(3)
    folder = left.selectbox("Folder", folders, key="ds_folder", persist_state=PERSIST)
    split = middle.selectbox("Split", ["Test", "Train", "both"], key="ds_split", persist_state=PERSIST)
    limit = right.slider("Images (first N)", 2, MAX_IN_PAGE, 20, key="ds_limit", persist_state=PERSIST)
    return DataChoice(lambda: ev.dagm_items(root / folder, split=None if split == "both" else split)[: int(limit)],
                      f"{folder}/{split}", settings={"data": "folder", "folder": folder, "split": split,
                                                     "images": int(limit)})


def options_form() -> tuple[list[str], int, list[str]]:
    """Methods, Faster-Score-CAM's max_N (asked only when a method uses it) and the metrics
    (keys of the registry) of the run."""
    with st.expander("Methods and metrics"):
        methods = st.multiselect(
            "Methods", list(ev.ALL_METHODS), default=list(DEFAULT_METHODS), format_func=label, key="ds_methods",
            persist_state=PERSIST,
            help="Default: the four methods of the original study and the two controls every method must "
            "beat (Sobel edges, random blobs). Score-CAM and Ablation-CAM cost a model pass per channel.",
        )
        max_n = int(st.session_state.get("ds_max_n") or ev.DEFAULT_MAX_N)
        if any(METHODS[m].uses_max_n for m in methods if m in METHODS):
            max_n = int(st.number_input("Faster-Score-CAM max_N", 1, 2048, ev.DEFAULT_MAX_N, key="ds_max_n",
                                        persist_state=PERSIST))
        metric_keys = st.multiselect(
            "Metrics", list(selectable_metric_keys()), default=list(default_metric_keys()), key="ds_metrics",
            persist_state=PERSIST,
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
    left_out = ev.unavailable_methods(model_spec(model[0], model[1]), methods)
    if left_out:
        st.info("Left out for this model: " + "; ".join(f"{label(m)} ({why})" for m, why in left_out.items())
                + ".")
        if len(left_out) == len(methods):
            return
    if not st.button("Run evaluation", type="primary", key="ds_run", disabled=busy):
        return
    start_run(data, model, methods, max_n, metric_keys, second)


def start_run(data: DataChoice, model: tuple[str, str, int], methods: list[str], max_n: int,
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
    model_name = state.model_label(model_key)
    settings = {**data.settings, "model": model_key, "layer": layer, "class_index": class_index,
                "methods": list(methods), "max_n": max_n, "metrics": list(metric_keys), "precision": "fp32"}
    st.session_state[RUN] = {"run": run, "label": f"{data.counted(len(items))}, {model_name}"
                                              f"{pair_results.run_label(second)}",
                             "name": data.name, "model": model_name, "settings": settings}
    run.start()


def _progress_text(run: BackgroundEvaluation) -> str:
    if run.cancel_requested:
        return f"Cancelling after the image in progress… ({run.done} of {run.total} evaluated)"
    return f"Evaluated {run.done} of {run.total} images"


def store_results(entry: dict[str, Any]) -> None:
    """Show ``entry`` as the page's results, numbered so that the result widgets start over."""
    serial = st.session_state.get(RESULTS_SERIAL, 0) + 1
    st.session_state[RESULTS_SERIAL] = serial
    st.session_state[RESULTS] = {**entry, "serial": serial}


def finished_results(entry: dict[str, Any], run: BackgroundEvaluation) -> dict[str, Any]:
    """The results entry of a finished run; a cancelled one says how many images it evaluated."""
    result = {"table": run.table, "label": entry["label"], "note": None, "settings": entry.get("settings")}
    if run.cancelled:
        result["note"] = f"Cancelled: {run.done} of {run.total} images were evaluated."
        if "name" in entry:
            evaluated = run.table["image_id"].nunique()
            result["label"] = f"{entry['name']} ({evaluated} of {plural(run.total, 'image')}, cancelled), " \
                              f"{entry['model']}"
    return result


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
        store_results(finished_results(entry, run))
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
    store_results({"table": table, "label": uploaded.name, "upload": marker,
                   "settings": {"data": "results file", "results": uploaded.name}})


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


TIME_PARTS = {SECONDS.name: ("map", "#1c7ed6"), METRIC_SECONDS.name: ("metrics", "#f76707")}


def time_chart(rows: pd.DataFrame):
    """Per method, the seconds of its map and of its metrics on each image, side by side."""
    methods = shown_methods(rows)
    groups, colors = {}, {}
    for column, (name, color) in TIME_PARTS.items():
        if column in rows.columns and rows[column].notna().any():
            groups[name] = {m: rows.loc[rows["method"] == m, column].dropna() for m in methods}
            colors[name] = color
    return charts.grouped_box_figure(groups, method_labels(methods), "seconds per image (log)", colors=colors,
                                     log=True, height=360)


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


def start_result_widgets(result: dict) -> None:
    """New results (another run or file) start the result widgets (metric, worst by, worst
    image, the settings' method) from their defaults: a choice that suited the last table
    (e.g. "lowest insertion AUC" for a set without defects) must not carry over."""
    serial = result.get("serial")
    if st.session_state.get(SHOWN_RESULTS) != serial:
        for key in RESULT_WIDGETS:
            st.session_state.pop(key, None)
        st.session_state[SHOWN_RESULTS] = serial


def show_results(result: dict) -> None:
    start_result_widgets(result)
    table: pd.DataFrame = result["table"]
    rows = ev.results_only(table)
    results_header(result, rows, ev.errors(table))
    if rows.empty:
        return
    summary_section(table, rows)
    best = ev.global_thresholds(table)
    downloads_section(result, best)
    st.markdown("#### Metric distributions")
    metrics = {m: title for m, title in distribution_metrics().items() if m in rows.columns and rows[m].notna().any()}
    if metrics:
        metric = st.selectbox("Metric", list(metrics), format_func=metrics.get, key="ds_metric", persist_state=PERSIST,
                              index=list(metrics).index(ev.HEADLINE_COLUMN) if ev.HEADLINE_COLUMN in metrics else 0)
        st.plotly_chart(distribution_chart(rows, metric), key="ds_chart_distribution")
    curves_section(table, best)
    time_section(rows)
    worst_section(table)
    pair_results.pair_section(table, open_image)


def results_header(result: dict, rows: pd.DataFrame, failed: pd.DataFrame) -> None:
    """Which results these are, and the images that were skipped (with the reason)."""
    if rows.empty:
        st.error("No image could be evaluated.")
    n_images = rows["image_id"].nunique()
    n_defective = rows.loc[rows["defective"].fillna(False).astype(bool), "image_id"].nunique()
    model = rows["model"].iloc[0] if len(rows) else "?"
    layer = rows["layer"].iloc[0] if len(rows) and "layer" in rows else "?"
    st.subheader(f"Results: {result['label']}")
    st.caption(f"model `{model}`, layer `{layer}` · {plural(n_images, 'image')}, {n_defective} defective · "
               f"{len(failed)} skipped")
    if result.get("note"):
        st.info(result["note"], icon=":material/cancel:")
    if len(failed):
        st.warning(skipped_notice(failed))
        with st.expander("Skipped images"):
            st.dataframe(failed, hide_index=True)
    if len(rows) and n_defective == 0:
        where = f"among the {plural(n_images, 'evaluated image')}" if result.get("note") else "in this set"
        st.info(f"No defective image {where}: localization metrics and thresholds need defect masks.")


def summary_section(table: pd.DataFrame, rows: pd.DataFrame) -> None:
    """One notice for the methods below the controls, and the summary as two tables
    (localization; faithfulness and time) that fit the page's width."""
    summary = ev.summarize(table)
    notice = control_notice(summary)
    if notice:
        st.warning(notice, icon="⚠️")
    top, toggle = st.columns([4, 1], vertical_alignment="bottom")
    top.markdown("#### Summary")
    medians = toggle.toggle("Medians too", key="ds_medians", persist_state=PERSIST,
                            help="Add each metric's median beside its mean.")
    localization, faithfulness = summary_parts(summary, medians)
    number = "{:.3g}"
    if localization.shape[1] > 1:
        st.caption("Localization, over the defective images (IoU and Dice at each method's best global threshold)")
        st.dataframe(localization.style.format(number, na_rep="–"), width="stretch", key="ds_summary_localization")
    st.caption("Faithfulness, explaining the “defective” score, and time, over every image")
    st.dataframe(faithfulness.style.format(number, na_rep="–"), width="stretch", key="ds_summary_faithfulness")
    st.caption("Pointing game: the map's peak within 15 px of the defect; energy PG: the map's share inside it. "
               "Oracle IoU: best threshold chosen per image (an upper bound). ↓ / ↑: lower / higher is better.")


def best_method(table: pd.DataFrame, best: dict[str, float]) -> str | None:
    """The method (not a control) with the highest mean IoU at its best global threshold."""
    export = ev.threshold_export(table)["methods"]
    candidates = [m for m in best if m not in ev.CONTROLS and m in export]
    return max(candidates, key=lambda m: export[m]["mean_iou"], default=None)


def localize_download(result: dict, best: dict[str, float]) -> None:
    """The settings file of ``cam-studio localize`` for a method of these results at its best
    global threshold (default: the method with the highest mean IoU)."""
    table: pd.DataFrame = result["table"]
    methods = [m for m in shown_methods(ev.results_only(table)) if m in best and m not in ev.CONTROLS]
    if not methods:
        return
    rows = ev.results_only(table)
    first = rows.iloc[0]
    default = best_method(table, best)
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    method = left.selectbox("Put a threshold to use: method", methods, format_func=label, key="ds_localize_method",
                            index=methods.index(default) if default in methods else 0, persist_state=PERSIST,
                            help="Its best global threshold, the run's model, layer, class and max_N, as the "
                            "settings file of `cam-studio localize`, which draws the defect regions on new images.")
    run_settings = result.get("settings") or {}
    try:
        settings = exports.localize_settings(
            str(first["model"]), method, best[method], layer=str(first["layer"]),
            class_index=int(first["target_class"]) if pd.notna(first.get("target_class")) else None,
            max_n=run_settings.get("max_n", ev.DEFAULT_MAX_N), precision=run_settings.get("precision", "fp32"))
        text = exports.localize_settings_json(settings)
    except ValueError as exc:
        right.caption(f"No settings file for these results: {exc}")
        return
    right.download_button(f"Settings for cam-studio localize: {label(method)} at {best[method]:.2f} (JSON)", text,
                          file_name=f"localize_{method}.json", mime="application/json", key="ds_localize_settings",
                          icon=":material/tune:")


def report_opener(source_set: archives.UploadedDataset | None) -> Callable[[pd.Series], Any]:
    """``open_image`` for the report's worst images, made during the page run: the report is
    built on click, in a server thread that cannot read the session."""
    root = data_dir()

    def open_row(row: pd.Series):
        source = str(row["source"])
        if source.startswith(archives.UPLOAD_SOURCE):
            if source_set is None or source_set.source != source:
                raise ValueError("the uploaded set is not loaded in this session any more")
            return source_set.item(str(row["image_id"])).load()
        return ev.open_result_image(source, str(row["image_id"]), int(row["index"]),
                                    allowed_roots=[root] if root else [])

    return open_row


def report_download(result: dict) -> None:
    """One self-contained HTML file of these results (built on click)."""
    current = st.session_state.get(DATASET)
    opener = report_opener(current["set"] if current else None)
    settings = result.get("settings") or {}
    title = f"CAM Studio evaluation: {result['label']}"
    st.download_button(
        "Download report (HTML)",
        lambda: exports.dataset_report(result["table"], title=title, settings=settings, open_image=opener,
                                       max_n=settings.get("max_n", ev.DEFAULT_MAX_N),
                                       notes=[result["note"]] if result.get("note") else []),
        file_name="camstudio_evaluation_report.html", mime="text/html", on_click="ignore", key="ds_report",
        icon=":material/description:",
        help="The summary, thresholds, charts and worst images with their maps, and the settings of this run, "
        "in one HTML file that opens offline in any browser.")


def downloads_section(result: dict, best: dict[str, float]) -> None:
    """The threshold export, the results table and the report as files, and the settings
    file that puts a threshold to use."""
    table: pd.DataFrame = result["table"]
    export = ev.threshold_export(table)
    with st.container(horizontal=True, gap="small"):
        st.download_button("Download thresholds (JSON)", json.dumps(export, indent=2), file_name="thresholds.json",
                           mime="application/json", key="ds_export", disabled=not best)
        st.download_button("Download results (CSV)", table.to_csv(index=False), file_name="results.csv",
                           mime="text/csv", key="ds_download")
        st.download_button("Download results (Parquet)", parquet_bytes(table), file_name="results.parquet",
                           mime="application/vnd.apache.parquet", key="ds_download_parquet")
        report_download(result)
    if best:
        st.markdown("Best global threshold per method (maximizes the mean IoU over the defective images): "
                    + ", ".join(f"{label(m)} **{t:.2f}**" for m, t in best.items()))
        localize_download(result, best)
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


def time_section(rows: pd.DataFrame) -> None:
    """Seconds per image of each method's map and of its metrics, and what a run takes per image."""
    st.markdown("#### Time per image")
    st.plotly_chart(time_chart(rows), key="ds_chart_time")
    st.caption(time_caption(rows))


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
    method = left.selectbox("Method", methods, format_func=label, key="ds_worst_method", persist_state=PERSIST)
    names = worst_labels()
    choices = [m for m in ev.WORST_BY if m in rows.columns and rows[m].notna().any()]
    metric = right.selectbox("Worst by", choices, format_func=lambda m: names.get(m, m), key="ds_worst_metric",
                             index=choices.index(ev.HEADLINE_COLUMN) if ev.HEADLINE_COLUMN in choices else 0,
                             persist_state=PERSIST)
    worst = ev.worst_images(table, method, metric)
    if worst.empty:
        st.info("No image to list for this metric.")
        return
    st.dataframe(worst_table(worst, metric), hide_index=True, key="ds_worst_table")
    image_id = st.selectbox("Image", list(worst["image_id"]), key="ds_worst_image", persist_state=PERSIST)
    if st.button("Open in Compare", key="ds_open"):
        row = rows[(rows["image_id"] == image_id) & (rows["method"] == method)].iloc[0]
        open_in_compare(row, str(image_id))


def worst_table(worst: pd.DataFrame, metric: str):
    """The worst images as the page lists them: the ranking column first after the image,
    bookkeeping columns out (and "defective" when only defective images are ranked), the
    registry's short titles and numbers to three digits (so that the table fits the page)."""
    found = find_column(metric)
    defective_only = found is not None and found[0].needs_mask  # every listed image is defective
    dropped = ("source", "index", "layer", "model") + (("defective",) if defective_only else ())
    shown = worst.drop(columns=[c for c in dropped if c in worst])
    first = [c for c in ("image_id", "class_name", "defective", metric) if c in shown]
    shown = shown[first + [c for c in shown.columns if c not in first]]
    titles = {"image_id": "image", "class_name": "class", "p_target": "p(class)"}
    titles |= {c.name: c.title.replace(" %", "") for _, c in registered_columns() if c.name in shown.columns}
    numbers = [titles.get(c, c) for c in shown.columns if pd.api.types.is_float_dtype(shown[c])]
    return shown.rename(columns=titles).style.format("{:.3g}", subset=numbers, na_rep="–")


def open_in_compare(row: pd.Series, image_id: str) -> None:
    """Send a worst image to the Compare page with the run's model (its preprocessing and input
    size are in the key), layer and explained class."""
    try:
        loaded = open_image(str(row["source"]), image_id, int(row["index"]))
    except (PermissionError, ValueError, OSError) as exc:
        st.error(str(exc))
        return
    model_key, layer = str(row.get("model", "")), row.get("layer")
    try:
        state.parse_model_key(model_key)
    except ValueError:
        model_key, layer = state.default_model_key(), None
        st.info(f"The model of these results is not available in the dashboard; opening with {model_key}.")
    target = row.get("target_class")
    st.session_state[state.OPEN_IN_COMPARE] = {
        "name": image_id,
        "image": loaded.image,
        "mask": loaded.mask if loaded.defective else None,
        "model": model_key,
        "layer": None if layer is None or pd.isna(layer) else str(layer),
        "class_index": None if target is None or pd.isna(target) or model_key != str(row.get("model")) else int(target),
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
keep_valid("ds_source", list(sources), "generated")
source = st.radio("Data", list(sources), format_func=sources.get, horizontal=True, key="ds_source",
                  persist_state=PERSIST)
if source == "results":
    load_form()
    st.caption("Write one with e.g. `python -m camcore.evaluate --synthetic 300 --out results.parquet`.")
else:
    run_form(source)
follow_run()

if RESULTS in st.session_state:
    show_results(st.session_state[RESULTS])
