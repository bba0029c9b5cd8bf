"""The results table of an evaluation with two models: one row per image and method.

Shape (see :mod:`camcore.evaluation.pair`): model A's columns under their single-model names,
the agreement columns (:data:`camcore.metrics.agreement.AGREEMENT_COLUMNS`), then model B's
columns as ``b_<A's name>`` (``b_model``, ``b_layer``, ``b_target_class``, ``b_p_target``,
``b_predicted``, ``b_pointing_game``, ``b_iou@0.50``, ``b_global_threshold`` ...) and
``b_unavailable``. So every single-model tool (:func:`camcore.evaluation.summarize`,
:func:`~camcore.evaluation.global_thresholds`, :func:`~camcore.evaluation.worst_images`,
:func:`~camcore.evaluation.read_results`, the Dataset page) reads a pair table as model A's
evaluation, and :func:`side_table` gives either model's table in the single-model shape.
"""

from __future__ import annotations

import pandas as pd

from camcore.evaluation.pair import B_PREFIX, IMAGE_COLUMNS, UNAVAILABLE
from camcore.evaluation.results import add_global_threshold
from camcore.metrics.agreement import AGREEMENT_COLUMNS
from camcore.metrics.localization import DICE_AT_GLOBAL, GLOBAL_THRESHOLD, IOU_AT_GLOBAL

__all__ = ["SIDES", "finish_pair_table", "is_pair_table", "side_table"]

SIDES = ("a", "b")
_MODEL_B = B_PREFIX + "model"
_SET_LEVEL = (GLOBAL_THRESHOLD.name, IOU_AT_GLOBAL.name, DICE_AT_GLOBAL.name)


def is_pair_table(df: pd.DataFrame) -> bool:
    """Whether ``df`` holds the results of two models (it has model B's columns)."""
    return _MODEL_B in df.columns


def _agreement_names() -> list[str]:
    return [column.name for column in AGREEMENT_COLUMNS]


def side_table(df: pd.DataFrame, side: str) -> pd.DataFrame:
    """One model's results as a single-model table: ``"a"`` without B's and the agreement
    columns; ``"b"`` with B's columns under A's names, without the rows of methods B cannot
    serve, its global thresholds computed over its own rows. Images that could not be read
    are error rows of both. A single-model table is its own side ``"a"``."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == "a":
        drop = [c for c in df.columns if str(c).startswith(B_PREFIX) or c in _agreement_names()]
        return df.drop(columns=drop)
    if not is_pair_table(df):
        raise ValueError("not a table of two models: it has no model B columns")
    return add_global_threshold(_b_rows(df))


def _b_rows(df: pd.DataFrame) -> pd.DataFrame:
    """B's rows (and the error rows) with B's columns renamed to A's names."""
    unavailable = df.get(UNAVAILABLE, pd.Series("", index=df.index)).fillna("").astype(str)
    keep = df["method"].isna() | (unavailable == "")
    image = [c for c in IMAGE_COLUMNS if c in df.columns]
    b_columns = [c for c in df.columns if str(c).startswith(B_PREFIX) and c != UNAVAILABLE]
    rows = df.loc[keep, image + b_columns]
    return rows.rename(columns={c: c[len(B_PREFIX):] for c in b_columns}).reset_index(drop=True)


def finish_pair_table(df: pd.DataFrame) -> pd.DataFrame:
    """A pair table with A's global-threshold columns (already there) completed by B's
    (``b_global_threshold`` ...; from B's own rows), columns ordered: A's, the agreement,
    B's (in the order of A's), then A's curve points and B's."""
    df = df.copy()
    b_rows = side_table(df, "b")
    unavailable = df.get(UNAVAILABLE, pd.Series("", index=df.index)).fillna("").astype(str)
    selected = (df["method"].isna() | (unavailable == "")).to_numpy()
    for name in _SET_LEVEL:
        values = pd.Series(float("nan"), index=df.index, dtype="float64")
        values[selected] = b_rows[name].to_numpy(dtype="float64") if name in b_rows else float("nan")
        df[B_PREFIX + name] = values
    return df[_ordered_columns(list(df.columns))]


def _ordered_columns(columns: list[str]) -> list[str]:
    agreement = [c for c in _agreement_names() if c in columns]
    b_columns = [c for c in columns if str(c).startswith(B_PREFIX)]
    a_columns = [c for c in columns if c not in agreement and c not in b_columns]

    def plain(names: list[str]) -> list[str]:
        return [c for c in names if "@" not in str(c)]

    def curves(names: list[str]) -> list[str]:
        return [c for c in names if "@" in str(c)]

    mirrored = [B_PREFIX + c for c in a_columns if B_PREFIX + c in b_columns]  # B's in A's order
    b_columns = mirrored + [c for c in b_columns if c not in mirrored]
    return plain(a_columns) + agreement + plain(b_columns) + curves(a_columns) + curves(b_columns)
