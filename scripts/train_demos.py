"""Train the demo defect classifiers on generated DAGM-style data with capture-style augmentation.

    python scripts/train_demos.py [--models vgg_defect,resnet_defect] [--seed 7]     # or: make train-demos

Writes ``assets/models/<name>.keras`` and a card ``<name>.json`` with the
architecture, input size, preprocessing, class names, the layer to explain,
training set and augmentation, and held-out figures on fresh images: accuracy,
false-alarm rate, detection rate and the Grad-CAM pointing game (the one
localization protocol, :func:`camcore.metrics.localization`). The generalization
figures (leave-one-texture-family-out) are added by ``scripts/generalization.py``.

Both models see 224×224 single-channel images (the 512² image shrunk with area
interpolation), scaled to [0, 1] ("unit"), and answer ["clean", "defective"]
through a softmax head. Every training image is a generated sample passed through
a random capture: rotation and scale, blur, contrast and gamma, sensor noise and
JPEG compression (:func:`augment`), so that the models meet more than the
generator's own rendering. Training is seeded and runs with TensorFlow op
determinism: the same command writes the same weights on the same machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from camcore import synth  # noqa: E402
from camcore.explainer import Explainer  # noqa: E402
from camcore.metrics import localization  # noqa: E402
from camcore.preprocess import preprocess_image, resize_for_model  # noqa: E402

INPUT_SIZE = (224, 224)
CHANNELS = 1
PREPROCESSING = "unit"
CLASS_NAMES = ["clean", "defective"]
DEFECT_RATE = 0.5
TEST_SEED_OFFSET = 1_000_003  # held-out images come from a disjoint seed range
AUGMENT_STREAM = 0xA06  # spawn key of the augmentation's random stream, apart from the generator's
MASK_SIZE = 56  # the resolution of the auxiliary defect-map target (mixed supervision)
MASK_WEIGHT = 10.0  # weight of the defect-map loss against the classification loss
# the repository's assets, the source of truth (not an installed copy)
MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Capture:
    """Ranges of the random capture applied to a training image (:func:`augment`); each
    effect is applied with its probability ``p_*``, magnitudes drawn uniformly (log-uniformly
    for ``zoom`` and ``gamma``)."""

    p_turn: float = 0.3
    zoom: float = 1.4  # largest zoom-in besides the one a rotation needs
    p_zoom: float = 0.5
    p_blur: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 2.2)  # px at 512
    p_contrast: float = 0.6
    contrast: tuple[float, float] = (0.55, 1.5)
    brightness: tuple[float, float] = (-40.0, 40.0)
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.6, 1.65)
    p_noise: float = 0.4
    noise_sigma: tuple[float, float] = (2.0, 10.0)  # gray levels at 512
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)

    def describe(self) -> str:
        """One line for the model card."""
        return (
            f"rotation by any angle (p={self.p_turn}) and zoom-in up to {self.zoom}x (p={self.p_zoom}), the view "
            f"staying inside the image and keeping the defect; Gaussian blur sigma {self.blur_sigma[0]}-"
            f"{self.blur_sigma[1]} px (p={self.p_blur}); contrast {self.contrast[0]}-{self.contrast[1]}x and "
            f"brightness {self.brightness[0]:+.0f}..{self.brightness[1]:+.0f} (p={self.p_contrast}); gamma "
            f"{self.gamma[0]}-{self.gamma[1]} (p={self.p_gamma}); Gaussian sensor noise sigma {self.noise_sigma[0]}-"
            f"{self.noise_sigma[1]} (p={self.p_noise}); JPEG quality {self.jpeg_quality[0]}-{self.jpeg_quality[1]} "
            f"(p={self.p_jpeg}); all at 512 px before the shrink to 224; then random flips and 90-degree turns "
            "every epoch"
        )


CAPTURE = Capture()


def _geometry(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, capture: Capture
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate and zoom in about a random point. The view never leaves the generated
    image (a rotation zooms in by |cos| + |sin| to cover its corners), so no border is
    filled: mirrored borders would add symmetric seams and doubled defects that no camera
    makes. For a defective image the view keeps at least 90 % of the defect; after five
    failed draws the image is left as it is."""
    size = image.shape[0]
    angle = rng.uniform(0.0, 360.0) if rng.random() < capture.p_turn else 0.0
    zoom = math.exp(rng.uniform(0.0, math.log(capture.zoom))) if rng.random() < capture.p_zoom else 1.0
    if angle == 0.0 and zoom == 1.0:
        return image, mask
    theta = math.radians(angle)
    zoom *= abs(math.cos(theta)) + abs(math.sin(theta))
    half = (size - 1) / 2.0
    room = max(0.0, half - half / zoom * (abs(math.cos(theta)) + abs(math.sin(theta))))
    defect_pixels = int(mask.sum())
    for _ in range(5):
        centre = (half + rng.uniform(-room, room), half + rng.uniform(-room, room))
        matrix = cv2.getRotationMatrix2D(centre, angle, zoom)
        matrix[:, 2] += half - np.array(centre)  # the chosen point lands in the middle
        warped_mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (size, size), flags=cv2.INTER_NEAREST)
        if defect_pixels == 0 or warped_mask.sum() / (zoom * zoom) >= 0.9 * defect_pixels:  # area grows by zoom²
            warped = cv2.warpAffine(
                image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
            return warped, warped_mask.astype(bool)
    return image, mask


def augment(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, capture: Capture = CAPTURE
) -> tuple[np.ndarray, np.ndarray]:
    """A random capture of a uint8 (H, W) image and its defect mask: geometry first,
    then the optics and sensor in the order a camera applies them (blur, contrast and
    gamma, noise, JPEG). Returns the uint8 image and the bool mask in the new frame."""
    image, mask = _geometry(image, mask, rng, capture)
    pixels = image.astype(np.float32)
    if rng.random() < capture.p_blur:
        pixels = cv2.GaussianBlur(pixels, (0, 0), rng.uniform(*capture.blur_sigma))
    if rng.random() < capture.p_contrast:
        mean = float(pixels.mean())
        pixels = mean + rng.uniform(*capture.contrast) * (pixels - mean) + rng.uniform(*capture.brightness)
    if rng.random() < capture.p_gamma:
        gamma = math.exp(rng.uniform(*np.log(capture.gamma)))
        pixels = 255.0 * np.clip(pixels / 255.0, 0.0, 1.0) ** np.float32(gamma)
    if rng.random() < capture.p_noise:
        pixels = pixels + rng.normal(0.0, rng.uniform(*capture.noise_sigma), pixels.shape).astype(np.float32)
    image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if rng.random() < capture.p_jpeg:
        quality = int(rng.integers(capture.jpeg_quality[0], capture.jpeg_quality[1] + 1))
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    return image, mask


# --------------------------------------------------------------------------- data


def _training_example(job: tuple[int, int, tuple[str, ...] | None, bool]) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Sample ``index`` of the generated set, captured at random, at the model's input size,
    with its defect mask at :data:`MASK_SIZE` (the share of each cell the defect covers,
    uint8 0-255), its label and its texture family."""
    index, seed, families, augmented = job
    sample = synth.sample_at(index, seed, defect_rate=DEFECT_RATE, families=families)
    image, mask = sample.image, sample.mask
    if augmented:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, AUGMENT_STREAM)))
        image, mask = augment(image, mask, rng)
    coverage = cv2.resize(mask.astype(np.float32), (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_AREA)
    coarse_mask = np.rint(255.0 * coverage).astype(np.uint8)[..., None]
    return resize_for_model(image, INPUT_SIZE, CHANNELS), coarse_mask, int(sample.defective), sample.family


def _quiet_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core


def make_pool(
    n: int, seed: int, families: Sequence[str] | None = None, augmented: bool = True, workers: int = 2
) -> "Pool":
    """``n`` training images with masks, labels and texture families, image ``i`` being
    ``synth.sample_at(i, seed, families=...)`` under its own random capture. The result
    does not depend on ``workers``."""
    jobs = [(i, seed, tuple(families) if families else None, augmented) for i in range(n)]
    if workers > 1:
        # spawn, not fork: forking a process that has started TensorFlow's threads can hang
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_quiet_worker) as executor:
            examples = list(executor.map(_training_example, jobs, chunksize=32))
    else:
        examples = [_training_example(job) for job in jobs]
    return Pool(
        x=np.stack([example[0] for example in examples]),
        masks=np.stack([example[1] for example in examples]),
        y=np.array([example[2] for example in examples], np.int32),
        families=np.array([example[3] for example in examples]),
    )


@dataclass(frozen=True)
class Pool:
    """Training data: uint8 images (n, 224, 224, 1), uint8 defect coverage (n, 56, 56, 1),
    int32 labels (n,) and texture family names (n,)."""

    x: np.ndarray
    masks: np.ndarray
    y: np.ndarray
    families: np.ndarray

    def subset(self, keep: np.ndarray) -> "Pool":
        """The examples where ``keep`` is True."""
        return Pool(self.x[keep], self.masks[keep], self.y[keep], self.families[keep])


def cached_pool(n: int, seed: int, workers: int, cache: Path | None) -> tuple[Pool, float | None]:
    """:func:`make_pool`, read from ``cache`` if it holds that pool, else generated (and
    written there). Returns the pool and the seconds its generation took (recorded in the
    cache, so a cached run reports the generation it reused; None if the cache does not say).
    ``scripts/generalization.py`` caches its fold pool in the same format."""
    if cache is not None and cache.is_file():
        data = np.load(cache)
        if int(data["x"].shape[0]) == n and ("seed" not in data.files or int(data["seed"]) == seed):
            seconds = float(data["seconds"]) if "seconds" in data.files else None
            return Pool(data["x"], data["masks"], data["y"], data["families"]), seconds
    start = time.perf_counter()
    pool = make_pool(n, seed, workers=workers)
    seconds = time.perf_counter() - start
    if cache is not None:
        np.savez(cache, x=pool.x, masks=pool.masks, y=pool.y, families=pool.families, seed=seed, seconds=seconds)
    return pool, seconds


# --------------------------------------------------------------------------- architectures


def build_vgg_defect(decision: str = "features") -> keras.Model:
    """VGG encoder, top-down path, and a decision taken on a 56×56 defect map.

    Encoder: five blocks of 3×3 conv+ReLU+BN and max pools, 224² down to ``block5`` at
    14×14. Top-down path (a feature pyramid, Lin et al. 2017): the deep features are
    upsampled and added to 1×1 projections of ``block4`` (28×28) and ``block3`` (56×56),
    each sum followed by a 3×3 conv+BN+ReLU; the last one is ``top_down56`` (56×56×32),
    the explained layer. A 1×1 conv turns it into ``defect_logit`` (56×56×1) and a sigmoid
    into ``defect_map``, trained against the defect masks (mixed supervision).

    ``decision="map"`` (``vgg_defect_segdec``; segmentation then decision, Tabernik et al.
    2019, Božič et al. 2021): the softmax reads only the defect map: the global max and mean
    of ``defect_logit`` and the mean of ``defect_map`` (the defect's area share). Every path
    from ``top_down56`` to a class score then goes through the one 1×1 conv, so the gradient
    at channel k and cell i is g(i)·w_k, Grad-CAM's channel weights are mean(g)·w_k, and
    Grad-CAM at ``top_down56`` is ReLU(Σ_k w_k A_k), the map's logit less its bias (the CAM
    paper's GAP-linear case, Zhou et al. 2016, where CAM equals Grad-CAM), as long as
    mean(g) > 0: hence :func:`center_logits`. The mean gives every cell a share of the
    gradient (not one max-pool spike); the max lets a defect of a few cells decide.

    ``decision="map_context"`` (the shipped ``vgg_defect`` since 2026-11-30): from the map,
    the softmax reads only the max of ``defect_logit``, and beside it the global max of the
    encoder's end (``block5``, 64 channels), which reaches the decision without passing
    through ``top_down56``. The closed form above still holds, with g(i) a single spike at
    the map's peak (so mean(g) > 0 whenever the head's weight on that max is positive, which
    ``tests/test_demos.py`` checks on the shipped weights). The context restores the
    classification that the map alone gave up; the map's mean is left out because a head
    that learns "peak against mean" makes mean(g) negative and turns Grad-CAM into the
    background (measured: 0 % pointing with it, 2026-11-30). The sigmoid ``defect_map`` is
    a training-only output here (:func:`fit`), not part of the saved classifier.

    ``decision="features"`` (``vgg_defect_features``, the shipped ``vgg_defect`` until
    2026-11-30): the softmax also reads the global max of the 32 raw ``top_down56``
    channels (a global *max* lets the few cells that hold a defect carry the decision), and
    the max and mean of the sigmoid map. Grad-CAM's channel weights at ``top_down56`` then
    mix the head's weights with those of the raw channels, and the map blurs.
    """
    if decision not in ("map", "map_context", "features"):
        raise ValueError(f"decision must be 'map', 'map_context' or 'features', not {decision!r}")
    inputs = keras.Input((*INPUT_SIZE, CHANNELS), name="image")
    x = inputs
    blocks = {}
    for block, (filters, convs) in enumerate([(8, 1), (16, 1), (32, 2), (64, 2), (64, 3)], start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
        blocks[block] = x
        if block < 5:
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    for block, size in ((4, 28), (3, 56)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"top_down{size}_up")(x)
        lateral = layers.Conv2D(32, 1, name=f"top_down{size}_lateral")(blocks[block])
        if x.shape[-1] != 32:
            x = layers.Conv2D(32, 1, name=f"top_down{size}_reduce")(x)
        x = layers.Add(name=f"top_down{size}_add")([x, lateral])
        x = layers.Conv2D(32, 3, padding="same", use_bias=False, name=f"top_down{size}_conv")(x)
        x = layers.BatchNormalization(name=f"top_down{size}_bn")(x)
        x = layers.Activation("relu", name=f"top_down{size}")(x)
    if decision == "map_context":
        logit = layers.Conv2D(1, 1, name="defect_logit")(x)
        evidence = layers.Concatenate(name="evidence")(
            [
                layers.GlobalMaxPooling2D(name="logit_max")(logit),
                # the encoder's end reaches the decision on a path around top_down56, so Grad-CAM
                # there keeps the closed form above
                layers.GlobalMaxPooling2D(name="context_max")(blocks[5]),
            ]
        )
        evidence = layers.BatchNormalization(name="evidence_bn")(evidence)
        evidence = layers.Dropout(0.2, name="dropout")(evidence)
        outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name="predictions")(evidence)
        return keras.Model(inputs, outputs, name="vgg_defect")
    if decision == "map":
        logit = layers.Conv2D(1, 1, name="defect_logit")(x)
        defect_map = layers.Activation("sigmoid", name="defect_map")(logit)
        evidence = layers.Concatenate(name="evidence")(
            [
                layers.GlobalMaxPooling2D(name="logit_max")(logit),
                layers.GlobalAveragePooling2D(name="logit_mean")(logit),
                layers.GlobalAveragePooling2D(name="map_mean")(defect_map),  # the defect's share of the image
            ]
        )
        # the logit's max and mean range over tens of units while the map is learned: put them
        # on one scale for the softmax (affine at inference, so still one linear read of the map)
        evidence = layers.BatchNormalization(name="evidence_bn")(evidence)
        outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name="predictions")(evidence)
        return keras.Model(inputs, outputs, name="vgg_defect_segdec")
    defect_map = layers.Conv2D(1, 1, activation="sigmoid", name="defect_map")(x)
    evidence = layers.Concatenate(name="evidence")(
        [
            layers.GlobalMaxPooling2D(name="max_pool")(x),
            layers.GlobalMaxPooling2D(name="map_max")(defect_map),
            layers.GlobalAveragePooling2D(name="map_mean")(defect_map),
        ]
    )
    evidence = layers.Dropout(0.2, name="dropout")(evidence)
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", name="predictions")(evidence)
    return keras.Model(inputs, outputs, name="vgg_defect_features")


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


@dataclass(frozen=True)
class Architecture:
    """How a demo model is built and trained, and the layer its card names for explaining.

    ``mask_weight > 0`` trains with mixed supervision (Bozic, Tabernik and Skocaj 2021,
    "Mixed supervision for surface-defect detection"): the model's ``mask_layer``, a
    sigmoid map, is also fitted to the defect's coverage of each cell, its binary
    cross-entropy added with this weight. The generator gives every image its pixel mask
    for free. The saved model has one output, the class probabilities."""

    build: Callable[[], keras.Model]
    layer: str
    description: str
    epochs: int
    mask_weight: float = 0.0
    mask_layer: str | None = None
    mask_is_logit: bool = False  # mask_layer is a logit map: training fits its sigmoid (not saved)
    mask_positive_weight: float = 1.0  # weight of the defect cells in the map loss (defect_map_loss)
    centred_logits: bool = False  # center_logits after fitting
    shipped: bool = True  # trained by default (make train-demos) and bundled in assets/models


ARCHITECTURES: dict[str, Architecture] = {
    "vgg_defect": Architecture(
        lambda: build_vgg_defect("map_context"),
        "top_down56",
        "VGG encoder (5 conv blocks, 8-16-32-64-64 filters, conv-ReLU-BN) with a top-down path to 56x56 "
        "(feature-pyramid style); a 1x1 conv on top_down56 gives a 56x56 defect logit map, fitted through a "
        "sigmoid to the defect masks (mixed supervision); the softmax reads the map's maximum and the global "
        "max of the encoder's end (block5), which reaches the decision without passing through top_down56; "
        "logits centred",
        10,
        mask_weight=MASK_WEIGHT,
        mask_layer="defect_logit",
        mask_is_logit=True,
        mask_positive_weight=5.0,
        centred_logits=True,
    ),
    "resnet_defect": Architecture(
        build_resnet_defect,
        "act_last",
        "ResNet-style: stem + 3 residual stages (16-32-64), BN, global max pool, softmax",
        16,  # the cheaper model gets more epochs; 8 lost 4 points of held-out accuracy and 11 of pointing (2026-11-30)
    ),
    # the default until 2026-11-30 (README, "Demo models"): its Grad-CAM at top_down56 mixes
    # the map head with the raw channels the decision also reads, and outlines defects worse
    "vgg_defect_features": Architecture(
        lambda: build_vgg_defect("features"),
        "top_down56",
        "VGG encoder (5 conv blocks, 8-16-32-64-64 filters, conv-ReLU-BN) with a top-down path to 56x56 "
        "(feature-pyramid style); softmax on the global max of the 56x56 features and the max and mean of "
        "a 56x56 defect map (1x1 conv, sigmoid) fitted to the defect masks (mixed supervision)",
        10,
        mask_weight=MASK_WEIGHT,
        mask_layer="defect_map",
        shipped=False,
    ),
    # a decision on the map alone: the same map quality, 1.5-2.6 points less accuracy (README)
    "vgg_defect_segdec": Architecture(
        lambda: build_vgg_defect("map"),
        "top_down56",
        "VGG encoder (5 conv blocks, 8-16-32-64-64 filters, conv-ReLU-BN) with a top-down path to 56x56 "
        "(feature-pyramid style); a 56x56 defect map (1x1 conv on top_down56, sigmoid) fitted to the defect "
        "masks (mixed supervision), and a softmax that reads only that map: the max and mean of its logit "
        "and its mean (segmentation, then decision); logits centred",
        7,
        mask_weight=MASK_WEIGHT,
        mask_layer="defect_map",
        mask_positive_weight=5.0,
        centred_logits=True,
        shipped=False,
    ),
}


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: keras.Model, layer: str, n: int, seed: int, families: Sequence[str] | None = None
) -> dict:
    """:func:`score` on ``n`` fresh generated images, ``synth.sample_at(i, seed)`` (half
    defective; only ``families`` if given)."""
    return score(model, layer, [synth.sample_at(i, seed, defect_rate=DEFECT_RATE, families=families) for i in range(n)])


def score(model: keras.Model, layer: str, samples: Sequence[synth.Sample]) -> dict:
    """Figures on generated ``samples``: accuracy, false-alarm rate (clean images called
    defective), detection rate (defective images called defective), and for the defective
    ones the Grad-CAM pointing game under the one localization protocol (pixel mask, 15 px
    tolerance) and the older card figure, the share of Grad-CAM peaks inside the weak-label
    ellipse (tolerance 0)."""
    x = np.concatenate([preprocess_image(s.image, INPUT_SIZE, CHANNELS, PREPROCESSING) for s in samples])
    predicted = model.predict(x, batch_size=64, verbose=0).argmax(axis=1)
    defective = np.array([s.defective for s in samples])
    explainer = Explainer(model)
    in_ellipse, pointing = [], []
    for xi, sample in zip(x, samples):
        if not sample.defective:
            continue
        cam = explainer.compute("grad_cam", xi[None], layer, 1).cam
        pointing.append(localization(cam, sample.mask, 0.5).pointing_hit)
        ellipse = synth.ellipse_mask(sample.ellipse, sample.image.shape)
        in_ellipse.append(localization(cam, ellipse, 0.5, tolerance=0).pointing_hit)
        explainer.clear_cache()
    return {
        "images": len(samples),
        "accuracy": float((predicted == defective).mean()),
        "false_alarm_rate": float(predicted[~defective].mean()) if (~defective).any() else 0.0,
        "detection_rate": float(predicted[defective].mean()) if defective.any() else 0.0,
        "pointing": float(np.mean(pointing)) if pointing else 0.0,
        "gradcam_peak_in_ellipse": float(np.mean(in_ellipse)) if in_ellipse else 0.0,
    }


# --------------------------------------------------------------------------- training


def defect_map_loss(coverage: tf.Tensor, predicted: tf.Tensor, positive_weight: float = 1.0) -> tf.Tensor:
    """Binary cross-entropy between each cell's defect coverage c (0-1) and the predicted map
    p, the defect term weighted: -(w c log p + (1 - c) log(1 - p)). A defect covers about
    1 % of the cells, so with w = 1 an all-clean map is an early optimum that the map
    leaves late; w > 1 pays for finding the defect first (class-balanced cross-entropy)."""
    if positive_weight == 1.0:  # the plain loss vgg_defect was trained with, bit for bit
        return tf.reduce_mean(keras.losses.binary_crossentropy(coverage, predicted))
    p = tf.clip_by_value(predicted, keras.config.epsilon(), 1.0 - keras.config.epsilon())
    return -tf.reduce_mean(positive_weight * coverage * tf.math.log(p) + (1.0 - coverage) * tf.math.log(1.0 - p))


def fit(name: str, pool: Pool, epochs: int, seed: int, verbose: int = 2) -> keras.Model:
    """Train architecture ``name`` from scratch on ``pool`` (seeded; random flips and
    90-degree turns every epoch, the same for an image and its mask). Returns the
    classifier (without the training-only defect-map head)."""
    architecture = ARCHITECTURES[name]
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = architecture.build()
    supervised = architecture.mask_weight > 0
    if supervised:
        defect_map = model.get_layer(architecture.mask_layer).output
        if architecture.mask_is_logit:
            defect_map = layers.Activation("sigmoid", name="defect_map")(defect_map)
        if tuple(defect_map.shape[1:]) != (MASK_SIZE, MASK_SIZE, 1):
            raise ValueError(
                f"{name}: {architecture.mask_layer} must be {MASK_SIZE}x{MASK_SIZE}x1, is {defect_map.shape[1:]}"
            )
        trained = keras.Model(model.input, {"predictions": model.output, "defect_map": defect_map})
        losses = {
            "predictions": "sparse_categorical_crossentropy",
            "defect_map": lambda c, p: defect_map_loss(c, p, architecture.mask_positive_weight),
        }
        weights = {"predictions": 1.0, "defect_map": architecture.mask_weight}
        metrics = {"predictions": ["accuracy"]}
    else:
        trained, losses, weights, metrics = model, "sparse_categorical_crossentropy", None, ["accuracy"]
    steps = epochs * int(np.ceil(len(pool.x) / 32))
    trained.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        loss=losses,
        loss_weights=weights,
        metrics=metrics,
    )

    def turn(image, mask, label):
        image = tf.cast(image, tf.float32) / 255.0  # the "unit" preprocessing
        mask = tf.cast(mask, tf.float32) / 255.0
        coins = tf.random.uniform((2,), seed=seed)
        quarter_turns = tf.random.uniform((), 0, 4, tf.int32, seed=seed + 1)
        image = tf.cond(coins[0] < 0.5, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(coins[0] < 0.5, lambda: tf.reverse(mask, [1]), lambda: mask)
        image = tf.cond(coins[1] < 0.5, lambda: tf.reverse(image, [0]), lambda: image)
        mask = tf.cond(coins[1] < 0.5, lambda: tf.reverse(mask, [0]), lambda: mask)
        image, mask = tf.image.rot90(image, quarter_turns), tf.image.rot90(mask, quarter_turns)
        if supervised:
            return image, {"predictions": label, "defect_map": mask}
        return image, label

    data = (
        tf.data.Dataset.from_tensor_slices((pool.x, pool.masks, pool.y))
        .shuffle(len(pool.x), seed=seed, reshuffle_each_iteration=True)
        .map(turn)
        .batch(32)
        .prefetch(2)
    )
    trained.fit(data, epochs=epochs, verbose=verbose)
    if architecture.centred_logits:
        center_logits(model)
    return model


def center_logits(model: keras.Model) -> None:
    """Shift the softmax layer's logits to sum to zero over the classes, in place.

    A softmax gives the same probabilities when one input-dependent value is added to every
    logit, so the logits a model learns carry an arbitrary common part, and a CAM explains
    one class's logit, common part included. vgg_defect_segdec learns a contrast of its map's
    peak against the map's mean; left as trained, the "defective" logit can carry a large
    negative common term in the mean (the "clean" logit the matching one), which makes the
    spatial mean of its gradient negative and turns Grad-CAM at ``top_down56`` into the
    background. Centred, the "defective" logit of a two-class model is half the log-odds,
    the quantity the decision depends on. Probabilities are unchanged (up to rounding)."""
    head = model.layers[-1]
    if not isinstance(head, layers.Dense) or head.get_config().get("activation") != "softmax":
        raise ValueError(f"{model.name}: the last layer must be a softmax Dense, is {head.name}")
    kernel, bias = head.get_weights()
    head.set_weights([kernel - kernel.mean(axis=1, keepdims=True), bias - bias.mean()])


def _cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def train(
    name: str, seed: int, pool: Pool, epochs: int | None, n_test: int, out: Path, data_seconds: float | None = None,
    machine_load: str = "",
) -> dict:
    """Train demo ``name`` on ``pool``, evaluate it on fresh images and write its weights and
    card (``machine_load``: how busy the machine was, for reading the recorded times)."""
    architecture = ARCHITECTURES[name]
    epochs = epochs or architecture.epochs
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    model = fit(name, pool, epochs, seed)
    train_seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_start

    start = time.perf_counter()
    heldout = evaluate(model, architecture.layer, n_test, seed + TEST_SEED_OFFSET)
    evaluation_seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / f"{name}.keras")
    card_path = out / f"{name}.json"
    previous = json.loads(card_path.read_text()) if card_path.is_file() else {}
    supervision = (
        f"image labels, plus the defect masks at {MASK_SIZE}x{MASK_SIZE} as the target of "
        f"{'the sigmoid of ' if architecture.mask_is_logit else ''}{architecture.mask_layer} "
        "(binary cross-entropy with the defect cells weighted "
        f"{architecture.mask_positive_weight}, weight {architecture.mask_weight} against the class loss; "
        "mixed supervision)"
        if architecture.mask_weight > 0
        else "image labels only (weak supervision)"
    )
    card = {
        "name": name,
        "file": f"{name}.keras",
        "architecture": architecture.description,
        "parameters": int(model.count_params()),
        "input_size": list(INPUT_SIZE),
        "channels": CHANNELS,
        "preprocessing": PREPROCESSING,
        "preprocessing_note": "512² grayscale resized to 224² with area interpolation, scaled to [0, 1]",
        "class_names": CLASS_NAMES,
        "layer": architecture.layer,
        "layer_size": list(model.get_layer(architecture.layer).output.shape[1:3]),
        "training": {
            "images": len(pool.x),
            "defect_rate": DEFECT_RATE,
            "epochs": epochs,
            "seed": seed,
            "seconds": round(train_seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1),
            # generating the pool, shared by every model of the run (None: read from a cache that did not record it)
            "data_seconds": None if data_seconds is None else round(data_seconds, 1),
            "evaluation_seconds": round(evaluation_seconds, 1),  # the held-out figures below
            "machine_load": machine_load,
            "date": dt.date.today().isoformat(),
            "data": "camcore.synth.sample_at(i, seed, defect_rate=0.5) for i < images, every texture family",
            "families": list(synth.FAMILIES),
            "augmentation": CAPTURE.describe(),
            "supervision": supervision,
        },
        "heldout": heldout | {"seed": seed + TEST_SEED_OFFSET, "method": "grad_cam", "layer": architecture.layer},
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
    }
    if (
        "generalization" in previous
        and previous.get("training", {}).get("seed") == seed
        and previous.get("architecture") == architecture.description
    ):
        # figures of scripts/generalization.py stay until it is run again (same recipe only)
        card["generalization"] = previous["generalization"]
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(card, indent=2, ensure_ascii=False), flush=True)
    return card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/train_demos.py", description="Train the demo defect classifiers.")
    parser.add_argument("--models", default=",".join(name for name, a in ARCHITECTURES.items() if a.shipped),
                        help=f"any of {list(ARCHITECTURES)}; default: the shipped ones")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train", type=int, default=8000, help="training images")
    parser.add_argument("--epochs", type=int, default=None, help="default: per architecture")
    parser.add_argument("--test", type=int, default=600, help="held-out images")
    parser.add_argument("--workers", type=int, default=2, help="processes generating the training images")
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--pool-cache", type=Path, default=None,
                        help="an .npz to read the training pool from, or to write it to (same images bit for bit)")
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        if name not in ARCHITECTURES:
            parser.error(f"unknown model {name!r}; choose from {list(ARCHITECTURES)}")
    # every model trains on the same images: generate them once
    pool, data_seconds = cached_pool(args.train, args.seed, args.workers, args.pool_cache)
    for name in args.models.split(","):
        load = "load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min) when training started, {} cores".format(
            *os.getloadavg(), os.cpu_count()
        )
        train(name, args.seed, pool, args.epochs, args.test, args.out, data_seconds, load)


if __name__ == "__main__":
    main()
