"""One localization protocol: the Compare page and the batch evaluation report the same
IoU, Dice, pointing hit and energy for the same image, method and threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camcore import evaluation as ev
from camcore.samples import load_sample, load_sample_index

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
METHODS = ["grad_cam", "layer_cam", "faster_score_cam"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compare_page_and_evaluation_agree_on_the_default_sample(precision, monkeypatch) -> None:
    """Like with like: both paths at one pinned precision. fp32: the page's "exact (fp32)"
    toggle. bf16: the page's auto forced to bf16 (CAMSTUDIO_AUTO_PRECISION), so the
    dashboard's bf16 path runs on every CPU, not only where a probe would choose it."""
    from streamlit.testing.v1 import AppTest

    if precision == "bf16":
        monkeypatch.setenv("CAMSTUDIO_AUTO_PRECISION", "bf16")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["methods"] = METHODS
    at.session_state["exact_fp32"] = precision == "fp32"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    page = at.dataframe[0].value.set_index("Method")
    headline = next(m.value for m in at.main.markdown if " · layer " in m.value)
    assert "explaining **defective**" in headline  # the evaluation explains "defective" too
    assert (f"**{precision}**" in headline) if precision == "bf16" else ("**fp32** (exact)" in headline), headline

    info = load_sample_index()[0]  # the page's default sample
    image, mask = load_sample(info)
    assert mask is not None and mask.any()
    item = ev.EvalItem(
        id=info.name, source="bundled samples", index=0,
        load=lambda: ev.LoadedImage(image=image, mask=mask, defective=True, class_name=info.texture),
    )
    spec = ev.load_model_spec("vgg_defect")
    table = ev.evaluate(spec, [item], methods=METHODS, max_n=10, curve_steps=2, workers=1, precision=precision)
    rows = table.set_index("method")
    labels = {"grad_cam": "Grad-CAM", "layer_cam": "LayerCAM", "faster_score_cam": "Faster-Score-CAM"}
    for method, label in labels.items():
        shown, computed = page.loc[label], rows.loc[method]
        assert shown["IoU @ 0.50"] == pytest.approx(computed["iou@0.50"], abs=1e-9), method
        assert shown["Dice @ 0.50"] == pytest.approx(
            2 * computed["iou@0.50"] / (1 + computed["iou@0.50"]), abs=1e-9
        ), method
        assert shown["Energy in defect"] == pytest.approx(computed["energy_pointing_game"], abs=1e-9), method
        assert (shown["Peak in defect"] == "✓ hit") == bool(computed["pointing_game"]), method
    # the protocol is not trivially satisfied: the methods differ on this image
    assert len({round(float(v), 6) for v in page["IoU @ 0.50"]}) > 1
    assert np.isfinite(rows["iou@0.50"].to_numpy(float)).all()
