"""Below the grid: compute times, the Faster-Score-CAM trade-off, threshold tuning
against the ground truth, and the downloads (grid, maps, timings, settings, a
self-contained HTML report, and the settings file of ``cam-studio localize`` that puts the
threshold to use). Everything here depends on max_N, so it is drawn by a fragment that a
max_N move reruns (see ``views/compare.py``)."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from camcore import metrics
from camcore.methods import METHODS
from camcore.metrics.localization import (
    ENERGY_POINTING_GAME,
    IOU_CURVE,
    ORACLE_IOU,
    ORACLE_THRESHOLD,
    POINTING_GAME,
    protocol_row,
)
from dashboard import state
from dashboard.components import after_paint, charts, exports, grid
from dashboard.components.grid import View, label

if TYPE_CHECKING:  # annotations only: camcore.explainer imports TensorFlow
    from camcore.explainer import CamResult

Results = dict[str, "CamResult"]  # the shown methods' maps, by method key


# ------------------------------------------------------------------- results
def score_cam_complete(view: View) -> bool:
    return view.explainer.score_cam_channels_done(view.x, view.layer) >= view.channels


def current_results(view: View, max_n: int) -> Results:
    """CamResults of the shown methods, from the explainer's caches (no model pass:
    the grid computed them). A method whose passes are not all done is left out."""
    results = {}
    for method in view.methods:
        found = view.explainer.peek(method, view.x, view.layers_for(method), view.class_index,
                                    max_n=_n(method, max_n))
        if found is not None:
            results[method] = found
    return results


def _n(method: str, max_n: int) -> int | None:
    return max_n if METHODS[method].uses_max_n else None


def timing_rows(view: View, results: Results, max_n: int) -> list[dict]:
    """One row per (method, recorded call, stage): the timings of the calls that computed
    each map. ``shared_with`` names the method whose call did that work for both."""
    log = state.timing_log()
    rows = []
    for method, current in results.items():
        entries = log.get(view.record_key(method, _n(method, max_n))) or [(current, None)]
        for call, (result, shared_from) in enumerate(entries):
            for stage, seconds in result.timings.items():
                if seconds <= 0.0 and stage != "weights":
                    continue
                rows.append(
                    {
                        "method": method,
                        "label": label(method),
                        "max_n": _n(method, max_n),
                        "call": call,
                        "stage": stage,
                        "seconds": float(seconds),
                        "model_passes": int(result.model_passes),
                        "shared": shared_from is not None,
                        "shared_with": shared_from or "",
                    }
                )
    return rows


def _total_text(method: str, rows: list[dict]) -> str:
    """e.g. "0.62 s · 53 passes + 10 shared": time, and model passes of its own / shared."""
    own = [r for r in rows if r["method"] == method]
    seconds = sum(r["seconds"] for r in own)
    passes = {(r["call"], r["shared"]): r["model_passes"] for r in own}
    mine = sum(p for (_, shared), p in passes.items() if not shared)
    shared = sum(p for (_, shared), p in passes.items() if shared)
    text = f"{seconds:.2f} s · {mine} pass" + ("" if mine == 1 else "es")
    if shared:
        text += f" + {shared} shared"
    elif mine == 0:
        text += " (cached)"
    return text


# ---------------------------------------------------------------- sections
def render(view: View, max_n: int) -> None:
    """The analysis below the grid; in a session's first run, a note until the browser has
    drawn the grid (:mod:`dashboard.components.after_paint`)."""
    if not after_paint.grid_painted():
        _pending()
        return
    results = current_results(view, max_n)
    left, right = st.columns(2, gap="large")
    with left:
        _timing_section(view, results, max_n)
    with right:
        _tradeoff_section(view, max_n)
    threshold_table = _threshold_section(view, results, max_n)
    _sanity_section(view, results, max_n)
    _downloads(view, results, max_n, threshold_table)


PENDING = "analysis_pending"  # the note's container, until the charts are drawn


def _pending() -> None:
    """What stands below the grid until the browser has drawn it: a note, and the component
    that reports the grid drawn (then the fragment reruns and draws the charts)."""
    with st.container(key=PENDING):
        st.caption(":material/hourglass_top: Compute times, the max_N trade-off, threshold tuning, the sanity "
                   "check and the downloads follow once the grid is drawn.")
        after_paint.when_drawn("grid", key="grid_drawn")


def timing_chart(view: View, results: Results, max_n: int):
    """The compute-time figure: one stacked bar per method, its total written after it."""
    rows = timing_rows(view, results, max_n)
    labels = {m: label(m) + (f" (max_N={max_n})" if METHODS[m].uses_max_n else "") for m in results}
    totals = {m: _total_text(m, rows) for m in results}
    note = f"forward-only passes: {grid.precision_text(view).replace('**', '')}"
    return charts.timing_figure(rows, labels, totals, note=note)


def _timing_section(view: View, results: Results, max_n: int) -> None:
    st.subheader("Compute time", anchor=False)
    precision = grid.precision_text(view)
    st.caption(f"Precision: {precision}")
    if not results:
        st.info("Compute times appear when the maps are ready.")
        return
    st.plotly_chart(timing_chart(view, results, max_n), key="timing_chart", config={"displayModeBar": False})
    st.caption(
        "Time of the calls that computed each map for this image, by stage, and the model passes they "
        "ran. Hatched, “shared”: work done once for several methods (the gradient methods share one "
        "forward+backward pass; Score-CAM continues Faster-Score-CAM's masked passes). “(cached)”: "
        "the map needed no model pass (e.g. a max_N that Score-CAM's passes already cover)."
    )


@st.cache_data(max_entries=64, show_spinner=False)
def _tradeoff(record_key: tuple, _view: View) -> list[dict]:
    return _view.explainer.faster_score_cam_tradeoff(_view.x, _view.layer, _view.class_index)


def _tradeoff_section(view: View, max_n: int) -> None:
    st.subheader("Faster-Score-CAM trade-off", anchor=False)
    if view.channels < 2:
        st.info("This layer has a single channel: there is no max_N trade-off.")
        return
    if not score_cam_complete(view):
        st.info("The trade-off chart needs every masked pass: select Score-CAM in Methods to run them.")
        return
    rows = _tradeoff(view.record_key("tradeoff"), view)
    current = view.explainer.faster_score_cam_tradeoff(view.x, view.layer, view.class_index, ns=[max_n])[0]
    full = rows[-1]
    st.markdown(
        f"**max_N = {max_n}**: correlation **{current['correlation']:.3f}** with Score-CAM, "
        f"{current['passes']} masked passes ≈ {current['seconds']:.2f} s "
        f"(Score-CAM: {full['passes']} ≈ {full['seconds']:.2f} s)"
    )
    st.plotly_chart(
        charts.tradeoff_figure(rows, current, view.channels), key="tradeoff_chart",
        config={"displayModeBar": False},
    )
    st.caption(
        "Masked-pass time Faster-Score-CAM needs for each max_N (at the per-pass time measured here) and "
        "the Pearson correlation of its map with full Score-CAM. Dashed: the current max_N."
    )


@st.cache_data(max_entries=512, show_spinner=False)
def _localization(record_key: tuple, mask_id: str, threshold: float, _cam: np.ndarray, _mask: np.ndarray) -> dict:
    """IoU and Dice at ``threshold``, and the localization metric's columns of the registry
    (pointing game, energy, per-image best threshold, IoU curve): the one protocol of
    ``camcore.metrics.localization``, computed by the function the evaluation uses."""
    thresholds = metrics.DEFAULT_THRESHOLDS
    found = metrics.localization(_cam, _mask, threshold)
    row = protocol_row(_cam, _mask, thresholds)
    return {
        "iou": found.iou,
        "dice": found.dice,
        "hit": bool(row[POINTING_GAME.name]),
        "energy": row[ENERGY_POINTING_GAME.name],
        "best_threshold": row[ORACLE_THRESHOLD.name],
        "best_iou": row[ORACLE_IOU.name],
        "curve": (list(map(float, thresholds)), [row[IOU_CURVE.column(t)] for t in thresholds]),
    }


def localization_table(
    view: View, results: Results, mask_id: str, max_n: int
) -> tuple[pd.DataFrame, dict]:
    """Per method: IoU and Dice at the current threshold, pointing game, best threshold."""
    records, scores = [], {}
    for method, result in results.items():
        found = _localization(
            view.record_key(method, _n(method, max_n)), mask_id, view.threshold, result.cam, view.mask
        )
        scores[method] = found
        records.append(
            {
                "Method": label(method),
                f"IoU @ {view.threshold:.2f}": found["iou"],
                f"Dice @ {view.threshold:.2f}": found["dice"],
                "Peak in defect": "✓ hit" if found["hit"] else "✗ miss",
                "Energy in defect": found["energy"],
                "Best threshold": found["best_threshold"],
                "IoU @ best": found["best_iou"],
            }
        )
    return pd.DataFrame.from_records(records), scores


def _threshold_section(view: View, results: Results, max_n: int) -> pd.DataFrame | None:
    """The threshold table and the IoU curves; returns the table (None without a mask)."""
    st.subheader("Threshold tuning", anchor=False)
    if view.mask is None:
        st.info("This image has no ground-truth mask (a clean sample or an upload), so there is nothing "
                "to score the maps against. Pick a defective sample to tune the threshold.")
        return None
    if not results:
        return None
    table, scores = localization_table(view, results, view.mask_id, max_n)
    left, right = st.columns([6, 5], gap="large")
    with left:
        t = f"{view.threshold:.2f}"
        st.dataframe(
            table, hide_index=True, key="threshold_table",
            column_config={
                "Method": st.column_config.TextColumn("Method"),
                f"IoU @ {t}": st.column_config.NumberColumn("IoU", format="%.3f"),
                f"Dice @ {t}": st.column_config.NumberColumn("Dice", format="%.3f"),
                "Peak in defect": st.column_config.TextColumn("Peak"),
                "Energy in defect": st.column_config.NumberColumn("Energy", format="%.2f"),
                "Best threshold": st.column_config.NumberColumn("Best t", format="%.2f"),
                "IoU @ best": st.column_config.NumberColumn("IoU at best t", format="%.3f"),
            },
        )
        st.caption(
            f"IoU and Dice of the region map ≥ {t} against the defect mask, at the mask's resolution "
            "(camcore.metrics.localization: the same rule as the Dataset evaluation). "
            f"“Peak”: the pointing game (is the map's maximum within {metrics.POINTING_TOLERANCE} px of the "
            "defect?); “Energy”: the share of the map's mass inside the defect. "
            "“Best t” maximizes IoU using the ground truth: an upper bound for this image, not a deployable "
            "setting."
        )
    with right:
        st.markdown("**IoU vs threshold** · ★ each method's best · dashed: current threshold")
        curves = {m: s["curve"] for m, s in scores.items()}
        best = {m: (s["best_threshold"], s["best_iou"]) for m, s in scores.items()}
        st.plotly_chart(
            charts.iou_figure(curves, best, {m: label(m) for m in scores}, view.threshold),
            key="iou_chart", config={"displayModeBar": False},
        )
    return table


# -------------------------------------------------------------- sanity check
SANITY = "_sanity_results"  # session key: {record key: [SanityResult]}
SANITY_KEPT = 8


def _sanity_key(view: View, methods: tuple[str, ...], max_n: int) -> tuple:
    return (view.model_key, view.layer, view.image_id, view.class_index, methods, max_n)


def sanity_rows(found: list) -> pd.DataFrame:
    return pd.DataFrame.from_records(
        {
            "Method": label(result.method),
            "Spearman": result.spearman,
            "SSIM": result.ssim,
            "Verdict": "✓ depends on the model" if result.passed else "✗ barely changes",
        }
        for result in found
    )


def _sanity_section(view: View, results: Results, max_n: int) -> None:
    """Adebayo et al. 2018's model-parameter randomization, on demand (it costs a model copy)."""
    st.subheader("Sanity check", anchor=False)
    methods = tuple(results)
    if not methods:
        return
    if view.explainer.backend.kind != "keras":
        st.info("The model-randomization check re-draws a Keras model's weights: it needs a Keras model.")
        return
    store = st.session_state.setdefault(SANITY, {})
    key = _sanity_key(view, methods, max_n)
    if st.button("Run the model-randomization check", key="sanity_button", icon=":material/science:",
                 help="Copies the model, re-draws the weights of every layer from the output down to "
                 "the explained layer, recomputes each shown method and compares the maps."):
        from camcore.metrics.sanity import parameter_randomization

        model = view.explainer.model
        with st.spinner("Randomizing a copy of the model and recomputing the maps…"):
            store[key] = parameter_randomization(model, view.x.x, view.layer, view.class_index, list(methods),
                                                 max_n=max_n, seed=0)
            for stale in list(store)[:-SANITY_KEPT]:  # a session keeps its last few checks, not all
                del store[stale]
    found = store.get(key)
    if found is None:
        st.caption("A method whose map barely changes when the model's top layers are random explains the "
                   "image, not the model (Adebayo et al., NeurIPS 2018). The check runs on demand.")
        return
    st.dataframe(
        sanity_rows(found), hide_index=True, key="sanity_table",
        column_config={"Spearman": st.column_config.NumberColumn(format="%.2f"),
                       "SSIM": st.column_config.NumberColumn(format="%.2f")},
    )
    st.caption(
        f"Similarity between each map and the same method on a copy whose {len(found[0].randomized_layers)} "
        "top layers (down to the explained layer) have random weights (seed 0): Spearman rank correlation and "
        "SSIM at the input size. A method passes when both are below 0.5."
    )


# ------------------------------------------------------------------ downloads
def maps_npz(view: View, results: Results) -> bytes:
    buffer = io.BytesIO()
    arrays = {method: result.cam for method, result in results.items()}
    arrays |= {"sobel_gradient": view.sobel, "input_rgb": view.rgb}
    if view.saliency is not None:  # a model without gradients has no guided backprop
        arrays["guided_backprop"] = view.saliency
    if view.mask is not None:
        arrays["ground_truth"] = np.asarray(view.mask, bool)
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def timings_csv(view: View, results: Results, max_n: int) -> str:
    return pd.DataFrame.from_records(timing_rows(view, results, max_n)).to_csv(index=False)


def settings_json(view: View, max_n: int) -> str:
    return json.dumps(view.settings(max_n), indent=2)


def file_stem(view: View) -> str:
    stem = f"camstudio_{view.image_name}_{view.layer}".replace("/", "-").replace(" ", "_")
    return "".join(ch for ch in stem if ch.isalnum() or ch in "-_.")[:120]


def report_settings(view: View, max_n: int) -> dict:
    """What reproduces the page: its settings and the precision asked for."""
    return {**view.settings(max_n), "precision": view.requested_precision}


def report_html(view: View, results: Results, max_n: int, threshold_table: pd.DataFrame | None) -> str:
    """The page as one self-contained HTML file (:mod:`camcore.report`)."""
    cams = {method: result.cam for method, result in results.items()}
    return exports.compare_report(
        title=f"CAM Studio: {view.image_name} · {view.model_name}", model=view.model_name, layer=view.layer,
        precision=grid.precision_text(view).replace("**", ""), settings=report_settings(view, max_n),
        grid_png=lambda: grid.grid_png(view, lambda: cams),
        timing_figure=(lambda: timing_chart(view, results, max_n)) if results else None,
        threshold_table=threshold_table,
        grid_caption=f"{view.image_name}: {', '.join(label(m) for m in cams)}; threshold {view.threshold:.2f}",
    )


def localize_settings(view: View, method: str, max_n: int) -> dict:
    """The settings of ``cam-studio localize`` for ``method`` as the page shows it: its layer
    (and fused layers), the threshold, max_N, the explained class and the precision."""
    return exports.localize_settings(view.model_key, method, view.threshold, layer=view.layer,
                                     class_index=view.class_index, max_n=max_n, fused_layers=view.fused_layers,
                                     precision=view.requested_precision)


def _downloads(view: View, results: Results, max_n: int, threshold_table: pd.DataFrame | None = None) -> None:
    st.subheader("Downloads", anchor=False)
    stem = file_stem(view)
    cams = {method: result.cam for method, result in results.items()}
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "Grid (PNG)", lambda: grid.grid_png(view, lambda: cams), file_name=f"{stem}_grid.png",
            mime="image/png", on_click="ignore", icon=":material/grid_view:", key="download_grid",
        )
        st.download_button(
            "Maps (.npz)", lambda: maps_npz(view, results), file_name=f"{stem}_maps.npz",
            mime="application/octet-stream", on_click="ignore", icon=":material/data_array:",
            key="download_maps",
        )
        st.download_button(
            "Timings (CSV)", lambda: timings_csv(view, results, max_n), file_name=f"{stem}_timings.csv",
            mime="text/csv", on_click="ignore", icon=":material/timer:", key="download_timings",
        )
        st.download_button(
            "Settings (JSON)", lambda: settings_json(view, max_n), file_name=f"{stem}_settings.json",
            mime="application/json", on_click="ignore", icon=":material/tune:", key="download_settings",
        )
        st.download_button(
            "Report (HTML)", lambda: report_html(view, results, max_n, threshold_table),
            file_name=f"{stem}_report.html", mime="text/html", on_click="ignore", icon=":material/description:",
            key="download_report", help="The grid, the compute times, the threshold table and the settings that "
            "reproduce this page, in one HTML file that opens offline in any browser.",
        )
    _localize_download(view, results, max_n, stem)


def _localize_download(view: View, results: Results, max_n: int, stem: str) -> None:
    """The settings file of ``cam-studio localize`` for one shown method at the current threshold."""
    methods = [m for m in view.methods if m in results]
    if not methods:
        return
    if st.session_state.get("localize_method") not in methods:
        st.session_state["localize_method"] = methods[0]
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    method = left.selectbox(
        "Put the threshold to use: method", methods, format_func=label, key="localize_method",
        help="This method, layer, class, max_N and the heatmap threshold as the settings file of "
        "`cam-studio localize --settings s.json IMAGES --out regions.json`, which draws the defect regions on "
        "new images.",
    )
    try:
        text = exports.localize_settings_json(localize_settings(view, method, max_n))
    except ValueError as exc:
        right.caption(f"No settings file for this model: {exc}")
        return
    right.download_button(
        f"Localize settings: {label(method)} at {view.threshold:.2f} (JSON)", text,
        file_name=f"{stem}_localize_{method}.json", mime="application/json", icon=":material/crop_free:",
        key="download_localize",
    )
