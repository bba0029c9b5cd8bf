"""The evaluation's sanity-check column and precision option."""

from __future__ import annotations

import json

import numpy as np
import pytest
from toy_models import small_convnet

import camcore
from camcore import evaluation as ev
from camcore.metrics.sanity import compare_maps, randomized_copy


@pytest.fixture(scope="module")
def setup():
    model = small_convnet(size=32, channels=4, classes=2, seed=3)
    spec = ev.ModelSpec.from_model(model, "unit", layer="conv2", class_index=1)
    items = ev.synthetic_items(2, seed=9, size=64, defect_rate=1.0)
    return model, spec, items


def test_sanity_columns_equal_a_direct_randomization(setup) -> None:
    model, spec, items = setup
    table = ev.evaluate(spec, items, methods=["grad_cam"], sanity=True, seed=4, curve_steps=2, workers=1)
    copy, _ = randomized_copy(model, "conv2", seed=4)
    for _, row in table.iterrows():
        x = spec.preprocess(items[int(row["index"])].load().image)
        original = camcore.Explainer(model).compute("grad_cam", x, "conv2", 1).cam
        randomized = camcore.Explainer(copy).compute("grad_cam", x, "conv2", 1).cam
        rho, structure, passed = compare_maps(original, randomized, spec.input_size)
        assert row["sanity_spearman"] == pytest.approx(rho, abs=1e-9)
        assert row["sanity_ssim"] == pytest.approx(structure, abs=1e-9)
        assert bool(row["sanity_pass"]) == passed
    assert "sanity_pass_rate" in ev.summarize(table).columns


def test_precision_is_recorded_and_gradients_stay_exact(setup, tmp_path) -> None:
    _, spec, items = setup
    exact = ev.evaluate(spec, items, methods=["grad_cam", "score_cam"], curve_steps=2, workers=1)
    out = tmp_path / "bf16.csv"
    fast = ev.evaluate(spec, items, methods=["grad_cam", "score_cam"], curve_steps=2, workers=1,
                       precision="bf16", out=out)
    header = json.loads(ev.journal_path(out).read_text().splitlines()[0])
    assert header["config"]["precision"] == "bf16"
    a, b = exact.set_index(["image_id", "method"]), fast.set_index(["image_id", "method"])
    grad = [c for c in a.columns if c.startswith("iou@")]
    np.testing.assert_allclose(a.xs("grad_cam", level="method")[grad], b.xs("grad_cam", level="method")[grad])
    # Score-CAM's masked passes ran in bf16: close to fp32, not bit-equal
    assert np.abs(a.xs("score_cam", level="method")["oracle_iou"].to_numpy()
                  - b.xs("score_cam", level="method")["oracle_iou"].to_numpy()).max() < 0.05
    with pytest.raises(ValueError, match="precision"):
        ev.evaluate(spec, items, methods=["grad_cam"], precision="int8")
