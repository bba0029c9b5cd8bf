"""Per-method summaries, mean curves, worst images, threshold export and Markdown."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import pandas as pd

from camcore import metrics
from camcore.evaluation.defaults import ALL_METHODS, CONTROLS, METHOD_LABELS
from camcore.evaluation.results import add_global_threshold, curve_columns, results_only
from camcore.metrics import Column, find_column, find_curve, registered_columns
from camcore.metrics.localization import DICE_AT_GLOBAL, GLOBAL_THRESHOLD, IOU_AT_GLOBAL, IOU_CURVE


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per method (CAMs first, then controls): the summary of every registered metric
    column present (:attr:`camcore.metrics.Column.summary`: mean and median, a rate in %,
    or the one value, e.g. the best global threshold), over the defective images for the
    metrics that need a mask and over every image otherwise; the image counts; and whether
    the method fails to beat both controls (:func:`camcore.metrics.flag_below_controls`)
    on a column that asks for it (mean IoU at the best threshold, pointing game).
    """
    if IOU_AT_GLOBAL.name not in df.columns:
        df = add_global_threshold(df)
    rows = results_only(df)
    models = rows["model"].dropna().unique() if "model" in rows.columns else []
    if len(models) > 1:
        raise ValueError(f"summarize one model at a time; the table holds {list(models)}")
    order = [m for m in ALL_METHODS if m in set(rows["method"])]
    summary = {method: _method_summary(rows[rows["method"] == method]) for method in order}
    table = pd.DataFrame.from_dict(summary, orient="index")
    table.index.name = "method"
    _flag_below_controls(table, order)
    return table


def _method_summary(group: pd.DataFrame) -> dict[str, float]:
    """The summary entries of one method's rows."""
    defective = group[group["defective"].fillna(False).astype(bool)]
    entry: dict[str, float] = {"images": float(len(group)), "defective_images": float(len(defective))}
    for metric, column in registered_columns():
        rows = defective if metric.needs_mask else group
        if column.summary and column.name in rows.columns and rows[column.name].notna().any():
            summarize_column(entry, column, rows[column.name].dropna().astype(float))
    return entry


def summarize_column(entry: dict[str, float], column: Column, values: pd.Series) -> None:
    """Add the summary of one column's values to ``entry`` (:attr:`Column.summary`: a rate
    in %, the first value, or the mean and median)."""
    if column.summary == "rate":
        entry[column.summary_name] = 100.0 * float((values > 0.5).mean())
    elif column.summary == "first":
        entry[column.summary_name] = float(values.iloc[0])
    else:
        entry[f"{column.summary_name}_mean"] = float(values.mean())
        entry[f"{column.summary_name}_median"] = float(values.median())


def _flag_below_controls(table: pd.DataFrame, order: list[str]) -> None:
    """Fill ``below_controls`` and ``flag`` of ``table`` for the columns that must beat the controls."""
    table["below_controls"] = pd.Series(pd.NA, index=table.index, dtype="boolean")
    table["flag"] = ""
    checked = [(c.beat_controls, key) for _, c in registered_columns()
               if c.beat_controls and (key := c.summary_key) is not None and key in table.columns]
    if not all(c in table.index for c in CONTROLS) or not checked:
        return
    scores = {m: {key: float(table.loc[m, key]) for _, key in checked} for m in order}
    flags = [(reason, metrics.flag_below_controls(scores, key)) for reason, key in checked]
    for method in flags[0][1]:
        reasons = [reason for reason, flagged in flags if flagged[method]]
        table.loc[method, "below_controls"] = bool(reasons)
        if reasons:
            table.loc[method, "flag"] = "does not beat the Sobel and random controls on " + " and ".join(reasons)


def flagged_methods(summary: pd.DataFrame) -> dict[str, str]:
    """``{method: reason}`` for the methods of a :func:`summarize` table that do not beat
    the controls."""
    flags = summary.get("below_controls", pd.Series(dtype="boolean")).fillna(False).astype(bool)
    return {str(m): str(summary.loc[m, "flag"]) for m in summary.index[flags.to_numpy()]}


def mean_curve(df: pd.DataFrame, prefix: str, defective_only: bool | None = None) -> pd.DataFrame:
    """The curve ``prefix`` (a registered :class:`camcore.metrics.Curve`'s, e.g. "iou",
    "deletion", "road_morf") averaged over the set: index x (threshold or fraction
    removed), one column per method in :data:`ALL_METHODS` order. By default the curves of
    a metric that needs a mask (IoU) average the defective images only, the others every
    image."""
    columns = curve_columns(df, prefix)
    rows = results_only(df)
    if defective_only is None:
        found = find_curve(prefix)
        defective_only = found is not None and found[0].needs_mask
    if defective_only:
        rows = rows[rows["defective"].fillna(False).astype(bool)]
    if not columns or rows.empty:
        return pd.DataFrame()
    names = [c for _, c in columns]
    means = rows.groupby("method", sort=False)[names].mean()
    means = means.loc[[m for m in ALL_METHODS if m in means.index]]
    out = means.T
    out.index = pd.Index([x for x, _ in columns], name=prefix)
    return out.dropna(axis=1, how="all")


def column_label(name: str) -> str:
    """A results column as charts and menus name it: its registry description, the images
    it covers and which way is better, e.g. "Deletion AUC (lower is better)"; a column no
    metric registers keeps its name."""
    found = find_column(name)
    if found is None:
        return name
    metric, column = found
    notes = ["defective images"] if metric.needs_mask else []
    if column.higher_is_better is not None:
        notes.append("higher is better" if column.higher_is_better else "lower is better")
    return f"{column.description} ({', '.join(notes)})" if notes else column.description


HEADLINE_COLUMN = IOU_AT_GLOBAL.name
"""The column shown first and ranking the worst images unless another is chosen."""


class _WorstBy(Mapping):
    """Column -> (worst first when sorted ascending, defective images only) for every
    registered column with a worst-images label, read from the registry at each use."""

    def _orders(self) -> dict[str, tuple[bool, bool]]:
        return {column.name: (bool(column.higher_is_better), metric.needs_mask)
                for metric, column in registered_columns() if column.worst}

    def __getitem__(self, name: str) -> tuple[bool, bool]:
        return self._orders()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._orders())

    def __len__(self) -> int:
        return len(self._orders())

    def __repr__(self) -> str:
        return repr(self._orders())


WORST_BY: Mapping[str, tuple[bool, bool]] = _WorstBy()
"""The columns :func:`worst_images` ranks by: ``{column: (ascending, defective only)}``."""


def worst_images(df: pd.DataFrame, method: str, metric: str = HEADLINE_COLUMN, n: int = 10) -> pd.DataFrame:
    """The ``n`` images on which ``method`` does worst by the column ``metric`` (see
    :data:`WORST_BY`), with every other column of :data:`WORST_BY` beside it."""
    if metric not in WORST_BY:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(WORST_BY)}")
    ascending, defective_only = WORST_BY[metric]
    rows = results_only(df)
    rows = rows[rows["method"] == method]
    if defective_only:
        rows = rows[rows["defective"].fillna(False).astype(bool)]
    rows = rows[rows[metric].notna()] if metric in rows.columns else rows.iloc[:0]
    keep = [c for c in ("image_id", "class_name", "defective", metric, *WORST_BY, "p_target", "source", "index",
                        "layer", "model") if c in rows.columns]
    keep = list(dict.fromkeys(keep))
    return rows.sort_values(metric, ascending=ascending, kind="stable").head(n)[keep].reset_index(drop=True)


def threshold_export(df: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready record of each method's best global threshold (the one maximizing mean
    IoU over the defective images) with the mean IoU and Dice it gives, and the
    control flags, for use as a deployment threshold."""
    summary = summarize(df)
    rows = results_only(df)
    methods: dict[str, Any] = {}
    best, mean_iou, mean_dice = (c.summary_key for c in (GLOBAL_THRESHOLD, IOU_AT_GLOBAL, DICE_AT_GLOBAL))
    for method, entry in summary.iterrows():
        if best not in summary.columns or pd.isna(entry.get(best)):
            continue
        flagged = entry.get("below_controls")
        methods[str(method)] = {
            "threshold": float(entry[best]),
            "mean_iou": float(entry[mean_iou]),
            "mean_dice": float(entry[mean_dice]),
            "defective_images": int(entry["defective_images"]),
            "below_controls": None if flagged is None or pd.isna(flagged) else bool(flagged),
        }
    first = rows.iloc[0] if len(rows) else {}
    return {
        "model": None if len(rows) == 0 else str(first.get("model")),
        "layer": None if len(rows) == 0 else str(first.get("layer")),
        "criterion": "threshold on the [0, 1] map maximizing the mean IoU over the defective images",
        "grid": [x for x, _ in curve_columns(df, IOU_CURVE.prefix)],
        "methods": methods,
    }


def _table_columns(localization: bool) -> list[tuple[str, str, str | None, str]]:
    """``(title, mean or value entry, median entry or None, format)`` of a printed table:
    the localization one (the summarized columns of metrics that need a mask, over the
    defective images) or the faithfulness and time one (all other columns, every image)."""
    count = ("defective images", "defective_images") if localization else ("images", "images")
    columns: list[tuple[str, str, str | None, str]] = [(*count, None, "{:.0f}")]
    for metric, column in registered_columns():
        if column.summary_key is not None and metric.needs_mask == localization:
            columns.append((column.title, column.summary_key, column.median_key, column.fmt))
    return columns


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's mean (and median) columns under readable titles, methods by their
    labels (⚠ marks a method below the controls); numbers are left unformatted."""
    flagged = flagged_methods(summary)
    titles: dict[str, str] = {}
    for title, mean, median, _ in _table_columns(True) + _table_columns(False):
        if median is None:
            titles.setdefault(mean, title)
        else:
            titles.setdefault(mean, f"{title} mean")
            titles.setdefault(median, f"{title} median")
    keys = [key for key in titles if key in summary.columns]
    table = summary[keys].astype(float)
    table.columns = [titles[key] for key in keys]
    table.index = [METHOD_LABELS.get(str(m), str(m)) + (" ⚠" if m in flagged else "") for m in summary.index]
    table.index.name = "method"
    return table


def _markdown(summary: pd.DataFrame, columns: list, flagged: Mapping[str, str]) -> list[str]:
    columns = [c for c in columns if c[1] in summary.columns]
    header = [title + (" mean / median" if median and median in summary.columns else "")
              for title, _, median, _ in columns]
    lines = ["| method | " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    for method, row in summary.iterrows():
        label = METHOD_LABELS.get(str(method), str(method)) + (" ⚠" if method in flagged else "")
        cells = []
        for _, mean, median, fmt in columns:
            cell = "–" if pd.isna(row[mean]) else fmt.format(float(row[mean]))
            if median and median in summary.columns and not pd.isna(row[median]):
                cell += " / " + fmt.format(float(row[median]))
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as two Markdown tables, localization (defective images; IoU and Dice at
    the best global threshold) and faithfulness and time (all images), with mean /
    median cells; methods below the controls are marked ⚠ and explained below."""
    flagged = flagged_methods(summary)
    lines: list[str] = []
    localization = _table_columns(True)
    if any(key in summary.columns for _, key, _, _ in localization[1:]):
        lines += ["Localization (defective images):", ""]
        lines += _markdown(summary, localization, flagged) + [""]
    lines += ["Faithfulness (every image, explaining the target class) and time per image:", ""]
    lines += _markdown(summary, _table_columns(False), flagged)
    if flagged:
        lines.append("")
        lines += [f"⚠ {METHOD_LABELS.get(m, m)}: {reason}." for m, reason in flagged.items()]
    return "\n".join(lines)
