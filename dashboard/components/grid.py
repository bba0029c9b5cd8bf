"""The comparison grid: one column per method, one row per view of its map.

Rows, as in the 2019 Faster-Score-CAM study: the heatmap overlay; the thresholded
("emphasized") view with the ground-truth outline; the guided variant (× guided
backprop); the Sobel variant (× the image gradient). The first column shows the
input, its ground truth, the guided-backprop saliency and the Sobel gradient.
All pictures come from ``camcore.visualize`` / ``camcore.methods.combine``.

The rows are data: :data:`ROWS` lists one :class:`GridRow` per row (its name, how to
draw its tile in the input column, how to draw a method's tile from the method's map).
The page's columns, the placeholder tiles and the exported PNG all iterate it, so a
new row is one more entry there, e.g. each map inverted::

    GridRow("Inverted", input_tile=lambda view: ("Input inverted", 255 - view.rgb),
            method_tile=lambda view, method, cam: (f"1 - {label(method)}", visualize.colorize(1 - cam)))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import streamlit as st

from camcore import visualize
from camcore.maps import upsample
from camcore.methods import METHODS
from camcore.methods.combine import guided_variant, sobel_variant

if TYPE_CHECKING:  # for the annotations only: importing camcore.explainer imports TensorFlow
    from camcore.explainer import CamResult, Explainer
    from camcore.models import LoadedModel
    from camcore.prepared import Prepared
    from dashboard.components.sidebar import Display

MAX_METHOD_COLUMNS = 5  # more methods wrap into another row of columns: tiles stay readable
OUTLINE = (0, 255, 0)  # ground truth, green as in the study
EMPTY_SHADE = 246  # placeholder tiles: a light gray that keeps rows aligned

Tile = tuple[str, np.ndarray]  # (caption, uint8 RGB picture at the view's size)
RecordKey = tuple[Any, ...]  # what the timing log files a computed map under


@dataclass(frozen=True, eq=False)
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
    prepared: Prepared  # the model input, hashed once
    rgb: np.ndarray  # the input at the model's size, uint8 RGB: what panels are drawn on
    image_size: tuple[int, int]  # the input image's own (height, width), before resizing for the model
    mask: np.ndarray | None  # bool ground truth (any size)
    mask_id: str  # content hash of the mask ("none" without one)
    saliency: np.ndarray | None  # guided backprop (H, W, C); None for a model without gradients
    sobel: np.ndarray  # image gradient (H, W) in [0, 1]
    methods: tuple[str, ...]
    threshold: float
    colormap: str
    alpha: float
    explainer: Explainer = field(repr=False)
    precision: str = "fp32"  # of the layer's forward-only passes: part of every map's cache key
    requested_precision: str = "auto"  # the user's choice ("fp32": exact)

    @property
    def x(self) -> Prepared:
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

    def record_key(self, method: str, max_n: int | None = None) -> RecordKey:
        return (self.model_key, self.precision, self.layers_for(method), self.image_id, self.class_index, method, max_n)

    def settings(self, max_n: int) -> dict[str, Any]:
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
    *,
    model_key: str,
    bundle: LoadedModel,
    explainer: Explainer,
    layer: str,
    image_name: str,
    image: np.ndarray,
    mask: np.ndarray | None,
    prepared: Prepared,
    class_index: int,
    probability: float,
    display: Display,
    detail: str = "",
    fused_layers: tuple[str, ...] = (),
    requested_precision: str = "auto",
    guided: bool = True,
) -> View:
    """A View for one (model, layer, image, class) and display settings: the image at the
    model's size, its guided-backprop saliency and Sobel gradient (camcore computes them).
    ``detail`` (e.g. "scratch") is shown after the image's name; ``guided=False`` skips
    guided backprop (a grid without the guided row: one backward pass less)."""
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
        channels=explainer.layer_info(layer).channels,
        class_index=int(class_index),
        class_name=names[class_index] if class_index < len(names) else f"class {class_index}",
        probability=float(probability),
        image_name=image_name + (f" ({detail})" if detail else ""),
        prepared=prepared,
        rgb=rgb,
        image_size=(int(np.shape(image)[0]), int(np.shape(image)[1])),
        mask=mask,
        mask_id="none" if mask is None else image_key(np.asarray(mask, bool)),
        saliency=_guided_backprop_of(explainer, prepared, class_index) if guided else None,
        sobel=sobel_gradient(rgb),
        methods=tuple(display.methods),
        threshold=float(display.threshold),
        colormap=str(display.colormap),
        alpha=float(display.alpha),
        explainer=explainer,
        precision=explainer.verdict(prepared, layer).precision,
        requested_precision=requested_precision,
    )


def _guided_backprop_of(explainer: Explainer, prepared: Prepared, class_index: int) -> np.ndarray | None:
    if explainer.unavailable_reason("grad_cam") is not None:  # no gradients: no guided backprop
        return None
    return explainer.guided_backprop(prepared, class_index)


def label(method: str) -> str:
    return METHODS[method].label


def blank_tile(like: np.ndarray) -> np.ndarray:
    return np.full(like.shape[:2] + (3,), EMPTY_SHADE, np.uint8)


# ------------------------------------------------------------------------ rows
@dataclass(frozen=True)
class GridRow:
    """One row of the grid. ``input_tile(view)`` draws its tile in the input column;
    ``method_tile(view, method, cam)`` draws a method's tile from the method's map,
    already upsampled to the view's size (``view.rgb``'s height and width)."""

    name: str
    input_tile: Callable[[View], Tile]
    method_tile: Callable[[View, str, np.ndarray], Tile]


def _input_image(view: View) -> Tile:
    height, width = view.rgb.shape[:2]
    return f"Input · {width}×{height}", view.rgb


def _overlay(view: View, method: str, cam: np.ndarray) -> Tile:
    return f"{label(method)} · overlay", visualize.overlay(view.rgb, cam, view.colormap, view.alpha)


def _ground_truth(view: View) -> Tile:
    if view.mask is None:
        return "No ground truth", blank_tile(view.rgb)
    return "Ground truth (green)", visualize.draw_outline(view.rgb, view.mask, OUTLINE)


def _thresholded(view: View, method: str, cam: np.ndarray) -> Tile:
    emphasized = visualize.emphasize(view.rgb, cam, view.threshold, view.colormap, view.alpha)
    if view.mask is not None:
        emphasized = visualize.draw_outline(emphasized, view.mask, OUTLINE)
    return f"{label(method)} · map ≥ {view.threshold:.2f}", emphasized


def _guided_backprop(view: View) -> Tile:
    if view.saliency is None:
        return "Guided backprop · needs gradients", blank_tile(view.rgb)
    return "Guided backprop", visualize.saliency_to_rgb(view.saliency)


def _guided(view: View, method: str, cam: np.ndarray) -> Tile:
    if view.saliency is None:
        return f"Guided {label(method)} · needs gradients", blank_tile(view.rgb)
    return f"Guided {label(method)}", visualize.saliency_to_rgb(guided_variant(cam, view.saliency))


def _sobel_gradient(view: View) -> Tile:
    return "Sobel gradient", visualize.map_to_rgb(view.sobel)


def _sobel(view: View, method: str, cam: np.ndarray) -> Tile:
    return f"Sobel × {label(method)}", visualize.map_to_rgb(sobel_variant(cam, view.sobel))


ROWS: tuple[GridRow, ...] = (
    GridRow("Overlay", input_tile=_input_image, method_tile=_overlay),
    GridRow("Thresholded", input_tile=_ground_truth, method_tile=_thresholded),
    GridRow("Guided", input_tile=_guided_backprop, method_tile=_guided),
    GridRow("Sobel", input_tile=_sobel_gradient, method_tile=_sobel),
)


def input_panels(view: View) -> list[Tile]:
    """The input column, one tile per row."""
    return [row.input_tile(view) for row in ROWS]


def method_panels(view: View, method: str, cam: np.ndarray) -> list[Tile]:
    """A method's column, one tile per row."""
    # Upsampled once to the display size; every row's tile then works at that size.
    cam = upsample(cam, view.rgb.shape[:2])
    return [row.method_tile(view, method, cam) for row in ROWS]


def show_placeholders(view: View, method: str, note: str, waiting: bool = True) -> None:
    """Gray tiles for a column whose maps are not ready ("queued", "computing"; or "not
    available", ``waiting=False``: no map will come), one per row of :data:`ROWS`."""
    show_placeholder_tiles([view.rgb.shape[:2]] * len(ROWS), f"{label(method)} · {note}", waiting)


def show_placeholder_tiles(sizes: Sequence[tuple[int, int]], title: str, waiting: bool = True) -> None:
    """Gray tiles of the given (height, width) aspect ratios, the first captioned ``title``,
    as one element spaced as :func:`show_panels` draws a column, which replaces it in the
    same slot (an element per tile left the tiles after the first under the maps). Drawn as
    HTML rather than images: Streamlit deletes an image the moment the run that replaced it
    ends, and a browser that had not fetched it yet logged a 404 (seen with 8 concurrent
    sessions). ``data-waiting`` says whether this run replaces them with maps (what tells a
    browser, or a test, that the grid is not drawn yet)."""
    import html

    shade = f"rgb({EMPTY_SHADE},{EMPTY_SHADE},{EMPTY_SHADE})"
    # the tile and its caption spaced as st.image draws a list, so the rows stay aligned
    caption = ("margin-top:6px;padding:2px 0;text-align:center;font-size:14px;line-height:22.4px;"
               "color:rgba(49,51,63,0.6);white-space:nowrap;overflow:hidden;text-overflow:ellipsis")
    tiles = []
    for number, (height, width) in enumerate(sizes):
        text = title if number == 0 else "\u00a0"
        tiles.append(f'<div><div data-waiting="{str(waiting).lower()}" '
                     f'style="width:100%;aspect-ratio:{width}/{height};background:{shade}"></div>'
                     f'<div style="{caption}">{html.escape(text)}</div></div>')
    st.html(f'<div style="display:flex;flex-direction:column;row-gap:1rem">{"".join(tiles)}</div>')


def method_help(method: str) -> str:
    """The column tooltip: the method's one-line definition and its paper."""
    spec = METHODS[method]
    agnostic = "" if spec.class_specific else " Class-agnostic: the same map for every class."
    return f"{spec.definition}.{agnostic} {spec.reference}" + (f" — {spec.url}" if spec.url else "")


def column_header(title: str, detail: str, help: str | None = None) -> None:
    st.markdown(f"**{title}**", help=help)
    st.caption(detail or " ")


DISPLAY_JPEG_QUALITY = 90


def display_jpeg(rgb: np.ndarray) -> bytes:
    """A panel as the page shows it: JPEG at quality 90 with full-resolution color (4:4:4,
    so a one-pixel outline keeps its color), a third to a fifth of the PNG's bytes and
    ~10x faster to encode. Only the page's display: every download stays lossless PNG."""
    import cv2

    bgr = cv2.cvtColor(visualize.to_rgb(rgb), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, DISPLAY_JPEG_QUALITY,
                                          cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
    if not ok:
        raise ValueError("could not encode the panel as JPEG")
    return data.tobytes()


def show_panels(panels: list[Tile]) -> None:
    """A column's panels as one element (Streamlit's image list: a caption under each
    tile), their pictures inside the page update (data URLs), not files the browser
    fetches afterwards. One element a column, not one a tile: each element is a message the
    browser's page re-renders on, with its own toolbar and size observer (a new page's grid
    ~0.2-0.3 s sooner). Data URLs: Streamlit deletes an image file once a newer run no
    longer shows it, so a browser that had not fetched it yet (several sessions at once, or
    two clicks in quick succession interrupting a run) got a 404 and a broken tile.
    Unchanged panels cost little on a rerun: Streamlit's client keeps large messages by hash."""
    import base64

    urls = ["data:image/jpeg;base64," + base64.b64encode(display_jpeg(rgb)).decode("ascii") for _, rgb in panels]
    st.image(urls, caption=[title for title, _ in panels], width="stretch")


def precision_text(view: View) -> str:
    """How the forward-only passes of the view's layer run and why, for the header and the
    timing chart, e.g. "**fp32** — bf16 measured 1.83× slower on this CPU"."""
    verdict = view.explainer.verdict(view.x, view.layer)
    if view.requested_precision == "fp32":
        return "**fp32** (exact)"
    if verdict.precision == "bf16":
        return f"masked/ablation passes in **bf16** — {verdict.reason} (gradients fp32)"
    return f"**fp32** — {verdict.reason}"


def result_detail(result: CamResult) -> str:
    """Header line under a method's name: its time, model passes, what it reused."""
    if result.cached:
        text = f"cached · {result.seconds * 1000:.0f} ms"
    else:
        passes = f"{result.model_passes} pass" + ("" if result.model_passes == 1 else "es")
        text = f"{result.seconds:.2f} s · {passes}"
    if isinstance(result.layer, tuple):
        text += f" · {len(result.layer)} layers fused"
    return text


def grid_rows(view: View, cams: dict[str, np.ndarray]) -> list[list[Tile]]:
    """The whole grid as rows of (title, RGB) for ``visualize.compose_grid``: one per
    entry of :data:`ROWS`, each led by the input column's tile."""
    columns = [input_panels(view)] + [method_panels(view, m, cams[m]) for m in view.methods if m in cams]
    return [[column[number] for column in columns] for number in range(len(ROWS))]


_ASCII = str.maketrans({"≥": ">=", "·": "-", "×": "x", "—": "-"})


def grid_png(view: View, cams_fn: Callable[[], dict[str, np.ndarray]]) -> bytes:
    """The grid as one PNG (titles in ASCII: the export's font has no other glyphs)."""
    rows = [[(title.translate(_ASCII), rgb) for title, rgb in row] for row in grid_rows(view, cams_fn())]
    return visualize.png_bytes(visualize.compose_grid(rows, tile=256, title_height=24))
