"""One model type and one loader (camcore.models): demos, uploads, files, in-memory models, keys."""

import json

import keras
import numpy as np
import pytest
from toy_models import small_convnet

from camcore import models
from camcore.demos import list_demos, load_demo
from camcore.loading import load_model
from camcore.models import (
    LoadedModel,
    ModelKey,
    NeedsInputSize,
    NeedsPreprocessing,
    UploadStore,
    from_keras,
    guess_preprocessing,
    load_model_bytes,
    parse_model_key,
)
from camcore.preprocess import PREPROCESSING_MODES


def tiny_model(extra=None):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    if extra is not None:
        x = extra(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="predictions")(x))


# ----------------------------------------------------------------------- demos
def test_demo_by_name_and_by_key(no_downloads):
    name = list_demos()[0]
    bundle = load_model(name)
    assert bundle.name == name and bundle.label == f"{name} (demo)"
    assert bundle.source == "demo" and bundle.key == f"demo:{name}" and bundle.card["name"] == name
    assert load_model(f"demo:{name}").key == bundle.key
    assert bundle.model.get_layer(bundle.default_layer.split("/")[0]) is not None
    x = bundle.preprocess(np.zeros((512, 512), np.uint8))
    assert x.shape == (1, *bundle.input_size, bundle.channels)
    assert len(bundle.class_names) == bundle.model.outputs[0].shape[-1]
    with pytest.raises(ValueError, match="unknown demo"):
        load_model("demo:no_such_demo")
    with pytest.raises(ValueError, match="uses 'unit' preprocessing, not 'caffe'"):
        load_model(name, preprocessing="caffe")


def test_demo_reads_the_card(tmp_path, no_downloads):
    # a stand-in demo, so this runs before the real ones are trained
    small_convnet(size=16, classes=2).save(tmp_path / "toy.keras")
    card = {
        "name": "toy", "file": "toy.keras", "architecture": "two convs", "input_size": [16, 16],
        "channels": 3, "preprocessing": "unit", "class_names": ["clean", "defective"],
        "layer": "conv1", "heldout": {"images": 40, "accuracy": 0.925},
    }
    (tmp_path / "toy.json").write_text(json.dumps(card))
    bundle = load_demo("toy", directory=tmp_path)
    assert bundle.name == "toy" and bundle.label == "toy (demo)" and bundle.card == card
    assert bundle.class_names == ("clean", "defective") and bundle.default_layer == "conv1" == bundle.layer
    assert bundle.input_size == (16, 16) and bundle.channels == 3 and bundle.preprocessing == "unit"
    assert "two convs" in bundle.note and "92.5%" in bundle.note
    assert bundle.preprocess(np.full((64, 64), 255, np.uint8)).max() == pytest.approx(1.0)
    (tmp_path / "toy.json").write_text(json.dumps(card | {"input_size": [32, 32]}))
    with pytest.raises(ValueError, match="fixes its input size at 16×16, not 32×32"):
        load_demo("toy", directory=tmp_path)  # a card that disagrees with its model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_model_bytes_round_trip(tmp_path, suffix, no_downloads):
    model = tiny_model()
    path = tmp_path / f"mine{suffix}"
    model.save(path)
    loaded = load_model_bytes(path.read_bytes(), f"mine{suffix}")
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_load_model_bytes_trusts_content_over_a_wrong_suffix(tmp_path):
    path = tmp_path / "mine.h5"
    tiny_model().save(path)
    assert isinstance(load_model_bytes(path.read_bytes(), "renamed.keras"), keras.Model)


@pytest.mark.parametrize(
    "data, filename, message",
    [
        (b"whatever", "model.pt", r"expected a model file \(\.keras, \.h5, \.hdf5"),
        (b"", "model.keras", "empty"),
        (b"this is not a model" * 20, "model.keras", "model.keras is not a Keras model file"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "model.h5", "could not read model.h5 as a Keras model"),
    ],
)
def test_load_model_bytes_rejects_bad_files(data, filename, message):
    with pytest.raises(ValueError, match=message):
        load_model_bytes(data, filename)


def test_garbage_bytes_are_refused_before_keras_reads_them(monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("keras.models.load_model called on garbage")

    monkeypatch.setattr(keras.models, "load_model", must_not_load)
    with pytest.raises(ValueError) as info:
        load_model_bytes(b"garbage, not a model", "x.keras")
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
        load_model_bytes(data, "broken.h5")
    message = str(info.value)
    assert "broken.h5" in message
    assert "/tmp" not in message and "camcore-upload" not in message and "model.h5" not in message


def test_load_error_replaces_the_temporary_path_by_the_file_name():
    exc = OSError("Unable to open file (name = '/tmp/camcore-upload-abc123/model.h5', errno = 2)")
    message = str(models._load_error("mine.h5", exc, ("/tmp/camcore-upload-abc123/model.h5",)))
    assert "/tmp" not in message and "name = 'mine.h5'" in message
    resolved = OSError("cannot open /private/var/folders/x/camcore-upload-zz/model.keras")
    assert "camcore-upload" not in str(models._load_error("m.keras", resolved, ("/tmp/other",)))


def test_weights_only_file_is_not_a_model(tmp_path):
    path = tmp_path / "w.weights.h5"
    tiny_model().save_weights(path)
    with pytest.raises(ValueError, match="could not read w.h5 as a Keras model"):
        load_model_bytes(path.read_bytes(), "w.h5")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layers_are_refused_by_safe_mode(tmp_path, suffix):
    path = tmp_path / f"lam{suffix}"
    tiny_model(keras.layers.Lambda(lambda t: t * 2.0)).save(path)
    with pytest.raises(ValueError, match="refused: .*Lambda.*safe mode"):
        load_model_bytes(path.read_bytes(), f"lam{suffix}")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unknown_custom_layers_are_named(tmp_path, suffix, monkeypatch):
    class Doubler(keras.layers.Layer):
        def call(self, t):
            return t * 2.0

    registered = keras.saving.register_keras_serializable(package="models_test")(Doubler)
    path = tmp_path / f"custom{suffix}"
    tiny_model(registered()).save(path)
    # forget the registration: the loading process has never seen this class
    monkeypatch.delitem(keras.saving.get_custom_objects(), "models_test>Doubler")
    with pytest.raises(ValueError, match=r"needs custom objects \(.*Doubler.*\) that camcore does not know"):
        load_model_bytes(path.read_bytes(), f"custom{suffix}")


def test_from_keras_defaults_and_validation():
    model = small_convnet(size=16)
    bundle = from_keras(model, "mine.keras", preprocessing="unit")
    assert bundle.default_layer == "conv2" and bundle.input_size == (16, 16) and bundle.channels == 3
    assert bundle.class_names == ("class 0", "class 1", "class 2")
    assert bundle.source == "memory" and bundle.key == "memory:mine.keras" and bundle.label == "mine.keras"
    assert bundle.preprocess(np.full((40, 40), 255, np.uint8)).shape == (1, 16, 16, 3)
    with pytest.raises(NeedsPreprocessing, match="cannot infer the preprocessing .* choose one of") as info:
        from_keras(model, "mine.keras")
    assert isinstance(info.value, ValueError) and info.value.choices == sorted(PREPROCESSING_MODES)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        from_keras(model, "mine.keras", preprocessing="imagenet")
    with pytest.raises(ValueError, match="3 classes but 2 class names"):
        from_keras(model, "mine.keras", "unit", ["ok", "bad"])
    named = from_keras(model, "mine.keras", "unit", ["a", "b", "c"])
    assert named.class_names == ("a", "b", "c")


def test_from_keras_needs_a_spatial_layer():
    inp = keras.Input((1, 1, 3))
    x = keras.layers.Conv2D(4, 1)(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    with pytest.raises(ValueError, match="spatial"):
        from_keras(keras.Model(inp, out), "flat.keras", preprocessing="unit")


def test_from_keras_rejects_rgb_modes_for_gray_models():
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match="needs an RGB model"):
        from_keras(keras.Model(inp, out), "gray.keras", preprocessing="caffe")


def test_guess_preprocessing_only_claims_what_it_can_see():
    assert guess_preprocessing(tiny_model(keras.layers.Rescaling(1.0))) is None  # not first
    rescaled = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    )
    assert guess_preprocessing(rescaled) == "none"
    bundle = from_keras(rescaled, "rescaled.keras")
    assert bundle.preprocessing == "none"
    inp = keras.Input((16, 16, 3))
    h = keras.layers.RandomFlip()(inp)
    h = keras.layers.Normalization(mean=0.0, variance=1.0)(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))
    assert guess_preprocessing(keras.Model(inp, keras.layers.Dense(2)(h))) == "none"
    nested = keras.Sequential([keras.Input((16, 16, 3)), rescaled])
    assert guess_preprocessing(nested) == "none"
    scaled_up = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Rescaling(255.0), keras.layers.Dense(2)]
    )
    assert guess_preprocessing(scaled_up) is None
    assert guess_preprocessing(small_convnet(size=16)) is None


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
    with pytest.raises(NeedsInputSize, match=r"^cannot infer the input size of var\.keras: .*input_size=") as info:
        from_keras(model, "var.keras", preprocessing="unit")
    assert isinstance(info.value, ValueError) and info.value.input_shape == (None, None, None, 3)


@pytest.mark.parametrize(
    "make, layer",
    [(variable_functional, "conv2"), (variable_sequential, "conv2"), (variable_nested, None)],
)
def test_variable_input_size_is_fixed_when_given(make, layer):
    from camcore.explainer import Explainer

    model = make()
    bundle = from_keras(model, "var.keras", preprocessing="unit", input_size=(64, 64))
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
    model = load_model_bytes(path.read_bytes(), "var.keras")
    with pytest.raises(NeedsInputSize, match="cannot infer the input size"):
        from_keras(model, "var.keras", "unit")
    assert from_keras(model, "var.keras", "unit", input_size=(32, 48)).input_size == (32, 48)


@pytest.mark.parametrize("size", [(4, 64), (64, 4096), (64.0, 64), (True, 64), (64,), "64x64"])
def test_input_size_is_validated(size):
    with pytest.raises(ValueError, match="input size must be"):
        from_keras(variable_functional(), "var.keras", "unit", input_size=size)


def test_fixed_model_rejects_a_different_input_size():
    model = small_convnet(size=16)
    assert from_keras(model, "mine.keras", "unit", input_size=(16, 16)).model is model
    with pytest.raises(ValueError, match="fixes its input size at 16×16, not 32×32"):
        from_keras(model, "mine.keras", "unit", input_size=(32, 32))


def test_damaged_keras_archive_is_named_as_such():
    with pytest.raises(ValueError, match=r"m\.keras is a damaged zip archive") as info:
        load_model_bytes(b"PK\x03\x04broken", "m.keras")
    assert "not found" not in str(info.value).lower()


# ------------------------------------------------------------------ the loader
def test_one_loader_for_bytes_paths_and_models(tmp_path, no_downloads):
    model = small_convnet(size=16)
    model.save(tmp_path / "mine.keras")
    data = (tmp_path / "mine.keras").read_bytes()
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)

    uploaded = load_model(data, filename="mine.keras", preprocessing="unit", class_names=["a", "b", "c"])
    assert isinstance(uploaded, LoadedModel) and uploaded.source == "upload"
    assert uploaded.name == "mine.keras" and uploaded.label == "mine.keras (upload)"
    assert uploaded.key == f"upload:{models.upload_sha(data)}:unit" and uploaded.class_names == ("a", "b", "c")

    from_path = load_model(tmp_path / "mine.keras", preprocessing="unit")
    assert from_path.source == "file" and from_path.key == f"file:{(tmp_path / 'mine.keras').resolve()}"
    assert from_path.label == "mine.keras (file)"
    by_string = load_model(str(tmp_path / "mine.keras"), preprocessing="unit")
    by_key = load_model(from_path.key, preprocessing="unit")
    in_memory = load_model(model, preprocessing="unit")
    assert in_memory.model is model and in_memory.source == "memory" and in_memory.key == "memory:convnet"
    for loaded in (uploaded, from_path, by_string, by_key, in_memory):
        assert loaded.layer == loaded.default_layer == "conv2" and loaded.input_size == (16, 16)
        np.testing.assert_allclose(loaded.model.predict(x, verbose=0), expected, atol=1e-6)


def test_the_reader_follows_the_content_not_the_extension(tmp_path):
    tiny_model().save(tmp_path / "real.h5")
    renamed = tmp_path / "renamed.keras"  # HDF5 content behind a .keras name
    renamed.write_bytes((tmp_path / "real.h5").read_bytes())
    assert models.model_file_format(renamed.read_bytes()) == ".h5"
    assert load_model(renamed, preprocessing="unit").model.count_params() == tiny_model().count_params()
    tiny_model().save(tmp_path / "real.keras")
    assert models.model_file_format((tmp_path / "real.keras").read_bytes()) == ".keras"
    with pytest.raises(ValueError, match="notes.h5 is not a Keras model file"):
        models.model_file_format(b"plain text", "notes.h5")


def test_loader_errors_are_clear(tmp_path, no_downloads):
    with pytest.raises(ValueError, match="unknown model 'nope': give a demo name"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(tmp_path / "missing.keras", preprocessing="unit")
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="cannot load a model from a list"):
        load_model([1, 2])
    with pytest.raises(ValueError, match="no upload store"):
        load_model("upload:0123456789abcdef0123")
    with pytest.raises(ValueError, match="no longer in memory"):
        load_model("upload:0123456789abcdef0123", uploads=UploadStore())
    with pytest.raises(ValueError, match="bad model key"):
        load_model("app:VGG16:pretrained")


def test_user_decisions_are_typed_errors(tmp_path):
    inp = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    variable = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    variable.save(tmp_path / "var.keras")
    data = (tmp_path / "var.keras").read_bytes()
    with pytest.raises(NeedsInputSize):
        load_model(data, filename="var.keras", preprocessing="unit")
    with pytest.raises(NeedsPreprocessing):  # the size is given, the scaling is not
        load_model(data, filename="var.keras", input_size=(32, 40))
    loaded = load_model(data, filename="var.keras", preprocessing="unit", input_size=(32, 40))
    assert loaded.input_size == (32, 40)
    assert loaded.key == f"upload:{models.upload_sha(data)}:unit:32x40"
    # a fixed-size model ignores the size it is offered (the sidebar always sends one)
    tiny_model().save(tmp_path / "fixed.keras")
    fixed = load_model((tmp_path / "fixed.keras").read_bytes(), filename="fixed.keras", preprocessing="unit",
                       input_size=(64, 64))
    assert fixed.input_size == (16, 16) and fixed.key.endswith(":unit")


def test_uploads_load_again_by_key(tmp_path):
    small_convnet(size=16).save(tmp_path / "mine.keras")
    data = (tmp_path / "mine.keras").read_bytes()
    store = UploadStore(capacity=2)
    sha = store.add(data, "mine.keras")
    assert sha == models.upload_sha(data) and len(sha) == 20 and store.filename(sha) == "mine.keras"
    with pytest.raises(NeedsPreprocessing):
        load_model(models.upload_key(sha), uploads=store)
    loaded = load_model(models.upload_key(sha, "symmetric"), uploads=store)
    assert loaded.preprocessing == "symmetric" and loaded.name == "mine.keras"
    assert loaded.key == models.upload_key(sha, "symmetric")
    store.add(b"second", "b.keras")
    store.add(b"third", "c.keras")  # the oldest goes
    assert store.filename(sha) is None and store.get(models.upload_sha(b"third")) == (b"third", "c.keras")


def test_an_evaluation_spec_is_a_loaded_model_plus_layer_and_class(no_downloads):
    from camcore.evaluation.spec import ModelSpec, load_model_spec

    demo = load_model(list_demos()[0])
    spec = ModelSpec.of(demo)
    assert isinstance(spec, LoadedModel) and spec.class_index == demo.class_names.index("defective")
    assert (spec.key, spec.layer, spec.input_size, spec.model) == (demo.key, demo.layer, demo.input_size, demo.model)
    assert load_model_spec(list_demos()[0]).class_index == spec.class_index
    other = ModelSpec.of(demo, layer=demo.model.layers[1].name, class_index=0)
    assert other.layer == demo.model.layers[1].name and other.class_index == 0
    with pytest.raises(ValueError, match="out of range"):
        ModelSpec.of(demo, class_index=5)


# ------------------------------------------------------------------ model keys
@pytest.mark.parametrize(
    "key, parsed",
    [
        ("demo:vgg_defect", ModelKey("demo", "vgg_defect")),
        ("app:VGG16", ModelKey("app", "VGG16")),
        ("app:VGG16:random", ModelKey("app", "VGG16", "random")),
        ("upload:ab12", ModelKey("upload", "ab12")),
        ("upload:ab12:unit", ModelKey("upload", "ab12", "unit")),
        ("upload:ab12:unit:224x200", ModelKey("upload", "ab12", "unit", (224, 200))),
        ("upload:ab12:-:64x64", ModelKey("upload", "ab12", None, (64, 64))),
        ("file:/data/m:1.keras", ModelKey("file", "/data/m:1.keras")),
    ],
)
def test_model_keys_round_trip(key, parsed):
    assert parse_model_key(key) == parsed
    assert str(parsed) == key


@pytest.mark.parametrize(
    "key",
    ["", "demo", "demo:", "demo:x:y", "app:VGG16:imagenet", "upload:ab12:nonsense", "upload:ab12:unit:4x4",
     "upload:ab12:unit:224", "upload:a:b:c:d", "zoo:VGG16", "file:"],
)
def test_bad_model_keys_are_refused(key):
    with pytest.raises(ValueError, match="bad model key"):
        parse_model_key(key)


def test_key_builders_and_labels():
    assert models.demo_key("vgg_defect") == "demo:vgg_defect"
    assert models.app_key("VGG16", random_weights=True) == "app:VGG16:random"
    assert models.upload_key("ab", None, (32, 48)) == "upload:ab:-:32x48"
    assert parse_model_key("demo:vgg_defect").label() == "vgg_defect (demo)"
    assert parse_model_key("app:VGG16").label() == "VGG16 (ImageNet)"
    assert parse_model_key("app:VGG16:random").label() == "VGG16 (random weights)"
    assert parse_model_key("upload:ab:unit").label("mine.h5") == "mine.h5 (upload)"
    assert parse_model_key("upload:ab").label() == "uploaded model (upload)"
    assert parse_model_key("file:/x/y/mine.keras").label() == "mine.keras (file)"
