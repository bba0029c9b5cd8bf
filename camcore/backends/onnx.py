"""The ONNX backend: an ``.onnx`` classifier run by ONNX Runtime (CPU execution provider),
serving the gradient-free methods (Score-CAM, Faster-Score-CAM, Ablation-CAM, Eigen-CAM).

    >>> backend = read_onnx_bytes(Path("vgg_defect.onnx").read_bytes(), "vgg_defect.onnx")
    >>> explainer = camcore.Explainer(backend)
    >>> explainer.compute("score_cam", x, backend.default_layer).cam.shape
    (56, 56)

What it decides, and how:

* **Layers** are the graph's 4-D float tensors between the image and the scores, in graph
  order, named by tensor, with shapes from ONNX shape inference (a dry pass measures any it
  cannot infer) and each tensor's layout propagated as :mod:`camcore.backends.onnx_graph`
  says (from the operators that fix NCHW, through layout-keeping operators and Transposes);
  a tensor whose layout cannot be told is not offered. The engine always sees NHWC input
  batches and (h, w, K) activations: NCHW tensors are transposed on the way in and out.
* **Scores** are pre-softmax / pre-sigmoid: where the output is a Softmax, LogSoftmax or
  Sigmoid (possibly behind Reshape/Flatten/Squeeze, or over a (1, classes, 1, 1) tensor after
  a global pooling), the node's input is read instead and ``probability_kind`` says which;
  a one-unit output z becomes the scores (-z, z) with a sigmoid, as for Keras models.
* **Passes**: activations by exposing the chosen tensor as an extra output (one session per
  set of outputs, the last few kept); masked inputs batched through the whole graph;
  Ablation-CAM through the sub-graph from the tensor to the scores, fed the gated
  activations, so the layers before the tensor run once per image (branches that leave
  before it and join after it are computed with the activations and fed alongside).
* **Batches**: every session is built with a free batch dimension, also for graphs that fix
  it (``torch.onnx.export`` without ``dynamic_axes`` fixes 1). Whether a batch of several
  images gives the rows each image gives alone is checked on the first call with two or more
  rows (at load for the whole graph); where it does not (a Reshape with the batch written
  into it), or where the free batch cannot even be built, that session runs one image per
  pass. Measured on the demo exports with their batch fixed at 1 (2-core AMD EPYC, loaded): a
  free batch of 16 ran 1.29-1.33× faster per image than one image per pass on resnet_defect
  (2.3 against 3.0 ms), 0.96-1.09× on vgg_defect, so the free batch is kept wherever it is safe.
* **Precision**: fp32 only. **Gradients**: none (the gradient family and guided backprop
  say "needs gradients — not available for ONNX models").
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from camcore.backends.base import Backend, LayerInfo
from camcore.backends.onnx_graph import (
    FLOAT,
    LAYOUTS,
    OnnxGraph,
    ancestors,
    descendants,
    extract,
    inferred_shapes,
    propagate_layouts,
    tail_side_inputs,
    tensor_input,
    with_input_dims,
)
from camcore.backends.onnx_read import read_onnx_model
from camcore.preprocess import PREPROCESSING_MODES

__all__ = ["OnnxBackend", "OnnxGraph", "OnnxPass", "read_onnx_bytes"]

BATCH = "batch"  # the name of the free batch dimension every session is built with
MAX_SESSIONS = 6  # layer and tail sessions kept (each holds its own copy of the weights it uses)


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 3] + "..."


QUIET = 4  # ONNX Runtime's log level "fatal": its errors come back as exceptions, and become messages


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run_options() -> ort.RunOptions:
    options = ort.RunOptions()
    options.log_severity_level = QUIET
    return options


class OnnxPass:
    """One ONNX Runtime session from fixed inputs to fixed outputs.

    ``rows`` feeds have one row per image; ``shared`` feeds belong to the one image every row
    derives from (a branch computed before the gated tensor): run batched, the float ones of
    batch 1 are repeated to every row. ``batched`` None is decided on the first call with two
    rows or more, by comparing the batched run of two rows with one row at a time.
    """

    def __init__(self, model: onnx.ModelProto, outputs: Sequence[str], batched: bool | None = None) -> None:
        self.session = _session(model)
        self.outputs = list(outputs)
        self.batched = batched

    def run(self, rows: dict[str, np.ndarray], shared: dict[str, np.ndarray] | None = None,
            outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        shared = shared or {}
        outputs = list(outputs or self.outputs)
        n = len(next(iter(rows.values())))
        if n > 1 and self.batched is None:
            self.batched = self._batches_agree(rows, shared, outputs)
        if n == 1 or self.batched:
            return self._run(rows, shared, outputs, n)
        per_row = [self._run({k: v[i : i + 1] for k, v in rows.items()}, shared, outputs, 1) for i in range(n)]
        return [np.concatenate([row[j] for row in per_row]) for j in range(len(outputs))]

    def _run(self, rows: dict[str, np.ndarray], shared: dict[str, np.ndarray], outputs: list[str],
             n: int) -> list[np.ndarray]:
        feeds = dict(rows)
        for name, value in shared.items():
            tile = n > 1 and value.ndim >= 1 and value.shape[0] == 1 and np.issubdtype(value.dtype, np.floating)
            feeds[name] = np.repeat(value, n, axis=0) if tile else value
        return self.session.run(outputs, feeds, _run_options())

    def _batches_agree(self, rows: dict[str, np.ndarray], shared: dict[str, np.ndarray], outputs: list[str]) -> bool:
        two = {k: v[:2] for k, v in rows.items()}
        alone = [self._run({k: v[i : i + 1] for k, v in two.items()}, shared, outputs, 1) for i in range(2)]
        try:
            together = self._run(two, shared, outputs, 2)
        except Exception:  # noqa: BLE001 - a graph that cannot take two rows runs one at a time
            return False
        for j, value in enumerate(together):
            expected = np.concatenate([row[j] for row in alone])
            if value.shape != expected.shape:
                return False
            scale = 1.0 + float(np.abs(expected).max()) if expected.size else 1.0
            if not np.all(np.abs(value.astype(np.float64) - expected) <= 1e-4 * scale):
                return False
        return True


class OnnxBackend(Backend):
    """An ONNX image classifier on ONNX Runtime (see the module docstring).

    Args:
        model: an :class:`OnnxGraph`, a ``ModelProto`` or the bytes of an ``.onnx`` file
            (bytes are checked as :func:`~camcore.backends.onnx_read.read_onnx_model` says).
        input_size: (H, W) for a graph that leaves its input size free; a graph that fixes
            it accepts only its own.
        name: the file's name, for messages.

    ``preprocessing`` and ``class_names`` are what the file's metadata says (``metadata_props``
    entries "preprocessing" and "class_names"), else None. ValueError (a user message) for a
    graph that cannot be explained or fails its dry pass.
    """

    kind = "ONNX"
    capabilities = frozenset({"layer_tail"})
    precisions = ("fp32",)

    def __init__(self, model: OnnxGraph | onnx.ModelProto | bytes, input_size: tuple[int, int] | None = None, *,
                 name: str = "model.onnx") -> None:
        graph = _as_graph(model, name)
        self.graph, self.name = graph, graph.name
        height, width = _chosen_size(graph, input_size)
        if graph.image.channels is None:
            raise ValueError(f"{self.name}: the number of input channels is not fixed in the graph")
        self.input_shape = (height, width, int(graph.image.channels))
        self.layout = graph.image.layout
        self.preprocessing = graph.preprocessing(PREPROCESSING_MODES)
        self.class_names = graph.class_names()
        self.scores_tensor = graph.head.tensor
        self._model = with_input_dims(graph.model, graph.image.dims(BATCH, height, width))
        self._passes: OrderedDict[Any, OnnxPass] = OrderedDict()
        self._lock = threading.RLock()
        self._head: tuple[Any, list[np.ndarray]] | None = None
        self._sides: dict[str, list[str]] = {}
        self._forward = self._build_pass([graph.image.name], [self.scores_tensor], "forward")
        raw = self._dry_run()
        self._single_unit = raw.shape[1] == 1
        self.n_classes = 2 if self._single_unit else raw.shape[1]
        self.probability_kind = "sigmoid" if self._single_unit else graph.head.probability_kind
        self._layouts: dict[str, str] = {}
        self.layers = self._find_layers()

    @property
    def runs_batched(self) -> bool | None:
        """Whether whole-graph passes take several images at once (False: one image per pass)."""
        return self._forward.batched

    # ------------------------------------------------------------ building
    def _input_info(self, name: str, batch: int | str, example: np.ndarray | None) -> onnx.ValueInfoProto:
        """The declaration of a pass input: the image, or a tensor like ``example`` (its batch of 1
        made ``batch`` when it is a float tensor with one row per image)."""
        if name == self.graph.image.name:
            return tensor_input(name, self.graph.image.dims(batch, *self.input_shape[:2]))
        assert example is not None
        per_image = example.ndim >= 1 and example.shape[0] == 1 and np.issubdtype(example.dtype, np.floating)
        dims = [batch, *example.shape[1:]] if per_image else list(example.shape)
        return tensor_input(name, dims, _element(example))

    def _build_pass(self, inputs: Sequence[str], outputs: Sequence[str], what: str,
                    examples: dict[str, np.ndarray] | None = None) -> OnnxPass:
        """A pass from ``inputs`` to ``outputs``, with a free batch; where the graph fixes its batch
        and a free one cannot be built, one image per pass at the graph's own batch."""
        examples = examples or {}

        def model(batch: int | str) -> onnx.ModelProto:
            return extract(self._model, [self._input_info(n, batch, examples.get(n)) for n in inputs], outputs)

        try:
            return OnnxPass(model(BATCH), outputs)
        except Exception as free_failure:  # noqa: BLE001 - ONNX Runtime's own exception types
            fixed = self.graph.image.batch
            if fixed is None:
                raise ValueError(f"{self.name}: cannot build the {what} pass: {_first_line(free_failure)}") from None
            try:
                return OnnxPass(model(fixed), outputs, batched=False)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"{self.name}: cannot build the {what} pass: {_first_line(exc)}") from None

    def _dry_run(self) -> np.ndarray:
        """Raw scores (2, n) of a blank and a ramp image: the graph runs, its output is a vector of
        class scores, and whether batches agree with single images is decided here."""
        height, width, channels = self.input_shape
        ramp = np.linspace(0.0, 1.0, height * width * channels, dtype=np.float32).reshape(1, height, width, channels)
        batch = np.concatenate([np.zeros_like(ramp), ramp])
        try:
            raw = self._forward.run({self.graph.image.name: self._to_graph(batch)})[0]
        except Exception as exc:  # noqa: BLE001 - any failure of the user's graph is a user message
            raise ValueError(f"{self.name} cannot run on a {height}×{width} image: {_first_line(exc)}") from None
        raw = np.asarray(raw)
        if raw.ndim < 1 or raw.shape[0] != 2 or sum(d > 1 for d in raw.shape[1:]) > 1:
            raise ValueError(
                f"{self.name}: the output {self.scores_tensor!r} has shape {raw.shape[1:]} per image, not a vector "
                "of class scores (is it a classifier?)"
            )
        if not np.issubdtype(raw.dtype, np.floating):
            raise ValueError(f"{self.name}: the output {self.scores_tensor!r} holds {raw.dtype} values, "
                             "not class scores")
        return raw.reshape(2, -1)

    def _find_layers(self) -> list[LayerInfo]:
        """The 4-D float tensors between the image and the scores whose layout is known, in graph order."""
        graph = self.graph
        height, width = self.input_shape[:2]
        facts = inferred_shapes(with_input_dims(graph.model, graph.image.dims(1, height, width)))
        nodes = graph.model.graph
        between = descendants(nodes, [graph.image.name]) & ancestors(nodes, [self.scores_tensor])
        between.discard(graph.image.name)
        unknown = [n for n in between if n not in facts or None in facts[n][1]]
        facts.update(self._measured(unknown))
        ranks = {n: len(dims) for n, (_, dims) in facts.items()}
        self._layouts = propagate_layouts(graph.model.graph, ranks)
        self._layouts.setdefault(graph.image.name, self.layout)
        layers = []
        for node in graph.model.graph.node:
            for name in node.output:
                element, dims = facts.get(name, (0, ()))
                if name in between and element == FLOAT and len(dims) == 4 and self._layouts.get(name) in LAYOUTS:
                    h, w, c = (dims[2], dims[3], dims[1]) if self._layouts[name] == "NCHW" else dims[1:]
                    if None not in (h, w, c):
                        layers.append(LayerInfo(name, node.op_type, int(h), int(w), int(c)))
        return layers

    def _measured(self, names: Sequence[str]) -> dict[str, tuple[int, tuple]]:
        """(element type, shape at batch 1) of tensors shape inference left open, from one dry pass."""
        if not names:
            return {}
        names = sorted(names)
        probe = self._build_pass([self.graph.image.name], names, "shape")
        blank = np.zeros((1, *self.input_shape), np.float32)
        values = probe.run({self.graph.image.name: self._to_graph(blank)})
        return {n: (_element(v), tuple(int(d) for d in np.shape(v))) for n, v in zip(names, values)}

    def _pass(self, key: Any, build) -> OnnxPass:
        with self._lock:
            found = self._passes.get(key)
            if found is None:
                found = self._passes[key] = build()
                while len(self._passes) > MAX_SESSIONS:
                    self._passes.popitem(last=False)
            self._passes.move_to_end(key)
            return found

    # ------------------------------------------------------------ conversions
    def _to_graph(self, batch: np.ndarray) -> np.ndarray:
        """An NHWC batch as the graph's input (NCHW graphs get it transposed)."""
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(self.input_shape):
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(f"expected a batch of shape (B, {expected}), got {batch.shape}")
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else batch

    def _to_engine(self, activations: np.ndarray, layer: str) -> np.ndarray:
        """A tensor (B, ...) in its graph layout as (B, h, w, K)."""
        if self._layouts[layer] == "NCHW":
            return np.ascontiguousarray(activations.transpose(0, 2, 3, 1), dtype=np.float32)
        return np.asarray(activations, np.float32)

    def _gate(self, keep: np.ndarray, layer: str) -> np.ndarray:
        keep = np.asarray(keep, np.float32)
        return keep[:, :, None, None] if self._layouts[layer] == "NCHW" else keep[:, None, None, :]

    def _class_scores(self, raw: np.ndarray) -> np.ndarray:
        scores = np.asarray(raw, np.float32).reshape(len(raw), -1)
        return np.concatenate([-scores, scores], axis=1) if self._single_unit else scores

    @staticmethod
    def _check_precision(precision: str) -> None:
        if precision != "fp32":
            raise ValueError(f"ONNX models run at fp32 only, not {precision}")

    # ------------------------------------------------------------ passes
    def forward(self, batch: np.ndarray, precision: str = "fp32") -> np.ndarray:
        self._check_precision(precision)
        return self._class_scores(self._forward.run({self.graph.image.name: self._to_graph(batch)})[0])

    def activations(self, x: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
        self.layer_info(layer)
        head = self._run_head(x, layer)
        return self._to_engine(head[0], layer)[0], self._class_scores(head[1])[0]

    def ablated_scores(self, x: np.ndarray, layer: str, keep: np.ndarray, precision: str = "fp32") -> np.ndarray:
        """Scores with ``layer`` multiplied by ``keep`` (B, K): the head's outputs for ``x`` (kept
        from the last call on the same image and layer) gated and run through the tail only."""
        self._check_precision(precision)
        self.layer_info(layer)
        activations, scores, *sides = self._run_head(x, layer)
        shared = dict(zip(self._side_inputs(layer), sides))
        tail = self._pass(("tail", layer), lambda: self._tail_pass(layer, activations, scores, shared))
        gated = activations * self._gate(keep, layer)
        return self._class_scores(tail.run({layer: gated}, shared)[0])

    def _run_head(self, x: np.ndarray, layer: str) -> list[np.ndarray]:
        """[activations, raw scores, *side tensors] of one image, in the graph's layout; the last
        image's are kept, so Ablation-CAM's batches share one run of the layers before ``layer``."""
        x = self._to_graph(x)
        key = (layer, x.shape, hashlib.blake2b(x.tobytes(), digest_size=16).digest())
        with self._lock:
            if self._head is not None and self._head[0] == key:
                return self._head[1]
        outputs = [layer, self.scores_tensor, *self._side_inputs(layer)]
        head = self._pass(("head", layer),
                          lambda: self._build_pass([self.graph.image.name], outputs, f"{layer} output"))
        try:
            values = head.run({self.graph.image.name: x})
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own exception types
            raise ValueError(f"{self.name} failed on this image: {_first_line(exc)}") from None
        with self._lock:
            self._head = (key, values)
        return values

    def _side_inputs(self, layer: str) -> list[str]:
        """The tensors the graph after ``layer`` reads from branches that left before it."""
        with self._lock:
            found = self._sides.get(layer)
            if found is None:
                found = self._sides[layer] = tail_side_inputs(self.graph.model.graph, layer, self.scores_tensor,
                                                              self.graph.image.name)
            return found

    def _tail_pass(self, layer: str, activations: np.ndarray, scores: np.ndarray,
                   shared: dict[str, np.ndarray]) -> OnnxPass:
        """The sub-graph from ``layer`` (and the side branches) to the scores, checked to give the
        whole graph's scores on the ungated activations."""
        tail = self._build_pass([layer, *shared], [self.scores_tensor], f"{layer} → scores",
                                examples={layer: activations, **shared})
        again = tail.run({layer: activations}, shared)[0]
        scale = 1.0 + float(np.abs(scores).max())
        if again.shape != scores.shape or not np.all(np.abs(again - scores) <= 1e-4 * scale):
            raise ValueError(f"{self.name}: the graph after {layer!r} gives other scores when run on its own")
        return tail

    def missing(self, capability: str) -> str:
        what = "needs the model from the layer to the scores" if capability == "layer_tail" else "needs gradients"
        return f"{what} — not available for ONNX models"


def _element(value: np.ndarray) -> int:
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype))


def _as_graph(model: OnnxGraph | onnx.ModelProto | bytes, name: str) -> OnnxGraph:
    if isinstance(model, OnnxGraph):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        model = read_onnx_model(bytes(model), name)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected an OnnxGraph, an onnx.ModelProto or .onnx bytes, got {type(model).__name__}")
    return OnnxGraph.of(model, name)


def _chosen_size(graph: OnnxGraph, input_size: tuple[int, int] | None) -> tuple[int, int]:
    image = graph.image
    if image.height is not None and image.width is not None:  # not graph.variable_size
        size = (int(image.height), int(image.width))
        if input_size is not None and tuple(int(v) for v in input_size) != size:
            raise ValueError(f"{graph.name} fixes its input size at {size[0]}×{size[1]}, not "
                             f"{input_size[0]}×{input_size[1]}")
        return size
    if input_size is None:
        raise ValueError(f"{graph.name} accepts images of any height × width: choose an input size (H, W)")
    return int(input_size[0]), int(input_size[1])


def read_onnx_bytes(data: bytes, filename: str = "model.onnx") -> OnnxBackend | OnnxGraph:
    """The bytes of an ``.onnx`` file, checked (:func:`~camcore.backends.onnx_read.read_onnx_model`)
    and dry-run: an :class:`OnnxBackend`, or the :class:`OnnxGraph` of a graph that accepts any
    input size (``OnnxBackend(graph, input_size)`` finishes it). ValueError otherwise."""
    model = read_onnx_model(data, filename)
    try:
        graph = OnnxGraph.of(model, filename)
        return graph if graph.variable_size else OnnxBackend(graph)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        # the checker let through a graph this reader did not expect: still a message, not a traceback
        raise ValueError(f"{filename} could not be read as an image classifier ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from exc
