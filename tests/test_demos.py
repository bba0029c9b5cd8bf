"""The shipped demo models: they load safely, are fed correctly, and classify fresh data."""

import json

import keras
import numpy as np
import pytest

import camcore
from camcore import demos, synth
from camcore.preprocess import preprocess_image

# The shipped models, named rather than discovered: a missing one fails these tests
# instead of leaving nothing to parametrize over.
EXPECTED = ("vgg_defect", "resnet_defect")
DEMOS = demos.list_demos()
FRESH_SEED = 8_675_309  # not a training or held-out seed of scripts/train_demos.py


def test_both_demo_models_are_shipped_default_first():
    assert DEMOS, f"no demo model in {demos.MODELS_DIR} (run `make train-demos`)"
    assert DEMOS[0] == demos.DEFAULT_DEMO == EXPECTED[0]
    assert set(DEMOS) == set(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_card_records_how_the_model_was_made(name):
    card = json.loads((demos.MODELS_DIR / f"{name}.json").read_text())
    for field in ("architecture", "input_size", "channels", "preprocessing", "class_names", "layer", "training",
                  "heldout"):
        assert field in card, field
    assert card["class_names"] == ["clean", "defective"]
    assert card["heldout"]["images"] >= 600
    # 0.97 until issue 14: the held-out images now come from nine texture families (five
    # before), with edges and structure on clean images too; the shipped models score 0.95
    assert card["heldout"]["accuracy"] >= 0.94
    assert {"seed", "date", "images"} <= set(card["training"])
    assert (demos.MODELS_DIR / card["file"]).stat().st_size < 8 * 2**20


def gradcam_peak_in_ellipse(demo, samples) -> float:
    """Share of defective samples whose Grad-CAM peak ("defective") lies in the weak-label ellipse."""
    explainer = camcore.Explainer(demo.model)
    hits = 0
    for sample in samples:
        cam = explainer.compute("grad_cam", demo.preprocess(sample.image), demo.layer, 1).cam
        cam = camcore.upsample(cam, sample.image.shape)
        row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
        hits += bool(synth.ellipse_mask(sample.ellipse, sample.image.shape)[row, col])
    return hits / len(samples)


def test_at_least_one_demo_looks_at_the_defect():
    # measured here on fresh defective images, not read from the cards
    samples = list(synth.generate(60, seed=FRESH_SEED, defect_rate=1.0))
    rates = {name: gradcam_peak_in_ellipse(camcore.load_demo(name), samples) for name in EXPECTED}
    assert max(rates.values()) >= 0.80, rates
    for name, rate in rates.items():
        # 60 images: a few points of sampling noise around the card's 600-image figure
        card = demos.read_card(name)["heldout"]["gradcam_peak_in_ellipse"]
        assert rate >= 0.70 and abs(rate - card) <= 0.10, (name, rate, card)


@pytest.mark.parametrize("name", EXPECTED)
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


@pytest.mark.parametrize("name", EXPECTED)
def test_accuracy_on_fresh_generated_images(name):
    demo = camcore.load_demo(name)
    samples = list(synth.generate(100, seed=FRESH_SEED))
    x = np.concatenate([demo.preprocess(s.image) for s in samples])
    y = np.array([s.defective for s in samples])
    predicted = demo.model.predict(x, batch_size=50, verbose=0).argmax(axis=1)
    accuracy = (predicted == y).mean()
    # the card's held-out figure (600 images) must hold up on fresh data (floor 0.95 until
    # issue 14's harder generator; the shipped models score 0.93 / 0.91 on these 100)
    assert accuracy >= 0.90 and accuracy >= demos.read_card(name)["heldout"]["accuracy"] - 0.04, accuracy
    false_alarm_rate = predicted[~y].mean()
    assert false_alarm_rate <= 0.05, false_alarm_rate


def test_default_demo_explains_a_fine_layer_that_points_at_the_defect():
    # issue 14: the default model's explained layer is at least 28x28, and its Grad-CAM
    # peak lands on the defect's pixel mask (one localization protocol, 15 px tolerance)
    demo = camcore.load_demo()
    explainer = camcore.Explainer(demo.model)
    info = explainer.adapter.layer_info(demo.layer)
    assert info.height >= 28 and info.width >= 28, (info.height, info.width)
    assert [info.height, info.width] == demos.read_card(demos.DEFAULT_DEMO)["layer_size"]
    samples = list(synth.generate(40, seed=FRESH_SEED + 1, defect_rate=1.0))
    hits = []
    for sample in samples:
        cam = explainer.compute("grad_cam", demo.preprocess(sample.image), demo.layer, 1).cam
        hits.append(camcore.metrics.localization(cam, sample.mask, 0.5).pointing_hit)
        explainer.clear_cache()
    assert np.mean(hits) >= 0.85, np.mean(hits)


def test_preprocess_accepts_any_size_gray_or_rgb():
    demo = camcore.load_demo()
    gray = np.random.default_rng(0).integers(0, 256, (300, 500), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(demo.preprocess(gray), demo.preprocess(rgb), atol=1 / 255)
    assert demo.preprocess(gray).shape == (1, 224, 224, 1)


def test_unknown_demo_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown demo model 'nope'"):
        camcore.load_demo("nope")


def _train_demos():
    """scripts/train_demos.py, imported by path (scripts/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "train_demos.py"
    spec = importlib.util.spec_from_file_location("train_demos_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_defect_map_loss_weights_the_defect_cells():
    train_demos = _train_demos()
    coverage = np.array([[0.0, 1.0], [0.25, 0.0]], np.float32)
    predicted = np.array([[0.1, 0.7], [0.4, 0.2]], np.float32)
    for weight in (1.0, 5.0):
        expected = -np.mean(weight * coverage * np.log(predicted) + (1 - coverage) * np.log(1 - predicted))
        got = float(train_demos.defect_map_loss(coverage, predicted, weight))
        assert abs(got - expected) < 1e-5, (weight, got, expected)
    # weight 1 is the plain binary cross-entropy the previous recipe used
    plain = float(np.mean(keras.losses.binary_crossentropy(coverage[..., None], predicted[..., None])))
    assert abs(float(train_demos.defect_map_loss(coverage, predicted)) - plain) < 1e-5


def test_pool_cache_returns_the_generated_pool_bit_for_bit(tmp_path):
    train_demos = _train_demos()
    cache = tmp_path / "pool.npz"
    generated, seconds = train_demos.cached_pool(3, 11, workers=1, cache=cache)
    assert cache.is_file() and seconds is not None and seconds > 0
    cached, cached_seconds = train_demos.cached_pool(3, 11, workers=1, cache=cache)
    assert cached_seconds == seconds  # the generation it reused, not the read
    for field in ("x", "masks", "y", "families"):
        np.testing.assert_array_equal(getattr(cached, field), getattr(generated, field))
    # a cache of another seed is not taken for this one
    other, _ = train_demos.cached_pool(3, 12, workers=1, cache=cache)
    assert not np.array_equal(other.x, generated.x)


def _downstream(model: keras.Model, name: str) -> set[str]:
    """Names of the layers that the output of layer ``name`` reaches."""
    reached, grown = {name}, True
    while grown:
        grown = False
        for layer in model.layers:
            inputs = layer.input if isinstance(layer.input, list) else [layer.input]
            if layer.name not in reached and any(t._keras_history.operation.name in reached for t in inputs):
                reached.add(layer.name)
                grown = True
    return reached - {name}


def _assert_grad_cam_is_the_maps_logit(model: keras.Model, kernel: np.ndarray, samples) -> None:
    """Grad-CAM at top_down56 = ReLU(sum_k w_k A_k) scaled to a maximum of 1, w the 1x1
    kernel of defect_logit (its bias drops out: Grad-CAM weighs the activations only)."""
    features = keras.Model(model.input, model.get_layer("top_down56").output)
    explainer = camcore.Explainer(model)
    seen_map = False
    for sample in samples:
        x = preprocess_image(sample.image, (224, 224), 1, "unit")
        activations = features.predict(x, verbose=0)[0]
        expected = np.maximum(np.tensordot(activations, kernel[0, 0, :, 0], axes=([-1], [0])), 0.0)
        expected = expected / expected.max() if expected.max() > 0 else expected
        seen_map = seen_map or expected.max() > 0
        cam = explainer.compute("grad_cam", x, "top_down56", 1).cam
        np.testing.assert_allclose(cam, expected, atol=2e-3)
        explainer.clear_cache()
    assert seen_map  # not only all-zero maps


MAP_HEAD = {
    "defect_logit", "defect_map", "logit_max", "logit_mean", "map_mean", "evidence", "evidence_bn", "predictions"
}


CONTEXT_HEAD = {"defect_logit", "logit_max", "evidence", "evidence_bn", "dropout", "predictions"}


@pytest.mark.parametrize("design, reaches_decision", [("map", MAP_HEAD), ("map_context", CONTEXT_HEAD)])
def test_map_designs_grad_cam_at_top_down56_is_the_defect_maps_logit(design, reaches_decision):
    # scripts/train_demos.py, decision "map" (vgg_defect_segdec) and "map_context" (the
    # shipped vgg_defect): from top_down56 the decision sees only pooled statistics of
    # defect_logit, a 1x1 conv, so dy/dA_k(i) = g(i) w_k and Grad-CAM's channel weights are
    # mean(g) w_k: Grad-CAM at top_down56 = ReLU(sum_k w_k A_k) up to scale when mean(g) > 0.
    # "map_context" also reads the encoder's end, on a path around top_down56, which must not
    # change that. Checked against the closed form on a built model whose "defective" logit
    # rises with every map statistic (and, for the context, reads 64 features more), with a
    # 1x1 kernel of both signs.
    train_demos = _train_demos()
    keras.utils.set_random_seed(3)
    model = train_demos.build_vgg_defect(design)
    assert model.get_layer("top_down56").output.shape[1:] == (56, 56, 32)
    assert _downstream(model, "top_down56") == reaches_decision  # nothing else reaches the decision
    rng = np.random.default_rng(0)
    kernel = rng.normal(0.0, 1.0, (1, 1, 32, 1)).astype(np.float32)
    model.get_layer("defect_logit").set_weights([kernel, np.zeros(1, np.float32)])
    head = np.array([[-1.0, 1.0], [-0.5, 0.5], [-2.0, 2.0]], np.float32)
    if design == "map_context":
        assert "context_max" not in _downstream(model, "top_down56")
        assert "predictions" in _downstream(model, "block5_bn3")
        head = np.concatenate([head[:1], rng.normal(0.0, 1.0, (64, 2)).astype(np.float32)])
    model.get_layer("predictions").set_weights([head, np.zeros(2, np.float32)])
    _assert_grad_cam_is_the_maps_logit(model, kernel, synth.generate(3, seed=FRESH_SEED + 2, defect_rate=1.0))


def test_shipped_default_grad_cam_at_its_layer_is_its_defect_maps_logit():
    # The closed form above on the shipped weights: the trained head must weigh the map's
    # peak positively for "defective" (mean(g) > 0), or Grad-CAM at top_down56 is the
    # background (a head that read the map's mean learned "peak against mean" and pointed
    # at 0 % of the defects); and nothing but defect_logit may lead from the layer to the
    # decision.
    demo = camcore.load_demo()
    assert demo.layer == "top_down56"
    assert _downstream(demo.model, "top_down56") == CONTEXT_HEAD
    kernel, _ = demo.model.get_layer("defect_logit").get_weights()
    _assert_grad_cam_is_the_maps_logit(demo.model, kernel, synth.generate(4, seed=FRESH_SEED + 3, defect_rate=0.5))


def test_center_logits_keeps_probabilities_and_centres_the_logits():
    train_demos = _train_demos()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(inputs))
    model.get_layer("predictions").set_weights([np.array([[1.0, 3.0], [-2.0, 0.5], [0.0, 4.0]], np.float32),
                                                np.array([0.5, -1.0], np.float32)])
    x = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    train_demos.center_logits(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-6)
    kernel, bias = model.get_layer("predictions").get_weights()
    logits = x @ kernel + bias
    np.testing.assert_allclose(logits.sum(axis=1), 0.0, atol=1e-5)
    # the "defective" logit is half the log-odds
    np.testing.assert_allclose(logits[:, 1], 0.5 * np.log(before[:, 1] / before[:, 0]), atol=1e-4)
