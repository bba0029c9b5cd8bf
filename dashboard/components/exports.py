"""Files the pages hand on: the settings file of ``cam-studio localize``
(:mod:`camcore.localize_settings`) and the self-contained HTML report (:mod:`camcore.report`).

Both pages build them the same way. Downloads are deferred (Streamlit calls the builder on
click, in a server thread, not during a page run): the builders get everything from their
arguments and never read ``st.session_state``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pandas as pd

from dashboard import state

if TYPE_CHECKING:
    from camcore.evaluation.sources import LoadedImage
    from camcore.report_sections import ReportImage

CONTROLS = ("sobel", "random")  # maps that explain nothing: no settings file for them
UPLOADED_MODEL = "uploaded_model.keras"  # the model file's name when the upload store forgot it


# ------------------------------------------------------------ localize settings
def localize_settings(model_key: str, method: str, threshold: float, *, layer: str | None, class_index: int | None,
                      max_n: int | None = None, fused_layers: Sequence[str] = (),
                      precision: str = "fp32") -> dict[str, Any]:
    """The settings of ``cam-studio localize`` for a page's choice. A model uploaded to the
    dashboard is named by its file name (the settings file goes beside the model file), with
    the preprocessing and input size the page used; demo and application models by key."""
    from camcore.methods import METHODS
    from camcore.models import parse_model_key

    parsed = parse_model_key(model_key)
    settings: dict[str, Any] = {"model": model_key, "method": method, "layer": layer,
                                "threshold": round(float(threshold), 4), "class_index": class_index,
                                "precision": precision}
    if parsed.kind == "upload":
        settings["model"] = state.upload_filename(parsed.name) or UPLOADED_MODEL
        settings["preprocessing"] = parsed.option
        settings["input_size"] = None if parsed.input_size is None else list(parsed.input_size)
    if METHODS[method].uses_max_n:
        settings["max_n"] = max_n
    if fused_layers and METHODS[method].fusable:
        settings["fused_layers"] = list(fused_layers)
    return settings


def localize_settings_json(settings: Mapping[str, Any]) -> str:
    """The settings file's text (validated: a bad field raises ``SettingsError``)."""
    from camcore.localize_settings import settings_json

    return settings_json(settings)


# ------------------------------------------------------------------ reports
def compare_report(*, title: str, model: str, layer: str, precision: str, settings: Mapping[str, Any],
                   grid_png: Callable[[], bytes], timing_figure: Callable[[], Any] | None,
                   threshold_table: pd.DataFrame | None, grid_caption: str) -> str:
    """The Compare page's report: settings, the grid, the timing chart and the threshold table."""
    from camcore.report import report_html

    return report_html(title=title, model=model, layer=layer, precision=precision, settings=settings,
                       grid_png=grid_png(), grid_caption=grid_caption,
                       timing_figure=None if timing_figure is None else timing_figure(),
                       threshold_table=threshold_table)


def map_maker(model_key: str, layer: str, max_n: int | None) -> Callable[[pd.Series, "LoadedImage"], Any]:
    """``compute_map`` for the worst images of a report: the dashboard's cached model and
    exact (fp32) explainer of ``model_key``, as the evaluation ran (ValueError when the
    dashboard cannot load that model)."""
    state.parse_model_key(model_key)
    loaded = state.get_model(model_key)
    explainer = state.get_explainer(model_key, "fp32")

    def compute(row: pd.Series, image: "LoadedImage"):
        if str(row["method"]) in CONTROLS:
            return None
        x = explainer.prepare(loaded.preprocess(image.image), image.image)
        return explainer.compute(str(row["method"]), x, layer, int(row["target_class"]), max_n=max_n).cam

    return compute


def worst_pictures(worst: pd.DataFrame, open_image: Callable[[pd.Series], "LoadedImage"], model_key: str,
                   layer: str, max_n: int | None) -> tuple[list["ReportImage"], list[str]]:
    """Thumbnails of the worst images with their maps (without, and a note, when the model
    cannot be loaded here)."""
    from camcore.report_sections import render_worst_images

    notes: list[str] = []
    compute = None
    try:
        compute = map_maker(model_key, layer, max_n)
    except (ValueError, OSError) as exc:
        notes.append(f"The worst images are shown without their maps: the model {model_key} cannot be loaded "
                     f"here ({exc}).")
    pictures, failed = render_worst_images(worst, open_image, compute)
    return pictures, notes + failed


def dataset_report(table: pd.DataFrame, *, title: str, settings: Mapping[str, Any],
                   open_image: Callable[[pd.Series], "LoadedImage"], max_n: int | None,
                   notes: Sequence[str] = ()) -> str:
    """The Dataset page's report: the run's settings, the summary, the best thresholds, the
    distribution, curve and time charts, and the worst images with their maps."""
    from camcore.report import report_html
    from camcore.report_sections import evaluation_sections

    sections = evaluation_sections(table)
    pictures, failed = worst_pictures(sections.worst, open_image, sections.model, sections.layer, max_n) \
        if not sections.worst.empty else ([], [])
    return report_html(title=title, model=state.model_label(sections.model), layer=sections.layer,
                       precision="fp32", settings=settings, results=sections, worst_images=pictures,
                       worst_notes=failed, notes=notes)
