"""An ONNX graph as the engine reads it: the image input and its layout, the class scores
before the output's softmax/sigmoid, each tensor's layout and shape, and the sub-graphs the
backend runs (input → chosen tensors, a tensor → the scores). Pure ``onnx``, no runtime.

Layouts. ONNX fixes the layout of a few operators: Conv, the poolings, BatchNormalization,
LRN ... read and write NCHW. Those tensors are seeded NCHW, and the layout spreads along the
graph in both directions: through operators that keep it (elementwise, Concat, Pad, Resize,
Slice, reductions that keep their axes ...) and through Transpose (its ``perm`` permutes
the layout letters, and inverts them backwards). A tensor the spreading never reaches (e.g.
behind a Reshape that nothing layout-bound consumes) has no known layout and is not offered
as a layer. The image input takes its propagated layout when it has one; otherwise (a Keras
export feeds ``(N, H, W, 1)`` through a Reshape into the first Conv) the axis holding 1-4
values is the channel axis, NHWC if it is the last, NCHW if it is the second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import onnx
from onnx import helper, shape_inference

# operators whose data input and output are NCHW by the ONNX specification
NCHW_OPS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "LRN",
    "MaxUnpool", "DepthToSpace", "SpaceToDepth", "QLinearAveragePool", "QLinearGlobalAveragePool",
})
# operators whose 4-D inputs and outputs share one layout
LAYOUT_KEEPING_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
    "Softsign", "Clip", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Erf", "Sign",
    "Identity", "Dropout", "Cast", "Mish", "Gelu", "ThresholdedRelu", "Shrink", "Sin", "Cos",
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Concat", "Pad", "Resize",
    "Upsample", "Slice", "Split", "QuantizeLinear", "DequantizeLinear", "Softmax", "LogSoftmax",
})
REDUCE_OPS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
                        "ReduceLogSumExp", "ReduceSumSquare"})
# operators between the scores and the output that only change the shape
SHAPE_ONLY_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
LAYOUTS = ("NCHW", "NHWC")
FLOAT = onnx.TensorProto.FLOAT

Dims = tuple  # of int | None (None: not known)


@dataclass(frozen=True)
class ImageInput:
    """The graph's image input. Dimensions None are free (symbolic) in the file."""

    name: str
    layout: str  # "NCHW" or "NHWC"
    batch: int | None
    height: int | None
    width: int | None
    channels: int | None

    def dims(self, batch: int | str, height: int, width: int) -> list[int | str]:
        """The input's dimensions in its own layout for a batch (int, or a symbolic name) and size."""
        if self.channels is None:  # OnnxModel refuses such a graph before it asks for dimensions
            raise ValueError(f"{self.name}: the number of input channels is not fixed in the graph")
        if self.layout == "NCHW":
            return [batch, self.channels, height, width]
        return [batch, height, width, self.channels]

    @property
    def shape(self) -> tuple:
        """(batch, H, W, C) as the engine sees it, None where free."""
        return (self.batch, self.height, self.width, self.channels)


@dataclass(frozen=True)
class ScoresHead:
    """Where the class scores are: ``tensor`` (the input of the output's Softmax/Sigmoid when
    the graph ends in one, possibly behind Reshape/Flatten/Squeeze, else the output itself)."""

    tensor: str
    probability_kind: str  # "softmax" or "sigmoid"
    activation: str | None  # the operator skipped ("Softmax", "Sigmoid", "LogSoftmax") or None


@dataclass(frozen=True)
class OnnxGraph:
    """A checked ONNX classifier before an input size is chosen: the model (weights listed
    among the graph inputs, as old opsets do, are left out of the inputs), its image input,
    its scores and the metadata the exporter wrote (``preprocessing``, ``class_names``)."""

    model: onnx.ModelProto
    name: str
    image: ImageInput
    head: ScoresHead
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model: onnx.ModelProto, name: str = "model.onnx") -> OnnxGraph:
        """Analyse a checked model (see :func:`camcore.backends.onnx_read.read_onnx_model`)."""
        model = without_initializer_inputs(model)
        if len(model.graph.output) < 1:
            raise ValueError(f"{name} has no output")
        ranks = {key: len(dims) for key, (_, dims) in inferred_shapes(model).items()}
        image = image_input(model, ranks, name)
        metadata = {entry.key: entry.value for entry in model.metadata_props}
        return cls(model, name, image, scores_head(model.graph), metadata)

    @property
    def variable_size(self) -> bool:
        """Whether the graph leaves its input's height or width free."""
        return self.image.height is None or self.image.width is None

    def preprocessing(self, modes: Iterable[str]) -> str | None:
        """The ``preprocessing`` metadata entry when it names one of ``modes``."""
        value = self.metadata.get("preprocessing", self.metadata.get("camcore.preprocessing"))
        return value if value in set(modes) else None

    def class_names(self) -> tuple[str, ...] | None:
        """The ``class_names`` metadata entry: a JSON list of strings or a comma-separated list."""
        raw = self.metadata.get("class_names", self.metadata.get("camcore.class_names"))
        if not raw:
            return None
        try:
            names = json.loads(raw)
        except ValueError:
            names = [part.strip() for part in raw.split(",")]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return None
        return tuple(names)


# ------------------------------------------------------------------ reading the graph
def without_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with weights that are also listed as graph inputs (opset ≤ 9 exports) left out
    of the inputs: they are constants, nothing is fed for them."""
    weights = {tensor.name for tensor in model.graph.initializer}
    if not any(vi.name in weights for vi in model.graph.input):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [vi for vi in copy.graph.input if vi.name not in weights]
    del copy.graph.input[:]
    copy.graph.input.extend(kept)
    return copy


def dims_of(value_info: onnx.ValueInfoProto) -> Dims | None:
    """The dimensions of a tensor's type (None per unknown dimension), or None if its rank is unknown."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim)


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, Dims]]:
    """(element type, dimensions) of every tensor ONNX shape inference finds a rank for (with
    constant propagation); fewer entries where inference fails (the dry pass measures them then)."""
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a help, not a requirement
        inferred = model
    graph = inferred.graph
    found: dict[str, tuple[int, Dims]] = {}
    for value_info in (*graph.input, *graph.value_info, *graph.output):
        dims = dims_of(value_info)
        if dims is not None:
            found[value_info.name] = (value_info.type.tensor_type.elem_type, dims)
    return found


def image_input(model: onnx.ModelProto, ranks: dict[str, int], name: str) -> ImageInput:
    """The graph's one image input, with its layout; ValueError naming what is wrong."""
    graph = model.graph
    inputs = list(graph.input)
    if len(inputs) != 1:
        listed = ", ".join(repr(vi.name) for vi in inputs) or "none"
        raise ValueError(f"{name} must take one input, the image; it takes {len(inputs)} ({listed})")
    value_info = inputs[0]
    element = value_info.type.tensor_type.elem_type
    if element != FLOAT:
        kind = onnx.TensorProto.DataType.Name(element) if element in onnx.TensorProto.DataType.values() else element
        raise ValueError(f"{name}: the input {value_info.name!r} is {kind}; only float32 image inputs are supported")
    dims = dims_of(value_info)
    if dims is None or len(dims) != 4:
        shape = "unknown" if dims is None else tuple("?" if d is None else d for d in dims)
        raise ValueError(
            f"{name}: the input {value_info.name!r} has shape {shape}; an image classifier takes a 4-D batch, "
            "(batch, height, width, channels) or (batch, channels, height, width)"
        )
    layouts = propagate_layouts(graph, ranks)
    layout = input_layout(value_info.name, dims, layouts, name)
    batch, height, width, channels = (dims[0], dims[2], dims[3], dims[1]) if layout == "NCHW" else dims
    return ImageInput(value_info.name, layout, batch, height, width, channels)


def input_layout(input_name: str, dims: Dims, layouts: dict[str, str], name: str) -> str:
    """NCHW or NHWC: the propagated layout, else the axis (1 or 3) of 1-4 values is the channels'."""
    found = layouts.get(input_name)
    if found in LAYOUTS:
        return found
    small = [d is not None and d <= 4 for d in (dims[1], dims[3])]
    if small == [True, False]:
        return "NCHW"
    if small == [False, True]:
        return "NHWC"
    raise ValueError(
        f"{name}: cannot tell whether the input {input_name!r} {tuple('?' if d is None else d for d in dims)} "
        "is NCHW or NHWC (its first operators do not say, and its shape does not either)"
    )


def scores_head(graph: onnx.GraphProto) -> ScoresHead:
    """The class scores of the first output, before its Softmax/LogSoftmax/Sigmoid if it has one."""
    producer = {out: node for node in graph.node for out in node.output if out}
    name = graph.output[0].name
    node = producer.get(name)
    while node is not None and node.op_type in SHAPE_ONLY_OPS and node.input:
        name = node.input[0]
        node = producer.get(name)
    if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
        return ScoresHead(node.input[0], "softmax", node.op_type)
    if node is not None and node.op_type == "Sigmoid":
        return ScoresHead(node.input[0], "sigmoid", "Sigmoid")
    return ScoresHead(graph.output[0].name, "softmax", None)


def _perm(node: onnx.NodeProto, rank: int) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == "perm":
            return list(attribute.ints)
    return list(range(rank))[::-1]


def _keeps_rank(node: onnx.NodeProto) -> bool:
    if node.op_type in LAYOUT_KEEPING_OPS:
        return True
    return node.op_type in REDUCE_OPS and all(a.i != 0 for a in node.attribute if a.name == "keepdims")


def _spread(node: onnx.NodeProto, ranks: dict[str, int], layouts: dict[str, str]) -> bool:
    """Spread known layouts across ``node`` (both ways); whether anything new was learnt."""
    if node.op_type == "Transpose":
        source, target = node.input[0], node.output[0]
        perm = _perm(node, 4)
        if ranks.get(source) != 4 or ranks.get(target) != 4 or sorted(perm) != [0, 1, 2, 3]:
            return False
        if source in layouts and target not in layouts:
            layouts[target] = "".join(layouts[source][p] for p in perm)
            return True
        if target in layouts and source not in layouts:
            letters = [""] * 4
            for position, p in enumerate(perm):
                letters[p] = layouts[target][position]
            layouts[source] = "".join(letters)
            return True
        return False
    if not _keeps_rank(node):
        return False
    members = [n for n in (*node.input, *node.output) if n and ranks.get(n) == 4]
    known = next((layouts[n] for n in members if n in layouts), None)
    if known is None:
        return False
    new = [n for n in members if n not in layouts]
    for n in new:
        layouts[n] = known
    return bool(new)


def propagate_layouts(graph: onnx.GraphProto, ranks: dict[str, int]) -> dict[str, str]:
    """The layout (a permutation of "NCHW") of every 4-D tensor it can be told of (module docstring)."""
    layouts: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in NCHW_OPS:
            for name in (node.input[0] if node.input else "", node.output[0] if node.output else ""):
                if name and ranks.get(name) == 4:
                    layouts.setdefault(name, "NCHW")
    for _ in range(len(graph.node) + 1):
        learnt = False
        for node in graph.node:
            learnt |= _spread(node, ranks, layouts)
        if not learnt:
            break
    return layouts


# ------------------------------------------------------------------ walking the graph
def _body_references(graph: onnx.GraphProto) -> set[str]:
    """Names a sub-graph reads from the graph around it (used, not defined inside)."""
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(node_inputs(node))
        defined.update(node.output)
    return used - defined


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its inputs and what its sub-graphs (If/Loop bodies) read."""
    names = [n for n in node.input if n]
    for attribute in node.attribute:
        bodies = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for body in bodies:
            names.extend(sorted(_body_references(body)))
    return names


def descendants(graph: onnx.GraphProto, sources: Iterable[str]) -> set[str]:
    """The tensors computed from any of ``sources`` (the sources included); nodes are in
    topological order, as the ONNX specification requires."""
    reached = set(sources)
    for node in graph.node:
        if any(name in reached for name in node_inputs(node)):
            reached.update(n for n in node.output if n)
    return reached


def ancestors(graph: onnx.GraphProto, targets: Iterable[str], stop: Iterable[str] = ()) -> set[str]:
    """The tensors ``targets`` are computed from (targets included), not walking past ``stop``."""
    producer = {out: node for node in graph.node for out in node.output if out}
    stop_at, seen = set(stop), set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is not None and name not in stop_at:
            todo.extend(node_inputs(node))
    return seen


def tail_side_inputs(graph: onnx.GraphProto, layer: str, scores: str, image: str) -> list[str]:
    """The tensors the part of the graph from ``layer`` to ``scores`` reads besides ``layer``
    that are computed from the image but not from the layer (a branch that left earlier and
    joins later, e.g. a context pooling concatenated to the head), in graph order."""
    from_image = descendants(graph, [image])
    from_layer = descendants(graph, [layer])
    producer = {out: node for node in graph.node for out in node.output if out}
    sides: set[str] = set()
    todo, seen = [scores], set()
    while todo:
        name = todo.pop()
        if name in seen or name == layer:
            continue
        seen.add(name)
        if name in from_image and name not in from_layer:
            sides.add(name)
        elif name in producer:
            todo.extend(node_inputs(producer[name]))
    order = {out: i for i, node in enumerate(graph.node) for out in node.output}
    return sorted(sides, key=lambda n: order.get(n, -1))


# ------------------------------------------------------------------ editing the graph
def with_input_dims(model: onnx.ModelProto, dims: Sequence[int | str]) -> onnx.ModelProto:
    """A copy of ``model`` whose single input has ``dims`` (ints, or names for free ones);
    inferred shapes kept in the file (which may hold the old batch) and the outputs' shapes
    are dropped, so that they are inferred again for the new input."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    shape = graph.input[0].type.tensor_type.shape
    del shape.dim[:]
    for value in dims:
        dim = shape.dim.add()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = int(value)
    del graph.value_info[:]
    for output in graph.output:
        output.type.tensor_type.ClearField("shape")
    return copy


def extract(model: onnx.ModelProto, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[str]) -> onnx.ModelProto:
    """The model computing ``outputs`` from ``inputs``: the nodes between them, in graph order,
    and the weights they read. ValueError when an output needs a tensor that is neither an
    input, a weight, nor computed from them."""
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    weights = {t.name: t for t in graph.initializer}
    sparse = {t.values.name: t for t in graph.sparse_initializer}
    fed = {vi.name for vi in inputs}
    kept_nodes: set[int] = set()
    todo, seen = list(outputs), set()
    while todo:
        name = todo.pop()
        if name in seen or name in fed or name in weights or name in sparse:
            seen.add(name)
            continue
        seen.add(name)
        index = producer.get(name)
        if index is None:
            raise ValueError(f"the tensor {name!r} is not computed from {sorted(fed)}")
        kept_nodes.add(index)
        todo.extend(node_inputs(graph.node[index]))
    sub = helper.make_graph(
        [graph.node[i] for i in sorted(kept_nodes)], graph.name or "camcore", list(inputs),
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        initializer=[weights[n] for n in weights if n in seen],
        sparse_initializer=[sparse[n] for n in sparse if n in seen],
    )
    return helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                             producer_name="camcore")


def tensor_input(name: str, dims: Sequence[int | str], element: int = FLOAT) -> onnx.ValueInfoProto:
    """A graph input declaration."""
    return helper.make_tensor_value_info(name, element, list(dims))
