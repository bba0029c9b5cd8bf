"""Small ONNX classifiers built with ``onnx.helper`` (weights from a seeded generator) and the
same network written in NumPy, so that their CAMs can be computed without ONNX Runtime.

The network: image → conv1 (3×3, same) → ReLU ("relu") → conv2 (3×3, same, "conv2") →
global average pooling → Flatten → Gemm → Softmax. Variants change one thing each: the
input's layout, a fixed batch, the batch written into a Reshape, weights listed among the
inputs (opset 9), the head (Sigmoid, one unit, a Softmax over (1, classes, 1, 1)), a side
branch that leaves before conv2 and joins after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE, IN_CHANNELS, MID, OUT, CLASSES = 10, 3, 4, 5, 3


@dataclass
class Weights:
    w1: np.ndarray  # (MID, IN, 3, 3)
    b1: np.ndarray
    w2: np.ndarray  # (OUT, MID, 3, 3)
    b2: np.ndarray
    w3: np.ndarray  # (features, classes)
    b3: np.ndarray


def weights(seed: int = 0, classes: int = CLASSES, features: int = OUT) -> Weights:
    rng = np.random.default_rng(seed)
    f = np.float32
    return Weights(
        rng.normal(0, 0.5, (MID, IN_CHANNELS, 3, 3)).astype(f), rng.normal(0, 0.1, MID).astype(f),
        rng.normal(0, 0.5, (OUT, MID, 3, 3)).astype(f), rng.normal(0, 0.1, OUT).astype(f),
        rng.normal(0, 1.0, (features, classes)).astype(f), rng.normal(0, 0.1, classes).astype(f),
    )


# ------------------------------------------------------------------ NumPy reference
def conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3×3 convolution with zero padding 1 of x (B, C, H, W): (B, O, H, W) (cross-correlation, as ONNX Conv)."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    height, width = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], height, width))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("bchw,oc->bohw", padded[:, :, dy : dy + height, dx : dx + width], w[:, :, dy, dx])
    return out + b[None, :, None, None]


def relu_map(x_nchw: np.ndarray, p: Weights) -> np.ndarray:
    return np.maximum(conv_same(x_nchw, p.w1, p.b1), 0.0)


def head_from_relu(relu: np.ndarray, p: Weights) -> np.ndarray:
    """Logits (B, classes) from the ReLU's output (B, MID, H, W)."""
    return head_from_conv2(conv_same(relu, p.w2, p.b2), p)


def head_from_conv2(conv2: np.ndarray, p: Weights) -> np.ndarray:
    return conv2.mean(axis=(2, 3)) @ p.w3 + p.b3


def logits(x_nhwc: np.ndarray, p: Weights) -> np.ndarray:
    return head_from_relu(relu_map(x_nhwc.transpose(0, 3, 1, 2), p), p)


# ------------------------------------------------------------------ ONNX graphs
def _init(name: str, value: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def convnet(p: Weights, *, layout: str = "NCHW", batch: int | str = "N", size: int | str = SIZE,
            head: str = "softmax", batch_in_reshape: bool = False, opset: int = 17,
            weights_as_inputs: bool = False, nhwc_tensor: bool = False, reshape_first: bool = False,
            reduce_pool: bool = False) -> onnx.ModelProto:
    """The network as an ONNX model (see the module docstring for the options).

    ``head``: "softmax", "sigmoid", "none" (logits out), "softmax4d" (Softmax over the pooled
    (B, OUT, 1, 1): conv2's channels are the classes, no Gemm). ``nhwc_tensor``: the ReLU's
    output goes through NHWC ("relu_nhwc", then "scaled_nhwc" = 1·that) and back.
    ``reshape_first``: the image passes a Reshape (to its own shape) before the first Conv, so
    only its shape tells its layout. ``reduce_pool``: conv2 → ReLU ("conv2_relu") → ReduceMean
    over H, W keeping them, instead of GlobalAveragePool: nothing layout-bound touches
    "conv2_relu", only layout-keeping operators tell its layout.
    """
    dims = [batch, IN_CHANNELS, size, size] if layout == "NCHW" else [batch, size, size, IN_CHANNELS]
    nodes, inits = [], [_init("w1", p.w1), _init("b1", p.b1), _init("w2", p.w2), _init("b2", p.b2)]
    source = "image"
    if reshape_first:
        inits.append(_init("own_shape", np.array([-1, *dims[1:]], np.int64)))
        nodes.append(helper.make_node("Reshape", ["image", "own_shape"], ["image_again"]))
        source = "image_again"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [source], ["image_nchw"], perm=[0, 3, 1, 2]))
        source = "image_nchw"
    nodes += [helper.make_node("Conv", [source, "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["conv1"], ["relu"])]
    into_conv2 = "relu"
    if nhwc_tensor:
        inits.append(_init("one", np.ones((1,), np.float32)))
        nodes += [helper.make_node("Transpose", ["relu"], ["relu_nhwc"], perm=[0, 2, 3, 1]),
                  helper.make_node("Mul", ["relu_nhwc", "one"], ["scaled_nhwc"]),
                  helper.make_node("Transpose", ["scaled_nhwc"], ["back_nchw"], perm=[0, 3, 1, 2])]
        into_conv2 = "back_nchw"
    nodes.append(helper.make_node("Conv", [into_conv2, "w2", "b2"], ["conv2"], pads=[1, 1, 1, 1]))
    if reduce_pool:
        nodes += [helper.make_node("Relu", ["conv2"], ["conv2_relu"]),
                  helper.make_node("ReduceMean", ["conv2_relu"], ["pooled"], axes=[2, 3], keepdims=1)]
    else:
        nodes.append(helper.make_node("GlobalAveragePool", ["conv2"], ["pooled"]))
    output = _head(nodes, inits, p, head, batch_in_reshape, opset)
    out_dims = [batch, OUT, 1, 1] if head == "softmax4d" else [batch, p.b3.size]
    graph = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_dims)], initializer=inits)
    if weights_as_inputs:
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=3 if weights_as_inputs else 8)
    onnx.checker.check_model(model)
    return model


def _head(nodes: list, inits: list, p: Weights, head: str, batch_in_reshape: bool, opset: int) -> str:
    if head == "softmax4d":
        nodes.append(helper.make_node("Softmax", ["pooled"], ["probabilities"], axis=1))
        return "probabilities"
    if batch_in_reshape:  # the batch written into the graph, as fixed-batch exports do
        inits.append(_init("flat_shape", np.array([1, OUT], np.int64)))
        nodes.append(helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]))
    else:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    inits += [_init("w3", p.w3), _init("b3", p.b3)]
    nodes.append(helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"]))
    if head == "none":
        return "logits"
    if head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"]))
    else:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], **({"axis": 1} if opset < 13 else {})))
    return "probabilities"


def side_branch_net(p: Weights) -> onnx.ModelProto:
    """relu → conv2 → GAP ("pooled"), relu → GAP ("context", the side branch), Concat → Flatten
    → Gemm → Softmax: explaining conv2, the part after it reads "context" too."""
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu"]),
        helper.make_node("Conv", ["relu", "w2", "b2"], ["conv2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["conv2"], ["pooled"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["context"]),
        helper.make_node("Concat", ["pooled", "context"], ["joined"], axis=1),
        helper.make_node("Flatten", ["joined"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"]),
    ]
    inits = [_init(n, getattr(p, n)) for n in ("w1", "b1", "w2", "b2", "w3", "b3")]
    graph = helper.make_graph(
        nodes, "side", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", IN_CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", p.b3.size])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def side_branch_logits_from_conv2(conv2: np.ndarray, relu: np.ndarray, p: Weights) -> np.ndarray:
    features = np.concatenate([conv2.mean(axis=(2, 3)), relu.mean(axis=(2, 3))], axis=1)
    return features @ p.w3 + p.b3
