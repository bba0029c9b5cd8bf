"""Model sources: demos, offline Keras applications, uploads, arbitrary models."""

import functools
import json

import keras
import numpy as np
import pytest
from keras.src.utils import file_utils

from camcore import zoo
from camcore.demos import list_demos, load_demo
from toy_models import small_convnet


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to fetch a file fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args} {kwargs}")

    # keras.applications call file_utils.get_file through the module attribute
    monkeypatch.setattr(file_utils, "get_file", refuse)
    monkeypatch.setattr(keras.utils, "get_file", refuse)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch, no_downloads):
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home / "models"


def tiny_model(extra=None):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    if extra is not None:
        x = extra(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(x))


def test_applications_table():
    expected = {"VGG16", "ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121", "Xception"}
    assert expected <= set(zoo.APPLICATIONS)
    assert zoo.APPLICATIONS["Xception"].input_size == (299, 299)
    assert zoo.APPLICATIONS["VGG16"].preprocessing == "caffe"
    assert zoo.APPLICATIONS["EfficientNetB0"].preprocessing == "none"
    assert zoo.APPLICATIONS["VGG16"].weights_file == "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    with pytest.raises(ValueError, match="unknown application"):
        zoo.imagenet_weights_cached("AlexNet")


def test_cache_dir_honours_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert zoo.keras_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("KERAS_HOME")
    assert zoo.keras_cache_dir().parts[-2:] == (".keras", "models")


def test_weights_cached_checks_the_exact_file(empty_cache):
    assert not zoo.imagenet_weights_cached("VGG16")
    empty_cache.mkdir()
    (empty_cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"x")
    assert not zoo.imagenet_weights_cached("VGG16")  # the no-top file is not the classifier
    (empty_cache / zoo.APPLICATIONS["VGG16"].weights_file).write_bytes(b"not really weights")
    assert zoo.imagenet_weights_cached("VGG16")
    assert not zoo.imagenet_weights_cached("ResNet50")


def test_auto_without_cache_builds_random_weights_with_a_note(empty_cache):
    bundle = zoo.load_application("MobileNetV2", "auto")
    assert bundle.name == "MobileNetV2 (random weights)"
    assert "not in the local Keras cache" in bundle.note and "random" in bundle.note
    assert bundle.input_size == (224, 224) and bundle.channels == 3
    assert bundle.preprocessing == "symmetric" and bundle.default_layer == "out_relu"
    assert bundle.class_names[:2] == ["class 0", "class 1"] and len(bundle.class_names) == 1000
    bundle.model.get_layer(bundle.default_layer)  # the suggested layer exists
    x = bundle.preprocess(np.zeros((512, 512), np.uint8))
    assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32
    assert np.allclose(x, -1.0)  # symmetric mode: 0 → -1


def test_imagenet_without_cache_raises_offline_error(empty_cache):
    with pytest.raises(ValueError, match="offline") as info:
        zoo.load_application("MobileNetV2", "imagenet")
    assert "cache" in str(info.value) and zoo.APPLICATIONS["MobileNetV2"].weights_file in str(info.value)
    with pytest.raises(ValueError, match="weights must be"):
        zoo.load_application("MobileNetV2", "pretrained")


def test_cached_weights_load_from_the_local_file_with_class_names(empty_cache):
    # A stand-in for the real ImageNet file: same architecture, legacy HDF5 layout
    # (the format Keras' ImageNet files use), distinctive weights.
    source = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    kernel = source.get_layer("Conv1")
    kernel.set_weights([np.full_like(w, 0.123) for w in kernel.get_weights()])
    empty_cache.mkdir()
    source.save(empty_cache / zoo.APPLICATIONS["MobileNetV2"].weights_file)
    index = {str(i): [f"n{i:08d}", f"thing_{i}"] for i in range(1000)}
    (empty_cache / "imagenet_class_index.json").write_text(json.dumps(index))

    bundle = zoo.load_application("MobileNetV2", "imagenet")
    assert bundle.name == "MobileNetV2 (ImageNet)" and bundle.note == ""
    assert np.allclose(bundle.model.get_layer("Conv1").get_weights()[0], 0.123)
    assert bundle.class_names[0] == "thing 0" and bundle.class_names[999] == "thing 999"


def test_corrupt_cached_weights_fall_back_or_fail(empty_cache):
    empty_cache.mkdir()
    (empty_cache / zoo.APPLICATIONS["MobileNetV2"].weights_file).write_bytes(b"truncated download")
    (empty_cache / "imagenet_class_index.json").write_text("{broken")
    with pytest.raises(ValueError, match="could not be loaded"):
        zoo.load_application("MobileNetV2", "imagenet")
    bundle = zoo.load_application("MobileNetV2", "auto")
    assert "could not be loaded" in bundle.note and bundle.class_names[5] == "class 5"


@pytest.mark.skipif(not list_demos(), reason="no demo models in assets/models yet")
def test_demo_bundle(no_downloads):
    name = list_demos()[0]
    bundle = zoo.demo_bundle(name)
    assert bundle.name == f"{name} (demo)"
    assert bundle.model.get_layer(bundle.default_layer.split("/")[0]) is not None
    x = bundle.preprocess(np.zeros((512, 512), np.uint8))
    assert x.shape == (1, *bundle.input_size, bundle.channels)
    assert len(bundle.class_names) == bundle.model.outputs[0].shape[-1]
    with pytest.raises(ValueError, match="unknown demo"):
        zoo.demo_bundle("no_such_demo")


def test_demo_bundle_reads_the_card(tmp_path, monkeypatch, no_downloads):
    # a stand-in demo, so this runs before the real ones are trained
    small_convnet(size=16, classes=2).save(tmp_path / "toy.keras")
    card = {
        "name": "toy", "file": "toy.keras", "architecture": "two convs", "input_size": [16, 16],
        "channels": 3, "preprocessing": "unit", "class_names": ["clean", "defective"],
        "layer": "conv1", "heldout": {"images": 40, "accuracy": 0.925},
    }
    (tmp_path / "toy.json").write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "load_demo", functools.partial(load_demo, directory=tmp_path))
    bundle = zoo.demo_bundle("toy")
    assert bundle.name == "toy (demo)" and zoo.demo_bundle("toy (demo)").name == "toy (demo)"
    assert bundle.class_names == ["clean", "defective"] and bundle.default_layer == "conv1"
    assert bundle.input_size == (16, 16) and bundle.channels == 3 and bundle.preprocessing == "unit"
    assert "two convs" in bundle.note and "92.5%" in bundle.note
    assert bundle.preprocess(np.full((64, 64), 255, np.uint8)).max() == pytest.approx(1.0)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_model_bytes_round_trip(tmp_path, suffix, no_downloads):
    model = tiny_model()
    path = tmp_path / f"mine{suffix}"
    model.save(path)
    loaded = zoo.load_model_bytes(path.read_bytes(), f"mine{suffix}")
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_load_model_bytes_trusts_content_over_a_wrong_suffix(tmp_path):
    path = tmp_path / "mine.h5"
    tiny_model().save(path)
    assert isinstance(zoo.load_model_bytes(path.read_bytes(), "renamed.keras"), keras.Model)


@pytest.mark.parametrize(
    "data, filename, message",
    [
        (b"whatever", "model.pt", "expected a .keras or .h5 file"),
        (b"", "model.keras", "empty"),
        (b"this is not a model" * 20, "model.keras", "model.keras is not a Keras model file"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "model.h5", "could not read model.h5 as a Keras model"),
    ],
)
def test_load_model_bytes_rejects_bad_files(data, filename, message):
    with pytest.raises(ValueError, match=message):
        zoo.load_model_bytes(data, filename)


def test_garbage_bytes_are_refused_before_keras_reads_them(monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("keras.models.load_model called on garbage")

    monkeypatch.setattr(keras.models, "load_model", must_not_load)
    with pytest.raises(ValueError) as info:
        zoo.load_model_bytes(b"garbage, not a model", "x.keras")
    message = str(info.value)
    assert message == (
        "x.keras is not a Keras model file (expected a .keras zip archive or an HDF5 .h5 file)"
    )
    assert "/tmp" not in message


@pytest.mark.parametrize(
    "data", [b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, b"PK\x03\x04" + b"\x00" * 100]
)
def test_load_errors_never_show_the_temporary_path(data):
    with pytest.raises(ValueError) as info:
        zoo.load_model_bytes(data, "broken.h5")
    message = str(info.value)
    assert "broken.h5" in message
    assert "/tmp" not in message and "camcore-upload" not in message and "model.h5" not in message


def test_load_error_replaces_the_temporary_path_by_the_file_name():
    exc = OSError("Unable to open file (name = '/tmp/camcore-upload-abc123/model.h5', errno = 2)")
    message = str(zoo._load_error("mine.h5", exc, ("/tmp/camcore-upload-abc123/model.h5",)))
    assert "/tmp" not in message and "name = 'mine.h5'" in message
    resolved = OSError("cannot open /private/var/folders/x/camcore-upload-zz/model.keras")
    assert "camcore-upload" not in str(zoo._load_error("m.keras", resolved, ("/tmp/other",)))


def test_weights_only_file_is_not_a_model(tmp_path):
    path = tmp_path / "w.weights.h5"
    tiny_model().save_weights(path)
    with pytest.raises(ValueError, match="could not read w.h5 as a Keras model"):
        zoo.load_model_bytes(path.read_bytes(), "w.h5")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layers_are_refused_by_safe_mode(tmp_path, suffix):
    path = tmp_path / f"lam{suffix}"
    tiny_model(keras.layers.Lambda(lambda t: t * 2.0)).save(path)
    with pytest.raises(ValueError, match="refused: .*Lambda.*safe mode"):
        zoo.load_model_bytes(path.read_bytes(), f"lam{suffix}")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unknown_custom_layers_are_named(tmp_path, suffix, monkeypatch):
    class Doubler(keras.layers.Layer):
        def call(self, t):
            return t * 2.0

    registered = keras.saving.register_keras_serializable(package="zoo_test")(Doubler)
    path = tmp_path / f"custom{suffix}"
    tiny_model(registered()).save(path)
    # forget the registration: the loading process has never seen this class
    monkeypatch.delitem(keras.saving.get_custom_objects(), "zoo_test>Doubler")
    with pytest.raises(ValueError, match=r"needs custom objects \(.*Doubler.*\) that camcore does not know"):
        zoo.load_model_bytes(path.read_bytes(), f"custom{suffix}")


def test_bundle_from_model_defaults_and_validation():
    model = small_convnet(size=16)
    bundle = zoo.bundle_from_model(model, "mine.keras", preprocessing="unit")
    assert bundle.default_layer == "conv2" and bundle.input_size == (16, 16) and bundle.channels == 3
    assert bundle.class_names == ["class 0", "class 1", "class 2"]
    assert bundle.preprocess(np.full((40, 40), 255, np.uint8)).shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="cannot infer the preprocessing .* choose one of"):
        zoo.bundle_from_model(model, "mine.keras")
    with pytest.raises(ValueError, match="unknown preprocessing"):
        zoo.bundle_from_model(model, "mine.keras", preprocessing="imagenet")
    with pytest.raises(ValueError, match="3 classes but 2 class names"):
        zoo.bundle_from_model(model, "mine.keras", "unit", ["ok", "bad"])
    named = zoo.bundle_from_model(model, "mine.keras", "unit", ["a", "b", "c"])
    assert named.class_names == ["a", "b", "c"]


def test_bundle_from_model_needs_a_spatial_layer():
    inp = keras.Input((1, 1, 3))
    x = keras.layers.Conv2D(4, 1)(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    with pytest.raises(ValueError, match="spatial"):
        zoo.bundle_from_model(keras.Model(inp, out), "flat.keras", preprocessing="unit")


def test_bundle_from_model_rejects_rgb_modes_for_gray_models():
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match="needs an RGB model"):
        zoo.bundle_from_model(keras.Model(inp, out), "gray.keras", preprocessing="caffe")


def test_guess_preprocessing_only_claims_what_it_can_see():
    assert zoo.guess_preprocessing(tiny_model(keras.layers.Rescaling(1.0))) is None  # not first
    rescaled = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    )
    assert zoo.guess_preprocessing(rescaled) == "none"
    bundle = zoo.bundle_from_model(rescaled, "rescaled.keras")
    assert bundle.preprocessing == "none"
    inp = keras.Input((16, 16, 3))
    h = keras.layers.RandomFlip()(inp)
    h = keras.layers.Normalization(mean=0.0, variance=1.0)(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))
    assert zoo.guess_preprocessing(keras.Model(inp, keras.layers.Dense(2)(h))) == "none"
    nested = keras.Sequential([keras.Input((16, 16, 3)), rescaled])
    assert zoo.guess_preprocessing(nested) == "none"
    scaled_up = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Rescaling(255.0), keras.layers.Dense(2)]
    )
    assert zoo.guess_preprocessing(scaled_up) is None
    assert zoo.guess_preprocessing(small_convnet(size=16)) is None


# ------------------------------------------------------- variable input size
def variable_functional():
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="predictions")(x))


def variable_sequential():
    keras.utils.set_random_seed(4)
    return keras.Sequential([
        keras.Input((None, None, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax", name="predictions"),
    ])


def variable_nested():
    # a variable-size backbone nested as one layer of a variable-size model
    return keras.Sequential([keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255), variable_functional()])


def test_variable_input_size_must_be_given():
    model = variable_functional()
    with pytest.raises(ValueError, match=r"^cannot infer the input size of var\.keras: .*sidebar"):
        zoo.bundle_from_model(model, "var.keras", preprocessing="unit")


@pytest.mark.parametrize(
    "make, layer",
    [(variable_functional, "conv2"), (variable_sequential, "conv2"), (variable_nested, None)],
)
def test_variable_input_size_is_fixed_when_given(make, layer):
    from camcore.explainer import Explainer

    model = make()
    bundle = zoo.bundle_from_model(model, "var.keras", preprocessing="unit", input_size=(64, 64))
    assert bundle.input_size == (64, 64) and bundle.channels == 3
    assert tuple(bundle.model.inputs[0].shape) == (None, 64, 64, 3)
    assert tuple(model.inputs[0].shape) == (None, None, None, 3)  # the user's model is untouched
    if layer is not None:
        assert bundle.default_layer == layer
    else:  # nested: the backbone's layers, by path
        assert bundle.default_layer.endswith("/conv2")
    x = bundle.preprocess(np.random.default_rng(0).integers(0, 256, (80, 70, 3), dtype=np.uint8))
    assert x.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(bundle.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    explainer = Explainer(bundle.model)
    assert bundle.default_layer in [info.path for info in explainer.layers]
    result = explainer.compute("grad_cam", x, bundle.default_layer, 0)
    assert result.cam.shape == (64, 64) and np.all(np.isfinite(result.cam))


def test_variable_input_size_from_a_saved_file(tmp_path):
    path = tmp_path / "var.keras"
    variable_functional().save(path)
    model = zoo.load_model_bytes(path.read_bytes(), "var.keras")
    with pytest.raises(ValueError, match="cannot infer the input size"):
        zoo.bundle_from_model(model, "var.keras", "unit")
    assert zoo.bundle_from_model(model, "var.keras", "unit", input_size=(32, 48)).input_size == (32, 48)


@pytest.mark.parametrize("size", [(4, 64), (64, 4096), (64.0, 64), (True, 64), (64,), "64x64"])
def test_input_size_is_validated(size):
    with pytest.raises(ValueError, match="input size must be"):
        zoo.bundle_from_model(variable_functional(), "var.keras", "unit", input_size=size)


def test_fixed_model_rejects_a_different_input_size():
    model = small_convnet(size=16)
    assert zoo.bundle_from_model(model, "mine.keras", "unit", input_size=(16, 16)).model is model
    with pytest.raises(ValueError, match="fixes its input size at 16×16, not 32×32"):
        zoo.bundle_from_model(model, "mine.keras", "unit", input_size=(32, 32))


def test_damaged_keras_archive_is_named_as_such():
    with pytest.raises(ValueError, match=r"m\.keras is a damaged zip archive") as info:
        zoo.load_model_bytes(b"PK\x03\x04broken", "m.keras")
    assert "not found" not in str(info.value).lower()
