"""Ablation-CAM runs the part of the model before the explained layer once per image and
only the layers after it per ablated channel, also where a later layer joins an earlier branch
(Add broadcasts, a Concatenate gets the branch repeated); a model that joins branches in a way
of its own that cannot take a batch of one (a custom layer) falls back to whole-model passes.
Both must give the plain reference: y_c^k from a copy of the model whose layer output is
multiplied by an explicit keep vector (shared weights), w_k = (y_c - y_c^k) / |y_c|."""

import keras
import numpy as np
import pytest
from toy_models import PassCounter

import camcore

CHANNELS = 8


class JoinChannels(keras.layers.Layer):
    """A user's own concatenation: not a Keras merge layer, so nothing repeats its inputs."""

    def call(self, inputs):
        return keras.ops.concatenate(inputs, axis=-1)


def branchy_models(merge: str, seed: int = 3):
    """(model, reference, counter): ``early`` conv -> ``feat`` conv -> merge with ``early``
    -> conv -> GAP -> logits -> softmax. ``reference`` takes (image, keep) and returns the
    logits with ``feat``'s output multiplied by keep, through the same layer objects."""
    keras.utils.set_random_seed(seed)
    counter = PassCounter(name="pass_counter")
    early = keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu", name="early")
    feat = keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu", name="feat")
    join_layer = {"add": keras.layers.Add, "concatenate": keras.layers.Concatenate, "custom": JoinChannels}[merge]
    joined = join_layer(name="join")
    post = keras.layers.Conv2D(5, 3, padding="same", activation="tanh", name="post")
    gap = keras.layers.GlobalAveragePooling2D(name="gap")
    logits = keras.layers.Dense(3, name="logits")

    def graph(image, keep=None):
        e = early(counter(image))
        f = feat(e)
        if keep is not None:
            f = keras.layers.Multiply()([f, keras.layers.Reshape((1, 1, CHANNELS))(keep)])
        return logits(gap(post(joined([f, e]))))

    image = keras.Input((10, 10, 3))
    model = keras.Model(image, keras.layers.Activation("softmax", name="probabilities")(graph(image)))
    keep = keras.Input((CHANNELS,))
    reference = keras.Model([image, keep], graph(image, keep))
    return model, reference, counter


def plain_ablation_cam(model, reference, x, class_index):
    activations = keras.Model(model.inputs, model.get_layer("feat").output).predict(x, verbose=0)[0]
    score = reference.predict([x, np.ones((1, CHANNELS), np.float32)], verbose=0)[0, class_index]
    cam = np.zeros(activations.shape[:2])
    for k in range(CHANNELS):
        keep = np.ones((1, CHANNELS), np.float32)
        keep[0, k] = 0.0
        ablated = reference.predict([x, keep], verbose=0)[0, class_index]
        cam += (score - ablated) / abs(score) * activations[..., k]
    cam = np.maximum(cam, 0)
    return cam / cam.max()


@pytest.mark.parametrize("merge", ["add", "concatenate", "custom"])
def test_ablation_cam_matches_the_plain_reference_whatever_joins_after_the_layer(merge):
    model, reference, _ = branchy_models(merge)
    x = np.random.default_rng(1).uniform(0, 1, (1, 10, 10, 3)).astype(np.float32)
    for class_index in (0, 2):
        cam = camcore.Explainer(model, batch_size=3).compute("ablation_cam", x, "feat", class_index).cam
        np.testing.assert_allclose(cam, plain_ablation_cam(model, reference, x, class_index), atol=1e-5)


def test_the_layers_before_the_explained_one_run_once_per_batch_not_once_per_channel():
    x = np.random.default_rng(2).uniform(0, 1, (1, 10, 10, 3)).astype(np.float32)
    counts = {}
    for merge in ("add", "concatenate", "custom"):
        model, _, counter = branchy_models(merge)
        explainer = camcore.Explainer(model, batch_size=CHANNELS)
        explainer.compute("grad_cam", x, "feat", 0)  # activations cached: what follows is the ablation
        before = counter.images()
        explainer.compute("ablation_cam", x, "feat", 0)
        counts[merge] = counter.images() - before
    # add and concatenate: the image enters the first layers for the two-row check (2 tiled
    # + 1 shared) and once for all 8 ablations; the custom join cannot take a batch of one
    # beside 8 rows, so each ablation is a full pass
    assert counts["add"] <= 4 and counts["concatenate"] <= 4, counts
    assert CHANNELS <= counts["custom"], counts


def test_a_fast_pass_that_runs_but_disagrees_is_not_trusted(monkeypatch):
    # The two-row check on first use: a shared-head pass that raises nothing but returns other
    # scores (here: shifted, as a layer that reads the batch size would) must be set aside.
    model, reference, _ = branchy_models("add")
    x = np.random.default_rng(4).uniform(0, 1, (1, 10, 10, 3)).astype(np.float32)
    explainer = camcore.Explainer(model, batch_size=4)
    plain_pass = explainer.backend.ablation_pass

    def pass_with_a_wrong_fast_path(layer, share_head, precision="fp32"):
        fn = plain_pass(layer, share_head, precision)
        return (lambda x, keep: fn(x, keep) + 0.5) if share_head else fn

    monkeypatch.setattr(explainer.backend, "ablation_pass", pass_with_a_wrong_fast_path)
    cam = explainer.compute("ablation_cam", x, "feat", 1).cam
    np.testing.assert_allclose(cam, plain_ablation_cam(model, reference, x, 1), atol=1e-5)


@pytest.mark.parametrize("method", ["ablation_cam", "score_cam"])
def test_a_model_that_mixes_the_batch_gets_a_clear_error_for_per_channel_methods(method):
    # A Concatenate on the batch axis returns 2B rows for B images: there is no score per
    # ablated or masked copy. The user gets a message naming that, not a NumPy shape error.
    keras.utils.set_random_seed(0)
    image = keras.Input((12, 12, 3))
    early = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="early")(image)
    feat = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(early)
    joined = keras.layers.Concatenate(axis=0)([feat, early])
    model = keras.Model(
        image, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(joined))
    )
    x = np.random.default_rng(1).uniform(0, 1, (1, 12, 12, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="mixes images across the batch"):
        camcore.Explainer(model).compute(method, x, "feat", 1)
