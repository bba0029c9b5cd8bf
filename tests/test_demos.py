"""The shipped demo models: they load safely, are fed correctly, and classify fresh data."""

import json

import keras
import numpy as np
import pytest

import camcore
from camcore import demos, synth

DEMOS = demos.list_demos()
pytestmark = pytest.mark.skipif(not DEMOS, reason="no demo models in assets/models (run `make train-demos`)")
FRESH_SEED = 8_675_309  # not a training or held-out seed of scripts/train_demos.py


def test_both_demo_models_are_shipped_default_first():
    assert DEMOS[0] == demos.DEFAULT_DEMO
    assert set(DEMOS) == {"vgg_defect", "resnet_defect"}


@pytest.mark.parametrize("name", DEMOS)
def test_card_records_how_the_model_was_made(name):
    card = json.loads((demos.MODELS_DIR / f"{name}.json").read_text())
    for field in ("architecture", "input_size", "channels", "preprocessing", "class_names", "layer", "training", "heldout"):
        assert field in card, field
    assert card["class_names"] == ["clean", "defective"]
    assert card["heldout"]["images"] >= 600
    assert card["heldout"]["accuracy"] >= 0.97
    assert {"seed", "date", "images"} <= set(card["training"])
    assert (demos.MODELS_DIR / card["file"]).stat().st_size < 8 * 2**20


def test_at_least_one_demo_looks_at_the_defect():
    rates = [demos.read_card(n)["heldout"]["gradcam_peak_in_ellipse"] for n in DEMOS]
    assert max(rates) >= 0.80


@pytest.mark.parametrize("name", DEMOS)
def test_loads_in_safe_mode_and_explains(name):
    model = keras.models.load_model(demos.MODELS_DIR / f"{name}.keras", safe_mode=True, compile=False)
    demo = camcore.load_demo(name)
    assert demo.class_names == ("clean", "defective")
    assert model.count_params() == demo.model.count_params()
    x = demo.preprocess(synth.make_sample(3, "grain", "scratch").image)
    assert x.shape == (1, 224, 224, 1) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    explainer = camcore.Explainer(demo.model)
    info = explainer.adapter.layer_info(demo.layer)
    assert info.spatial
    cam = explainer.compute("grad_cam", x, demo.layer, 1).cam
    assert cam.shape == (info.height, info.width) and np.isfinite(cam).all()


@pytest.mark.parametrize("name", DEMOS)
def test_accuracy_on_fresh_generated_images(name):
    demo = camcore.load_demo(name)
    samples = list(synth.generate(100, seed=FRESH_SEED))
    x = np.concatenate([demo.preprocess(s.image) for s in samples])
    y = np.array([s.defective for s in samples])
    predicted = demo.model.predict(x, batch_size=50, verbose=0).argmax(axis=1)
    assert (predicted == y).mean() >= 0.90


def test_preprocess_accepts_any_size_gray_or_rgb():
    demo = camcore.load_demo()
    gray = np.random.default_rng(0).integers(0, 256, (300, 500), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(demo.preprocess(gray), demo.preprocess(rgb), atol=1 / 255)
    assert demo.preprocess(gray).shape == (1, 224, 224, 1)


def test_unknown_demo_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown demo model 'nope'"):
        camcore.load_demo("nope")
