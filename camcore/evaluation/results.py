"""The results table: journal records to rows, global thresholds, Parquet/CSV I/O."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from camcore.metrics import registered_columns
from camcore.metrics.localization import DICE_AT_GLOBAL, GLOBAL_THRESHOLD, IOU_AT_GLOBAL, IOU_CURVE
from camcore.metrics.timing import SECONDS


def iou_column(threshold: float) -> str:
    """The column of the IoU curve's point at ``threshold`` (e.g. ``iou@0.50``)."""
    return IOU_CURVE.column(threshold)


def curve_columns(df: pd.DataFrame, prefix: str) -> list[tuple[float, str]]:
    """``[(x, column)]`` of the curve ``prefix`` (a :class:`camcore.metrics.Curve`'s, e.g.
    "iou", "deletion", "road_morf") present in ``df``, sorted by x."""
    found = []
    for column in df.columns:
        name, _, x = str(column).partition("@")
        if name == prefix and x:
            try:
                found.append((float(x), column))
            except ValueError:
                continue
    return sorted(found)


def _check_out(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, got {path.name}")
    return path


PROBE_BYTES = 64 * 1024  # written and removed beside --out before any work starts


def check_writable(out: str | os.PathLike[str], journal: str | os.PathLike[str] | None = None) -> Path:
    """``out`` checked before any work starts: a .parquet/.csv name, not a folder, in a folder
    that can be created and written with room to spare (a 64 KiB probe file is written,
    synced and removed), and ``journal``, if given, not a folder either. A read-only, missing
    or full disk gives a ValueError naming the folder and the reason, instead of an error
    after hours of work."""
    path = _check_out(out)
    for target in (path, journal):
        if target is not None and Path(target).is_dir():
            raise ValueError(f"cannot write the results to {target}: it is a folder")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot write the results to {folder}: it is a file, not a folder")
    probe = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.probe"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(bytes(PROBE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise ValueError(f"cannot write the results to {folder}: {exc.strerror or exc}") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return path



RECORD_COLUMNS: tuple[str, ...] = (
    "model", "layer", "source", "image_id", "index", "path", "class_name", "defect_kind", "defective",
    "method", "error", "target_class", "p_target", "predicted",
)
"""What a row is about - the model, the image, the method (or the image's error) and the
model's prediction - ahead of the metric columns of :data:`camcore.metrics.METRICS`."""


def first_columns() -> list[str]:
    """The results table's leading columns: :data:`RECORD_COLUMNS`, then every registered
    metric column in registry order (curve points follow all other columns)."""
    return [*RECORD_COLUMNS, *(column.name for _, column in registered_columns())]


def records_to_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Journal records -> one row per (image, method) plus one row per failed image."""
    rows: list[dict[str, Any]] = []
    for record in records:
        if "rows" in record:
            rows.extend(record["rows"])
        else:
            item = record.get("item", {})
            rows.append({"image_id": record["id"], **item, "method": None, "error": record.get("error", "")})
    return _normalize(pd.DataFrame(rows))


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Column order and dtypes that survive both Parquet and CSV."""
    df = df.copy()
    for column in ("method", "error", "path", "class_name", "defect_kind", "model", "layer", "source", "image_id"):
        if column not in df.columns:
            df[column] = None
    df["method"] = df["method"].where(df["method"].notna() & (df["method"].astype(str) != ""), None)
    if "defective" in df.columns:
        df["defective"] = df["defective"].map(_to_bool).astype("boolean")
    first = [c for c in first_columns() if c in df.columns]
    curves = [c for c in df.columns if "@" in str(c)]
    rest = [c for c in df.columns if c not in first and c not in curves]
    return df[first + rest + curves].reset_index(drop=True)


def _to_bool(value: Any) -> Any:
    if isinstance(value, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower(), pd.NA)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return pd.NA  # pd.NA too: a table normalized once is normalized again by add_global_threshold
    return bool(value)


def results_only(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of evaluated (image, method) pairs, without error rows."""
    return df[df["method"].notna()]


def errors(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image that could not be evaluated: ``image_id``, ``path``, ``error``."""
    failed = df[df["method"].isna()] if "method" in df.columns else df.iloc[:0]
    return failed[["image_id", "path", "error"]].reset_index(drop=True)


def global_thresholds(df: pd.DataFrame) -> dict[str, float]:
    """Per method, the threshold maximizing the mean IoU over the defective images
    (first maximum on ties); methods without defective images are left out."""
    columns = curve_columns(df, IOU_CURVE.prefix)
    if not columns:
        return {}
    rows = results_only(df)
    rows = rows[rows["defective"].fillna(False).astype(bool)]
    best: dict[str, float] = {}
    for method, group in rows.groupby("method", sort=False):
        mean = group[[c for _, c in columns]].mean(axis=0, skipna=True).to_numpy()
        if np.all(np.isnan(mean)):
            continue
        best[str(method)] = columns[int(np.nanargmax(mean))][0]
    return best


def add_global_threshold(df: pd.DataFrame) -> pd.DataFrame:
    """Add the localization metric's set-level columns (``global_threshold``,
    ``iou_at_global`` and ``dice_at_global``; Dice from IoU: ``2 IoU / (1 + IoU)``, exact
    per image) for defective rows."""
    df = df.copy()
    best = global_thresholds(df)
    columns = dict((x, c) for x, c in curve_columns(df, IOU_CURVE.prefix))
    df[GLOBAL_THRESHOLD.name] = df["method"].map(best).astype("float64")
    iou = np.full(len(df), np.nan)
    for method, threshold in best.items():
        selected = (df["method"] == method).to_numpy() & df["defective"].fillna(False).astype(bool).to_numpy()
        iou[selected] = df.loc[selected, columns[threshold]].to_numpy(dtype=np.float64)
    df[IOU_AT_GLOBAL.name] = iou
    df[DICE_AT_GLOBAL.name] = 2.0 * iou / (1.0 + iou)
    return _normalize(df)


def write_results(df: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``out`` (.parquet or .csv) atomically: a temporary file in the same
    folder, then a rename, so a reader never sees a half-written file."""
    path = _check_out(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name beside the target (not mkstemp: its 0600 mode would stick to the result).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if path.suffix.lower() == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


REQUIRED_COLUMNS = ("image_id", "method", "defective", SECONDS.name)


def read_results(data: str | os.PathLike[str] | IO[bytes], name: str | None = None) -> pd.DataFrame:
    """Read a results table written by :func:`evaluate` (Parquet or CSV, chosen by the
    file name's extension; ``name`` gives it for a file-like object). ValueError with a
    readable message if it is not one."""
    label = name or str(data)
    suffix = Path(label).suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(data)
        elif suffix == ".csv":
            df = pd.read_csv(data)
        else:
            raise ValueError(f"{label}: expected a .parquet or .csv results file")
    except ValueError:
        raise
    except Exception as exc:  # pyarrow / parser errors
        raise ValueError(f"{label}: cannot read the results table: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{label}: not a camcore.evaluate results table (missing columns {missing})")
    df = _normalize(df)
    models = results_only(df)["model"].dropna().unique()
    if len(models) > 1:
        raise ValueError(f"{label}: holds results of several models ({', '.join(map(str, models))}); one expected")
    return add_global_threshold(df)
