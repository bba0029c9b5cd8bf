"""Tiny Keras models whose CAMs can be computed by hand."""

from __future__ import annotations

import keras
import numpy as np


def linear_head_model(
    h: int = 4, w: int = 4, channels: int = 3, classes: int = 3, activation: str = "softmax", seed: int = 0
):
    """x → feat (identity, so A = x) → GAP → Dense(classes, activation).

    The logit is z_c = sum_k W_kc mean_ij A^k_ij + b_c, so dz_c/dA^k_ij = W_kc / (h·w).
    """
    rng = np.random.default_rng(seed)
    inp = keras.Input((h, w, channels), name="image")
    feat = keras.layers.Activation("linear", name="feat")(inp)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(feat)
    dense = keras.layers.Dense(classes, activation=activation, name="predictions")
    out = dense(pooled)
    model = keras.Model(inp, out, name="linear_head")
    kernel = rng.normal(size=(channels, classes)).astype(np.float32)
    bias = rng.normal(size=(classes,)).astype(np.float32) * 0.1
    dense.set_weights([kernel, bias])
    return model, kernel, bias


def small_convnet(size: int = 16, channels: int = 6, classes: int = 3, seed: int = 0, name: str = "convnet"):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(classes, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name=name)


def strided_convnet(size: int = 16, channels: int = 6, classes: int = 3, seed: int = 0, name: str = "strided"):
    """image (size) → conv1 (stride 2, ReLU; size/2) → conv2 (stride 2, ReLU; size/4) → GAP
    → Dense(softmax). Two layers at two resolutions, both below the input's (fusion)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    h = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(classes, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name=name)


def nested_backbone_model(size: int = 12, channels: int = 5, classes: int = 3, seed: int = 0):
    """Sequential([image, inner, GAP, Dense(softmax)]) with ``inner`` a functional
    conv1 → conv2 → conv3 (ReLU) backbone nested as one layer: "inner/conv2" is a
    layer inside the nested model with a nonlinear path (conv3) after it."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="inner_image")
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv3")(h)
    inner = keras.Model(inp, h, name="inner")
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            inner,
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(classes, activation="softmax", name="predictions"),
        ],
        name="nested",
    )


class PassCounter(keras.layers.Layer):
    """Identity layer that adds its batch size to ``count`` every time the graph runs.

    The counter is a variable updated inside the graph, so it counts real executions of
    compiled passes, not Python-side traces (which happen once per signature).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64", name="count")

    def call(self, x):
        self.count.assign_add(keras.ops.cast(keras.ops.shape(x)[0], "int64"))
        return x

    def images(self) -> int:
        return int(keras.ops.convert_to_numpy(self.count))


def counted_convnet(size: int = 12, channels: int = 6, classes: int = 3, seed: int = 0, dead=(), constant=None):
    """``small_convnet`` with a :class:`PassCounter` right after the input: every image
    that enters the model (activations, gradients, masked passes) is counted.

    ``dead`` channels of ``conv2`` are all zero; ``constant`` maps channel -> constant value.
    Returns (model, counter).
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    counter = PassCounter(name="pass_counter")
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv1")(counter(inp))
    conv2 = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="conv2")
    h = conv2(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(classes, activation="softmax", name="predictions")(h)
    model = keras.Model(inp, out, name="counted")
    kernel, bias = conv2.get_weights()
    for k in dead:
        kernel[..., k] = 0.0
        bias[k] = 0.0
    for k, value in (constant or {}).items():
        kernel[..., k] = 0.0
        bias[k] = value
    conv2.set_weights([kernel, bias])
    return model, counter


def pooled_model(
    head: str = "softmax", units: int = 3, size: int = 16, pool: int = 4, channels: int = 5, seed: int = 0,
    gain: float = 0.2,
):
    """input (size², 2) -> conv "feat" (relu) -> AveragePooling(pool) "pooled" ->
    conv "mix" (relu) -> GAP, concatenated with the flattened input -> Dense(units, head).

    The explained layer "pooled" is ``pool`` times coarser than the input, so Score-CAM
    must upsample its maps (the usual case: 14×14 -> 224² on VGG16). The head also reads
    every input pixel (weights ~ N(0, gain²)), so the class scores of a masked input
    depend on the mask pixel by pixel, not only on its coarse layout.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 2), name="image")
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="feat")(inp)
    h = keras.layers.AveragePooling2D(pool, name="pooled")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="mix")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Concatenate(name="features")([h, keras.layers.Flatten(name="pixels")(inp)])
    dense = keras.layers.Dense(units, activation=head, name="predictions")
    out = dense(h)
    model = keras.Model(inp, out, name=f"pooled_{head}_{units}")
    kernel, bias = dense.get_weights()
    kernel = np.random.default_rng(seed).normal(0.0, gain, kernel.shape).astype(np.float32)
    dense.set_weights([kernel, bias])
    return model
