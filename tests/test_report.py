"""camcore.report: one self-contained HTML file (no network resource, images embedded, the
settings that reproduce the page), from the Compare page's pieces and from evaluation results;
``cam-studio report``. The real-browser check is tests/test_browser_report.py."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from camcore import evaluation as ev
from camcore import report, visualize
from camcore.samples import load_sample, load_sample_index

MB = 2**20


class _Page(HTMLParser):
    """Every tag with its attributes, and the text of every script by id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: dict[str, str] = {}
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs).get("id") or f"anonymous-{len(self.scripts)}"
            self.scripts[self._script] = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self.scripts[self._script] += data

    def attributes(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]


def parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    return parsed


def assert_self_contained(page: str) -> _Page:
    """No tag loads anything from elsewhere, and no text outside the plotly bundle names an
    http(s) address (the bundle's own strings are for map tiles and links never fetched
    here; the browser test checks that nothing is requested)."""
    parsed = parse(page)
    assert "plotly-bundle" in parsed.scripts and len(parsed.scripts["plotly-bundle"]) > 3 * MB
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "srcset", "poster", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith("data:") or value.startswith("#"), (tag, name, value[:80])
    assert not parsed.attributes("link") and not parsed.attributes("iframe")
    outside = page.replace(parsed.scripts["plotly-bundle"], "")
    assert not re.search(r"https?://", outside), re.search(r".{60}https?://.{60}", outside)
    assert "@import" not in outside and "url(" not in outside
    return parsed


def sample_grid() -> bytes:
    """A grid like the Compare page's default download: 5 columns (input + 4 methods) x 4 rows
    of 256 px tiles of a bundled texture with heat overlays (PNG compresses them as badly)."""
    image, mask = load_sample(load_sample_index()[0])
    rgb = visualize.to_rgb(image)
    rng = np.random.default_rng(0)
    tiles = [[(f"tile {r}.{c}", visualize.overlay(rgb, rng.random((14, 14)), alpha=0.4 + 0.1 * r)) for c in range(5)]
             for r in range(4)]
    return visualize.png_bytes(visualize.compose_grid(tiles, tile=256, title_height=24))


def timing() -> go.Figure:
    fig = go.Figure()
    for stage, color in (("forward+gradients", "#4c6ef5"), ("masked passes", "#f76707")):
        fig.add_trace(go.Bar(y=["Grad-CAM", "Score-CAM"], x=[0.01, 0.9], name=stage, orientation="h",
                             marker_color=color))
    return fig.update_layout(barmode="stack")


SETTINGS = {"model": "demo:vgg_defect", "layer": "top_down56", "methods": ["grad_cam", "score_cam"], "max_n": 10,
            "threshold": 0.3, "image": "odd </script><b>name</b>.png"}


def test_a_compare_report_embeds_everything_and_keeps_the_settings(tmp_path):
    grid = sample_grid()
    table = pd.DataFrame(
        {"Method": ["Grad-CAM", "<b>Score-CAM</b>"], "IoU @ 0.30": [0.6512, 0.3], "Peak": ["✓ hit", "✗ miss"]}
    )
    path = report.write_report(tmp_path / "compare.html", model="vgg_defect (demo)", layer="top_down56",
                               precision="fp32", settings=SETTINGS, grid_png=grid, grid_caption="fractal_defective_1",
                               timing_figure=timing(), threshold_table=table)
    page = path.read_text(encoding="utf-8")
    parsed = assert_self_contained(page)
    (grid_img,) = [a for a in parsed.attributes("img") if "grid-image" in a.get("class", "")]
    assert base64.b64decode(grid_img["src"].split(",", 1)[1]) == grid  # the PNG itself, byte for byte
    assert json.loads(parsed.scripts[report.SETTINGS_ID]) == SETTINGS  # "<\/script>" reads back as "</script>"
    assert "odd </script>" not in page and "<b>Score-CAM</b>" not in page and "&lt;b&gt;Score-CAM" in page
    assert "0.651" in page and "top_down56" in page and "fp32" in page
    assert page.count("Plotly.newPlot(") == 1 and page.count(parsed.scripts["plotly-bundle"][:200]) == 1
    size = path.stat().st_size
    print(f"Compare report, default page: {size / MB:.2f} MB (grid PNG {len(grid) / MB:.2f} MB)")
    assert size <= 10 * MB


def _tiny_spec() -> ev.ModelSpec:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling2D()(h)))
    return ev.ModelSpec.from_model(model, "unit", key="memory:tiny")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "results.csv"
    items = ev.synthetic_items(4, seed=3, size=64, defect_rate=0.75)
    ev.evaluate(_tiny_spec(), items, ["grad_cam", "xgrad_cam", "sobel", "random"], curve_steps=3, workers=1, out=out)
    return out


def test_an_evaluation_report_states_the_summary_and_draws_the_charts(results, tmp_path):
    table = ev.read_results(results)
    page = report.report_html(results=table, settings={"results": "r.csv"})
    parsed = assert_self_contained(page)
    for anchor in ("summary", "best-thresholds", "distributions", "worst"):
        assert f'<section id="{anchor}">' in page
    # a distribution per registered metric column that has one (and values), the IoU curve, the time
    from camcore.report_sections import distributions

    shown = [c for c in distributions() if c in table.columns and table[c].notna().any()]
    assert len(shown) >= 5 and page.count("Plotly.newPlot(") == len(shown) + 2
    summary = ev.summary_table(ev.summarize(table))
    pointing = summary["pointing game %"].iloc[0]  # Grad-CAM, first (maybe marked ⚠ on this untrained model)
    assert f"{pointing:.3f}" in page  # the number the command line and the Dataset page state
    best = ev.threshold_export(table)["methods"]["grad_cam"]["threshold"]
    rows = re.findall(r"<tr><td>Grad-CAM[^<]*</td><td>([0-9.]+)</td>", page)
    assert f"{best:.3f}" in rows
    assert "memory:tiny" in page and json.loads(parsed.scripts[report.SETTINGS_ID]) == {"results": "r.csv"}


def test_cam_studio_report_writes_the_file_with_the_worst_images(results, tmp_path, capsys):
    from dashboard.cli import main

    out = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(out), "--worst", "2"]) == 0
    page = out.read_text(encoding="utf-8")
    parsed = assert_self_contained(page)
    worst = [a for a in parsed.attributes("img") if "worst-image" in a.get("class", "")]
    assert len(worst) == 2 * 2 and all(a["src"].startswith("data:image/jpeg;base64,") for a in worst)
    assert "shown without their maps: the model could not be loaded" in page  # memory:tiny is not on disk
    config = json.loads(parsed.scripts[report.SETTINGS_ID])
    assert config["methods"] == ["grad_cam", "xgrad_cam", "sobel", "random"] and config["curve_steps"] == 3
    assert "report:" in capsys.readouterr().out
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    assert main(["report", str(tmp_path / "junk.csv"), "--out", str(tmp_path / "x.html")]) == 2
    assert "junk.csv" in capsys.readouterr().err and not (tmp_path / "x.html").exists()


def test_worst_images_of_a_folder_are_read_only_under_a_given_data_root(tmp_path):
    from camcore.report_sections import row_opener

    row = pd.Series({"source": str(tmp_path / "set"), "image_id": "images/a.png", "index": 0})
    with pytest.raises(PermissionError, match="not under a data folder"):
        row_opener([])(row)
    (tmp_path / "set" / "images").mkdir(parents=True)
    (tmp_path / "set" / "images" / "a.png").write_bytes(visualize.png_bytes(np.full((8, 8, 3), 7, np.uint8)))
    assert row_opener([str(tmp_path)])(row).image.shape == (8, 8, 3)
