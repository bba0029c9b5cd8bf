"""Tiny Keras models whose CAMs can be computed by hand."""

from __future__ import annotations

import keras
import numpy as np


def linear_head_model(h: int = 4, w: int = 4, channels: int = 3, classes: int = 3, activation: str = "softmax", seed: int = 0):
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
