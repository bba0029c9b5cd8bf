"""Method lists and default parameters of the batch evaluation."""

from __future__ import annotations

import os
from typing import Callable, Sequence

from camcore.methods import METHODS

CAM_METHODS: tuple[str, ...] = tuple(METHODS)
CONTROLS: tuple[str, ...] = ("sobel", "random")
ALL_METHODS: tuple[str, ...] = CAM_METHODS + CONTROLS
METHOD_LABELS: dict[str, str] = {key: spec.label for key, spec in METHODS.items()} | {
    "sobel": "Sobel (control)",
    "random": "Random (control)",
}
DEFAULT_MAX_N = 10
DEFAULT_CURVE_STEPS = 20
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))
# The random control is Gaussian-smoothed so that it has blobs of about the size of an
# upsampled 14 x 14 CAM (sigma = side / 28, 8 px at 224), a fairer control than
# per-pixel noise.
RANDOM_SIGMA_FRACTION = 1 / 28
# ROAD imputation noise: 1 % of the input range for each preprocessing mode
# (Rong et al. 2022 use 0.01 on inputs of about unit range).
_INPUT_RANGE = {"unit": 1.0, "symmetric": 2.0, "none": 255.0, "caffe": 255.0, "torch": 1.0 / 0.226}
# Deletion replaces pixels by a Gaussian blur of the image (sigma in pixels at the model's
# input size), the canvas insertion starts from (Petsiuk et al. 2018 use it for
# insertion). RISE's constant-0 deletion baseline paints black holes, which a defect
# classifier reads as defects: on the demo models the "defective" probability goes to 1
# at every step for every map, so all deletion AUCs come out equal.
BLUR_SIGMA = 5.0

Progress = Callable[[int, int], None]
"""``progress(done, total)``: images finished (resumed ones included) out of all."""


def _check_methods(methods: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(ALL_METHODS)}")
    if not chosen:
        raise ValueError("no method to evaluate")
    return chosen
