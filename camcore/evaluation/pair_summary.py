"""Where two models differ: summaries of a two-model results table
(:mod:`camcore.evaluation.pair_table`).

* :func:`summarize_agreement` - per CAM method, the agreement of the two models' maps (mean
  and median correlation and IoU of the regions, the peaks-in-defect rates);
* :func:`least_agreeing` - the images where the maps agree least (one method's, or the mean
  over the methods);
* :func:`top1_disagreement` - per image class, how often the two models' top-1 differ;
* :func:`format_pair_summary` - all of it as Markdown, with each model's own summary.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from camcore.evaluation.defaults import ALL_METHODS, METHOD_LABELS
from camcore.evaluation.pair import UNAVAILABLE
from camcore.evaluation.pair_table import side_table
from camcore.evaluation.results import results_only
from camcore.evaluation.summary import format_summary, summarize, summarize_column
from camcore.methods import METHODS
from camcore.metrics.agreement import (
    AGREEMENT_COLUMNS,
    AGREEMENT_THRESHOLD,
    MAP_CORRELATION,
    MAP_IOU,
    TOP1_AGREE,
)

__all__ = ["format_pair_summary", "least_agreeing", "summarize_agreement", "top1_disagreement", "unavailable_for_b"]

_PER_METHOD = tuple(c for c in AGREEMENT_COLUMNS if c is not TOP1_AGREE)  # top-1 is the image's, not the map's
_SHOWN = ("image_id", "class_name", "defective", "method", MAP_CORRELATION.name, MAP_IOU.name,
          "both_peaks_in_defect", "p_target", "b_p_target", "predicted", "b_predicted", "source", "index")


def _compared(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose two maps were compared (CAM methods both models served)."""
    rows = results_only(df)
    if MAP_CORRELATION.name not in rows.columns:
        return rows.iloc[:0]
    return rows[rows["method"].isin(list(METHODS)) & rows[MAP_CORRELATION.name].notna()]


def summarize_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per CAM method (in the evaluation's order): the images compared, the defective ones,
    and the summary of each agreement column (mean and median correlation and IoU, the
    rates in % of the peaks in the defect over the defective images, the threshold)."""
    rows = _compared(df)
    summary: dict[str, dict[str, float]] = {}
    for method in [m for m in ALL_METHODS if m in set(rows["method"])]:
        group = rows[rows["method"] == method]
        entry = {"images": float(len(group)),
                 "defective_images": float(group["defective"].fillna(False).astype(bool).sum())}
        for column in _PER_METHOD:
            if column.name in group.columns and group[column.name].notna().any():
                summarize_column(entry, column, group[column.name].dropna().astype(float))
        summary[method] = entry
    table = pd.DataFrame.from_dict(summary, orient="index")
    table.index.name = "method"
    return table


def unavailable_for_b(df: pd.DataFrame) -> dict[str, str]:
    """``{method: why}`` of the methods model B could not serve in a pair table."""
    rows = results_only(df)
    if UNAVAILABLE not in rows.columns:
        return {}
    reasons = rows[rows[UNAVAILABLE].fillna("").astype(str) != ""]
    return {str(m): str(r) for m, r in reasons.groupby("method", sort=False)[UNAVAILABLE].first().items()}


def least_agreeing(df: pd.DataFrame, method: str | None = None, by: str = MAP_CORRELATION.name,
                   n: int = 10) -> pd.DataFrame:
    """The ``n`` images where the two models' maps agree least by the column ``by``
    (``map_correlation`` or ``map_iou``): for ``method``, its rows; without one, each
    image's mean over the methods compared, with the method agreeing least on it
    (``least_method``, ``least_value``)."""
    if by not in (MAP_CORRELATION.name, MAP_IOU.name):
        raise ValueError(f"rank by {MAP_CORRELATION.name!r} or {MAP_IOU.name!r}, not {by!r}")
    rows = _compared(df)
    rows = rows[rows[by].notna()] if by in rows.columns else rows.iloc[:0]
    if method is not None:
        rows = rows[rows["method"] == method]
        keep = [c for c in _SHOWN if c in rows.columns]
        return rows.sort_values(by, kind="stable").head(n)[keep].reset_index(drop=True)
    if rows.empty:
        return pd.DataFrame(columns=["image_id", by, "least_method", "least_value"])
    least = rows.loc[rows.groupby("image_id", sort=False)[by].idxmin()].set_index("image_id")
    per_image = rows.groupby("image_id", sort=False)[by].mean().rename(by).to_frame()
    per_image["least_method"] = least["method"]
    per_image["least_value"] = least[by]
    first = rows.drop_duplicates("image_id").set_index("image_id")
    extra = [c for c in _SHOWN if c in first.columns and c not in ("image_id", "method", MAP_CORRELATION.name,
                                                                   MAP_IOU.name, "both_peaks_in_defect")]
    table = per_image.join(first[extra])
    return table.sort_values(by, kind="stable").head(n).reset_index()


def top1_disagreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per image class (``class_name``): the images, on how many the two models' top-1
    differ and that share in %, most disagreeing first. Empty when the models have
    different classes (their top-1 cannot be compared)."""
    rows = results_only(df)
    if TOP1_AGREE.name not in rows.columns or rows[TOP1_AGREE.name].isna().all():
        return pd.DataFrame(columns=["class_name", "images", "top1_differs", "share"])
    images = rows.drop_duplicates("image_id")
    images = images.assign(top1_differs=1.0 - images[TOP1_AGREE.name].astype(float),
                           class_name=images["class_name"].fillna("(none)").astype(str))
    table = images.groupby("class_name").agg(images=("image_id", "count"), top1_differs=("top1_differs", "sum"))
    table["share"] = 100.0 * table["top1_differs"] / table["images"]
    table["top1_differs"] = table["top1_differs"].astype(int)
    return table.sort_values(["share", "images"], ascending=[False, False], kind="stable").reset_index()


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _cell(entry: pd.Series, name: str, fmt: str, median: bool = False) -> str:
    mean_key, median_key = (f"{name}_mean", f"{name}_median") if median else (name, None)
    if mean_key not in entry or pd.isna(entry[mean_key]):
        return "–"
    text = fmt.format(float(entry[mean_key]))
    return text + (f" / {fmt.format(float(entry[median_key]))}" if median_key else "")


def _agreement_lines(df: pd.DataFrame) -> list[str]:
    summary = summarize_agreement(df)
    if summary.empty:
        return ["No map of both models to compare."]
    threshold = float(summary[AGREEMENT_THRESHOLD.name].iloc[0]) if AGREEMENT_THRESHOLD.name in summary else 0.5
    headers = ["method", "images", "r mean / median", f"IoU @ {threshold:.2f} mean / median",
               "A's peak in defect", "B's peak in defect", "both peaks in defect"]
    rows = []
    for method, entry in summary.iterrows():
        rows.append([METHOD_LABELS.get(str(method), str(method)), f"{entry['images']:.0f}",
                     _cell(entry, MAP_CORRELATION.name, "{:.4f}", True), _cell(entry, MAP_IOU.name, "{:.3f}", True),
                     *(_cell(entry, f"{name}_rate", "{:.0f} %") for name in
                       ("peak_a_in_defect", "peak_b_in_defect", "both_peaks_in_defect"))])
    return _markdown(headers, rows)


def _index(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else str(int(value))


def _least_lines(df: pd.DataFrame, n: int) -> list[str]:
    least = least_agreeing(df, n=n)
    if least.empty:
        return []
    headers = ["image", "class", "mean r", "least: method (r)", "top-1 A / B", "p A / p B"]
    rows = [[row["image_id"], row.get("class_name", ""), f"{row[MAP_CORRELATION.name]:.4f}",
             f"{METHOD_LABELS.get(row['least_method'], row['least_method'])} ({row['least_value']:.4f})",
             f"{_index(row.get('predicted'))} / {_index(row.get('b_predicted'))}",
             f"{row.get('p_target', float('nan')):.3f} / {row.get('b_p_target', float('nan')):.3f}"]
            for _, row in least.iterrows()]
    title = f"Where the maps differ most: the {len(rows)} images with the lowest mean correlation over the methods:"
    return [title, "", *_markdown(headers, rows)]


def _top1_lines(df: pd.DataFrame) -> list[str]:
    classes = top1_disagreement(df)
    if classes.empty:
        return ["Top-1: the models have different classes; their top-1 are not compared."]
    images = int(classes["images"].sum())
    differs = int(classes["top1_differs"].sum())
    lines = [f"Top-1: the two models predict different classes on {differs} of {images} images "
             + f"({100.0 * differs / max(images, 1):.1f} %)."]
    disagreeing = classes[classes["top1_differs"] > 0]
    if len(disagreeing):
        lines += ["", "Classes where the top-1 differ:", ""]
        lines += _markdown(["class", "images", "top-1 differs", "share"],
                           [[r["class_name"], r["images"], r["top1_differs"], f"{r['share']:.0f} %"]
                            for _, r in disagreeing.iterrows()])
    return lines


def format_pair_summary(df: pd.DataFrame, n: int = 10) -> str:
    """A two-model results table as Markdown: each model's summary
    (:func:`camcore.evaluation.format_summary`), then how far their maps agree per method,
    the images where they differ most and the classes where their top-1 differ."""
    a, b = side_table(df, "a"), side_table(df, "b")
    lines: list[str] = []
    for name, table in (("A", a), ("B", b)):
        rows = results_only(table)
        if rows.empty:
            continue
        lines += [f"## Model {name}: {rows['model'].iloc[0]}, layer {rows['layer'].iloc[0]}", ""]
        lines += [format_summary(summarize(table)), ""]
    legend = ("Agreement of the two models' maps (r: Pearson correlation; IoU of the regions map >= threshold; "
              "peaks: the pointing game of each map, defective images):")
    lines += ["## Model A against model B", "", legend, ""]
    lines += _agreement_lines(df)
    missing = unavailable_for_b(df)
    if missing:
        lines += ["", "Not available for model B: " + "; ".join(
            f"{METHOD_LABELS.get(m, m)} ({why})" for m, why in missing.items())]
    least = _least_lines(df, n)
    lines += ["", *least] if least else []
    return "\n".join(lines + ["", *_top1_lines(df)])
