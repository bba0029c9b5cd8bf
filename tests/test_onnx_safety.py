"""Bad ``.onnx`` files get a message naming the problem, never a crash: damaged bytes, graphs
that are not image classifiers, custom operators, external data, training graphs, input sizes
that do not fit, graphs that fail their dry pass; and fuzzed bytes of a real export."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphs as g
import pytest
from onnx import TensorProto, helper, numpy_helper

import camcore
from camcore.backends import onnx_read
from camcore.backends.onnx import read_onnx_bytes


@pytest.fixture(scope="module")
def good() -> bytes:
    return g.convnet(g.weights(seed=2)).SerializeToString()


def _load(data: bytes, name: str = "bad.onnx", **kwargs):
    return camcore.load_model(data, filename=name, preprocessing="unit", **kwargs)


def _model(nodes, inputs, outputs, inits=(), opsets=(("", 17),), **kwargs) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opset_imports = [helper.make_opsetid(domain, version) for domain, version in opsets]
    model = helper.make_model(graph, opset_imports=opset_imports, ir_version=8, **kwargs)
    return model.SerializeToString()


def _info(name, dims, element=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, element, dims)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.97])
def test_a_truncated_file(good, cut):
    with pytest.raises(ValueError, match=r"^cut\.onnx is not a (readable|valid) ONNX model"):
        _load(good[: int(len(good) * cut)], "cut.onnx")


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"this is not an onnx file at all", "is not a readable ONNX model"),
    (b"PK\x03\x04 a zip archive", "is not a readable ONNX model"),
    (b"\x08\x07", "holds no graph"),  # a valid message: an IR version and nothing else
])
def test_bytes_that_are_no_onnx_model(data, message):
    with pytest.raises(ValueError, match=message):
        _load(data)


def test_a_file_over_the_size_limit(good, monkeypatch):
    monkeypatch.setattr(onnx_read, "MAX_ONNX_BYTES", len(good) - 1)
    with pytest.raises(ValueError, match=r"ONNX files of at most 0 MB are read"):
        _load(good)


def test_a_graph_without_an_image_input():
    w = numpy_helper.from_array(np.ones((20, 2), np.float32), "w")
    flat = _model([helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["p"])],
                  [_info("x", ["N", 20])], [_info("p", ["N", 2])], [w])
    with pytest.raises(ValueError, match=r"input 'x' has shape \('\?', 20\); an image classifier takes a 4-D batch"):
        _load(flat)


def test_a_graph_with_no_4d_tensor_between_image_and_scores():
    """A 4-D input flattened at once: nothing has a spatial map to explain."""
    w = numpy_helper.from_array(np.ones((192, 2), np.float32), "w")
    nodes = [helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["z"]),
             helper.make_node("Softmax", ["z"], ["p"])]
    data = _model(nodes, [_info("image", ["N", 3, 8, 8])], [_info("p", ["N", 2])], [w])
    with pytest.raises(ValueError, match="the model has no layer with a spatial"):
        _load(data)
    # and where nothing says which axis holds the channels, the message says so
    tiny = _model(nodes, [_info("image", ["N", 4, 4, 4])], [_info("p", ["N", 2])],
                  [numpy_helper.from_array(np.ones((64, 2), np.float32), "w")])
    with pytest.raises(ValueError, match=r"cannot tell whether the input 'image' \('\?', 4, 4, 4\) is NCHW or NHWC"):
        _load(tiny)


def test_an_operator_of_a_custom_domain(good):
    model = onnx.load_model_from_string(good)
    node = model.graph.node[1]  # the ReLU, swapped for someone's own operator
    node.op_type, node.domain = "FancyRelu", "com.example.ops"
    model.opset_import.append(helper.make_opsetid("com.example.ops", 1))
    with pytest.raises(ValueError, match="refused: bad.onnx uses the operator 'FancyRelu' of the custom domain "
                                         "'com.example.ops'"):
        _load(model.SerializeToString())
    # ONNX Runtime's own contrib operators are native code too: refused the same way
    node.op_type, node.domain = "FusedConv", "com.microsoft"
    with pytest.raises(ValueError, match="custom domain 'com.microsoft'"):
        _load(model.SerializeToString())


def test_a_model_local_function_is_refused(good):
    model = onnx.load_model_from_string(good)
    function = helper.make_function("local.fns", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                                    [helper.make_opsetid("", 17)])
    model.functions.append(function)
    with pytest.raises(ValueError, match="defines its own operator 'Twice'"):
        _load(model.SerializeToString())


def test_weights_in_external_data_files_are_refused(good):
    model = onnx.load_model_from_string(good)
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../etc/weights.bin"
    with pytest.raises(ValueError, match=r"refused: bad.onnx keeps its weights in external data files "
                                         r"\(tensor 'w1' in '../../etc/weights.bin'\)"):
        _load(model.SerializeToString())


def test_training_graphs_are_refused(good):
    model = onnx.load_model_from_string(good)
    model.training_info.add()
    with pytest.raises(ValueError, match="is a training graph"):
        _load(model.SerializeToString())
    c = 4
    params = [numpy_helper.from_array(np.full(c, v, np.float32), n) for n, v in
              (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))]
    nodes = [helper.make_node("BatchNormalization", ["image", "scale", "bias", "mean", "var"], ["y"], training_mode=1),
             helper.make_node("GlobalAveragePool", ["y"], ["p"])]
    data = _model(nodes, [_info("image", ["N", c, 8, 8])], [_info("p", ["N", c, 1, 1])], params)
    with pytest.raises(ValueError, match=r"exported in training mode \(BatchNormalization"):
        _load(data)


def test_input_sizes_that_do_not_fit(good):
    with pytest.raises(ValueError, match="fixes its input size at 10×10, not 12×12"):
        _load(good, input_size=(12, 12))
    # the input declared 12×12 but the head written for 10×10 features: the dry pass fails
    p = g.weights(seed=2)
    model = g.convnet(p)
    reshape_shape = numpy_helper.from_array(np.array([-1, g.OUT * g.SIZE * g.SIZE], np.int64), "to_flat")
    head = [helper.make_node("Reshape", ["conv2", "to_flat"], ["flat2"]),
            helper.make_node("MatMul", ["flat2", "w_big"], ["logits2"]),
            helper.make_node("Softmax", ["logits2"], ["p2"])]
    model.graph.node.extend(head)
    model.graph.initializer.extend([reshape_shape, numpy_helper.from_array(
        np.ones((g.OUT * g.SIZE * g.SIZE, 2), np.float32), "w_big")])
    del model.graph.output[:]
    model.graph.output.append(_info("p2", ["N", 2]))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 12
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 12
    with pytest.raises(ValueError, match="^bad.onnx cannot run on a 12×12 image: "):
        _load(model.SerializeToString())
    # a picture of the wrong size handed to the engine
    explainer = camcore.Explainer(read_onnx_bytes(good, "good.onnx"))
    with pytest.raises(ValueError, match=r"x must have shape \(1, 10, 10, 3\) for this model"):
        explainer.compute("score_cam", np.zeros((1, 12, 12, 3), np.float32), "conv2")


def test_inputs_the_engine_cannot_feed():
    conv_w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["y"]), helper.make_node("GlobalAveragePool", ["y"], ["p"])]
    as_bytes = _model([helper.make_node("Cast", ["image8"], ["image"], to=TensorProto.FLOAT), *nodes],
                      [_info("image8", ["N", 3, 8, 8], TensorProto.UINT8)], [_info("p", ["N", 2, 1, 1])], [conv_w])
    with pytest.raises(ValueError, match="the input 'image8' is UINT8; only float32 image inputs"):
        _load(as_bytes)
    two = _model([helper.make_node("Add", ["image", "other"], ["sum"]), *[
        helper.make_node(n.op_type, [("sum" if i == "image" else i) for i in n.input], n.output) for n in nodes]],
        [_info("image", ["N", 3, 8, 8]), _info("other", ["N", 3, 8, 8])], [_info("p", ["N", 2, 1, 1])], [conv_w])
    with pytest.raises(ValueError, match=r"must take one input, the image; it takes 2 \('image', 'other'\)"):
        _load(two)
    segmentation = _model([nodes[0]], [_info("image", ["N", 3, 8, 8])], [_info("y", ["N", 2, 8, 8])], [conv_w])
    with pytest.raises(ValueError, match=r"has shape \(2, 8, 8\) per image, not a vector of class scores"):
        _load(segmentation)


@pytest.fixture(scope="module")
def exported_tiny(tmp_path_factory) -> bytes:
    """A real export: a tiny Keras CNN through ``model.export(..., format="onnx")`` (tf2onnx)."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 1), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(image)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(h)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(image, out)
    model(np.zeros((1, 16, 16, 1), np.float32))
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    model.export(str(path), format="onnx", verbose=False)
    return path.read_bytes()


# Keras's bundled tf2onnx glue probes np.object, which NumPy 2 warns about
@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")
def test_fuzzed_bytes_of_a_real_export_give_value_errors(exported_tiny):
    """Truncations and random byte changes: each either loads (a change inside a weight) and
    runs, or is refused with a ValueError; nothing else escapes and the process survives."""
    assert read_onnx_bytes(exported_tiny, "tiny.onnx").layers  # the unchanged file is fine
    rng = np.random.default_rng(2024)
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(300):
        data = bytearray(exported_tiny)
        if case < 100:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        try:
            backend = read_onnx_bytes(bytes(data), "fuzzed.onnx")
        except ValueError:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1
        if hasattr(backend, "forward"):
            backend.forward(np.zeros((2, *backend.input_shape), np.float32))
    assert outcomes["refused"] >= 150 and outcomes["loaded"] >= 10, outcomes
