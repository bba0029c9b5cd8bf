"""Load: 8 browser sessions at once against one server, each driving a different flow
(demo models, samples, an upload, a method set, max_N moves, the Dataset page).

0 errors, 0 console errors, each session's grid shows its own image and model (checked
when it is done and again when all are), and nothing an upload brought is left in the
server's temporary folder. The server is the one the browser tests share
(tests/conftest.py), already serving the demo models. The p50/p95 time to a full grid is
printed; ``scripts/load_16.py`` runs 16 sessions on a fresh server as a benchmark. The
flows are in ``tests/load_flows.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import browser_helpers as browser
import load_flows
import numpy as np
import pytest
from shown_panels import tiles

from camcore.visualize import png_bytes

SESSIONS = 8


@pytest.mark.browser
def test_eight_sessions_at_once_keep_their_own_grids_without_errors(dashboard_server, tmp_path: Path) -> None:
    url, server_tmp = dashboard_server  # the browser tests' server, already serving
    flows = load_flows.sessions(SESSIONS, tmp_path)
    assert len({s.name for s in flows}) == SESSIONS and any(not s.grid for s in flows)
    before = set(os.listdir(server_tmp))
    with browser.open_browser(1400, 900) as (_, new_page):
        figures = load_flows.run(url, new_page, flows, timeout_s=420)
    left_behind = sorted(set(os.listdir(server_tmp)) - before)
    print("\n" + json.dumps({k: v for k, v in figures.items() if k != "problems"}, indent=1))
    assert not figures["problems"], figures["problems"]
    assert figures["grids"] == sum(s.grid for s in flows)  # every Compare session drew its grid
    assert figures["cached_changes"] == 6  # the cached reader's four max_N and two threshold moves
    assert left_behind == [], left_behind  # uploads stayed in memory


def test_panels_a_quick_rerun_replaces_never_become_image_files(tmp_path: Path):
    """What made browsers under load log 404s: an image file that a rerun replaced before
    the browser fetched it is gone (first seen on the max_N column, then on a column that two
    quick clicks removed). Every panel travels inside the page update (data URLs), and the
    "queued"/"computing" tiles are not images at all."""
    import keras
    from streamlit.testing.v1 import AppTest

    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))
    model.save(tmp_path / "tiny.keras")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=180)
    at.session_state["model_source"] = "upload"  # a tiny model: no demo model to load first
    at.run()
    at.file_uploader(key="model_file").upload("tiny.keras", (tmp_path / "tiny.keras").read_bytes(),
                                             "application/octet-stream").run()
    at.radio(key="image_source").set_value("upload").run()
    image = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    at.file_uploader(key="image_file").upload("noise.png", png_bytes(image), "image/png").run()
    assert not at.exception and not at.error
    sources = dict(tiles(at.main))
    # as JPEG (``grid.display_jpeg``): a fifth of the PNG's bytes; the downloads stay PNG
    assert sources and all(source.startswith("data:image/jpeg;base64,") for source in sources.values()), sources
    assert not [c for c in sources if c.endswith(("queued", "computing"))]
