"""The comparison grid: one column per method, one row per view of its map.

Rows, as in the 2019 Faster-Score-CAM study: the heatmap overlay; the thresholded
("emphasized") view with the ground-truth outline; the guided variant (× guided
backprop); the Sobel variant (× the image gradient). The first column shows the
input, its ground truth, the guided-backprop saliency and the Sobel gradient.
All pictures come from ``camcore.visualize`` / ``camcore.methods.combine``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import streamlit as st

from camcore import visualize
from camcore.maps import upsample
from camcore.methods import METHODS
from camcore.methods.combine import guided_variant, sobel_variant

ROW_NAMES = ("Overlay", "Thresholded", "Guided", "Sobel")
MAX_METHOD_COLUMNS = 5  # more methods wrap into another row of columns: tiles stay readable
OUTLINE = (0, 255, 0)  # ground truth, green as in the study
EMPTY_SHADE = 246  # placeholder tiles: a light gray that keeps rows aligned


@dataclass
class View:
    """Everything one rendering of the grid needs (built once per full run)."""

    model_key: str
    model_name: str
    layer: str
    fused_layers: tuple[str, ...]  # layers the one-pass methods fuse (empty: ``layer`` only)
    channels: int  # of the layer: max_N's range
    class_index: int
    class_name: str
    probability: float
    image_name: str
    prepared: Any  # camcore.Prepared: the model input, hashed once
    rgb: np.ndarray  # the input at the model's size, uint8 RGB: what panels are drawn on
    mask: np.ndarray | None  # bool ground truth (any size)
    mask_id: str  # content hash of the mask ("none" without one)
    saliency: np.ndarray  # guided backprop (H, W, C)
    sobel: np.ndarray  # image gradient (H, W) in [0, 1]
    methods: tuple[str, ...]
    threshold: float
    colormap: str
    alpha: float
    explainer: Any = field(repr=False)
    precision: str = "fp32"  # of the layer's forward-only passes: part of every map's cache key
    requested_precision: str = "auto"  # the user's choice ("fp32": exact)

    @property
    def x(self) -> Any:
        """What every explainer call takes: the prepared input (hashed once)."""
        return self.prepared

    @property
    def image_id(self) -> str:
        return self.prepared.key

    def layers_for(self, method: str) -> str | tuple[str, ...]:
        """The layer (or fused layers) a method's column is computed on."""
        spec = METHODS.get(method)
        if self.fused_layers and spec is not None and spec.fusable:
            return self.fused_layers
        return self.layer

    def record_key(self, method: str, max_n: int | None = None) -> tuple:
        return (self.model_key, self.precision, self.layers_for(method), self.image_id, self.class_index, method, max_n)

    def settings(self, max_n: int) -> dict:
        return {
            "model": self.model_key,
            "layer": self.layer,
            "fused_layers": list(self.fused_layers),
            "image": self.image_name,
            "image_sha": self.image_id,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "methods": list(self.methods),
            "max_n": max_n,
            "threshold": self.threshold,
            "colormap": self.colormap,
            "overlay_opacity": self.alpha,
        }


def make_view(
    model_key: str,
    bundle: Any,
    explainer: Any,
    layer: str,
    image_name: str,
    detail: str,
    image: np.ndarray,
    mask: np.ndarray | None,
    prepared: Any,
    class_index: int,
    probability: float,
    display: Any,
    fused_layers: tuple[str, ...] = (),
    requested_precision: str = "auto",
) -> View:
    """A View for one (model, layer, image, class) and display settings: the image at the
    model's size, its guided-backprop saliency and Sobel gradient (camcore computes them)."""
    from camcore.methods.sobel import sobel_gradient
    from camcore.prepared import image_key
    from camcore.preprocess import resize_for_model

    prepared = explainer.prepare(prepared, image)  # no-op for an already prepared input
    rgb = visualize.to_rgb(resize_for_model(image, bundle.input_size, bundle.channels))
    names = list(bundle.class_names)
    return View(
        model_key=model_key,
        model_name=bundle.label,
        layer=layer,
        fused_layers=tuple(fused_layers),
        channels=explainer.adapter.layer_info(layer).channels,
        class_index=int(class_index),
        class_name=names[class_index] if class_index < len(names) else f"class {class_index}",
        probability=float(probability),
        image_name=image_name + (f" ({detail})" if detail else ""),
        prepared=prepared,
        rgb=rgb,
        mask=mask,
        mask_id="none" if mask is None else image_key(np.asarray(mask, bool)),
        saliency=explainer.guided_backprop(prepared, class_index),
        sobel=sobel_gradient(rgb),
        methods=tuple(display.methods),
        threshold=float(display.threshold),
        colormap=str(display.colormap),
        alpha=float(display.alpha),
        explainer=explainer,
        precision=explainer.verdict(prepared, layer).precision,
        requested_precision=requested_precision,
    )


def label(method: str) -> str:
    return METHODS[method].label


def blank_tile(like: np.ndarray) -> np.ndarray:
    return np.full(like.shape[:2] + (3,), EMPTY_SHADE, np.uint8)


def input_panels(view: View) -> list[tuple[str, np.ndarray]]:
    height, width = view.rgb.shape[:2]
    if view.mask is not None:
        truth = ("Ground truth (green outline)", visualize.draw_outline(view.rgb, view.mask, OUTLINE))
    else:
        truth = ("No ground truth", blank_tile(view.rgb))
    return [
        (f"Input · {width}×{height}", view.rgb),
        truth,
        ("Guided backprop", visualize.saliency_to_rgb(view.saliency)),
        ("Sobel gradient", visualize.map_to_rgb(view.sobel)),
    ]


def method_panels(view: View, method: str, cam: np.ndarray) -> list[tuple[str, np.ndarray]]:
    name = label(method)
    # Upsampled once to the display size; every panel below then works at that size.
    cam = upsample(cam, view.rgb.shape[:2])
    emphasized = visualize.emphasize(view.rgb, cam, view.threshold, view.colormap, view.alpha)
    if view.mask is not None:
        emphasized = visualize.draw_outline(emphasized, view.mask, OUTLINE)
    return [
        (f"{name} · overlay", visualize.overlay(view.rgb, cam, view.colormap, view.alpha)),
        (f"{name} · map ≥ {view.threshold:.2f}", emphasized),
        (f"Guided {name}", visualize.saliency_to_rgb(guided_variant(cam, view.saliency))),
        (f"Sobel × {name}", visualize.map_to_rgb(sobel_variant(cam, view.sobel))),
    ]


def show_placeholders(view: View, method: str, note: str) -> None:
    """Gray tiles for a column whose maps are not ready ("queued", "computing"), drawn as HTML
    rather than images: Streamlit deletes an image the moment the run that replaced it ends,
    and a browser that had not fetched it yet logged a 404 (seen with 8 concurrent sessions)."""
    import html

    height, width = view.rgb.shape[:2]
    shade = f"rgb({EMPTY_SHADE},{EMPTY_SHADE},{EMPTY_SHADE})"
    # the tile and its caption spaced as st.image draws them, so the rows stay aligned
    caption = ("margin-top:6px;padding:2px 0;text-align:center;font-size:14px;line-height:22.4px;"
               "color:rgba(49,51,63,0.6);white-space:nowrap;overflow:hidden;text-overflow:ellipsis")
    for title in [f"{label(method)} · {note}"] + ["\u00a0"] * (len(ROW_NAMES) - 1):
        st.html(f'<div style="width:100%;aspect-ratio:{width}/{height};background:{shade}"></div>'
                f'<div style="{caption}">{html.escape(title)}</div>')


def method_help(method: str) -> str:
    """The column tooltip: the method's one-line definition and its paper."""
    spec = METHODS[method]
    agnostic = "" if spec.class_specific else " Class-agnostic: the same map for every class."
    return f"{spec.definition}.{agnostic} {spec.reference}" + (f" — {spec.url}" if spec.url else "")


def column_header(title: str, detail: str, help: str | None = None) -> None:
    st.markdown(f"**{title}**", help=help)
    st.caption(detail or " ")


def show_panels(panels: list[tuple[str, np.ndarray]]) -> None:
    """The panels as images sent inside the page update (data URLs), not as files the
    browser fetches afterwards. Streamlit deletes an image file once a newer run no longer
    shows it, so a browser that had not fetched it yet (several sessions at once, or two
    clicks in quick succession interrupting a run) got a 404 and a broken tile. Unchanged
    panels cost little on a rerun: Streamlit's client keeps large messages by hash."""
    import base64

    for title, rgb in panels:
        # Encoded by OpenCV: Streamlit's own PNG path (PIL) is ~20x slower per tile.
        png = visualize.png_bytes(rgb)
        st.image("data:image/png;base64," + base64.b64encode(png).decode("ascii"), caption=title, width="stretch")


def precision_text(view: View) -> str:
    """How the forward-only passes of the view's layer run and why, for the header and the
    timing chart, e.g. "**fp32** — bf16 measured 1.83× slower on this CPU"."""
    verdict = view.explainer.verdict(view.x, view.layer)
    if view.requested_precision == "fp32":
        return "**fp32** (exact)"
    if verdict.precision == "bf16":
        return f"masked/ablation passes in **bf16** — {verdict.reason} (gradients fp32)"
    return f"**fp32** — {verdict.reason}"


def result_detail(result: Any) -> str:
    """Header line under a method's name: its time, model passes, what it reused."""
    if result.cached:
        text = f"cached · {result.seconds * 1000:.0f} ms"
    else:
        passes = f"{result.model_passes} pass" + ("" if result.model_passes == 1 else "es")
        text = f"{result.seconds:.2f} s · {passes}"
    if isinstance(result.layer, tuple):
        text += f" · {len(result.layer)} layers fused"
    return text


def grid_rows(view: View, cams: dict[str, np.ndarray]) -> list[list[tuple[str, np.ndarray | None]]]:
    """The whole grid as rows of (title, RGB) for ``visualize.compose_grid``."""
    columns = [input_panels(view)] + [method_panels(view, m, cams[m]) for m in view.methods if m in cams]
    return [[column[row] for column in columns] for row in range(len(ROW_NAMES))]


_ASCII = str.maketrans({"≥": ">=", "·": "-", "×": "x", "—": "-"})


def grid_png(view: View, cams_fn: Callable[[], dict[str, np.ndarray]]) -> bytes:
    """The grid as one PNG (titles in ASCII: the export's font has no other glyphs)."""
    rows = [[(title.translate(_ASCII), rgb) for title, rgb in row] for row in grid_rows(view, cams_fn())]
    return visualize.png_bytes(visualize.compose_grid(rows, tile=256, title_height=24))
