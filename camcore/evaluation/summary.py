"""Per-method summaries, mean curves, worst images, threshold export and Markdown."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from camcore import metrics
from camcore.evaluation.defaults import ALL_METHODS, CONTROLS, METHOD_LABELS
from camcore.evaluation.results import add_global_threshold, curve_columns, results_only



def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per method (CAMs first, then controls): mean and median of every metric, the best
    global threshold with the IoU/Dice it gives, the time per image, and whether the
    method fails to beat both controls (:func:`camcore.metrics.flag_below_controls`) on
    mean IoU at its best threshold or on the pointing game.

    Binary metrics (pointing game, increase in confidence) are given as rates in %.
    """
    if "iou_at_global" not in df.columns:
        df = add_global_threshold(df)
    rows = results_only(df)
    models = rows["model"].dropna().unique() if "model" in rows.columns else []
    if len(models) > 1:
        raise ValueError(f"summarize one model at a time; the table holds {list(models)}")
    order = [m for m in ALL_METHODS if m in set(rows["method"])]
    summary: dict[str, dict[str, float]] = {}
    for method in order:
        group = rows[rows["method"] == method]
        defective = group[group["defective"].fillna(False).astype(bool)]
        entry: dict[str, float] = {"images": float(len(group)), "defective_images": float(len(defective))}
        if len(defective):
            entry["pointing_game"] = 100.0 * float(defective["pointing_game"].mean())
            _mean_median(entry, "energy_pointing_game", defective["energy_pointing_game"])
            entry["best_threshold"] = float(defective["global_threshold"].iloc[0])
            _mean_median(entry, "iou_at_best", defective["iou_at_global"])
            _mean_median(entry, "dice_at_best", defective["dice_at_global"])
            _mean_median(entry, "oracle_iou", defective["oracle_iou"])
        if len(group):
            drop = metrics.summarize_drop_increase(
                zip(group["average_drop"].astype(float), group["increased_confidence"].astype(float) > 0.5)
            )
            entry["average_drop_mean"] = drop["average_drop"]
            entry["average_drop_median"] = float(group["average_drop"].median())
            entry["increase_in_confidence"] = drop["increase_in_confidence"]
            for name in ("deletion_auc", "insertion_auc", "road_morf_auc", "road_lerf_auc"):
                if name in group.columns and group[name].notna().any():
                    _mean_median(entry, name, group[name])
            _mean_median(entry, "seconds", group["seconds"])
            if "sanity_pass" in group.columns and group["sanity_pass"].notna().any():
                entry["sanity_pass_rate"] = 100.0 * float(group["sanity_pass"].mean())
                _mean_median(entry, "sanity_spearman", group["sanity_spearman"])
                _mean_median(entry, "sanity_ssim", group["sanity_ssim"])
        summary[method] = entry
    table = pd.DataFrame.from_dict(summary, orient="index")
    table.index.name = "method"
    table["below_controls"] = pd.Series(pd.NA, index=table.index, dtype="boolean")
    table["flag"] = ""
    if all(c in summary for c in CONTROLS) and "iou_at_best_mean" in table.columns:
        localized = {m: {k: table.loc[m, k] for k in ("iou_at_best_mean", "pointing_game")} for m in order}
        by_iou = metrics.flag_below_controls(localized, "iou_at_best_mean")
        by_pointing = metrics.flag_below_controls(localized, "pointing_game")
        for method in by_iou:
            reasons = [name for name, flags in (("mean IoU", by_iou), ("pointing game", by_pointing)) if flags[method]]
            table.loc[method, "below_controls"] = bool(reasons)
            if reasons:
                table.loc[method, "flag"] = "does not beat the Sobel and random controls on " + " and ".join(reasons)
    return table


def flagged_methods(summary: pd.DataFrame) -> dict[str, str]:
    """``{method: reason}`` for the methods of a :func:`summarize` table that do not beat
    the controls."""
    flags = summary.get("below_controls", pd.Series(dtype="boolean")).fillna(False).astype(bool)
    return {str(m): str(summary.loc[m, "flag"]) for m in summary.index[flags.to_numpy()]}


def _mean_median(entry: dict[str, float], name: str, values: pd.Series) -> None:
    values = values.astype(float)
    entry[f"{name}_mean"] = float(values.mean())
    entry[f"{name}_median"] = float(values.median())


def mean_curve(df: pd.DataFrame, prefix: str, defective_only: bool | None = None) -> pd.DataFrame:
    """The curve ``prefix`` ("iou", "deletion", "insertion", "road_morf", "road_lerf")
    averaged over the set: index x (threshold or fraction removed), one column per
    method in :data:`ALL_METHODS` order. IoU curves average the defective images only
    (``defective_only`` default), faithfulness curves every image."""
    columns = curve_columns(df, prefix)
    rows = results_only(df)
    if defective_only is None:
        defective_only = prefix == "iou"
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


# metric -> (worst first when sorted ascending, defective images only)
WORST_BY: dict[str, tuple[bool, bool]] = {
    "iou_at_global": (True, True),
    "energy_pointing_game": (True, True),
    "pointing_game": (True, True),
    "insertion_auc": (True, False),
    "deletion_auc": (False, False),
    "average_drop": (False, False),
}


def worst_images(df: pd.DataFrame, method: str, metric: str = "iou_at_global", n: int = 10) -> pd.DataFrame:
    """The ``n`` images on which ``method`` does worst by ``metric`` (see :data:`WORST_BY`)."""
    if metric not in WORST_BY:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(WORST_BY)}")
    ascending, defective_only = WORST_BY[metric]
    rows = results_only(df)
    rows = rows[rows["method"] == method]
    if defective_only:
        rows = rows[rows["defective"].fillna(False).astype(bool)]
    rows = rows[rows[metric].notna()] if metric in rows.columns else rows.iloc[:0]
    keep = [c for c in ("image_id", "class_name", "defective", metric, "iou_at_global", "pointing_game",
                        "average_drop", "insertion_auc", "p_target", "source", "index", "layer", "model")
            if c in rows.columns]
    keep = list(dict.fromkeys(keep))
    return rows.sort_values(metric, ascending=ascending, kind="stable").head(n)[keep].reset_index(drop=True)


def threshold_export(df: pd.DataFrame) -> dict[str, Any]:
    """JSON-ready record of each method's best global threshold (the one maximizing mean
    IoU over the defective images) with the mean IoU and Dice it gives, and the
    control flags, for use as a deployment threshold."""
    summary = summarize(df)
    rows = results_only(df)
    methods: dict[str, Any] = {}
    for method, entry in summary.iterrows():
        if "best_threshold" not in summary.columns or pd.isna(entry.get("best_threshold")):
            continue
        flagged = entry.get("below_controls")
        methods[str(method)] = {
            "threshold": float(entry["best_threshold"]),
            "mean_iou": float(entry["iou_at_best_mean"]),
            "mean_dice": float(entry["dice_at_best_mean"]),
            "defective_images": int(entry["defective_images"]),
            "below_controls": None if flagged is None or pd.isna(flagged) else bool(flagged),
        }
    first = rows.iloc[0] if len(rows) else {}
    return {
        "model": None if len(rows) == 0 else str(first.get("model")),
        "layer": None if len(rows) == 0 else str(first.get("layer")),
        "criterion": "threshold on the [0, 1] map maximizing the mean IoU over the defective images",
        "grid": [x for x, _ in curve_columns(df, "iou")],
        "methods": methods,
    }


# (title, mean column, median column or None, format): the printed tables, one for
# localization (defective images) and one for faithfulness and time (all images).
_LOCALIZATION_COLUMNS = [
    ("defective images", "defective_images", None, "{:.0f}"),
    ("pointing game %", "pointing_game", None, "{:.1f}"),
    ("energy PG", "energy_pointing_game_mean", "energy_pointing_game_median", "{:.3f}"),
    ("best thr.", "best_threshold", None, "{:.2f}"),
    ("IoU@best", "iou_at_best_mean", "iou_at_best_median", "{:.3f}"),
    ("Dice@best", "dice_at_best_mean", "dice_at_best_median", "{:.3f}"),
    ("oracle IoU", "oracle_iou_mean", "oracle_iou_median", "{:.3f}"),
]
_FAITHFULNESS_COLUMNS = [
    ("images", "images", None, "{:.0f}"),
    ("Avg Drop % ↓", "average_drop_mean", "average_drop_median", "{:.1f}"),
    ("Increase % ↑", "increase_in_confidence", None, "{:.1f}"),
    ("deletion AUC ↓", "deletion_auc_mean", "deletion_auc_median", "{:.3f}"),
    ("insertion AUC ↑", "insertion_auc_mean", "insertion_auc_median", "{:.3f}"),
    ("ROAD MoRF ↓", "road_morf_auc_mean", "road_morf_auc_median", "{:.3f}"),
    ("ROAD LeRF ↑", "road_lerf_auc_mean", "road_lerf_auc_median", "{:.3f}"),
    ("s/image", "seconds_mean", "seconds_median", "{:.3f}"),
    ("sanity pass %", "sanity_pass_rate", None, "{:.0f}"),
    ("sanity Spearman", "sanity_spearman_mean", "sanity_spearman_median", "{:.2f}"),
    ("sanity SSIM", "sanity_ssim_mean", "sanity_ssim_median", "{:.2f}"),
]


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's mean (and median) columns under readable titles, methods by their
    labels (⚠ marks a method below the controls); numbers are left unformatted."""
    flagged = flagged_methods(summary)
    titles: dict[str, str] = {}
    for title, mean, median, _ in _LOCALIZATION_COLUMNS + _FAITHFULNESS_COLUMNS:
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
    if "best_threshold" in summary.columns:
        lines += ["Localization (defective images):", ""]
        lines += _markdown(summary, _LOCALIZATION_COLUMNS, flagged) + [""]
    lines += ["Faithfulness (every image, explaining the target class) and time per image:", ""]
    lines += _markdown(summary, _FAITHFULNESS_COLUMNS, flagged)
    if flagged:
        lines.append("")
        lines += [f"⚠ {METHOD_LABELS.get(m, m)}: {reason}." for m, reason in flagged.items()]
    return "\n".join(lines)
