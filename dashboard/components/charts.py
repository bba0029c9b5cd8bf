"""Plotly figures: compute time per method, the Faster-Score-CAM trade-off, IoU vs threshold.

Figures only arrange numbers that camcore measured or computed.
"""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

# One color per registered method, by registry position: a new method gets a color too.
PALETTE = ("#1c7ed6", "#7048e8", "#e8590c", "#2b8a3e", "#c2255c", "#0c8599", "#f59f00", "#5c940d", "#862e9c",
           "#364fc7", "#d9480f", "#087f5b")
CONTROL_COLORS = {"sobel": "#7f7f7f", "random": "#bcbd22"}
STAGE_COLORS = {
    "forward+gradients": "#4c6ef5",
    "forward": "#748ffc",
    "activations": "#15aabf",
    "masked passes": "#f76707",
    "ablation passes": "#d6336c",
    "weights": "#868e96",
}


def method_color(method: str) -> str:
    """The color of ``method`` in every chart (controls are gray/olive)."""
    from camcore.methods import METHODS

    if method in CONTROL_COLORS:
        return CONTROL_COLORS[method]
    keys = list(METHODS)
    return PALETTE[keys.index(method) % len(PALETTE)] if method in keys else "#495057"


FONT = dict(size=13)
MARGIN = dict(l=10, r=10, t=30, b=10)


def _layout(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(
        height=height,
        margin=MARGIN,
        font=FONT,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0.0),
        plot_bgcolor="white",
    )
    fig.update_xaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    return fig


def _stage_bars(rows: Sequence[dict], y_labels: dict[str, str]) -> list[go.Bar]:
    """One bar trace per (stage, shared or not), in STAGE_COLORS' order; a stage's legend
    entry once. Shared work is hatched and paler."""
    bars, seen = [], set()
    for stage in STAGE_COLORS:
        for shared in (False, True):
            part = [r for r in rows if r["stage"] == stage and bool(r["shared"]) == shared]
            if not part:
                continue
            name = stage + (" (shared)" if shared else "")
            bars.append(
                go.Bar(
                    name=stage,
                    orientation="h",
                    y=[y_labels[r["method"]] for r in part],
                    x=[r["seconds"] for r in part],
                    marker=dict(
                        color=STAGE_COLORS[stage],
                        opacity=0.55 if shared else 1.0,
                        pattern=dict(shape="/" if shared else "", fgcolor="white", fillmode="overlay", solidity=0.3),
                        line=dict(width=0),
                    ),
                    hovertemplate="%{y}<br>" + name + ": %{x:.3f} s<extra></extra>",
                    legendgroup=stage,
                    showlegend=stage not in seen,
                )
            )
            seen.add(stage)
    return bars


def timing_figure(rows: Sequence[dict], method_labels: dict[str, str], totals: dict[str, str],
                  note: str = "") -> go.Figure:
    """Stacked horizontal bars: one per method, one segment per stage.

    ``rows``: dicts with method, stage, seconds, shared (bool: work done once for two
    methods, hatched). ``totals[method]`` is the text written after the bar; ``note`` is
    written under the axis (the passes' precision and why).
    """
    methods = list(dict.fromkeys(row["method"] for row in rows))
    y_labels = {m: method_labels.get(m, m) for m in methods}
    fig = go.Figure(_stage_bars(rows, y_labels))
    totals_x = {m: sum(r["seconds"] for r in rows if r["method"] == m) for m in methods}
    peak = max(totals_x.values(), default=0.0) or 1.0
    fig.add_trace(
        go.Scatter(
            x=[totals_x[m] + peak * 0.02 for m in methods],
            y=[y_labels[m] for m in methods],
            mode="text",
            text=[totals.get(m, "") for m in methods],
            textposition="middle right",
            showlegend=False,
            hoverinfo="skip",
        )
    )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=[y_labels[m] for m in methods])
    fig.update_xaxes(title_text="seconds" + (f"<br><sup>{note}</sup>" if note else ""), range=[0, peak * 2.1])
    return _layout(fig, 300)


def tradeoff_figure(rows: Sequence[dict], current: dict | None, channels: int) -> go.Figure:
    """Faster-Score-CAM vs max_N: masked-pass time (bars) and correlation with Score-CAM."""
    ns = [r["max_n"] for r in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=ns, y=[r["seconds"] for r in rows], name="masked-pass time (s)",
            marker=dict(color="#ffc9a9", line=dict(width=0)),
            hovertemplate="max_N %{x}: %{y:.2f} s<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ns, y=[r["correlation"] for r in rows], name="correlation with Score-CAM", yaxis="y2",
            mode="lines+markers", line=dict(color=method_color("faster_score_cam"), width=2.5),
            hovertemplate="max_N %{x}: r = %{y:.3f}<extra></extra>",
        )
    )
    if current is not None:
        fig.add_vline(x=current["max_n"], line=dict(color="#495057", dash="dash", width=1.5))
    low = min([0.0] + [r["correlation"] for r in rows])
    fig.update_layout(
        xaxis=dict(title_text=f"max_N (channels, of {channels})", type="log" if channels > 64 else "linear"),
        yaxis=dict(title_text="seconds", rangemode="tozero"),
        yaxis2=dict(
            title_text="correlation", overlaying="y", side="right", range=[low, 1.05], showgrid=False,
            tickmode="linear", tick0=0.0, dtick=0.2, tickformat=".1f",
        ),
        bargap=0.35,
    )
    return _layout(fig, 320)


def iou_figure(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    best: dict[str, tuple[float, float]],
    method_labels: dict[str, str],
    threshold: float,
) -> go.Figure:
    """IoU vs threshold per method, each method's best threshold starred."""
    fig = go.Figure()
    for method, (thresholds, ious) in curves.items():
        color = method_color(method)
        name = method_labels.get(method, method)
        fig.add_trace(
            go.Scatter(
                x=list(thresholds), y=list(ious), name=name, mode="lines",
                line=dict(color=color, width=2.2),
                hovertemplate=name + ": IoU %{y:.3f} at %{x:.2f}<extra></extra>",
            )
        )
        t, value = best[method]
        fig.add_trace(
            go.Scatter(
                x=[t], y=[value], mode="markers", name=f"{name} best", showlegend=False,
                marker=dict(symbol="star", size=14, color=color, line=dict(color="white", width=1)),
                hovertemplate=name + f": best IoU {value:.3f} at {t:.2f}<extra></extra>",
            )
        )
    fig.add_vline(x=threshold, line=dict(color="#495057", dash="dash", width=1.5))
    fig.update_xaxes(title_text="threshold", range=[0, 1])
    fig.update_yaxes(title_text="IoU with the defect mask", rangemode="tozero")
    return _layout(fig, 320)


# ------------------------------------------------------------ Dataset page figures


def box_figure(values: dict[str, Sequence[float]], method_labels: dict[str, str], y_title: str, *,
               log: bool = False, height: int = 380) -> go.Figure:
    """One box per method (mean marked) of a metric's per-image values, in ``values``' order."""
    fig = go.Figure()
    for method, numbers in values.items():
        fig.add_trace(go.Box(y=list(numbers), name=method_labels.get(method, method),
                             marker_color=method_color(method), boxmean=True))
    fig.update_layout(yaxis_title=y_title, showlegend=False, height=height, margin=dict(t=30, b=30))
    if log:
        fig.update_layout(yaxis_type="log")
    return fig


def mean_curve_figure(curves: Any, method_labels: dict[str, str], x_title: str, y_title: str, *,
                      dotted: Sequence[str] = (), marks: dict[str, float] | None = None) -> go.Figure:
    """The mean curve of each method: ``curves`` is a DataFrame indexed by x with one column
    per method (:func:`camcore.evaluation.mean_curve`); ``dotted`` methods (the controls)
    are drawn dotted; ``marks[method]`` stars the point at that x (the best threshold)."""
    fig = go.Figure()
    for method in curves.columns:
        name, color = method_labels.get(method, method), method_color(method)
        fig.add_trace(go.Scatter(x=curves.index, y=curves[method], mode="lines", name=name,
                                 line=dict(color=color, dash="dot" if method in dotted else "solid")))
        if marks and method in marks:
            x = marks[method]
            fig.add_trace(go.Scatter(
                x=[x], y=[curves.loc[x, method]], mode="markers", showlegend=False,
                marker=dict(symbol="star", size=14, color=color, line=dict(width=1, color="black")),
                name=f"{name} best",
                hovertemplate=f"{name}: best threshold {x:.2f}, mean IoU %{{y:.3f}}<extra></extra>",
            ))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, height=380, margin=dict(t=30, b=30),
                      legend=dict(orientation="h", y=-0.2))
    return fig


# ------------------------------------------------------ two models (Dataset page)


def agreement_figure(values: dict[str, Sequence[float]], method_labels: dict[str, str], y_title: str) -> go.Figure:
    """One violin per method (box and mean inside, every image a point) of an agreement
    column's per-image values between two models, e.g. the correlation of their maps."""
    fig = go.Figure()
    for method, numbers in values.items():
        fig.add_trace(go.Violin(y=list(numbers), name=method_labels.get(method, method), box_visible=True,
                                meanline_visible=True, points="all", pointpos=0, jitter=0.3,
                                line_color=method_color(method), spanmode="hard"))
    fig.update_layout(yaxis_title=y_title, showlegend=False, height=380, margin=dict(t=30, b=30))
    return fig


def top1_disagreement_figure(classes: Sequence[str], shares: Sequence[float], differs: Sequence[int],
                             images: Sequence[int]) -> go.Figure:
    """Per image class, the share of images on which two models' top-1 differ (bars,
    "differs / images" written on each)."""
    fig = go.Figure(go.Bar(
        x=list(classes), y=list(shares), marker_color="#c2255c", text=[f"{d} / {n}" for d, n in zip(differs, images)],
        textposition="outside", hovertemplate="%{x}: top-1 differs on %{text} images (%{y:.0f} %)<extra></extra>",
    ))
    fig.update_layout(yaxis_title="images where top-1 differs (%)", yaxis_range=[0, 110], height=320,
                      margin=dict(t=30, b=30))
    return fig


def grouped_box_figure(groups: dict[str, dict[str, Sequence[float]]], method_labels: dict[str, str], y_title: str, *,
                       colors: dict[str, str] | None = None, log: bool = False, height: int = 380) -> go.Figure:
    """Boxes side by side for each method, one trace per group (e.g. a map's seconds and its
    metrics' seconds): ``groups[group][method]`` are the per-image values."""
    fig = go.Figure()
    for group, values in groups.items():
        x = [method_labels.get(m, m) for m, numbers in values.items() for _ in numbers]
        y = [float(v) for numbers in values.values() for v in numbers]
        fig.add_trace(go.Box(x=x, y=y, name=group, boxmean=True, marker_color=(colors or {}).get(group)))
    fig.update_layout(boxmode="group", yaxis_title=y_title, height=height, margin=dict(t=30, b=30),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0.0))
    if log:
        fig.update_layout(yaxis_type="log")
    return fig
