"""What a report shows of an evaluation results table: the summary and threshold tables, the
distribution, curve and time charts (plotly figures), the worst images, the skipped images.

The tables come from :mod:`camcore.evaluation.summary`, so the report states the numbers the
command line prints and the Dataset page shows. Charts are plotly figures (plotly is a
dependency of the dashboard too); nothing here imports TensorFlow, except
:func:`render_worst_images` when it is asked to draw maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from camcore.evaluation.defaults import CONTROLS, METHOD_LABELS
from camcore.evaluation.results import errors, results_only
from camcore.evaluation.summary import (
    HEADLINE_COLUMN,
    column_label,
    flagged_methods,
    mean_curve,
    summarize,
    summary_table,
    threshold_export,
    worst_images,
)
from camcore.metrics import registered_columns
from camcore.metrics.faithfulness import INSERTION_AUC
from camcore.metrics.localization import IOU_CURVE
from camcore.metrics.timing import SECONDS

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from camcore.evaluation.sources import LoadedImage

# one color per method in registry order, gray / olive for the controls (as on the pages)
PALETTE = ("#1c7ed6", "#7048e8", "#e8590c", "#2b8a3e", "#c2255c", "#0c8599", "#f59f00", "#5c940d", "#862e9c",
           "#364fc7", "#d9480f", "#087f5b")
CONTROL_COLORS = {"sobel": "#7f7f7f", "random": "#bcbd22"}



def distributions() -> dict[str, tuple[str, bool]]:
    """Metric column -> (chart title, defective images only): every column of the metric
    registry (:data:`camcore.metrics.METRICS`) that has a distribution chart."""
    return {column.name: (column_label(column.name), metric.needs_mask)
            for metric, column in registered_columns() if column.distribution}


WORST_METRIC = HEADLINE_COLUMN


@dataclass(frozen=True)
class ReportFigure:
    """A chart of the report: a plotly figure (or its dict) under a title."""

    title: str
    figure: Any
    caption: str = ""


@dataclass(frozen=True)
class ReportImage:
    """An image of the report: encoded bytes (PNG or JPEG) and its caption."""

    caption: str
    data: bytes
    mime: str = "image/png"


@dataclass(frozen=True)
class EvaluationSections:
    """Everything the report shows of one results table."""

    model: str
    layer: str
    images: int
    summary: pd.DataFrame  # summary_table: readable titles, methods by label
    flags: dict[str, str]  # method -> why it does not beat the controls
    thresholds: pd.DataFrame  # best global threshold per method
    figures: list[ReportFigure]
    worst: pd.DataFrame  # the worst images of each CAM method
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)  # image, error


def method_color(method: str) -> str:
    from camcore.methods import METHODS

    if method in CONTROL_COLORS:
        return CONTROL_COLORS[method]
    keys = list(METHODS)
    return PALETTE[keys.index(method) % len(PALETTE)] if method in keys else "#495057"


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _layout(fig: "go.Figure", title: str, y_title: str, height: int = 340) -> "go.Figure":
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height, margin=dict(l=50, r=10, t=40, b=40),
                      plot_bgcolor="white", showlegend=False, yaxis_title=y_title)
    fig.update_xaxes(showgrid=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    return fig


def distribution_figure(rows: pd.DataFrame, metric: str, title: str) -> "go.Figure":
    """One box per method (mean marked) of ``metric`` over the rows."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for method in dict.fromkeys(rows["method"]):
        values = rows.loc[rows["method"] == method, metric].dropna().astype(float)
        fig.add_trace(go.Box(y=values, name=label(method), marker_color=method_color(method), boxmean=True))
    return _layout(fig, title, metric)


def curve_figure(curves: pd.DataFrame, title: str, x_title: str, y_title: str) -> "go.Figure":
    """One line per method of a :func:`mean_curve` table, each method's best point starred."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for method in curves.columns:
        color = method_color(method)
        fig.add_trace(go.Scatter(x=list(curves.index), y=curves[method], mode="lines", name=label(method),
                                 line=dict(color=color)))
        best = curves[method].idxmax()
        fig.add_trace(go.Scatter(x=[best], y=[curves[method].max()], mode="markers", showlegend=False,
                                 marker=dict(symbol="star", size=11, color=color), name=f"{label(method)} best"))
    fig = _layout(fig, title, y_title)
    fig.update_layout(showlegend=True, xaxis_title=x_title)
    return fig


def _charts(table: pd.DataFrame) -> list[ReportFigure]:
    rows = results_only(table)
    defective = rows[rows["defective"].fillna(False).astype(bool)]
    figures = []
    for metric, (title, defective_only) in distributions().items():
        subset = defective if defective_only else rows
        if metric in subset.columns and subset[metric].notna().any():
            figures.append(ReportFigure(title, distribution_figure(subset, metric, title)))
    iou = mean_curve(table, IOU_CURVE.prefix)
    if not iou.empty:
        figures.append(ReportFigure("Mean IoU vs threshold", curve_figure(
            iou, "Mean IoU vs threshold (defective images; ★ each method's best)", "threshold on the map", "mean IoU")))
    figures.append(ReportFigure("Time per image", distribution_figure(
        rows, SECONDS.name, "Seconds to compute each map, per image")))
    return figures


def _thresholds(table: pd.DataFrame) -> pd.DataFrame:
    exported = threshold_export(table)["methods"]
    return pd.DataFrame.from_records(
        {"method": label(m), "threshold": v["threshold"], "mean IoU": v["mean_iou"], "mean Dice": v["mean_dice"],
         "defective images": v["defective_images"],
         "beats the controls": None if v["below_controls"] is None else not v["below_controls"]}
        for m, v in exported.items()
    )


def _worst(table: pd.DataFrame, n: int) -> pd.DataFrame:
    rows = results_only(table)
    has_defects = bool(rows["defective"].fillna(False).astype(bool).any())
    metric = WORST_METRIC if has_defects else INSERTION_AUC.name
    parts = []
    for method in dict.fromkeys(rows["method"]):
        if method in CONTROLS:
            continue
        found = worst_images(table, method, metric, n)
        # what drawing the image needs, whatever columns worst_images keeps
        extra = [c for c in ("source", "index", "target_class") if c in rows.columns and c not in found.columns]
        if extra:
            own = rows.loc[rows["method"] == method, ["image_id", *extra]].drop_duplicates("image_id")
            found = found.merge(own, on="image_id", how="left")
        parts.append(found.assign(method=method, worst_by=metric))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def evaluation_sections(table: pd.DataFrame, *, worst_n: int = 3) -> EvaluationSections:
    """The report's view of an evaluation results table (one model; errors included)."""
    rows = results_only(table)
    if rows.empty:
        raise ValueError("the results table holds no evaluated image")
    summary = summarize(table)
    failed = errors(table)
    skipped = failed[[c for c in ("image_id", "error") if c in failed.columns]].reset_index(drop=True)
    return EvaluationSections(
        model=str(rows["model"].iloc[0]), layer=str(rows["layer"].iloc[0]), images=int(rows["image_id"].nunique()),
        summary=summary_table(summary), flags=flagged_methods(summary), thresholds=_thresholds(table),
        figures=_charts(table), worst=_worst(table, worst_n), skipped=skipped,
    )


# ------------------------------------------------------------------ worst images
def worst_image_picture(loaded: "LoadedImage", cam: np.ndarray | None, tile: int = 256) -> np.ndarray:
    """uint8 RGB thumbnail: the map's heat overlay (when given) and the ground truth in green."""
    import cv2

    from camcore.visualize import draw_outline, overlay, to_rgb

    rgb = to_rgb(loaded.image)
    picture = overlay(rgb, cam, "jet", 0.45) if cam is not None else rgb
    if loaded.defective and np.asarray(loaded.mask).any():
        picture = draw_outline(picture, loaded.mask, thickness=max(1, round(max(rgb.shape[:2]) / 256)))
    height, width = picture.shape[:2]
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def jpeg_bytes(rgb: np.ndarray, quality: int = 88) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the image as JPEG")
    return data.tobytes()


def render_worst_images(
    worst: pd.DataFrame,
    open_image: Callable[[pd.Series], "LoadedImage"],
    compute_map: Callable[[pd.Series, "LoadedImage"], np.ndarray | None] | None = None,
) -> tuple[list[ReportImage], list[str]]:
    """Thumbnails of the worst-images table: ``open_image(row)`` gives the image and mask,
    ``compute_map(row, image)`` the method's map (None: the image alone). Returns the images
    and a note per image that could not be drawn (the report lists it without a picture)."""
    pictures, notes = [], []
    for _, row in worst.iterrows():
        caption = (f"{label(str(row['method']))} · {row['image_id']} · "
                   f"{row['worst_by']} = {float(row[row['worst_by']]):.3f}")
        try:
            loaded = open_image(row)
            cam = compute_map(row, loaded) if compute_map is not None else None
        except (ValueError, OSError, PermissionError) as exc:
            notes.append(f"{row['image_id']}: {exc}")
            continue
        pictures.append(ReportImage(caption, jpeg_bytes(worst_image_picture(loaded, cam)), "image/jpeg"))
    return pictures, notes


def row_opener(roots: Sequence[str] = ()) -> Callable[[pd.Series], "LoadedImage"]:
    """``open_image`` for :func:`render_worst_images` from a results row: a generated image is
    regenerated; a folder's image is read only when the folder lies in one of ``roots``
    (a results file must not make the reader open arbitrary paths), looked up by id in the
    folder's own listing (any layout)."""
    from pathlib import Path

    from camcore.evaluation.archives import read_folder
    from camcore.evaluation.sources import synthetic_image

    allowed = [Path(r).resolve() for r in roots]

    def open_image(row: pd.Series) -> "LoadedImage":
        source = str(row["source"])
        if source.startswith("synthetic:"):
            return synthetic_image(source, int(row["index"]))
        root = Path(source).resolve()
        if not any(root == a or a in root.parents for a in allowed):
            raise PermissionError(f"{source} is not under a data folder given to the report (--data-root)")
        for item in read_folder(root, train_good=True).items:
            if item.id == row["image_id"]:
                return item.load()
        raise ValueError(f"not listed in {source}")

    return open_image
