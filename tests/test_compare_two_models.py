"""The Compare page with a second model (AppTest, no browser): per method A's map, B's map,
their difference and the agreement table; max_N acts on both; model B of another input
size, without gradients or with other classes; a model against itself agrees exactly."""

from __future__ import annotations

import io
import json
import re

import cv2
import numpy as np
import pytest
from shown_panels import assert_shown_as, decode
from streamlit.testing.v1 import AppTest
from test_dashboard_apptest import APP, assert_clean, caption_of, errors, grid_images, keras_file

from camcore import visualize
from camcore.maps import upsample
from camcore.methods import ORIGINAL_STUDY
from dashboard.components import pair

TITLES = ("Grad-CAM", "Grad-CAM++", "Score-CAM", "Faster-Score-CAM")


def run_pair(session: dict | None = None, b_demo: str = "resnet_defect") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["compare_b"] = True
    at.session_state["b_demo_name"] = b_demo
    for key, value in (session or {}).items():
        at.session_state[key] = value
    at.run()
    assert_clean(at)
    return at


def images(at: AppTest) -> dict[str, str]:
    return {caption_of(tile): tile.url for tile in grid_images(at)}


def tables(at: AppTest) -> list:
    """The small agreement tables under the method columns, in column order."""
    return [table.value for table in at.main.table]


def headers(at: AppTest) -> list[str]:
    return [c.value for c in at.main.caption]


def column_headers(at: AppTest) -> list[str]:
    """The method columns' header lines, e.g. "max_N = 10 · A cached · B 0.41 s"."""
    return [h for h in headers(at) if re.match(r"(max_N = \d+[^·]* · )?A( cached| [\d.]+ s|: )", h)]


def page_pair(at: AppTest, b_key: str = "demo:resnet_defect") -> pair.Pair:
    """The Pair the page built (same cached models and explainers: no model pass)."""
    from camcore.samples import load_sample, load_sample_index
    from dashboard import state
    from dashboard.components import grid, sidebar

    info = next(i for i in load_sample_index() if i.name == at.session_state["sample"])
    image, mask = load_sample(info)
    choice = sidebar.ImageChoice(info.name, image, mask, "sample")
    bundle, explainer = state.get_model("demo:vgg_defect"), state.get_explainer("demo:vgg_defect")
    prepared = state.prepare_input("demo:vgg_defect", bundle, explainer, choice)
    top = explainer.top_classes(prepared, explainer.n_classes)
    display = sidebar.Display(tuple(at.session_state["methods"]), at.session_state["threshold"], "jet", 0.5)
    view = grid.make_view(model_key="demo:vgg_defect", bundle=bundle, explainer=explainer, layer=bundle.layer,
                          image_name=info.name, image=image, mask=mask, prepared=prepared, class_index=top[0][0],
                          probability=top[0][1], display=display, guided=False)
    b_bundle, b_explainer = state.get_model(b_key), state.get_explainer(b_key)
    second = pair.SecondModel(b_key, b_bundle, b_explainer, b_bundle.layer)
    return pair.make_pair(view, top, bundle.class_names, second, choice)


@pytest.fixture(scope="module")
def vgg_against_resnet() -> AppTest:
    return run_pair()


def test_off_by_default_and_the_page_is_the_single_model_grid() -> None:
    from dashboard.components.grid import ROWS

    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["methods"] = ["grad_cam", "grad_cam_plus_plus"]
    at.run()
    assert_clean(at)
    assert at.toggle(key="compare_b").value is False
    assert len(grid_images(at)) == len(ROWS) * 3 and "Guided Grad-CAM" in images(at)
    assert not any(" · B" in c for c in images(at)) and not at.main.table
    assert not any((widget.key or "").startswith("b_") for widget in at.sidebar.selectbox)  # no model B widgets


def test_both_rows_and_the_difference_for_the_four_default_methods(vgg_against_resnet: AppTest) -> None:
    at = vgg_against_resnet
    shown = images(at)
    assert len(shown) == len(pair.PAIR_ROWS) * (1 + len(TITLES))
    assert {"A · vgg_defect (demo) · 224×224", "B · resnet_defect (demo) · 224×224",
            "Ground truth (green)"} <= set(shown)
    for title in TITLES:
        assert {f"{title} · A", f"{title} · B", f"{title} · A − B"} <= set(shown), title
    headlines = [m.value for m in at.main.markdown if " · layer " in m.value]
    assert headlines[0].startswith("**A: vgg_defect (demo)**") and "`top_down56`" in headlines[0]
    assert headlines[1].startswith("**B: resnet_defect (demo)**") and "`act_last`" in headlines[1]
    assert "Both models explain class 1 (defective)" in " ".join(headers(at))
    assert len(tables(at)) == len(TITLES)
    for table in tables(at):
        r, iou = float(table.loc["Correlation r"].iloc[0]), float(table.loc["IoU @ 0.50"].iloc[0])
        assert -1.0 <= r <= 1.0 and 0.0 <= iou <= 1.0
        assert table.loc["Peak in defect"].iloc[0] in {f"A {a} · B {b}" for a in "✓✗" for b in "✓✗"}
        assert table.loc["A: p · top-1"].iloc[0].endswith("defective")
    assert not errors(at)


def test_the_tiles_are_each_models_map_and_their_difference(vgg_against_resnet: AppTest) -> None:
    """The pictures are A's map, B's map and A − B (not B − A) at the ground truth's resolution."""
    at = vgg_against_resnet
    two = page_pair(at)
    found = pair.current_pairs(two, at.slider(key="max_n").value)
    assert set(found) == set(ORIGINAL_STUDY)  # both models' maps are cached by the page
    shown = images(at)
    for method, title in zip(ORIGINAL_STUDY, TITLES):
        a, b = found[method].a.cam, found[method].b.cam
        expected_a = visualize.overlay(two.a.rgb, upsample(a, two.a.rgb.shape[:2]), "jet", 0.5)
        assert_shown_as(shown[f"{title} · A"], expected_a)
        expected_b = visualize.overlay(two.b.rgb, upsample(b, two.b.rgb.shape[:2]), "jet", 0.5)
        assert_shown_as(shown[f"{title} · B"], expected_b)
        difference = upsample(a, (512, 512)) - upsample(b, (512, 512))  # the sample's mask is 512×512
        expected = visualize.draw_outline(visualize.difference_overlay(two.a.rgb, difference, 0.5), two.a.mask,
                                          (0, 255, 0))
        assert_shown_as(shown[f"{title} · A − B"], expected)


def test_max_n_updates_both_models(vgg_against_resnet: AppTest) -> None:
    at = vgg_against_resnet
    assert at.slider(key="max_n").max == 64  # the larger layer: resnet_defect's act_last
    before = images(at)
    at.slider(key="max_n").set_value(3).run()
    assert_clean(at)
    after = images(at)
    assert after["Faster-Score-CAM · A"] != before["Faster-Score-CAM · A"]
    assert after["Faster-Score-CAM · B"] != before["Faster-Score-CAM · B"]
    assert after["Faster-Score-CAM · A − B"] != before["Faster-Score-CAM · A − B"]
    for title in ("Grad-CAM", "Score-CAM"):  # not max_N methods
        assert after[f"{title} · B"] == before[f"{title} · B"]
    # covered by each model's Score-CAM passes: no model pass on either side
    assert "max_N = 3 · A cached · B cached" in headers(at)
    at.slider(key="max_n").set_value(40).run()  # beyond A's 32 channels: A clamps, B takes 40
    assert_clean(at)
    assert "max_N = 32 (B: 40) · A cached · B cached" in headers(at)
    at.slider(key="max_n").set_value(10).run()
    assert images(at)["Faster-Score-CAM · B"] == before["Faster-Score-CAM · B"]


def test_threshold_acts_on_both(vgg_against_resnet: AppTest) -> None:
    at = vgg_against_resnet
    before = [float(t.loc["IoU @ 0.50"].iloc[0]) for t in tables(at)]
    at.slider(key="threshold").set_value(0.2).run()
    assert_clean(at)
    after = [float(t.loc["IoU @ 0.20"].iloc[0]) for t in tables(at)]
    assert before != after
    two = page_pair(at)
    found = pair.current_pairs(two, 10)
    for method, iou in zip(ORIGINAL_STUDY, after):
        a = upsample(found[method].a.cam, (512, 512)) >= 0.2
        b = upsample(found[method].b.cam, (512, 512)) >= 0.2
        assert iou == pytest.approx((a & b).sum() / (a | b).sum(), abs=5e-4)
    at.slider(key="threshold").set_value(0.5).run()


def test_the_comparison_downloads(vgg_against_resnet: AppTest) -> None:
    at = vgg_against_resnet
    keys = {button.key for button in at.get("download_button")}
    assert keys == {"download_pair_grid", "download_pair_maps", "download_agreement", "download_pair_settings"}
    two = page_pair(at)
    found = pair.current_pairs(two, 10)
    picture = cv2.imdecode(np.frombuffer(pair.pair_grid_png(two, found), np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (len(pair.PAIR_ROWS) * (256 + 24), (1 + len(TITLES)) * 256, 3)
    maps = np.load(io.BytesIO(pair.pair_maps_npz(two, found)))
    for method in ORIGINAL_STUDY:
        np.testing.assert_array_equal(maps[f"a_{method}"], found[method].a.cam)
        np.testing.assert_array_equal(maps[f"b_{method}"], found[method].b.cam)
        assert maps[f"difference_{method}"].shape == (512, 512)
    assert maps["a_grad_cam"].shape == (56, 56) and maps["b_grad_cam"].shape == (14, 14)
    assert "ground_truth" in maps.files
    table = pair.agreement_records(two, found)
    csv = table.to_csv(index=False)
    assert csv.startswith("method,label,model_a,layer_a,")
    assert list(table["method"]) == list(ORIGINAL_STUDY)
    shown = tables(at)
    for number, row in table.iterrows():
        assert f"{row['correlation']:.4f}" == shown[number].loc["Correlation r"].iloc[0]
    settings = json.loads(json.dumps(pair.pair_settings(two, 10)))
    assert settings["model"] == "demo:vgg_defect" and settings["model_b"] == "demo:resnet_defect"
    assert settings["layer_b"] == "act_last" and settings["same_class_index"] is True


def test_a_model_against_itself_agrees_exactly_on_every_image() -> None:
    """Same model, layer and class on both sides: r = 1.0000 and IoU 1 for every method, and B's
    maps cost no model pass (they are A's, from the shared explainer)."""
    from camcore.samples import load_sample_index

    at = run_pair({"methods": list(ORIGINAL_STUDY)}, b_demo="vgg_defect")
    assert len(tables(at)) == 4 and all(h.endswith("B cached") for h in column_headers(at))
    assert all(t.loc["Correlation r"].iloc[0] == "1.0000" for t in tables(at))
    # every bundled image, with the cheap methods (Faster-Score-CAM at max_N = 3: 3 masked passes)
    at.slider(key="max_n").set_value(3)
    at.button_group(key="methods").set_value(["grad_cam", "grad_cam_plus_plus", "faster_score_cam"]).run()
    for info in load_sample_index():
        at.selectbox(key="texture").select(info.texture).run()
        at.radio(key="sample").set_value(info.name).run()
        assert_clean(at)
        found = tables(at)
        assert len(found) == 3, info.name
        for table in found:
            assert table.loc["Correlation r"].iloc[0] == "1.0000", info.name
            assert table.loc["IoU @ 0.50"].iloc[0] == "1.000", info.name
        assert len(column_headers(at)) == 3 and all(h.endswith("B cached") for h in column_headers(at)), info.name


def _small_keras_model(height: int, width: int, classes: int, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((height, width, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def test_a_model_b_with_another_input_size_and_its_own_layer() -> None:
    at = run_pair()
    at.radio(key="b_model_source").set_value("upload").run()
    model = _small_keras_model(64, 48, 2, seed=3)
    at.file_uploader(key="b_model_file").upload("small.keras", keras_file(model), "application/octet-stream").run()
    assert_clean(at)
    assert not errors(at), errors(at)
    shown = images(at)
    assert "B · small.keras (upload) · 48×64" in shown
    assert decode(shown["Grad-CAM · B"]).shape == (64, 48, 3)  # drawn on B's own input
    assert decode(shown["Grad-CAM · A − B"]).shape == (224, 224, 3)  # on A's, compared at the mask's 512×512
    assert at.selectbox(key="b_layer").value == "conv_b"  # B's default: its last spatial layer
    at.selectbox(key="b_layer").set_value("conv_a").run()
    assert_clean(at)
    headline = next(m.value for m in at.main.markdown if m.value.startswith("**B: "))
    assert "`conv_a` (64×48×6)" in headline
    assert at.selectbox(key="layer").value == "top_down56"  # A's layer is its own
    assert len(tables(at)) == 4 and at.slider(key="max_n").max == 32
    assert "Both models explain class" in " ".join(headers(at))


def test_model_b_without_gradients_and_with_other_classes_says_so() -> None:
    """A gradient-free model B (a toy backend format, as an ONNX model will be) with three
    classes: its gradient rows say why they are empty, B explains its own top-1."""
    from test_backends import ToyBackend

    from camcore import models

    def describe(model, name, preprocessing, class_names, input_size, *, source, key):
        return models.from_backend(model, name, preprocessing, class_names, input_size, source=source, key=key(None))

    models.register_model_format(models.ModelFormat("Toy", (".toy",), lambda data, name: ToyBackend(int(data[4:])),
                                                    describe))
    try:
        at = run_pair({"methods": ["grad_cam", "score_cam", "faster_score_cam"]})
        at.radio(key="b_model_source").set_value("upload").run()
        at.file_uploader(key="b_model_file").upload("model.toy", b"toy:5", "application/octet-stream").run()
        at.selectbox(key="b_upload_preprocessing").set_value("unit").run()
        assert_clean(at)
        assert not errors(at), errors(at)
        shown = images(at)
        assert "Grad-CAM · B: needs gradients — not available for toy models" in shown
        assert "Grad-CAM · A − B: needs both maps" in shown and "Grad-CAM · A" in shown
        assert {"Score-CAM · B", "Score-CAM · A − B", "Faster-Score-CAM · B"} <= set(shown)
        assert tables(at)[0].loc["B: no map"].iloc[0] == "needs gradients — not available for toy models"
        assert tables(at)[0].loc["Correlation r"].iloc[0] == "—"
        assert float(tables(at)[1].loc["Correlation r"].iloc[0]) <= 1.0
        assert "B its own top-1" in " ".join(headers(at))
        assert any(h.endswith(" · B: needs gradients — not available for toy models") for h in headers(at))
    finally:
        models.unregister_model_format(".toy")


def test_the_class_chosen_for_a_is_bs_too_when_both_have_the_same_classes() -> None:
    at = run_pair({"methods": ["grad_cam"]})
    at.selectbox(key="class").set_value(0).run()  # "clean": not the top-1 of either model here
    assert_clean(at)
    headlines = [m.value for m in at.main.markdown if " · layer " in m.value]
    assert "explaining **clean**" in headlines[0] and "explaining **clean**" in headlines[1]
    assert "Both models explain class 0 (clean)" in " ".join(headers(at))
    assert tables(at)[0].loc["B: p · top-1"].iloc[0].endswith("· defective")  # B's top-1 is still shown


@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")
def test_the_exported_onnx_model_against_its_keras_checkpoint(tmp_path) -> None:
    """Does the exported model on the line look where the training checkpoint looked? The
    default demo against its own ONNX export, uploaded as model B: the gradient-free maps
    agree (r ≥ 0.999 on the same layer), the gradient methods say what ONNX lacks."""
    import camcore

    demo = camcore.load_demo("vgg_defect")
    demo.model(np.zeros((1, *demo.input_size, demo.channels), np.float32))  # export needs a called model
    path = tmp_path / "vgg_defect.onnx"
    demo.model.export(str(path), format="onnx", verbose=False)
    at = run_pair({"methods": ["grad_cam", "score_cam", "faster_score_cam"]})
    at.radio(key="b_model_source").set_value("upload").run()
    at.file_uploader(key="b_model_file").upload("line.onnx", path.read_bytes(), "application/octet-stream").run()
    at.selectbox(key="b_upload_preprocessing").set_value("unit").run()
    layer = next(option.split(" · ")[0] for option in at.selectbox(key="b_layer").options
                 if "/top_down56_1/" in option)
    at.selectbox(key="b_layer").set_value(layer).run()
    assert_clean(at)
    assert not errors(at), errors(at)
    shown = images(at)
    assert "Grad-CAM · B: needs gradients — not available for ONNX models" in shown
    grad_cam, score_cam, faster = tables(at)
    assert grad_cam.loc["B: no map"].iloc[0] == "needs gradients — not available for ONNX models"
    for table in (score_cam, faster):
        assert float(table.loc["Correlation r"].iloc[0]) >= 0.999
        assert float(table.loc["IoU @ 0.50"].iloc[0]) >= 0.95
        assert table.loc["Peak in defect"].iloc[0] == "A ✓ · B ✓"
    assert "Both models explain class 1" in " ".join(headers(at))
