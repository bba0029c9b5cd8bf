"""The method registry dispatches: a method registered here, in the test alone, is
computed by ``Explainer.compute``, evaluated by ``camcore.evaluate`` and drawn as a
grid column by the dashboard - with no other file edited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shown_panels import tiles
from toy_models import small_convnet

import camcore
from camcore.methods import METHODS, MethodSpec, register, unregister

KEY = "channel_sum_cam"
LABEL = "Channel-Sum-CAM"


def _channel_sum(inputs) -> np.ndarray:
    # sum_k A^k minus its mean: negative where activations are weak, so the engine's
    # ReLU and [0, 1] scaling are exercised too
    total = inputs.activations.sum(axis=-1)
    return total - total.mean()


def _reference(activations: np.ndarray) -> np.ndarray:
    total = activations.sum(axis=-1).astype(np.float64)
    cam = np.maximum(total - total.mean(), 0.0)
    return cam / cam.max() if cam.max() > 0 else np.zeros_like(cam)


@pytest.fixture()
def throwaway_method():
    spec = register(
        MethodSpec(
            key=KEY,
            label=LABEL,
            family="activation",
            cam=_channel_sum,
            needs=frozenset({"activations"}),
            reference="a test of the registry",
            definition="ReLU(Σ_k A^k − mean)",
            class_specific=False,
        )
    )
    yield spec
    unregister(KEY)
    assert KEY not in METHODS


def test_registered_method_is_computed_by_the_explainer(throwaway_method) -> None:
    model = small_convnet(size=12)
    x = np.random.default_rng(3).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    explainer = camcore.Explainer(model)
    result = explainer.compute(KEY, x, "conv2", 1)
    activations, _, _ = explainer.activations_and_gradients(x, "conv2", 1)
    np.testing.assert_allclose(result.cam, _reference(activations), atol=1e-6)
    assert result.method == KEY and result.model_passes == 1
    # its plain function comes from the same registry entry
    np.testing.assert_allclose(camcore.plain_function(KEY)(model, x, "conv2", 1), result.cam, atol=1e-6)
    # and it fuses like any one-pass method
    fused = explainer.compute(KEY, x, ["conv1", "conv2"], 1)
    assert fused.cam.shape == (12, 12) and fused.layer == ("conv1", "conv2")


def test_registered_method_is_evaluated(throwaway_method) -> None:
    from camcore import evaluation as ev

    model = small_convnet(size=32, channels=4, classes=2)
    spec = ev.ModelSpec.from_model(model, "unit", layer="conv2", class_index=1)
    items = ev.synthetic_items(2, seed=5, size=64, defect_rate=1.0)
    table = ev.evaluate(spec, items, methods=[KEY, "grad_cam"], curve_steps=4, workers=1)
    rows = table[table["method"] == KEY]
    assert len(rows) == 2 and rows["pointing_game"].notna().all()
    assert KEY in ev.ALL_METHODS and ev.METHOD_LABELS[KEY] == LABEL
    summary = ev.summarize(table)
    assert KEY in summary.index


def test_registered_method_is_a_grid_column(throwaway_method) -> None:
    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.session_state["methods"] = ["grad_cam", KEY]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    captions = [tile.caption for tile in tiles(at.main)]
    assert f"{LABEL} · overlay" in captions and f"Sobel × {LABEL}" in captions
    titles = [m.value for m in at.main.markdown]
    assert f"**{LABEL}**" in titles
    assert not any(c.startswith("Score-CAM") for c in captions)  # only the chosen columns
