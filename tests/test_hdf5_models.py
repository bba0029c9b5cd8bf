"""``.hdf5``, Keras 2's name for an HDF5 model file, is accepted wherever ``.h5`` is: the library
loaders, ``python -m camcore.evaluate --model``, and the dashboard's model uploader (AppTest,
which, unlike a browser, does not enforce the uploader's file types: the test checks them as a
browser would before handing the file over)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
from shown_panels import tiles
from streamlit.testing.v1 import AppTest

import camcore

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")


def _legacy_model() -> keras.Model:
    """A small Keras-2-style classifier: separable convolution, a residual add, Activation head."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="entry")(inputs)
    r = keras.layers.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep")(h)
    h = keras.layers.Add(name="residual")([h, r])
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Activation("softmax", name="head")(keras.layers.Dense(2)(h))
    return keras.Model(inputs, outputs, name="legacy")


@pytest.fixture(scope="module")
def hdf5_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "legacy.h5"  # Keras writes HDF5 for .h5; the user's file says .hdf5
        _legacy_model().save(path)
        return path.read_bytes()


def test_the_library_loads_an_hdf5_file_by_bytes_path_and_name(hdf5_bytes, tmp_path):
    model = camcore.load_model_bytes(hdf5_bytes, "checkpoint.hdf5")
    assert [layer.name for layer in model.layers if layer.name == "sep"] == ["sep"]
    path = tmp_path / "weights.best.HDF5"  # ModelCheckpoint names, any case
    path.write_bytes(hdf5_bytes)
    for source in (path, str(path)):
        loaded = camcore.load_model(source, preprocessing="unit")
        assert loaded.key == f"file:{path.resolve()}" and loaded.input_size == (32, 32) and loaded.layer == "residual"
    x = np.random.default_rng(0).random((1, 32, 32, 3), np.float32)
    assert camcore.grad_cam(loaded.model, x, "residual", 1).shape == (32, 32)
    with pytest.raises(ValueError, match=r"checkpoint.pt: expected a model file \(.*\.hdf5"):
        camcore.load_model_bytes(hdf5_bytes, "checkpoint.pt")


def test_the_evaluation_command_takes_an_hdf5_model(hdf5_bytes, tmp_path, capsys):
    from camcore.evaluation.cli import main

    (tmp_path / "m.hdf5").write_bytes(hdf5_bytes)
    status = main(["--model", str(tmp_path / "m.hdf5"), "--preprocessing", "unit", "--synthetic", "2", "--size", "64",
                   "--methods", "grad_cam", "--steps", "2", "--workers", "1", "--out", str(tmp_path / "r.csv")])
    assert status == 0, capsys.readouterr().err
    assert "2 images evaluated" in capsys.readouterr().out


def _upload_as_a_browser_would(at: AppTest, key: str, name: str, data: bytes) -> None:
    uploader = at.file_uploader(key=key)
    allowed = {t.lower().lstrip(".") for t in uploader.allowed_type}
    assert Path(name).suffix.lower().lstrip(".") in allowed, (
        f"the browser refuses {name}: accepts only {sorted(allowed)}"
    )
    uploader.upload(name, data, "application/octet-stream").run()


def test_the_compare_sidebar_accepts_an_hdf5_upload(hdf5_bytes):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.radio(key="model_source").set_value("upload").run()
    _upload_as_a_browser_would(at, "model_file", "weights.best.hdf5", hdf5_bytes)
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="upload_preprocessing").set_value("unit").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    headline = next(m.value for m in at.main.markdown if m.value.startswith("**") and " · layer " in m.value)
    assert "weights.best.hdf5" in headline and "`residual`" in headline
    assert len(tiles(at.main)) == 4 * 5
