"""What the Dataset page says about a data set and its results: counts, the notice on methods
below the controls, skipped images, the summary split into two tables that fit a laptop's
width, and the time a run takes per image. Text and tables only (no widgets), so the page
stays a list of sections."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from camcore import evaluation as ev
from camcore.metrics import registered_columns
from camcore.metrics.timing import METRIC_SECONDS, SECONDS

SHOWN_REASONS = 3  # skipped images / set notes listed in a notice; the rest in the expander
MEDIAN, MEAN = " median", " mean"


def plural(count: int, word: str, words: str | None = None) -> str:
    """ "1 image", "2 images" ("1 category", "3 categories" with ``words``)."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def full_stop(text: str) -> str:
    """``text`` ending in a full stop (or the ! ? it has), so another sentence can follow."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def listed(lines: Sequence[str], shown: int = SHOWN_REASONS, rest: str = "") -> str:
    """Markdown bullets of the first ``shown`` lines and "… and N more" (``rest`` after it)."""
    bullets = [f"- {line}" for line in lines[:shown]]
    if len(lines) > shown:
        bullets.append(f"- … and {len(lines) - shown} more{rest}")
    return "\n".join(bullets)


def skipped_notice(failed: pd.DataFrame) -> str:
    """One notice for the images a run skipped, with the reason of the first few (a wrong-size
    mask says so, not "could not be read")."""
    reasons = [str(e) for e in failed.get("error", pd.Series(dtype=str)).fillna("unknown error")]
    if len(reasons) == 1:
        return f"1 image was skipped: {full_stop(reasons[0])}"
    return f"{len(reasons)} images were skipped:\n\n" + listed(reasons, rest=" (see *Skipped images*)")


def set_notes(notes: Sequence[str]) -> str:
    """One notice for the remarks on an uploaded set (e.g. defective images without a mask)."""
    if len(notes) == 1:
        return full_stop(notes[0])
    return f"{len(notes)} remarks on this set:\n\n" + listed(list(notes), shown=5)


# -------------------------------------------------------------- controls notice
def _checked_columns(summary: pd.DataFrame) -> list[tuple[str, str, object]]:
    """(what the flag calls it, summary entry, column) of each column methods must beat the controls on."""
    return [(c.beat_controls, c.summary_key, c) for _, c in registered_columns()
            if c.beat_controls and c.summary_key in summary.columns]


def _score(column, value: float) -> str:
    return column.fmt.format(value) + (" %" if column.summary == "rate" else "")


def _beats(column, value: float, control: float) -> bool:
    return value < control if column.higher_is_better is False else value > control


def control_notice(summary: pd.DataFrame) -> str | None:
    """One notice for every method that does not beat the Sobel and random controls (None
    when all do): the methods, the controls' scores on each checked column, and what the maps
    are then no better than - an edge detector, and a random map only where the random control
    scored above zero (a method tying a control that found nothing is not "no better than noise")."""
    flagged = list(ev.flagged_methods(summary))
    if not flagged or not {"sobel", "random"} <= set(summary.index):
        return None
    names = [ev.METHOD_LABELS.get(m, m) for m in flagged]
    named = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    scores, than = [], []
    for reason, key, column in _checked_columns(summary):
        sobel, random = float(summary.loc["sobel", key]), float(summary.loc["random", key])
        scores.append(f"{reason}: Sobel {_score(column, sobel)}, random {_score(column, random)}")
        values = [float(summary.loc[m, key]) for m in flagged]
        if any(not _beats(column, v, sobel) for v in values) and "an edge detector (Sobel)" not in than:
            than.append("an edge detector (Sobel)")
        if random != 0 and any(not _beats(column, v, random) for v in values) and "a random map" not in than:
            than.append("a random map")
    verb = "does" if len(flagged) == 1 else "do"
    text = f"**{named}** {verb} not beat the controls on this data set (⚠ in the table) — the controls scored " \
           + "; ".join(scores) + "."
    if than:
        text += " On these images " + ("its" if len(flagged) == 1 else "their") + " maps find the defects no " \
                "better than " + " or ".join(than) + "."
    return text


# ---------------------------------------------------------------- summary
def _title(column: str) -> tuple[str, bool]:
    """(the registry title, is a median) of a summary-table column."""
    for suffix in (MEDIAN, MEAN):
        if column.endswith(suffix):
            return column[: -len(suffix)], suffix == MEDIAN
    return column, False


def summary_parts(summary: pd.DataFrame, medians: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`camcore.evaluation.summary_table` as two tables that each fit the page: localization
    (over the defective images) and faithfulness and time (over every image); means only
    unless ``medians`` (then "x mean" and "x median" columns)."""
    table = ev.summary_table(summary)
    needs_mask = {column.title: metric.needs_mask for metric, column in registered_columns()}
    needs_mask |= {"defective images": True, "images": False}
    parts: dict[bool, list[str]] = {True: [], False: []}
    renamed = {}
    for column in table.columns:
        title, median = _title(column)
        if median and not medians:
            continue
        parts[needs_mask.get(title, False)].append(column)
        renamed[column] = column if medians else title
    return tuple(table[parts[side]].rename(columns=renamed) for side in (True, False))  # type: ignore[return-value]


# ------------------------------------------------------------------- time
def time_per_image(rows: pd.DataFrame) -> tuple[float, float]:
    """(seconds of the maps, seconds of the metrics) per image, summed over the methods and
    averaged over the images; the metrics' 0 for results written before they were timed."""
    columns = [c for c in (SECONDS.name, METRIC_SECONDS.name) if c in rows.columns]
    per_image = rows.groupby("image_id")[columns].sum().mean()
    return float(per_image.get(SECONDS.name, 0.0)), float(per_image.get(METRIC_SECONDS.name, 0.0))


def time_caption(rows: pd.DataFrame) -> str:
    maps, metrics = time_per_image(rows)
    return (f"Per image, every method together: maps {maps:.2f} s + metrics {metrics:.2f} s = "
            f"**{maps + metrics:.2f} s** (mean), plus reading the image. The metrics (faithfulness curves, "
            "ROAD, the sanity check) run the model many times per map: they, not the maps, set a run's pace.")
