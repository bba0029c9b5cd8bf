"""Compare with a second model: model A's and model B's maps of one image, method by
method, and how far they agree.

In this mode each method's column shows the rows of :data:`PAIR_ROWS` (A's overlay, B's
overlay, and the signed difference A − B on a diverging scale: red where A's map is higher,
blue where B's is) and a small table: the correlation of the two maps, the IoU of their
regions at the threshold (``camcore.compare_maps`` at the ground truth's resolution, else
the input image's), whether each map's peak falls in the defect, and each model's
probability of the class it explains and its top-1. The rows are data, as in
``grid.ROWS``: a new row is one more :class:`PairRow`.

Which class each model explains is ``camcore.pair_classes``' rule (the same index when
both models have the same number of classes, else B's own top-1); the page says which.
Each model keeps its own layer; max_N, the threshold, the colormap and the opacity act on
both. A method a model cannot serve (e.g. a gradient method on an ONNX model) leaves that
model's tile gray, captioned with the reason.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from camcore import visualize
from camcore.maps import upsample
from camcore.methods import METHODS
from camcore.metrics.agreement import MapAgreement, compare_maps
from camcore.pairing import ClassPairing, pair_classes
from dashboard import state
from dashboard.components.common import attempt, failed
from dashboard.components.computing import compute, passes_progress
from dashboard.components.grid import (
    OUTLINE,
    Tile,
    View,
    blank_tile,
    column_header,
    label,
    make_view,
    method_help,
    show_panels,
    show_placeholder_tiles,
)
from dashboard.components.sidebar import Display, ImageChoice

if TYPE_CHECKING:  # annotations only: camcore.explainer imports TensorFlow
    from streamlit.delta_generator import DeltaGenerator

    from camcore.explainer import CamResult, Explainer
    from camcore.models import LoadedModel

SIDES = ("A", "B")
PairSlots = tuple["DeltaGenerator", "DeltaGenerator", "DeltaGenerator", "DeltaGenerator"]  # header, bar, tiles, table


@dataclass(frozen=True, eq=False)
class Pair:
    """Two models on one image: A's View (the sidebar's model) and B's, built the same way."""

    a: View
    b: View
    classes: ClassPairing
    top1_a: tuple[int, float, str]  # A's most probable class: (index, probability, name)
    top1_b: tuple[int, float, str]

    def view(self, side: str) -> View:
        return self.a if side == "A" else self.b

    @property
    def compare_size(self) -> tuple[int, int]:
        """Where the two maps meet: the ground truth's resolution, else the input image's."""
        if self.a.mask is not None:
            height, width = np.asarray(self.a.mask).shape[:2]
            return int(height), int(width)
        return self.a.image_size

    @property
    def channels(self) -> int:
        """max_N's range: the larger layer's channels (each model clamps it to its own)."""
        return max(self.a.channels, self.b.channels)

    def class_note(self) -> str:
        return self.classes.describe(self.a.class_name, self.b.class_name)


@dataclass(frozen=True, eq=False)
class MethodPair:
    """One method on both models: each model's result, or why it has none (``missing``)."""

    method: str
    a: CamResult | None
    b: CamResult | None
    missing_a: str = ""
    missing_b: str = ""
    agreement: MapAgreement | None = None

    def result(self, side: str) -> CamResult | None:
        return self.a if side == "A" else self.b

    def missing(self, side: str) -> str:
        return self.missing_a if side == "A" else self.missing_b


# ------------------------------------------------------------------ agreement
@st.cache_data(max_entries=32, show_spinner=False)
def _agreement(keys: tuple, threshold: float, mask_id: str, size: tuple[int, int],
               _cam_a: np.ndarray, _cam_b: np.ndarray, _mask: np.ndarray | None) -> MapAgreement:
    """``camcore.compare_maps`` of two computed maps (cached by their record keys)."""
    a, b = (np.clip(np.asarray(cam, np.float32), 0.0, 1.0) for cam in (_cam_a, _cam_b))
    return compare_maps(a, b, threshold, mask=_mask, size=size)


def method_pair(pair: Pair, method: str, a: CamResult | str, b: CamResult | str) -> MethodPair:
    """The two outcomes of ``method`` (a CamResult, or the reason there is none) and, when
    both maps exist, their agreement at the current threshold."""
    found_a, found_b = (None if isinstance(x, str) else x for x in (a, b))
    agreement = None
    if found_a is not None and found_b is not None:
        keys = (pair.a.record_key(method, found_a.max_n), pair.b.record_key(method, found_b.max_n))
        agreement = _agreement(keys, pair.a.threshold, pair.a.mask_id, pair.compare_size,
                               found_a.cam, found_b.cam, pair.a.mask)
    return MethodPair(method, found_a, found_b, a if isinstance(a, str) else "", b if isinstance(b, str) else "",
                      agreement)


def current_pairs(pair: Pair, max_n: int) -> dict[str, MethodPair]:
    """Both models' maps of every shown method from the explainers' caches (no model pass:
    the grid computed them); a method with a map still missing on either side is left out."""
    found = {}
    for method in pair.a.methods:
        outcomes = {}
        for side in SIDES:
            view = pair.view(side)
            reason = view.explainer.unavailable_reason(method)
            n = max_n if METHODS[method].uses_max_n else None
            outcomes[side] = reason if reason is not None else view.explainer.peek(
                method, view.x, view.layers_for(method), view.class_index, max_n=n)
        if all(outcome is not None for outcome in outcomes.values()):
            found[method] = method_pair(pair, method, outcomes["A"], outcomes["B"])
    return found


# ----------------------------------------------------------------------- rows
@dataclass(frozen=True)
class PairRow:
    """One row of the comparison grid: its tile in the input column and in a method's."""

    name: str
    input_tile: Callable[[Pair], Tile]
    method_tile: Callable[[Pair, MethodPair], Tile]


def _input_of(side: str) -> Callable[[Pair], Tile]:
    def tile(pair: Pair) -> Tile:
        view = pair.view(side)
        height, width = view.rgb.shape[:2]
        return f"{side} · {view.model_name} · {width}×{height}", view.rgb

    return tile


def _overlay_of(side: str) -> Callable[[Pair, MethodPair], Tile]:
    def tile(pair: Pair, found: MethodPair) -> Tile:
        view, result = pair.view(side), found.result(side)
        if result is None:
            return f"{label(found.method)} · {side}: {found.missing(side)}", blank_tile(view.rgb)
        cam = upsample(result.cam, view.rgb.shape[:2])
        return f"{label(found.method)} · {side}", visualize.overlay(view.rgb, cam, view.colormap, view.alpha)

    return tile


def _ground_truth(pair: Pair) -> Tile:
    if pair.a.mask is None:
        return "No ground truth", blank_tile(pair.a.rgb)
    return "Ground truth (green)", visualize.draw_outline(pair.a.rgb, pair.a.mask, OUTLINE)


def _difference(pair: Pair, found: MethodPair) -> Tile:
    if found.agreement is None:
        return f"{label(found.method)} · A − B: needs both maps", blank_tile(pair.a.rgb)
    picture = visualize.difference_overlay(pair.a.rgb, found.agreement.difference, pair.a.alpha)
    if pair.a.mask is not None:
        picture = visualize.draw_outline(picture, pair.a.mask, OUTLINE)
    return f"{label(found.method)} · A − B", picture


PAIR_ROWS: tuple[PairRow, ...] = (
    PairRow("A", input_tile=_input_of("A"), method_tile=_overlay_of("A")),
    PairRow("B", input_tile=_input_of("B"), method_tile=_overlay_of("B")),
    PairRow("A − B", input_tile=_ground_truth, method_tile=_difference),
)
DIFFERENCE_LEGEND = "A − B: red where A's map is higher, blue where B's is, white where they agree."


def pair_input_panels(pair: Pair) -> list[Tile]:
    return [row.input_tile(pair) for row in PAIR_ROWS]


def pair_method_panels(pair: Pair, found: MethodPair) -> list[Tile]:
    return [row.method_tile(pair, found) for row in PAIR_ROWS]


# ---------------------------------------------------------------------- table
def _peaks(agreement: MapAgreement | None) -> str:
    if agreement is None:
        return "—"
    if agreement.peak_a_in_defect is None:
        return "no ground truth"
    mark = {True: "✓", False: "✗"}
    return f"A {mark[agreement.peak_a_in_defect]} · B {mark[bool(agreement.peak_b_in_defect)]}"


def method_table(pair: Pair, found: MethodPair) -> pd.DataFrame:
    """The small table under a method's column: agreement figures and both models' classes."""
    agreement = found.agreement
    rows = {
        "Correlation r": "—" if agreement is None else f"{agreement.correlation:.4f}",
        f"IoU @ {pair.a.threshold:.2f}": "—" if agreement is None else f"{agreement.iou:.3f}",
        "Peak in defect": _peaks(agreement),
    }
    for side, top1 in (("A", pair.top1_a), ("B", pair.top1_b)):
        view = pair.view(side)
        rows[f"{side}: p · top-1"] = f"{view.probability:.1%} · {top1[2]}"
        if found.result(side) is None:
            rows[f"{side}: no map"] = found.missing(side)
    return pd.DataFrame({"A vs B": list(rows.values())}, index=list(rows))


def agreement_records(pair: Pair, found: dict[str, MethodPair]) -> pd.DataFrame:
    """One row per method: both models' settings and classes and the agreement figures
    (empty where a model has no map): the comparison's CSV."""
    records = []
    for method, item in found.items():
        agreement = item.agreement
        record: dict = {"method": method, "label": label(method)}
        for side, top1 in (("a", pair.top1_a), ("b", pair.top1_b)):
            view, result = pair.view(side.upper()), item.result(side.upper())
            record |= {
                f"model_{side}": view.model_key, f"layer_{side}": view.layer, f"class_{side}": view.class_index,
                f"class_name_{side}": view.class_name, f"p_{side}": view.probability,
                f"top1_{side}": top1[2], f"p_top1_{side}": top1[1],
                f"max_n_{side}": None if result is None else result.max_n,
                f"missing_{side}": item.missing(side.upper()),
            }
        record |= {
            "threshold": pair.a.threshold,
            "correlation": None if agreement is None else agreement.correlation,
            "iou": None if agreement is None else agreement.iou,
            "peak_a_in_defect": None if agreement is None else agreement.peak_a_in_defect,
            "peak_b_in_defect": None if agreement is None else agreement.peak_b_in_defect,
            "both_peaks_in_defect": None if agreement is None else agreement.both_peaks_in_defect,
            "compared_at": "x".join(map(str, pair.compare_size)),
        }
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    for column in ("max_n_a", "max_n_b"):  # integers, empty for methods without max_N
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


# -------------------------------------------------------------------- exports
_ASCII = str.maketrans({"≥": ">=", "·": "-", "×": "x", "—": "-", "−": "-"})


def pair_grid_png(pair: Pair, found: dict[str, MethodPair]) -> bytes:
    """The comparison grid as one PNG: a row per entry of :data:`PAIR_ROWS`, the input
    column first (titles in ASCII: the export's font has no other glyphs)."""
    columns = [pair_input_panels(pair)] + [pair_method_panels(pair, found[m]) for m in pair.a.methods if m in found]
    rows = [[(column[number][0].translate(_ASCII), column[number][1]) for column in columns]
            for number in range(len(PAIR_ROWS))]
    return visualize.png_bytes(visualize.compose_grid(rows, tile=256, title_height=24))


def pair_maps_npz(pair: Pair, found: dict[str, MethodPair]) -> bytes:
    """Both models' maps at their layers' resolutions ("a_<method>", "b_<method>"), their
    signed difference where both exist ("difference_<method>", at ``compared_at``), each
    model's input and the ground truth."""
    arrays: dict[str, np.ndarray] = {"input_rgb_a": pair.a.rgb, "input_rgb_b": pair.b.rgb}
    for method, item in found.items():
        for side in SIDES:
            result = item.result(side)
            if result is not None:
                arrays[f"{side.lower()}_{method}"] = result.cam
        if item.agreement is not None:
            arrays[f"difference_{method}"] = item.agreement.difference
    if pair.a.mask is not None:
        arrays["ground_truth"] = np.asarray(pair.a.mask, bool)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def pair_settings(pair: Pair, max_n: int) -> dict:
    """A's settings (``View.settings``) and model B's model, layer and class."""
    b = pair.b
    return pair.a.settings(max_n) | {
        "model_b": b.model_key, "layer_b": b.layer, "class_index_b": b.class_index, "class_name_b": b.class_name,
        "same_class_index": pair.classes.same_index, "class_rule": pair.class_note(),
        "compared_at": list(pair.compare_size),
    }


# -------------------------------------------------------------------- columns
def input_column(pair: Pair) -> None:
    column_header("Input", pair.a.image_name)
    show_panels(pair_input_panels(pair))
    st.caption(DIFFERENCE_LEGEND)


def new_slots() -> PairSlots:
    return st.empty(), st.empty(), st.empty(), st.empty()


def _needs_passes(pair: Pair, method: str, max_n: int | None) -> bool:
    n = max_n if METHODS[method].uses_max_n else None
    for side in SIDES:
        view = pair.view(side)
        if view.explainer.unavailable_reason(method) is None and view.explainer.peek(
                method, view.x, view.layers_for(method), view.class_index, max_n=n) is None:
            return True
    return False


def queued_slots(pair: Pair, method: str, box: DeltaGenerator, max_n: int | None = None) -> PairSlots:
    """The slots of a column the live fragment computes later: "queued" (gray tiles) until
    then, unless both maps are cached."""
    with box:
        slots = new_slots()
    if _needs_passes(pair, method, max_n):
        head, _, tiles, _ = slots
        with head.container():
            column_header(label(method), "queued…", help=method_help(method))
        with tiles.container():
            sizes = [tile.shape[:2] for _, tile in pair_input_panels(pair)]
            show_placeholder_tiles(sizes, f"{label(method)} · queued")
    return slots


def _run_side(pair: Pair, side: str, method: str, max_n: int | None, slots: PairSlots) -> CamResult | str:
    """One model's map of ``method`` (with a progress bar while it runs passes), or why
    there is none."""
    view = pair.view(side)
    reason = view.explainer.unavailable_reason(method)
    if reason is not None:
        return reason
    head, bar, _, _ = slots
    n = max_n if METHODS[method].uses_max_n else None
    if view.explainer.peek(method, view.x, view.layers_for(method), view.class_index, max_n=n) is None:
        with head.container():
            column_header(label(method), f"{side} ({view.model_name}): running…", help=method_help(method))
    before = view.explainer.score_cam_channels_done(view.x, view.layer) if method == "score_cam" else 0
    result = attempt(f"{label(method)} on model {side} failed", compute, view, method, n,
                     passes_progress(bar, before, f"{side}: model passes"))
    bar.empty()
    return "failed (see the message above)" if failed(result) else result


def column_detail(method: str, outcomes: dict[str, CamResult | str]) -> str:
    """The header line of a pair column, short enough for one line (the rows stay aligned),
    e.g. "max_N = 10 · A cached · B 0.41 s"; a model without the map: "B: <why>"."""
    parts = []
    if METHODS[method].uses_max_n:
        used = [(side, o.max_n) for side, o in outcomes.items() if not isinstance(o, str)]
        if used:
            first = used[0][1]
            parts.append(f"max_N = {first}" + "".join(f" ({side}: {n})" for side, n in used[1:] if n != first))
    for side, outcome in outcomes.items():
        if isinstance(outcome, str):
            parts.append(f"{side}: {outcome}")
        else:
            parts.append(f"{side} " + ("cached" if outcome.cached else f"{outcome.seconds:.2f} s"))
    return " · ".join(parts)


def pair_column(pair: Pair, method: str, slots: PairSlots, max_n: int | None = None) -> None:
    """A method on both models: A's map, then B's (B follows A), then the column's tiles
    (:data:`PAIR_ROWS`) and its agreement table."""
    outcomes = {side: _run_side(pair, side, method, max_n, slots) for side in SIDES}
    found = attempt(f"Could not compare the two {label(method)} maps", method_pair, pair, method,
                    outcomes["A"], outcomes["B"])
    if failed(found):
        return
    head, _, tiles, table = slots
    with head.container():
        column_header(label(method), column_detail(method, outcomes), help=method_help(method))
    with tiles.container():
        show_panels(pair_method_panels(pair, found))
    with table.container():
        st.table(method_table(pair, found))


# ------------------------------------------------------------------- analysis
def render_analysis(pair: Pair, max_n: int) -> None:
    """Below the comparison grid: every method's agreement in one table, and the downloads."""
    from dashboard.components.analysis import file_stem

    st.subheader("Model A against model B", anchor=False)
    found = current_pairs(pair, max_n)
    if not found:
        st.info("The agreement table appears when the maps are ready.")
        return
    table = agreement_records(pair, found)
    t = f"{pair.a.threshold:.2f}"
    shown = table[["label", "correlation", "iou", "peak_a_in_defect", "peak_b_in_defect", "max_n_a", "max_n_b"]]
    st.dataframe(
        shown, hide_index=True, key="agreement_table",
        column_config={
            "label": st.column_config.TextColumn("Method"),
            "correlation": st.column_config.NumberColumn("Correlation r", format="%.4f"),
            "iou": st.column_config.NumberColumn(f"IoU @ {t}", format="%.3f"),
            "peak_a_in_defect": st.column_config.CheckboxColumn("A's peak in defect"),
            "peak_b_in_defect": st.column_config.CheckboxColumn("B's peak in defect"),
            "max_n_a": st.column_config.NumberColumn("A max_N"),
            "max_n_b": st.column_config.NumberColumn("B max_N"),
        },
    )
    height, width = pair.compare_size
    st.caption(
        f"Both maps upsampled to {width}×{height} ({'the ground truth' if pair.a.mask is not None else 'the image'}); "
        f"r: Pearson correlation of the two maps; IoU: of the regions map ≥ {t} of A and of B; peak in defect: "
        "the pointing game of each map against the ground truth (camcore.compare_maps). " + pair.class_note()
    )
    _downloads(pair, found, max_n, file_stem(pair.a))


def _downloads(pair: Pair, found: dict[str, MethodPair], max_n: int, stem: str) -> None:
    other = "".join(ch for ch in pair.b.model_name if ch.isalnum() or ch in "-_.")[:40]
    stem = f"{stem}_vs_{other}"
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "Comparison grid (PNG)", lambda: pair_grid_png(pair, found), file_name=f"{stem}_grid.png",
            mime="image/png", on_click="ignore", icon=":material/grid_view:", key="download_pair_grid",
        )
        st.download_button(
            "Maps A and B (.npz)", lambda: pair_maps_npz(pair, found), file_name=f"{stem}_maps.npz",
            mime="application/octet-stream", on_click="ignore", icon=":material/data_array:",
            key="download_pair_maps",
        )
        st.download_button(
            "Agreement (CSV)", lambda: agreement_records(pair, found).to_csv(index=False),
            file_name=f"{stem}_agreement.csv", mime="text/csv", on_click="ignore", icon=":material/table:",
            key="download_agreement",
        )
        st.download_button(
            "Settings (JSON)", lambda: json.dumps(pair_settings(pair, max_n), indent=2),
            file_name=f"{stem}_settings.json", mime="application/json", on_click="ignore",
            icon=":material/tune:", key="download_pair_settings",
        )


# ----------------------------------------------------------------- building
@dataclass(frozen=True, eq=False)
class SecondModel:
    """Model B as the sidebar chose it: its key, bundle, explainer and layer."""

    model_key: str
    bundle: LoadedModel
    explainer: Explainer
    layer: str


def _top1(top: list[tuple[int, float]], names: Sequence[str]) -> tuple[int, float, str]:
    index, probability = top[0]
    return index, probability, str(names[index]) if index < len(names) else f"class {index}"


def make_pair(view: View, top_a: list[tuple[int, float]], names_a: Sequence[str], second: SecondModel,
              choice: ImageChoice) -> Pair | None:
    """Model B's View of the image A explains (same display settings, its own layer, the
    class of ``camcore.pair_classes``) and the Pair; None after a message."""
    explainer = second.explainer
    prepared = attempt("Could not prepare the image for model B", state.prepare_input, second.model_key,
                       second.bundle, explainer, choice)
    if failed(prepared):
        return None
    top_b = attempt("Could not run model B", explainer.top_classes, prepared, explainer.n_classes)
    if failed(top_b):
        return None
    classes = pair_classes(view.class_index, view.explainer.n_classes, explainer.n_classes, top_b[0][0])
    display = Display(view.methods, view.threshold, view.colormap, view.alpha)
    view_b = attempt(
        "Could not prepare model B's maps", make_view, model_key=second.model_key, bundle=second.bundle,
        explainer=explainer, layer=second.layer, image_name=choice.name, detail=choice.detail, image=choice.image,
        mask=choice.mask, prepared=prepared, class_index=classes.class_b, probability=dict(top_b)[classes.class_b],
        display=display, requested_precision=view.requested_precision, guided=False,
    )
    if failed(view_b):
        return None
    return Pair(view, view_b, classes, _top1(top_a, names_a), _top1(top_b, second.bundle.class_names))
