"""Model passes counted for real: a counter layer inside the model adds its batch size
every time the compiled graph runs, so these counts do not trust the library's own
``CamResult.model_passes`` (which is checked against them)."""

import keras
import numpy as np
from toy_models import counted_convnet

import camcore

SIZE = 12


def image(seed):
    return np.random.default_rng(seed).uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)


def channel_kinds(model, x, layer="conv2"):
    """(varying, constant non-zero, all-zero) channel counts of ``layer`` on ``x``."""
    activations = keras.Model(model.inputs, model.get_layer(layer).output).predict(x, verbose=0)[0]
    flat = activations.reshape(-1, activations.shape[-1])
    constant = flat.max(0) == flat.min(0)
    zero = constant & (flat.max(0) == 0)
    return int((~constant).sum()), int((constant & ~zero).sum()), int(zero.sum())


class Meter:
    """Images that entered the model since the last call."""

    def __init__(self, counter):
        self.counter = counter
        self.last = counter.images()

    def __call__(self) -> int:
        now = self.counter.images()
        done, self.last = now - self.last, now
        return done


def test_score_cam_runs_one_pass_per_varying_channel_and_one_for_constant_ones():
    model, counter = counted_convnet(size=SIZE, channels=8, seed=3, dead=(1, 4), constant={2: 0.7, 6: 1.3})
    x = image(3)
    varying, constant, zero = channel_kinds(model, x)
    assert (varying, constant, zero) == (4, 2, 2)
    meter = Meter(counter)
    explainer = camcore.Explainer(model, batch_size=3)  # several batches
    result = explainer.compute("score_cam", x, "conv2", 1)
    # one forward for the activations, one masked pass per varying channel, one shared
    # zero-mask pass for the constant channels, none for the dead ones
    assert meter() == 1 + varying + 1 == result.model_passes
    again = explainer.compute("score_cam", x, "conv2", 0)  # every class comes from the same passes
    assert meter() == 0 == again.model_passes


def test_constant_channels_without_dead_ones_share_one_zero_mask_pass():
    # A constant channel's normalized mask is all zeros: one pass on the zero input serves
    # them all (Score-CAM's weight for it is the model's probability on a blank input).
    model, counter = counted_convnet(size=SIZE, channels=6, seed=6, constant={2: 0.7, 5: 1.3})
    x = image(6)
    varying, constant, zero = channel_kinds(model, x)
    assert constant == 2 and zero == 0
    activations = keras.Model(model.inputs, model.get_layer("conv2").output).predict(x, verbose=0)[0]
    cam = np.zeros(activations.shape[:2])
    for k in range(activations.shape[-1]):
        a = activations[..., k]
        span = a.max() - a.min()
        mask = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        cam += model.predict(x * mask[None, ..., None], verbose=0)[0, 1] * a
    cam = np.maximum(cam, 0) / np.maximum(cam, 0).max()
    meter = Meter(counter)
    result = camcore.Explainer(model, batch_size=4).compute("score_cam", x, "conv2", 1)
    assert meter() == 1 + varying + 1 == result.model_passes
    np.testing.assert_allclose(result.cam, cam, atol=1e-5)


def test_faster_score_cam_runs_only_the_new_channels():
    model, counter = counted_convnet(size=SIZE, channels=8, seed=6)
    x = image(6)
    assert channel_kinds(model, x) == (8, 0, 0)
    meter = Meter(counter)
    explainer = camcore.Explainer(model, batch_size=2)
    first = explainer.compute("faster_score_cam", x, "conv2", 0, max_n=3)
    assert meter() == 1 + 3 == first.model_passes
    grown = explainer.compute("faster_score_cam", x, "conv2", 0, max_n=7)
    assert meter() == 4 == grown.model_passes
    for n in (1, 5, 7):
        assert explainer.compute("faster_score_cam", x, "conv2", 2, max_n=n).model_passes == 0
    assert meter() == 0
    full = explainer.compute("score_cam", x, "conv2", 0)
    assert meter() == 1 == full.model_passes


def test_gradient_cams_and_guided_backprop_run_one_pass_each():
    model, counter = counted_convnet(size=SIZE, seed=1)
    x = image(1)
    meter = Meter(counter)
    explainer = camcore.Explainer(model)
    first = explainer.compute("grad_cam", x, "conv2", 1)
    assert meter() == 1 == first.model_passes
    second = explainer.compute("grad_cam_plus_plus", x, "conv2", 1)
    assert meter() == 0 == second.model_passes
    explainer.guided_backprop(x, 1)
    assert meter() == 1
    explainer.guided_backprop(x, 1)
    assert meter() == 0
    # top-1 is chosen inside the compiled pass: no extra forward to find it
    other = image(2)
    explainer.compute("grad_cam", other, "conv2")
    assert meter() == 1
