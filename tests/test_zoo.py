"""Keras Applications as camcore models, offline (camcore.zoo)."""

import json

import keras
import numpy as np
import pytest

from camcore import zoo


@pytest.fixture
def empty_cache(tmp_path, monkeypatch, no_downloads):
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home / "models"


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
    app = zoo.load_application("MobileNetV2", "auto")
    assert app.name == "MobileNetV2" and app.label == "MobileNetV2 (random weights)"
    assert app.source == "application" and app.key == "app:MobileNetV2:random"
    assert "not in the local Keras cache" in app.note and "random" in app.note
    assert app.input_size == (224, 224) and app.channels == 3
    assert app.preprocessing == "symmetric" and app.default_layer == "out_relu"
    assert app.class_names[:2] == ("class 0", "class 1") and len(app.class_names) == 1000
    app.model.get_layer(app.default_layer)  # the suggested layer exists
    x = app.preprocess(np.zeros((512, 512), np.uint8))
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

    app = zoo.load_application("MobileNetV2", "imagenet")
    assert app.label == "MobileNetV2 (ImageNet)" and app.note == ""
    assert app.key == "app:MobileNetV2"
    assert np.allclose(app.model.get_layer("Conv1").get_weights()[0], 0.123)
    assert app.class_names[0] == "thing 0" and app.class_names[999] == "thing 999"


def test_corrupt_cached_weights_fall_back_or_fail(empty_cache):
    empty_cache.mkdir()
    (empty_cache / zoo.APPLICATIONS["MobileNetV2"].weights_file).write_bytes(b"truncated download")
    (empty_cache / "imagenet_class_index.json").write_text("{broken")
    with pytest.raises(ValueError, match="could not be loaded"):
        zoo.load_application("MobileNetV2", "imagenet")
    app = zoo.load_application("MobileNetV2", "auto")
    assert "could not be loaded" in app.note and app.class_names[5] == "class 5"
