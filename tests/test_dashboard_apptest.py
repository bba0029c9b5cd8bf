"""The Compare page driven by Streamlit's AppTest (no browser): main flows and bad uploads.

The models and explainers are st.cache_resource, shared by every AppTest in this
process, so only the first test pays for loading and compiling the demo model.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from shown_panels import Tile, tiles
from streamlit.testing.v1 import AppTest

from camcore.demos import list_demos
from dashboard.components.grid import ROWS

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
TIMEOUT = 120
TITLES = ("Grad-CAM", "Grad-CAM++", "Score-CAM", "Faster-Score-CAM")

@pytest.fixture(autouse=True, scope="module")
def demo_models_are_shipped() -> None:
    # The app opens on a demo model: without them every test here errors with this
    # message, never skips (the models are part of the repository).
    missing = {"vgg_defect", "resnet_defect"} - set(list_demos())
    assert not missing, f"demo models missing from assets/models: {sorted(missing)} (run `make train-demos`)"


# ------------------------------------------------------------------- helpers
def run_app(session: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def grid_images(at: AppTest) -> list[Tile]:
    """The tiles of the main area's grid, (caption, data URL) each (the sidebar's
    thumbnails excluded)."""
    return tiles(at.main)


def caption_of(tile: Tile) -> str:
    return tile.caption


def image_url(at: AppTest, caption_prefix: str) -> str:
    found = [tile for tile in grid_images(at) if tile.caption.startswith(caption_prefix)]
    assert found, f"no image captioned {caption_prefix!r}: {[tile.caption for tile in grid_images(at)]}"
    return found[0].url


def headline(at: AppTest) -> str:
    return next(m.value for m in at.main.markdown if m.value.startswith("**") and " · layer " in m.value)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def iou_table(at: AppTest):
    assert at.dataframe, "no threshold table"
    return at.dataframe[0].value


def keras_file(model, suffix: str = ".keras") -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model" + suffix)
        model.save(path)
        return Path(path).read_bytes()


def png(image: np.ndarray) -> bytes:
    from camcore.visualize import png_bytes

    return png_bytes(image)


@pytest.fixture(scope="module")
def default_app() -> AppTest:
    return run_app()


# ---------------------------------------------------------------------- flows
def test_default_load_renders_the_full_grid(default_app: AppTest) -> None:
    at = default_app
    images = grid_images(at)
    assert len(images) == len(ROWS) * (1 + len(TITLES))
    # a column's tiles are one element: each element costs the browser a re-render and a toolbar
    assert [len(image.value) for image in at.main.image] == [len(ROWS)] * (1 + len(TITLES))
    captions = [caption_of(i) for i in images]
    for title in TITLES:
        assert f"{title} · overlay" in captions
        assert f"Guided {title}" in captions
        assert f"Sobel × {title}" in captions
    assert "Ground truth (green)" in captions  # the default sample is defective
    # the card's layer since issue 14 (block5_conv3 before)
    assert "vgg_defect" in headline(at) and "top_down56" in headline(at)
    headers = [m.value for m in at.main.markdown]
    for title in ("Input", *TITLES):
        assert f"**{title}**" in headers
    assert len(at.get("plotly_chart")) == 3  # timing, trade-off, IoU curves
    assert len(at.get("download_button")) == 6  # grid, maps, timings, settings, report, localize settings
    # top_down56 has 32 channels (block5_conv3: 64)
    assert at.slider(key="max_n").value == 10 and at.slider(key="max_n").max == 32
    assert not errors(at)


def test_a_sessions_first_run_draws_the_charts_only_once_the_browser_has_drawn_the_grid() -> None:
    """The grid's first paint waited for the browser to load Plotly's and the data frame's
    code (seconds): a session's first run leaves them out and mounts the component that
    reports the grid drawn; the run after it draws them (tests/test_browser.py drives the
    real browser through it)."""
    import json

    from dashboard.components.after_paint import GRID_PAINTED

    at = run_app({GRID_PAINTED: False})  # a new session: its browser has not reported yet
    assert len(grid_images(at)) == len(ROWS) * (1 + len(TITLES))  # the whole grid
    assert not at.get("plotly_chart") and not at.get("arrow_data_frame") and not at.get("download_button")
    assert any(block.key == "analysis_pending" for block in _blocks(at.main))  # the note below the grid
    reporters = [e for e in _elements(at.main) if e.type == "bidi_component"]
    assert len(reporters) == 1 and reporters[0].proto.component_name == "camstudio_when_drawn"
    assert json.loads(reporters[0].proto.json)["selector"] == ".st-key-grid"

    at.session_state[GRID_PAINTED] = True  # what the component's trigger sets
    at.run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3 and len(at.get("download_button")) == 6
    assert not any(block.key == "analysis_pending" for block in _blocks(at.main))
    assert not [e for e in _elements(at.main) if e.type == "bidi_component"]


def _elements(node) -> list:
    found = []
    for child in getattr(node, "children", {}).values():
        found += [child, *_elements(child)]
    return found


def _blocks(node) -> list:
    return [e for e in _elements(node) if e.type == "flex_container"]


def test_max_n_change_rerenders_faster_score_cam(default_app: AppTest) -> None:
    at = default_app
    before = image_url(at, "Faster-Score-CAM · overlay")
    score_cam = image_url(at, "Score-CAM · overlay")
    at.slider(key="max_n").set_value(3).run()
    assert_clean(at)
    assert image_url(at, "Faster-Score-CAM · overlay") != before
    assert image_url(at, "Score-CAM · overlay") == score_cam  # full Score-CAM does not depend on max_N
    header = [c.value for c in at.main.caption if c.value.startswith("max_N = 3 ·")]
    assert header and "cached" in header[0]  # covered by Score-CAM's passes: no model pass
    at.slider(key="max_n").set_value(10).run()
    assert image_url(at, "Faster-Score-CAM · overlay") == before


def test_threshold_changes_iou(default_app: AppTest) -> None:
    at = default_app
    first = iou_table(at)
    at.slider(key="threshold").set_value(0.2).run()
    assert_clean(at)
    second = iou_table(at)
    assert "IoU @ 0.20" in second.columns and "IoU @ 0.50" in first.columns
    assert not np.allclose(first["IoU @ 0.50"].to_numpy(), second["IoU @ 0.20"].to_numpy())
    assert "Grad-CAM · map ≥ 0.20" in [caption_of(i) for i in grid_images(at)]
    at.slider(key="threshold").set_value(0.5).run()


def test_reruns_keep_tensorflows_compiled_passes(default_app: AppTest, monkeypatch) -> None:
    """Streamlit's end-of-run hook called keras.backend.clear_session(), which empties
    TensorFlow's kernel cache: every rerun re-instantiated each compiled pass (vgg_defect:
    375 ms instead of 65 ms of grid computations). The dashboard replaces that hook."""
    from tensorflow.python.eager import context

    cleared = []
    original = context.Context.clear_kernel_cache
    monkeypatch.setattr(context.Context, "clear_kernel_cache", lambda self: (cleared.append(1), original(self)))
    at = default_app
    at.slider(key="threshold").set_value(0.3).run()
    at.slider(key="max_n").set_value(4).run()  # a fragment run, with a masked pass
    at.slider(key="threshold").set_value(0.5)
    at.slider(key="max_n").set_value(10).run()
    assert_clean(at)
    assert cleared == [], f"TensorFlow's kernel cache was cleared {len(cleared)} times in 3 reruns"


def test_change_model_layer_image_class_and_methods() -> None:
    at = run_app()
    at.selectbox(key="demo_name").select("resnet_defect").run()
    assert_clean(at)
    assert "resnet_defect" in headline(at) and "act_last" in headline(at)
    assert len(grid_images(at)) == len(ROWS) * 5

    layers = at.selectbox(key="layer").options
    other = next(o for o in layers if not o.startswith("act_last"))
    at.selectbox(key="layer").set_value(other.split(" · ")[0]).run()
    assert_clean(at)
    assert f"`{other.split(' · ')[0]}`" in headline(at)
    assert at.slider(key="max_n").max == int(other.rsplit("×", 1)[1])

    at.selectbox(key="texture").select("grain").run()
    assert_clean(at)
    assert "grain_defective_1" in headline(at)
    at.radio(key="sample").set_value("grain_clean_1").run()
    assert_clean(at)
    assert "grain_clean_1" in headline(at)
    assert "No ground truth" in [caption_of(i) for i in grid_images(at)]
    assert any("no ground-truth mask" in i.value for i in at.info)

    explained = headline(at).split("explaining **")[1].split("**")[0]
    other_class = next(c for c in ("clean", "defective") if c != explained)
    at.selectbox(key="class").set_value(["clean", "defective"].index(other_class)).run()
    assert_clean(at)
    assert f"explaining **{other_class}**" in headline(at)

    at.button_group(key="methods").set_value(["grad_cam", "faster_score_cam"]).run()
    assert_clean(at)
    captions = [caption_of(i) for i in grid_images(at)]
    assert len(captions) == len(ROWS) * 3
    assert "Score-CAM · overlay" not in captions and "Faster-Score-CAM · overlay" in captions


def test_open_in_compare_from_the_dataset_page() -> None:
    from camcore.samples import load_sample, load_sample_index

    info = next(i for i in load_sample_index() if i.defective and i.texture == "woven")
    image, mask = load_sample(info)
    at = run_app(
        {"open_in_compare": {"name": "from_dataset.png", "image": image, "mask": mask,
                             "model": "demo:resnet_defect", "layer": None}}
    )
    assert "from_dataset.png" in headline(at) and "resnet_defect" in headline(at)
    assert at.radio(key="image_source").value == "dataset"
    assert "Ground truth (green)" in [caption_of(i) for i in grid_images(at)]
    assert "open_in_compare" not in at.session_state


# ----------------------------------------------------------------- bad input
def _upload_image(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> None:
    at.radio(key="image_source").set_value("upload").run()
    at.file_uploader(key="image_file").upload(name, data, mime).run()


def test_corrupt_image_upload_shows_an_error() -> None:
    at = run_app()
    _upload_image(at, "broken.png", b"\x89PNG\r\n\x1a\nnot really a png")
    assert_clean(at)
    assert any("broken.png" in e for e in errors(at))
    assert not grid_images(at)
    at.radio(key="image_source").set_value("sample").run()  # the rest keeps working
    assert_clean(at)
    assert len(grid_images(at)) == len(ROWS) * 5


def test_16_bit_rgba_upload_renders() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((300, 260, 4)) * 65535).astype(np.uint16)
    at = run_app()
    _upload_image(at, "wide16.png", png(image))
    assert_clean(at)
    assert not errors(at)
    assert "wide16.png" in headline(at)
    assert "No ground truth" in [caption_of(i) for i in grid_images(at)]


def _upload_model(at: AppTest, name: str, data: bytes) -> None:
    at.radio(key="model_source").set_value("upload").run()
    at.file_uploader(key="model_file").upload(name, data, "application/octet-stream").run()


def test_not_a_model_file_shows_an_error() -> None:
    at = run_app()
    _upload_model(at, "notes.keras", b"these are not the weights you are looking for")
    assert_clean(at)
    assert any("Could not load the model" in e and "notes.keras" in e for e in errors(at))
    at.radio(key="model_source").set_value("demo").run()
    assert_clean(at)
    assert len(grid_images(at)) == len(ROWS) * 5


def test_model_without_spatial_layer_shows_an_error() -> None:
    import keras

    model = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")]
    )
    at = run_app()
    _upload_model(at, "flat.keras", keras_file(model))
    assert_clean(at)
    assert any("spatial" in e for e in errors(at)), errors(at)


def test_non_image_model_shows_an_error() -> None:
    import keras

    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, activation="softmax")])
    at = run_app()
    _upload_model(at, "tabular.h5", keras_file(model, ".h5"))
    assert_clean(at)
    assert any("image" in e for e in errors(at)), errors(at)


def test_uploaded_model_asks_for_preprocessing_then_renders() -> None:
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    at = run_app()
    _upload_model(at, "tiny.keras", keras_file(model))
    assert_clean(at)
    assert any("Preprocessing" in w.value for w in at.warning)
    at.selectbox(key="upload_preprocessing").set_value("unit").run()
    assert_clean(at)
    assert not errors(at)
    assert "tiny.keras" in headline(at) and "`conv`" in headline(at)
    assert at.slider(key="max_n").max == 4
    assert len(grid_images(at)) == len(ROWS) * 5


def test_variable_input_size_model_asks_for_the_size_then_renders() -> None:
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)  # preprocessing inferred: only the size is asked for
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    at = run_app()
    _upload_model(at, "anysize.keras", keras_file(model))
    assert_clean(at)
    assert not errors(at)
    assert any("does not fix its input size" in w.value for w in at.warning)
    assert not grid_images(at)
    at.number_input(key="upload_height").set_value(48).run()
    assert_clean(at)
    assert any("does not fix its input size" in w.value for w in at.warning)  # both are needed
    at.number_input(key="upload_width").set_value(40).run()
    assert_clean(at)
    assert not errors(at)
    assert not any("input size" in w.value for w in at.warning)
    assert "anysize.keras" in headline(at) and "`conv` (48×40×5)" in headline(at)
    assert at.slider(key="max_n").max == 5
    assert len(grid_images(at)) == len(ROWS) * 5


def test_random_weight_application_needs_consent() -> None:
    from camcore import zoo

    if zoo.imagenet_weights_cached("MobileNetV2"):
        pytest.skip("ImageNet weights are cached here: no consent needed")
    at = run_app()
    at.radio(key="model_source").set_value("app").run()
    at.selectbox(key="app_name").select("MobileNetV2").run()
    assert_clean(at)
    assert any("not in the local Keras cache" in w.value for w in at.warning)
    assert not grid_images(at)  # nothing runs until random weights are accepted


def test_downloads_build(default_app: AppTest) -> None:
    """The files the download buttons serve (built on click in the browser) are valid."""
    import json

    from camcore.samples import load_sample, load_sample_index
    from dashboard import state
    from dashboard.components import analysis, grid, sidebar

    keys = {button.key for button in default_app.get("download_button")}
    assert keys == {"download_grid", "download_maps", "download_timings", "download_settings", "download_report",
                    "download_localize"}
    # The same cached bundle and explainer the page used (st.cache_resource is per process).
    bundle, explainer = state.get_model("demo:vgg_defect"), state.get_explainer("demo:vgg_defect")
    info = load_sample_index()[0]
    image, mask = load_sample(info)
    x = bundle.preprocess(image)
    top = explainer.top_classes(x, 2)
    display = sidebar.Display(("grad_cam", "grad_cam_plus_plus", "score_cam", "faster_score_cam"), 0.5, "jet", 0.5)
    view = grid.make_view(model_key="demo:vgg_defect", bundle=bundle, explainer=explainer, layer=bundle.default_layer,
                          image_name=info.name, image=image, mask=mask, prepared=x, class_index=top[0][0],
                          probability=top[0][1], display=display)
    results = analysis.current_results(view, 10)
    assert set(results) == set(display.methods)  # all cached by the page: no model pass here
    npz = np.load(io.BytesIO(analysis.maps_npz(view, results)))
    assert {"grad_cam", "score_cam", "faster_score_cam", "guided_backprop", "ground_truth"} <= set(npz.files)
    assert npz["faster_score_cam"].shape == (56, 56)  # top_down56 since issue 14 (14x14 block5_conv3 before)
    csv = analysis.timings_csv(view, results, 10)
    assert csv.startswith("method,") and "masked passes" in csv
    settings = json.loads(analysis.settings_json(view, 10))
    assert settings["max_n"] == 10 and settings["model"] == "demo:vgg_defect"
    picture = grid.grid_png(view, lambda: {m: r.cam for m, r in results.items()})
    assert picture.startswith(b"\x89PNG")


def test_model_keys_round_trip_and_reject_bad_keys() -> None:
    from dashboard import state

    for key in ("demo:vgg_defect", "app:VGG16", "app:VGG16:random", "upload:abc123", "upload:abc123:caffe",
                "upload:abc123:-:224x224", "upload:abc123:unit:48x40"):
        assert str(state.parse_model_key(key)) == key
    assert state.app_key("ResNet50", random_weights=True) == "app:ResNet50:random"
    assert state.upload_key("abc", "unit") == "upload:abc:unit"
    assert state.upload_key("abc", None, (64, 32)) == "upload:abc:-:64x32"
    sized = state.parse_model_key("upload:abc:-:64x32")
    assert sized.option is None and sized.input_size == (64, 32)
    assert state.parse_model_key("upload:abc:torch").input_size is None
    assert state.default_model_key() == "demo:vgg_defect"
    for bad in ("vgg_defect", "demo:", "app:VGG16:imagenet", "upload:abc:sepia", "file:/etc/passwd", 3,
                "upload:abc:-:4x4", "upload:abc:-:64", "upload:abc:unit:64x64:1", "app:VGG16:random:64x64",
                "upload:abc:sepia:64x64", "upload:abc:-:9999x64"):
        with pytest.raises(ValueError):
            state.parse_model_key(bad)
