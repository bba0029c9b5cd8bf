"""bf16 detection, the precision choice, and the bf16 copy of a model."""

import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
import tensorflow as tf
from toy_models import small_convnet

from camcore import precision
from camcore.adapter import ModelAdapter
from camcore.precision import Bf16Support, bf16_copy, detect_bf16, resolve_precision, support_from_cpuinfo

X86_BASE = "fpu vme sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni"


def cpuinfo(flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n"


def rel_error(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(reference - other).max() / np.abs(reference).max())


def logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return ModelAdapter(model).forward(tf.constant(x))[1].numpy()


# ------------------------------------------------------------------ detection
@pytest.mark.parametrize(
    "flags, native, named",
    [
        (X86_BASE + " amx_bf16 amx_tile avx512_bf16", True, ["amx_bf16", "avx512_bf16"]),
        (X86_BASE + " avx512_bf16", True, ["avx512_bf16"]),
        (X86_BASE, False, []),
        # flags that merely contain the letters do not count
        (X86_BASE + " avx512_bf16x amx_bf16_lite", False, []),
    ],
)
def test_cpu_flags_decide_on_x86(flags, native, named):
    support = support_from_cpuinfo(cpuinfo(flags), environ={})
    assert support == Bf16Support(native, support.reason)
    for flag in named:
        assert flag in support.reason
    if not native:
        assert support.reason == "no avx512_bf16/amx_bf16 in /proc/cpuinfo"


def test_no_x86_flag_line_leaves_it_to_the_benchmark():
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU implementer\t: 0x41\n"
    assert support_from_cpuinfo(arm, environ={}) is None
    assert support_from_cpuinfo("", environ={}) is None


@pytest.mark.parametrize(
    "environ, native",
    [
        ({"TF_ENABLE_ONEDNN_OPTS": "0"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, False),
        ({"DNNL_MAX_CPU_ISA": "avx2"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "ALL", "TF_ENABLE_ONEDNN_OPTS": "1"}, True),
    ],
)
def test_runtime_settings_can_keep_bf16_units_out_of_reach(environ, native):
    support = support_from_cpuinfo(cpuinfo(X86_BASE + " avx512_bf16"), environ=environ)
    assert support.native is native
    if not native:
        assert next(iter(environ)) in support.reason


def test_detection_on_this_machine_follows_its_cpu_flags():
    support = detect_bf16()
    assert isinstance(support, Bf16Support) and support.reason
    assert detect_bf16() is support  # a fact of the machine: computed once
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            from_flags = support_from_cpuinfo(handle.read())
        if from_flags is not None:
            assert support == from_flags


def test_without_a_flag_list_bf16_is_left_to_the_measurement(monkeypatch):
    detect = precision.detect_bf16.__wrapped__  # bypass the per-process cache
    monkeypatch.setattr(precision, "support_from_cpuinfo", lambda text: None)
    for name in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    support = detect()
    assert support.native and "measured on the model" in support.reason
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert not detect().native


# ---------------------------------------------------------- precision choice
def test_explicit_precisions_are_kept_whatever_the_cpu(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(precision, "detect_bf16", lambda n=native: Bf16Support(n, "test"))
        assert resolve_precision("fp32") == "fp32"
        assert resolve_precision("bf16") == "bf16"


def test_flags_rule_bf16_out_never_in(monkeypatch):
    """Without a measurement, auto is fp32 where the flags rule bf16 out and stays "auto" (to be
    measured on the model) where they allow it - even with amx_bf16: flags are not speed."""
    monkeypatch.delenv("CAMSTUDIO_AUTO_PRECISION", raising=False)
    monkeypatch.setattr(precision, "detect_bf16", lambda: Bf16Support(True, "cpu flags amx_bf16"))
    assert resolve_precision("auto") == "auto"
    monkeypatch.setattr(precision, "detect_bf16", lambda: Bf16Support(False, "no avx512_bf16/amx_bf16"))
    assert resolve_precision("auto") == "fp32"
    monkeypatch.setenv("CAMSTUDIO_AUTO_PRECISION", "bf16")  # forced: tests run the bf16 path anywhere
    assert resolve_precision("auto") == "bf16"


@pytest.mark.parametrize("bad", ["fp16", "FP32", "bfloat16", "", None, 32])
def test_unknown_precision_names_the_choices(bad):
    with pytest.raises(ValueError, match="fp32, bf16, auto"):
        resolve_precision(bad)


# ------------------------------------------------------------------ bf16 copy
@pytest.fixture(scope="module")
def convnet():
    model = small_convnet(size=32, channels=16, classes=5, seed=3)
    # Spread the logits as a trained net's are (random weights give ~1e-2 logits).
    dense = model.get_layer("predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 50.0, bias])
    x = np.random.default_rng(0).uniform(0.0, 1.0, (8, 32, 32, 3)).astype(np.float32)
    return model, x


def test_copy_computes_in_bf16_close_to_fp32(convnet):
    model, x = convnet
    copy, note = bf16_copy(model)
    assert copy is not None, note
    for name in ("conv1", "conv2", "gap"):
        layer = copy.get_layer(name)
        assert layer.dtype_policy.name == "mixed_bfloat16"
        assert layer.compute_dtype == "bfloat16"
        assert all(v.dtype == "float32" for v in layer.weights)
    assert copy.get_layer("predictions").dtype_policy.name == "float32"
    assert copy.outputs[0].dtype == "float32"
    assert np.asarray(copy(x)).dtype == np.float32

    reference, low = logits(model, x), logits(copy, x)
    error = rel_error(reference, low)
    assert 0.0 < error < 2e-2  # not zero: the convs really ran in bf16
    assert np.corrcoef(reference.ravel(), low.ravel())[0, 1] > 0.999
    assert (reference.argmax(1) == low.argmax(1)).mean() >= 0.75


def test_copy_has_the_same_weights_and_names(convnet):
    model, _ = convnet
    copy, _ = bf16_copy(model)
    assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    assert copy.name == model.name
    for source, target in zip(model.layers, copy.layers):
        assert source is not target
        for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        # separate variables: training or editing the copy never reaches the user's model
        assert not {id(v) for v in source.weights} & {id(v) for v in target.weights}


def test_user_model_and_process_are_untouched(convnet):
    model, x = convnet
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers}
    weights = [w.copy() for w in model.get_weights()]
    nodes = {layer.name: len(layer._inbound_nodes) for layer in model.layers}
    before = np.asarray(model(x))

    copy, _ = bf16_copy(model)
    assert copy is not None
    copy(x)

    assert {layer.name: layer.dtype_policy.name for layer in model.layers} == policies
    assert set(policies.values()) == {"float32"}
    for a, b in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == nodes
    np.testing.assert_array_equal(np.asarray(model(x)), before)
    # no process-global policy: layers made from now on still compute in float32
    assert keras.config.dtype_policy().name == "float32"
    assert keras.layers.Dense(2).compute_dtype == "float32"


@pytest.fixture(scope="module")
def nested_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((24, 24, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Conv2D(12, 3, activation="relu", name="conv_b")(h)
    backbone = keras.Model(inp, h, name="backbone")
    model = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="predictions"),
        ],
        name="outer",
    )
    # non-trivial batch-norm statistics, so that copying them is tested
    bn = backbone.get_layer("bn")
    rng = np.random.default_rng(2)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    return model


def test_nested_backbone_keeps_its_paths(nested_model):
    copy, note = bf16_copy(nested_model)
    assert copy is not None, note
    inner = copy.get_layer("backbone")
    assert isinstance(inner, keras.Model) and inner is not nested_model.get_layer("backbone")
    assert inner.get_layer("conv_b").compute_dtype == "bfloat16"
    np.testing.assert_array_equal(
        inner.get_layer("bn").get_weights()[2], nested_model.get_layer("backbone").get_layer("bn").get_weights()[2]
    )

    fp32, bf16 = ModelAdapter(nested_model), ModelAdapter(copy)
    assert bf16.layers == fp32.layers
    assert bf16.head == fp32.head
    x = tf.constant(np.random.default_rng(3).uniform(0, 1, (2, 24, 24, 3)).astype(np.float32))
    act32, scores32 = fp32.forward(x, capture="backbone/conv_b")
    act16, scores16 = bf16.forward(x, capture="backbone/conv_b")
    assert scores16.dtype == tf.float32
    assert rel_error(act32.numpy(), tf.cast(act16, tf.float32).numpy()) < 2e-2
    assert rel_error(scores32.numpy(), scores16.numpy()) < 2e-2


def test_a_bare_softmax_head_keeps_its_scoring_layer_float32():
    keras.utils.set_random_seed(4)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inp, keras.layers.Activation("softmax", name="softmax")(h))
    copy, note = bf16_copy(model)
    assert copy is not None, note
    assert copy.get_layer("conv").compute_dtype == "bfloat16"
    assert copy.get_layer("flat").compute_dtype == "bfloat16"
    assert copy.get_layer("logits").compute_dtype == "float32"
    assert copy.get_layer("softmax").compute_dtype == "float32"
    adapter = ModelAdapter(copy)
    assert adapter.head.skip  # the adapter reads the scores at the Dense: they are float32
    assert adapter.forward(tf.zeros((1, 16, 16, 3)))[1].dtype == tf.float32


def test_a_python_lambda_layer_is_copied():
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Lambda(lambda t: t * 2.0 - 1.0, name="scale")(inp)
    h = keras.layers.Conv2D(4, 3, name="conv")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h)))
    copy, note = bf16_copy(model)
    assert copy is not None, note
    x = np.random.default_rng(5).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    assert rel_error(np.asarray(model(x)), np.asarray(copy(x))) < 2e-2


class _Float32Offset(keras.layers.Layer):
    """Adds a float32 constant: fine in float32, a dtype error in bf16."""

    def call(self, inputs):
        return inputs + tf.constant(1.0, tf.float32)


class _NoConfig(keras.layers.Layer):
    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.table = table  # not a basic type: Keras cannot record it in the config

    def call(self, inputs):
        return inputs * self.table[0]

    def get_config(self):
        raise NotImplementedError("no config")


@pytest.mark.parametrize(
    "exotic, name",
    [(lambda: _Float32Offset(name="offset"), "offset"), (lambda: _NoConfig([2.0], name="tabled"), "tabled")],
)
def test_an_unconvertible_layer_gives_a_reason_not_an_error(exotic, name):
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(exotic()(inp))
    model = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h)))
    copy, reason = bf16_copy(model)
    assert copy is None
    assert name in reason and "\n" not in reason and len(reason) < 400


def test_a_subclassed_model_gives_a_reason():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    copy, reason = bf16_copy(net)
    assert copy is None and "Net" in reason


def test_a_compiled_model_is_copied(convnet):
    model, x = convnet
    compiled = keras.models.clone_model(model)
    compiled.set_weights(model.get_weights())
    compiled.compile(optimizer="adam", loss="categorical_crossentropy")
    copy, note = bf16_copy(compiled)
    assert copy is not None, note
    assert rel_error(logits(model, x), logits(copy, x)) < 2e-2


def test_concurrent_copies_are_independent_and_equal(convnet):
    model, x = convnet
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: bf16_copy(model), range(4)))
    copies = [copy for copy, _ in results]
    assert all(copy is not None for copy in copies), [note for _, note in results]
    assert len({id(copy) for copy in copies}) == 4
    first = logits(copies[0], x)
    for copy in copies[1:]:
        np.testing.assert_array_equal(logits(copy, x), first)
