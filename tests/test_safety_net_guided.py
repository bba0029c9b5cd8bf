"""Guided backpropagation through ReLU *layers* (``keras.layers.ReLU``, and ReLU6 as in
MobileNet via ``ReLU(max_value=6)``), not only through ``Dense(activation="relu")``.

Closed form (Springenberg et al. 2015, eq. 6): for y = sum_j v_j f(z_j) with z = U x
(a 1×1 convolution) and f a ReLU layer, the guided gradient is
sum_j relu(v_j) f'(z_j) U_j, where f'(z) = [z > 0] for ReLU and [0 < z < 6] for ReLU6;
the plain gradient keeps v_j's sign.
"""

import keras
import numpy as np
import pytest

import camcore

SIZE, CHANNELS, UNITS = 4, 3, 5


def conv_relu_layer_model(relu: keras.layers.Layer, u: np.ndarray, v: np.ndarray) -> keras.Model:
    inp = keras.Input((SIZE, SIZE, CHANNELS))
    conv = keras.layers.Conv2D(UNITS, 1, use_bias=False, name="conv")
    head = keras.layers.Dense(1, use_bias=False, name="head")
    out = head(keras.layers.Flatten()(relu(conv(inp))))
    model = keras.Model(inp, out)
    conv.set_weights([u.reshape(1, 1, CHANNELS, UNITS)])
    head.set_weights([v.reshape(-1, 1)])
    return model


def closed_form(x, u, v, gate):
    """(guided, plain) input gradients of y = sum v * f(x U) with f' = ``gate``(z)."""
    z = x[0] @ u  # (SIZE, SIZE, UNITS)
    v = v.reshape(SIZE, SIZE, UNITS)
    active = gate(z).astype(np.float64)
    guided = (active * np.maximum(v, 0.0)) @ u.T
    plain = (active * v) @ u.T
    return guided, plain, z


@pytest.mark.parametrize(
    "relu, gate",
    [
        (keras.layers.ReLU(name="relu"), lambda z: z > 0),
        (keras.layers.ReLU(max_value=6.0, name="relu6"), lambda z: (z > 0) & (z < 6)),
    ],
    ids=["ReLU", "ReLU6"],
)
def test_guided_backprop_gates_relu_layers(relu, gate):
    rng = np.random.default_rng(7)
    u = rng.normal(0.0, 2.0, (CHANNELS, UNITS)).astype(np.float32)
    v = rng.normal(0.0, 1.0, SIZE * SIZE * UNITS).astype(np.float32)
    x = rng.normal(0.0, 1.5, (1, SIZE, SIZE, CHANNELS)).astype(np.float32)
    model = conv_relu_layer_model(relu, u, v)
    guided, plain, z = closed_form(x, u, v, gate)
    active = gate(z)
    # the case must exercise the gate: active units with negative v, and for ReLU6 some
    # units above the cap
    assert (active & (v.reshape(z.shape) < 0)).sum() >= 5
    if relu.max_value is not None:
        assert (z >= 6).sum() >= 3
    assert np.abs(guided - plain).max() > 0.5
    got = camcore.guided_backprop(model, x, 1)  # one linear unit: class 1 is the unit
    assert got.shape == (SIZE, SIZE, CHANNELS)
    np.testing.assert_allclose(got, guided, rtol=1e-5, atol=1e-5)
