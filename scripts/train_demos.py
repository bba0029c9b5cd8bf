"""Train the demo defect classifiers on generated DAGM-style data.

    python scripts/train_demos.py [--models vgg_defect,resnet_defect] [--seed 7]     # or: make train-demos

Writes ``assets/models/<name>.keras`` and a card ``<name>.json`` with the
architecture, input size, preprocessing, class names, training-set size,
held-out accuracy, Grad-CAM pointing-game rate, date and seed.

Both models see 224×224 single-channel images (512² textures shrunk with area
interpolation), scaled to [0, 1] ("unit"), and answer ["clean", "defective"]
through a softmax head. The nets are deliberately narrow so that training both
takes minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from camcore import synth  # noqa: E402
from camcore.explainer import Explainer  # noqa: E402
from camcore.methods.combine import upsample  # noqa: E402
from camcore.preprocess import preprocess_image  # noqa: E402

INPUT_SIZE = (224, 224)
CHANNELS = 1
PREPROCESSING = "unit"
CLASS_NAMES = ["clean", "defective"]
TEST_SEED_OFFSET = 1_000_003  # held-out images come from a disjoint seed range
# the repository's assets, the source of truth (not an installed copy)
MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


def build_vgg_defect() -> keras.Model:
    """VGG-style: five blocks of 3×3 conv+ReLU and max pools; the last conv is ``block5_conv3``
    (14×14), then global max pooling and a 2-way softmax.

    Each conv is followed by batch normalization (after the ReLU, so ``block5_conv3``
    stays VGG's conv+ReLU output): without it this plain stack does not start to learn
    small defects in a CPU-sized budget. Max pooling over positions suits a defect that
    occupies a few of the 196 cells; averaging would dilute it.
    """
    inputs = keras.Input((*INPUT_SIZE, CHANNELS), name="image")
    x = inputs
    for block, (filters, convs) in enumerate([(8, 1), (16, 1), (32, 2), (64, 2), (64, 3)], start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
        if block < 5:  # block5 keeps 14×14 for a finer CAM
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="vgg_defect")


def _residual_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(shortcut)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def build_resnet_defect() -> keras.Model:
    """ResNet-style: a strided stem, three residual stages (56², 28², 14²); the last
    activation is ``act_last`` (14×14), then global max pooling and a 2-way softmax."""
    inputs = keras.Input((*INPUT_SIZE, CHANNELS), name="image")
    x = layers.Conv2D(16, 5, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for stage, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        x = _residual_block(x, filters, stride, name=f"stage{stage}")
        last = stage == 3
        x = layers.Activation("relu", name="act_last" if last else f"stage{stage}_out")(x)
    x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="resnet_defect")


# name -> (builder, layer to explain, description, epochs: the cheaper ResNet gets more)
ARCHITECTURES: dict[str, tuple[Callable[[], keras.Model], str, str, int]] = {
    "vgg_defect": (build_vgg_defect, "block5_conv3", "VGG-style: 5 conv blocks (8-16-32-64-64 filters, conv-ReLU-BN), global max pool, softmax", 14),
    "resnet_defect": (build_resnet_defect, "act_last", "ResNet-style: stem + 3 residual stages (16-32-64), BN, global max pool, softmax", 24),
}


def make_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[synth.Sample]]:
    """n generated 512² samples, as model inputs (n, 224, 224, 1) and labels (n,)."""
    samples = list(synth.generate(n, seed=seed, defect_rate=0.5))
    x = np.concatenate([preprocess_image(s.image, INPUT_SIZE, CHANNELS, PREPROCESSING) for s in samples])
    y = np.array([int(s.defective) for s in samples], np.int32)
    return x, y, samples


def pointing_rate(explainer: Explainer, layer: str, x: np.ndarray, samples: list[synth.Sample]) -> float:
    """Share of defective images whose Grad-CAM peak (for "defective") falls inside the defect's ellipse."""
    hits, total = 0, 0
    for xi, sample in zip(x, samples):
        if not sample.defective:
            continue
        cam = upsample(explainer.grad_cam(xi[None], layer, 1), sample.image.shape)
        row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
        hits += bool(synth.ellipse_mask(sample.ellipse, sample.image.shape)[row, col])
        total += 1
    return hits / max(total, 1)


def evaluate(model: keras.Model, layer: str, n: int, seed: int) -> dict:
    """Held-out accuracy and Grad-CAM pointing-game rate on ``n`` fresh images."""
    x, y, samples = make_dataset(n, seed)
    predictions = model.predict(x, batch_size=64, verbose=0).argmax(axis=1)
    return {
        "images": n,
        "accuracy": float((predictions == y).mean()),
        "gradcam_peak_in_ellipse": pointing_rate(Explainer(model), layer, x, samples),
    }


def train(name: str, seed: int, n_train: int, epochs: int | None, n_test: int, out: Path) -> dict:
    build, layer, description, default_epochs = ARCHITECTURES[name]
    epochs = epochs or default_epochs
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    start = time.perf_counter()
    x, y, _ = make_dataset(n_train, seed)
    model = build()
    steps = epochs * int(np.ceil(n_train / 32))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    # flips and 90° turns: defects and textures have no preferred orientation
    def augment(image, label):
        image = tf.image.random_flip_left_right(image, seed=seed)
        image = tf.image.random_flip_up_down(image, seed=seed + 1)
        return tf.image.rot90(image, tf.random.uniform((), 0, 4, tf.int32, seed=seed + 2)), label

    data = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(n_train, seed=seed, reshuffle_each_iteration=True)
        .map(augment)
        .batch(32)
        .prefetch(2)
    )
    model.fit(data, epochs=epochs, verbose=2)
    train_seconds = time.perf_counter() - start

    heldout = evaluate(model, layer, n_test, seed + TEST_SEED_OFFSET)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / f"{name}.keras")
    card = {
        "name": name,
        "file": f"{name}.keras",
        "architecture": description,
        "parameters": int(model.count_params()),
        "input_size": list(INPUT_SIZE),
        "channels": CHANNELS,
        "preprocessing": PREPROCESSING,
        "preprocessing_note": "512² grayscale resized to 224² with area interpolation, scaled to [0, 1]",
        "class_names": CLASS_NAMES,
        "layer": layer,
        "training": {
            "images": n_train,
            "defect_rate": 0.5,
            "epochs": epochs,
            "seed": seed,
            "seconds": round(train_seconds, 1),
            "date": dt.date.today().isoformat(),
            "data": "camcore.synth.generate(images, seed=seed)",
        },
        "heldout": heldout | {"seed": seed + TEST_SEED_OFFSET},
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
    }
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2), flush=True)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/train_demos.py", description="Train the demo defect classifiers.")
    parser.add_argument("--models", default=",".join(ARCHITECTURES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train", type=int, default=6000, help="training images")
    parser.add_argument("--epochs", type=int, default=None, help="default: per architecture (14 VGG, 24 ResNet)")
    parser.add_argument("--test", type=int, default=600, help="held-out images")
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        if name not in ARCHITECTURES:
            parser.error(f"unknown model {name!r}; choose from {list(ARCHITECTURES)}")
        train(name, args.seed, args.train, args.epochs, args.test, args.out)


if __name__ == "__main__":
    main()
