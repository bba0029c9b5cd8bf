"""The Compare page with the field's methods: the chosen methods are the columns, nine
of them wrap into two rows, layers can be fused, and the precision is stated."""

from __future__ import annotations

from pathlib import Path

import pytest
from shown_panels import tiles
from streamlit.testing.v1 import AppTest

from camcore.methods import METHODS
from dashboard.components.grid import ROWS

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def _run(session: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _captions(at: AppTest) -> list[str]:
    return [tile.caption for tile in tiles(at.main)]


def _headline(at: AppTest) -> str:
    return next(m.value for m in at.main.markdown if " · layer " in m.value)


@pytest.fixture(scope="module")
def all_methods() -> AppTest:
    return _run({"methods": list(METHODS)})


def test_every_method_is_a_column_and_nine_wrap_into_two_rows(all_methods: AppTest) -> None:
    captions = _captions(all_methods)
    for spec in METHODS.values():
        assert f"{spec.label} · overlay" in captions, spec.key
        assert f"Sobel × {spec.label}" in captions, spec.key
    # 9 methods in rows of at most 5, each row led by the input column: 2 input columns
    assert captions.count("Guided backprop") == 2
    assert len(captions) == len(ROWS) * (len(METHODS) + 2)
    # the per-channel columns' gray "queued" tiles are all replaced by their maps, none left under them
    assert not [h for h in all_methods.main.get("html") if 'data-waiting="true"' in h.proto.body]
    titles = [m.value for m in all_methods.main.markdown]
    for spec in METHODS.values():
        assert f"**{spec.label}**" in titles
    # the threshold table and the timing chart follow the choice
    table = all_methods.dataframe[0].value
    assert set(table["Method"]) == {spec.label for spec in METHODS.values()}


def test_column_tooltips_carry_the_definition_and_the_paper(all_methods: AppTest) -> None:
    helps = {m.value: m.help for m in all_methods.main.markdown if m.help}
    assert "Σ_k ReLU" in helps["**LayerCAM**"] and "Jiang" in helps["**LayerCAM**"]
    assert "Class-agnostic" in helps["**Eigen-CAM**"]


def test_choosing_methods_changes_the_columns() -> None:
    at = _run({"methods": ["layer_cam", "eigen_cam"]})
    captions = _captions(at)
    assert "LayerCAM · overlay" in captions and "Eigen-CAM · overlay" in captions
    assert not any(c.startswith("Grad-CAM") or c.startswith("Score-CAM") for c in captions)
    assert len(captions) == len(ROWS) * 3


def test_fusing_layers_gives_input_resolution_maps_and_says_so() -> None:
    at = _run({"methods": ["layer_cam", "score_cam"]})
    at.multiselect(key="fuse_layers").set_value(["block3_conv2", "block4_conv2"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "fuse 3 layers" in _headline(at)
    details = [c.value for c in at.main.caption]
    assert any("3 layers fused" in d for d in details)  # LayerCAM's column header
    assert "LayerCAM · overlay" in _captions(at) and "Score-CAM · overlay" in _captions(at)


def test_the_precision_is_stated_with_autos_reason_and_exact_can_be_forced(monkeypatch) -> None:
    from dashboard import state

    # auto as this machine decides it: the header gives the page explainer's verdict and its reason
    at = _run({"methods": ["grad_cam"]})
    verdict = state.get_explainer("demo:vgg_defect", "auto").known_verdict("top_down56")
    assert verdict is not None and f"**{verdict.precision}** — {verdict.reason}" in _headline(at)
    # the dashboard's bf16 path, on any CPU: auto forced to bf16
    monkeypatch.setenv("CAMSTUDIO_AUTO_PRECISION", "bf16")
    at = _run({"methods": ["grad_cam", "faster_score_cam"]})
    assert "masked/ablation passes in **bf16** — set by CAMSTUDIO_AUTO_PRECISION" in _headline(at)
    assert any("Precision: masked/ablation passes in **bf16**" in c.value for c in at.main.caption)
    at.toggle(key="exact_fp32").set_value(True).run()
    assert not at.exception
    assert "**fp32** (exact)" in _headline(at) and "bf16" not in _headline(at)


def test_sanity_check_runs_on_demand() -> None:
    at = _run({"methods": ["grad_cam", "eigen_cam"]})
    assert not any(getattr(d, "key", None) == "sanity_table" for d in at.dataframe)
    at.button(key="sanity_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[-1].value
    assert list(table["Method"]) == ["Grad-CAM", "Eigen-CAM"]
    assert table["Spearman"].between(-1, 1).all() and table["SSIM"].between(-1, 1).all()
    assert set(table["Verdict"]) <= {"✓ depends on the model", "✗ barely changes"}
