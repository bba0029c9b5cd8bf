"""Reading an ``.onnx`` file safely: the bytes become a checked ``onnx.ModelProto`` or a
``ValueError`` whose message names the problem, never a crash.

What is refused, before ONNX Runtime sees the graph:

* files larger than :data:`MAX_ONNX_BYTES` (the dashboard's upload limit) and bytes that
  are not an ONNX model (protobuf accepts much garbage, so an empty graph is refused too);
* tensors stored in external data files (a path in the file would make the server read
  files beside it; only self-contained models load);
* operators of any domain other than the standard ones (:data:`STANDARD_DOMAINS`): custom
  operators are native code ONNX Runtime would have to be given, and model-local functions
  of such domains hide operators behind them;
* training graphs: a ``training_info`` section, or batch normalization / dropout exported in
  training mode (their outputs depend on the batch, so no map would mean anything);
* whatever ``onnx.checker`` rejects (malformed graphs, unknown operators).
"""

from __future__ import annotations

from typing import Iterator

import onnx
import onnx.numpy_helper

MAX_ONNX_BYTES = 300 * 2**20
"""Largest ``.onnx`` file read (the dashboard's ``server.maxUploadSize``, 300 MB)."""

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
"""Operator domains a graph may use: the ONNX standard operators and ONNX-ML."""


def read_onnx_model(data: bytes, filename: str = "model.onnx") -> onnx.ModelProto:
    """The bytes of an ``.onnx`` file as a checked ``ModelProto`` (see the module docstring
    for what is refused); ValueError with a user-facing message otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{filename}: expected the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ValueError(f"{filename} is empty")
    if len(data) > MAX_ONNX_BYTES:
        raise ValueError(
            f"{filename} is {len(data) / 2**20:.0f} MB; ONNX files of at most {MAX_ONNX_BYTES // 2**20} MB are read"
        )
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(
            f"{filename} is not a readable ONNX model (damaged or not an .onnx file): {_line(exc)}"
        ) from None
    if not model.HasField("graph") or not model.graph.node or model.ir_version < 1:
        raise ValueError(f"{filename} is not a readable ONNX model: it holds no graph (damaged or not an .onnx file)")
    refuse_external_data(model, filename)
    refuse_custom_domains(model, filename)
    refuse_training(model, filename)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, or a C++ error surfacing as another type
        raise ValueError(f"{filename} is not a valid ONNX model: {_line(exc)}") from None
    return model


def _line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every sub-graph inside it (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    yield from graphs(body)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    for body in graphs(graph):
        yield from body.initializer
        for sparse in body.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in body.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    yield attribute.t
                elif attribute.type == onnx.AttributeProto.TENSORS:
                    yield from attribute.tensors
                elif attribute.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)


def refuse_external_data(model: onnx.ModelProto, filename: str) -> None:
    """ValueError if any tensor lives in an external data file."""
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "?")
            raise ValueError(
                f"refused: {filename} keeps its weights in external data files (tensor {tensor.name!r} in "
                f"{location!r}); only self-contained .onnx files are read (re-export with the weights inside, "
                "e.g. onnx.save(model, path, save_as_external_data=False))"
            )


def refuse_custom_domains(model: onnx.ModelProto, filename: str) -> None:
    """ValueError naming the first operator (or model-local function) of a non-standard domain."""
    for body in graphs(model.graph):
        for node in body.node:
            if node.domain not in STANDARD_DOMAINS:
                raise ValueError(
                    f"refused: {filename} uses the operator {node.op_type!r} of the custom domain {node.domain!r}; "
                    f"only standard ONNX operators (domains {', '.join(repr(d) for d in STANDARD_DOMAINS)}) are run"
                )
    for function in model.functions:
        raise ValueError(
            f"refused: {filename} defines its own operator {function.name!r} (domain {function.domain!r}); "
            "only standard ONNX operators are run"
        )
    for opset in model.opset_import:
        if opset.domain not in STANDARD_DOMAINS:
            raise ValueError(
                f"refused: {filename} imports the custom operator domain {opset.domain!r}; "
                "only standard ONNX operators are run"
            )


def refuse_training(model: onnx.ModelProto, filename: str) -> None:
    """ValueError for a training graph (training_info, or normalization/dropout in training mode)."""
    if len(model.training_info):
        raise ValueError(f"refused: {filename} is a training graph (it has a training section); export the model "
                         "for inference")
    for body in graphs(model.graph):
        switched_on = _true_flags(body)
        for node in body.node:
            batch_norm = node.op_type == "BatchNormalization" and any(
                a.name == "training_mode" and a.i for a in node.attribute
            )
            dropout = node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] in switched_on
            if batch_norm or dropout:
                raise ValueError(
                    f"refused: {filename} was exported in training mode ({node.op_type} {node.name!r} "
                    "behaves differently per batch); export the model for inference (e.g. model.eval())"
                )


def _true_flags(graph: onnx.GraphProto) -> set[str]:
    """Names of the graph's boolean initializers that hold True (Dropout's training_mode)."""
    found = set()
    for tensor in graph.initializer:
        if tensor.data_type == onnx.TensorProto.BOOL:
            try:
                if onnx.numpy_helper.to_array(tensor).any():
                    found.add(tensor.name)
            except Exception:  # noqa: BLE001 - a malformed flag is left to the checker
                continue
    return found
