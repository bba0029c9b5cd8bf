"""The grid's rows are data: a row added to ``dashboard.components.grid.ROWS`` alone shows
up in every column of the Compare page, in the placeholder tiles and in the exported PNG.
``View`` is built by keyword and typed with camcore's types; the dashboard's modules import
without TensorFlow."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from shown_panels import assert_shown_as, tiles
from streamlit.testing.v1 import AppTest

from camcore import visualize
from camcore.maps import upsample
from camcore.methods import ORIGINAL_STUDY
from dashboard.components import grid

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
TILE, TITLE = 256, 24  # grid_png's tile and title strip


def _inverted_input(view: grid.View) -> grid.Tile:
    return "Input inverted", 255 - view.rgb


def _inverted_map(view: grid.View, method: str, cam: np.ndarray) -> grid.Tile:
    return f"1 - {grid.label(method)}", visualize.colorize(1.0 - cam, view.colormap)


INVERTED = grid.GridRow("Inverted", input_tile=_inverted_input, method_tile=_inverted_map)


@pytest.fixture()
def inverted_row(monkeypatch) -> grid.GridRow:
    monkeypatch.setattr(grid, "ROWS", (*grid.ROWS, INVERTED))
    return INVERTED


def _page_view(methods: tuple[str, ...]) -> tuple[grid.View, dict[str, Any]]:
    """The View the page built for its default image and class, and the maps it computed
    (served from the shared explainer's cache: no model pass)."""
    from camcore.samples import load_sample, load_sample_index
    from dashboard import state
    from dashboard.components import analysis, sidebar

    bundle, explainer = state.get_model("demo:vgg_defect"), state.get_explainer("demo:vgg_defect")
    info = load_sample_index()[0]
    image, mask = load_sample(info)
    x = bundle.preprocess(image)
    (class_index, probability), = explainer.top_classes(x, 1)
    view = grid.make_view(
        model_key="demo:vgg_defect", bundle=bundle, explainer=explainer, layer=bundle.default_layer,
        image_name=info.name, image=image, mask=mask, prepared=x, class_index=class_index,
        probability=probability, display=sidebar.Display(methods, 0.5, "jet", 0.5),
    )
    results = analysis.current_results(view, 10)
    assert set(results) == set(methods)  # all computed by the page
    return view, {method: result.cam for method, result in results.items()}


def test_a_row_added_to_the_row_list_is_drawn_in_every_column_and_exported(inverted_row) -> None:
    methods = ORIGINAL_STUDY  # one-pass, max_N and per-channel columns: each is drawn by its own code
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["methods"] = list(methods)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    images = dict(tiles(at.main))
    assert len(images) == len(grid.ROWS) * (1 + len(methods)) == 5 * (1 + len(methods))
    view, cams = _page_view(methods)
    assert_shown_as(images["Input inverted"], 255 - view.rgb)
    for method in methods:
        expected = visualize.colorize(1.0 - upsample(cams[method], view.rgb.shape[:2]), view.colormap)
        assert_shown_as(images[f"1 - {grid.label(method)}"], expected)
        assert f"Sobel × {grid.label(method)}" in images  # the study's rows are all still there

    # the exported PNG: a fifth band, the new row's tiles under each column
    png = grid.grid_png(view, lambda: cams)
    picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert picture.shape == (len(grid.ROWS) * (TILE + TITLE), (1 + len(methods)) * TILE, 3)
    expected_row = [("Input inverted", 255 - view.rgb)] + [
        (f"1 - {grid.label(m)}", visualize.colorize(1.0 - upsample(cams[m], view.rgb.shape[:2]), view.colormap))
        for m in methods
    ]
    band = visualize.compose_grid([expected_row], tile=TILE, title_height=TITLE)
    np.testing.assert_array_equal(picture[-(TILE + TITLE):], band)


def _placeholders_page() -> None:
    from types import SimpleNamespace

    import numpy as np

    from dashboard.components import grid

    grid.show_placeholders(SimpleNamespace(rgb=np.zeros((30, 40, 3), np.uint8)), "score_cam", "queued")


def test_placeholders_have_one_tile_per_row(inverted_row) -> None:
    at = AppTest.from_function(_placeholders_page, default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    # one element, as show_panels draws a column (which replaces it in the same slot)
    (column,) = [element.proto.body for element in at.get("html")]
    tiles = column.split('<div data-waiting="true" ')[1:]
    assert len(tiles) == len(grid.ROWS) == 5
    assert "Score-CAM · queued" in tiles[0] and all("aspect-ratio:40/30" in tile for tile in tiles)
    assert all("Score-CAM" not in tile for tile in tiles[1:])  # one title per column


def test_view_is_built_by_keyword_and_typed_with_camcores_types() -> None:
    from typing import get_type_hints

    from camcore.explainer import CamResult, Explainer
    from camcore.models import LoadedModel
    from camcore.prepared import Prepared
    from dashboard.components.sidebar import Display

    parameters = inspect.signature(grid.make_view).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    names = {"Explainer": Explainer, "Prepared": Prepared, "LoadedModel": LoadedModel, "Display": Display,
             "CamResult": CamResult}
    hints = get_type_hints(grid.View, vars(grid), names)
    assert hints["explainer"] is Explainer and hints["prepared"] is Prepared
    assert Any not in hints.values()
    make_view = get_type_hints(grid.make_view, vars(grid), names)
    assert make_view["bundle"] is LoadedModel and make_view["display"] is Display


def test_the_dashboards_modules_import_without_tensorflow() -> None:
    """The pages load TensorFlow through camcore when they first explain a model; importing
    the dashboard's modules (for their names and types) must not."""
    code = (
        "import sys\n"
        "import dashboard.state, dashboard.cli\n"
        "from dashboard.components import analysis, charts, common, grid, sidebar\n"
        "found = sorted({'tensorflow', 'keras'} & set(sys.modules))\n"
        "print(found, file=sys.stderr)\n"
        "sys.exit(1 if found else 0)\n"
    )
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr[-2000:]
