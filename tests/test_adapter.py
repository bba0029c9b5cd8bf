"""Keras quirks: nested backbones, list inputs, untouched models, clear errors."""

import keras
import numpy as np
import pytest
from toy_models import small_convnet

import camcore


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def vgg_nested_and_flat():
    keras.utils.set_random_seed(0)
    backbone = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    nested = keras.Sequential(
        [keras.Input((64, 64, 3)), backbone, keras.layers.GlobalAveragePooling2D(),
         keras.layers.Dense(4, activation="softmax")]
    )
    inp = keras.Input((64, 64, 3))
    h = inp
    for layer in backbone.layers[1:]:
        h = layer(h)
    for layer in nested.layers[1:]:
        h = layer(h)
    flat = keras.Model(inp, h)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    return nested, flat, x


def test_nested_backbone_lists_layers_by_path(vgg_nested_and_flat):
    nested, _, _ = vgg_nested_and_flat
    explainer = camcore.Explainer(nested)
    paths = [info.path for info in explainer.layers]
    assert "vgg16/block5_conv3" in paths and "vgg16/block1_conv1" in paths
    assert "vgg16/input_layer" not in paths and not any(p.endswith("input_layer") for p in paths)
    assert explainer.adapter.layer_info("vgg16/block5_conv3").shape == (4, 4, 512)
    # the documented rule: the last layer whose map has more than one position; at 64²
    # block5_pool is 2×2, so it is the one (not block5_conv3 before it)
    assert explainer.adapter.layer_info("vgg16/block5_pool").shape == (2, 2, 512)
    assert paths[-1] == "vgg16/block5_pool"
    assert explainer.default_layer == "vgg16/block5_pool"


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus", "faster_score_cam"])
def test_nested_backbone_gives_same_cam_as_flattened_twin(vgg_nested_and_flat, method):
    nested, flat, x = vgg_nested_and_flat
    np.testing.assert_allclose(nested.predict(x, verbose=0), flat.predict(x, verbose=0), atol=1e-5)
    a = camcore.Explainer(nested).compute(method, x, "vgg16/block4_conv3", 1, max_n=6).cam
    b = camcore.Explainer(flat).compute(method, x, "block4_conv3", 1, max_n=6).cam
    assert a.any(), "the map should not be empty for this seed"
    assert corr(a, b) >= 0.999


def test_nested_guided_backprop_matches_flattened_twin(vgg_nested_and_flat):
    nested, flat, x = vgg_nested_and_flat
    a = camcore.guided_backprop(nested, x, 1)
    b = camcore.guided_backprop(flat, x, 1)
    assert a.shape == (64, 64, 3)
    assert corr(a, b) >= 0.999


def test_list_inputs_model():
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    listed = keras.Model(inputs=[inp], outputs=[out])
    plain = keras.Model(inputs=inp, outputs=out)
    x = np.random.default_rng(1).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    for method in ("grad_cam", "grad_cam_plus_plus", "score_cam"):
        a = getattr(camcore, method)(listed, x, "conv", 0)
        b = getattr(camcore, method)(plain, x, "conv", 0)
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert camcore.guided_backprop(listed, x, 0).shape == (12, 12, 3)
    # a list-wrapped input is accepted too
    np.testing.assert_allclose(camcore.grad_cam(listed, [x], "conv", 0), camcore.grad_cam(plain, x, "conv", 0))


def test_model_is_left_unmodified():
    model = small_convnet(size=12)
    x = np.random.default_rng(2).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    explainer = camcore.Explainer(model)
    for method in ("grad_cam", "grad_cam_plus_plus", "score_cam"):
        explainer.compute(method, x, "conv2", 0)
    explainer.guided_backprop(x, 0)
    after = model.predict(x, verbose=0)
    np.testing.assert_array_equal(before, after)
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert np.isclose(after.sum(), 1.0, atol=1e-5)  # still a probability


def test_separate_softmax_activation_layer_is_skipped():
    inp = keras.Input((8, 8, 1))
    feat = keras.layers.Activation("linear", name="feat")(inp)
    logits = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(feat))
    out = keras.layers.Softmax(name="probs")(logits)
    model = keras.Model(inp, out)
    logit_model = keras.Model(inp, logits)
    x = np.random.default_rng(3).uniform(0, 1, (1, 8, 8, 1)).astype(np.float32)
    explainer = camcore.Explainer(model)
    assert explainer.adapter.head.kind == "softmax" and explainer.adapter.head.skip
    np.testing.assert_allclose(explainer.scores(x), logit_model.predict(x, verbose=0)[0], atol=1e-5)


def test_errors_name_the_problem():
    model = small_convnet(size=12)
    explainer = camcore.Explainer(model)
    x = np.random.default_rng(4).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="'block9' not found"):
        _ = explainer.compute("grad_cam", x, "block9").cam
    with pytest.raises(ValueError, match="'predictions'.*no spatial map"):
        _ = explainer.compute("grad_cam", x, "predictions").cam
    with pytest.raises(ValueError, match="'gap'.*no spatial map"):
        _ = explainer.compute("score_cam", x, "gap").cam
    with pytest.raises(ValueError, match="rank 3"):
        _ = explainer.compute("grad_cam", x[0], "conv2").cam
    with pytest.raises(ValueError, match=r"shape \(1, 12, 12, 3\)"):
        _ = explainer.compute("grad_cam", np.zeros((1, 20, 20, 3), np.float32), "conv2").cam
    with pytest.raises(ValueError, match="class_index 3 out of range"):
        _ = explainer.compute("grad_cam", x, "conv2", 3).cam
    with pytest.raises(ValueError, match="class_index -1 out of range"):
        _ = explainer.compute("score_cam", x, "conv2", -1).cam
    with pytest.raises(TypeError, match="class_index must be an int"):
        _ = explainer.compute("grad_cam", x, "conv2", 1.5).cam
    with pytest.raises(ValueError, match="NaN"):
        _ = explainer.compute("grad_cam", np.full((1, 12, 12, 3), np.nan, np.float32), "conv2").cam
    with pytest.raises(TypeError):
        camcore.Explainer("not a model")


def test_one_by_one_layer_is_listed_but_not_spatial():
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pooled")(h)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(pooled))
    explainer = camcore.Explainer(keras.Model(inp, out))
    assert [i.path for i in explainer.layers] == ["conv", "pooled"]
    assert explainer.default_layer == "conv"
    with pytest.raises(ValueError, match="1×1"):
        _ = explainer.compute("grad_cam", np.zeros((1, 8, 8, 3), np.float32), "pooled").cam


def test_model_without_spatial_layer_is_rejected_clearly():
    inp = keras.Input((16,))
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp))
    with pytest.raises(ValueError, match="must be an image batch"):
        camcore.Explainer(model)
    image_model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    explainer = camcore.Explainer(image_model)
    assert explainer.layers == []
    with pytest.raises(ValueError, match="no layer with a spatial"):
        _ = explainer.default_layer


def test_subclassed_model_is_rejected_clearly():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    model = Custom()
    model(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="Functional or Sequential"):
        camcore.Explainer(model)


def test_explainer_is_safe_from_two_threads():
    from concurrent.futures import ThreadPoolExecutor

    model = small_convnet(size=12)
    explainer = camcore.Explainer(model)
    xs = [np.random.default_rng(i).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32) for i in range(6)]
    expected = [camcore.Explainer(model).compute("faster_score_cam", x, "conv2", 0, max_n=4).cam for x in xs]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda x: explainer.compute("faster_score_cam", x, "conv2", 0, max_n=4).cam, xs))
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_lru_cache_is_bounded():
    model = small_convnet(size=12)
    explainer = camcore.Explainer(model, cache_size=5)
    for i in range(10):
        x = np.random.default_rng(i).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
        _ = explainer.compute("grad_cam", x, "conv2").cam
    assert len(explainer.cache) <= 5


def test_every_public_name_resolves():
    import subprocess
    import sys

    # a fresh interpreter, so the lazy exports are really resolved from scratch
    code = "import camcore; [getattr(camcore, n) for n in camcore.__all__]; print(len(camcore.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) == len(camcore.__all__)
