"""Numeric precision of the model passes: may bf16 be used here, and a bf16 copy of a model.

bfloat16 (8-bit exponent like float32, 8-bit mantissa) halves the bytes a forward pass
moves and, on CPUs with AMX-BF16, runs convolutions and matmuls on dedicated units
(VGG16's forward 6.3x faster than fp32, measured here). But the instructions' presence
does not make them fast: with AVX512-BF16 and no AMX the same copy was 1.8x *slower*,
and without any bf16 instruction oneDNN emulates it, 3.8-8x slower. So the CPU's flags
only rule bf16 out (:func:`detect_bf16`); ``auto`` measures the model before choosing it
(:mod:`camcore.autoprecision`).

The copy follows Keras's mixed-precision recipe (Micikevicius et al. 2018, "Mixed
Precision Training", sec. 3; Kalamkar et al. 2019 for bfloat16): every layer computes
in bfloat16 and keeps float32 variables, except the head that produces the class
scores, which stays float32 so the scores leave the model as float32 and lose no
further mantissa bits where Score-CAM compares them.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    import keras

PRECISIONS = ("fp32", "bf16", "auto")
BF16_POLICY = "mixed_bfloat16"

# CPU flags (Linux /proc/cpuinfo names) under which oneDNN runs bf16 natively.
_NATIVE_FLAGS = ("amx_bf16", "avx512_bf16")

__all__ = ["BF16_POLICY", "PRECISIONS", "Bf16Support", "bf16_copy", "detect_bf16", "resolve_precision"]


@dataclass(frozen=True)
class Bf16Support:
    """Whether this machine has bf16 instructions TensorFlow can reach (``native``; False rules
    bf16 out, True leaves the choice to a measurement), and what showed it."""

    native: bool
    reason: str


def _runtime_veto(environ: Mapping[str, str]) -> str | None:
    """A reason TensorFlow will not reach the bf16 units even if the CPU has them."""
    if environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip() == "0":
        # Without oneDNN, TensorFlow's CPU bf16 kernels are Eigen's emulation.
        return "TF_ENABLE_ONEDNN_OPTS=0 (oneDNN off: bf16 is emulated)"
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = environ.get(name, "").strip().upper()
        # Every oneDNN ISA level that includes bf16 says so (…_BF16, …_AMX…, AVX10_…).
        if cap and cap not in ("ALL", "DEFAULT") and not any(
            tag in cap for tag in ("BF16", "AMX", "AVX10")
        ):
            return f"{name}={cap} caps oneDNN below bf16"
    return None


def support_from_cpuinfo(cpuinfo: str, environ: Mapping[str, str] | None = None) -> Bf16Support | None:
    """bf16 support read from the text of Linux ``/proc/cpuinfo``.

    None when the text has no x86 ``flags`` line (e.g. ARM lists ``Features``), where
    the flags cannot tell whether TensorFlow's kernels use the instructions.
    """
    environ = os.environ if environ is None else environ
    flags: set[str] | None = None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    if flags is None:
        return None
    found = [flag for flag in _NATIVE_FLAGS if flag in flags]
    if not found:
        return Bf16Support(False, "no avx512_bf16/amx_bf16 in /proc/cpuinfo")
    veto = _runtime_veto(environ)
    if veto is not None:
        return Bf16Support(False, f"cpu flags {', '.join(found)}, but {veto}")
    return Bf16Support(True, f"cpu flags {', '.join(found)}")


@functools.cache
def detect_bf16() -> Bf16Support:
    """Whether this machine's flags leave bf16 possible; computed once per process.

    Linux x86: the CPU flags ``avx512_bf16`` / ``amx_bf16`` (what oneDNN dispatches on).
    ``native`` False rules bf16 out: ``auto`` is fp32 at once. ``native`` True says only
    that the instructions exist: whether they are *fast* is measured on the model
    (:mod:`camcore.autoprecision`; on a Xeon with AVX512-BF16 but no AMX, bf16 was 1.8x
    slower than fp32). Where no flag list exists (ARM), bf16 is left to the measurement too.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            support = support_from_cpuinfo(handle.read())
    except OSError:
        support = None
    if support is not None:
        return support
    veto = _runtime_veto(os.environ)
    if veto is not None:
        return Bf16Support(False, veto)
    return Bf16Support(True, f"no CPU flag list on {platform.machine()}: measured on the model")


def resolve_precision(precision: str) -> str:
    """What ``precision`` is without measuring a model: "fp32" and "bf16" as asked; "auto" is
    "fp32" where the CPU's flags rule bf16 out, the value of ``CAMSTUDIO_AUTO_PRECISION``
    where set, and stays "auto" (measured per model, layer and input shape by the
    :class:`~camcore.Explainer`, see :mod:`camcore.autoprecision`) otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    from camcore.autoprecision import forced_verdict

    forced = forced_verdict()
    if forced is not None:
        return forced.precision
    return "auto" if detect_bf16().native else "fp32"


# --------------------------------------------------------------------- bf16 copy
def _is_graph_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model) and (
        isinstance(layer, keras.Sequential) or hasattr(layer, "_run_through_graph")
    )


def _head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers that produce the class scores, walking back from the output.

    The output layer, and while it holds no weights (a bare softmax/sigmoid, whose
    input the adapter reads as the score), the layer feeding it, up to the first layer
    with weights. Nested models are entered, as the adapter does.
    """
    import keras

    head: list[keras.layers.Layer] = []
    tensor = model.outputs[0]
    while True:
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return head
        layer = history.operation
        if _is_graph_model(layer):
            tensor = layer.outputs[0]
            continue
        if isinstance(layer, keras.layers.InputLayer):
            return head
        head.append(layer)
        if layer.weights:
            return head
        inputs = layer._inbound_nodes[history.node_index].input_tensors
        if len(inputs) != 1:
            return head
        tensor = inputs[0]


def _layer_paths(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """(path, layer) for every layer but inputs, nested models entered and listed too."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue  # clone_model renames input layers; no path names them
        path = prefix + layer.name
        yield path, layer
        if _is_graph_model(layer):
            yield from _layer_paths(layer, path + "/")


# Lines of Keras's wrapped call errors that frame the cause instead of stating it.
_FRAMING = ("Exception encountered when calling", "Could not automatically infer", "Arguments received", "•")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """The line of an error message that states the cause."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    cause = [line for line in lines if not line.startswith(_FRAMING)]
    text = (cause or lines or [""])[0]
    if len(text) > 240:
        text = text[:237] + "..."
    return f"{type(exc).__name__}: {text}".rstrip(": ")


def _failing_layer(exc: BaseException) -> str:
    """The layer a Keras call error names ("layer 'x' (Cls)"), else "the model"."""
    text = _ANSI.sub("", str(exc))
    named = re.search(r"of '([^']+)' \(of type (\w+)\)", text)
    if named:
        return f"layer {named.group(1)!r} ({named.group(2)})"
    called = re.search(r"calling (\w+)\.call\(\)", text)
    return f"a {called.group(1)} layer" if called else "the model"


class _LayerError(Exception):
    """A layer whose config cannot be rebuilt under the bf16 policy."""

    def __init__(self, layer: Any, cause: BaseException) -> None:
        self.reason = (
            f"layer {layer.name!r} ({type(layer).__name__}) cannot be rebuilt in bf16: "
            f"{_first_line(cause)}"
        )
        super().__init__(self.reason)


def bf16_copy(model: keras.Model) -> tuple[keras.Model | None, str]:
    """A copy of ``model`` computing in bfloat16 with float32 variables, or (None, why not).

    Every layer of the copy gets Keras's "mixed_bfloat16" policy in its own config
    (nothing process-global changes), except the head (see ``_head_layers``), which
    stays float32: the copy's output is float32. Same weights, same layer names, same
    nesting, so layer paths such as "vgg16/block5_conv3" resolve in both. The user's
    model is not modified. A layer that cannot be rebuilt this way gives
    ``(None, "one-line reason")``; on success the string describes the copy.
    """
    if not _is_graph_model(model) or not getattr(model, "built", False):
        return None, f"{type(model).__name__} is not a built Functional or Sequential model"
    try:
        head_ids = {id(layer) for layer in _head_layers(model)}
    except Exception as exc:
        return None, f"cannot find the model's head: {_first_line(exc)}"
    copy, failure = _clone_in_bf16(model, head_ids)
    if copy is None:
        return None, failure
    failure = _copy_weights(model, copy)
    if failure:
        return None, failure
    out_dtype = str(copy.outputs[0].dtype)
    if out_dtype != "float32":
        return None, f"the bf16 copy outputs {out_dtype}, not float32"
    n_bf16 = sum(
        1
        for _, layer in _layer_paths(copy)
        if not _is_graph_model(layer) and layer.dtype_policy.name == BF16_POLICY
    )
    head = ", ".join(layer.name for layer in _head_layers(copy)) or "none"
    return copy, f"{n_bf16} layers in {BF16_POLICY}; head float32 ({head})"


def _clone_in_bf16(model: keras.Model, head_ids: set[int]) -> tuple[keras.Model | None, str]:
    """The model's architecture with every layer but the head under the bf16 policy."""
    import keras

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        try:
            config = layer.get_config()
            config["dtype"] = "float32" if id(layer) in head_ids else BF16_POLICY
            for key, value in config.items():
                # Every variable is overwritten with the model's own values afterwards:
                # drawing random initial values first cost seconds on VGG16's 138M.
                if key.endswith("_initializer") and isinstance(value, dict) and "class_name" in value:
                    config[key] = "zeros"
            if isinstance(layer, keras.layers.Lambda):
                # The config's bytecode was serialized a moment ago from the user's own
                # live function, so Keras's guard against untrusted lambdas has nothing
                # to guard here.
                return type(layer).from_config(config, safe_mode=False)
            return type(layer).from_config(config)
        except Exception as exc:
            raise _LayerError(layer, exc) from exc

    try:
        return keras.models.clone_model(model, clone_function=clone_layer, recursive=True), ""
    except _LayerError as err:
        return None, err.reason
    except Exception as exc:
        return None, f"{_failing_layer(exc)} cannot be rebuilt in bf16: {_first_line(exc)}"


def _copy_weights(model: keras.Model, copy: keras.Model) -> str:
    """The model's weights into its copy, layer by layer; "" or why they do not fit."""
    import keras

    source_layers = list(_layer_paths(model))
    copy_layers = list(_layer_paths(copy))
    if [path for path, _ in source_layers] != [path for path, _ in copy_layers]:
        return "the bf16 copy's layer paths differ from the model's"
    for (path, source), (_, target) in zip(source_layers, copy_layers):
        if _is_graph_model(source):
            continue  # its layers are listed and copied one by one
        if [tuple(v.shape) for v in source.weights] != [tuple(v.shape) for v in target.weights]:
            return f"layer {path!r}: its bf16 copy has different weights"
        try:
            for variable, value in zip(target.weights, source.weights):
                # variable to variable, no numpy round trip; a cast only if the user's
                # layer keeps low-precision variables itself
                if value.dtype != variable.dtype:
                    value = keras.ops.cast(value, variable.dtype)
                variable.assign(value)
        except Exception as exc:
            return f"layer {path!r}: weights do not fit its bf16 copy: {_first_line(exc)}"
    return ""
