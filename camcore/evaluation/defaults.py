"""Method lists and default parameters of the batch evaluation."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Callable, Iterator

from camcore.defaults import DEFAULT_MAX_N
from camcore.methods import METHODS

__all__ = [
    "ALL_METHODS", "BLUR_SIGMA", "CAM_METHODS", "CONTROLS", "DEFAULT_CURVE_STEPS", "DEFAULT_MAX_N", "DEFAULT_WORKERS",
    "METHOD_LABELS", "RANDOM_SIGMA_FRACTION", "Progress", "check_methods",
]

CONTROLS: tuple[str, ...] = ("sobel", "random")
_CONTROL_LABELS = {"sobel": "Sobel (control)", "random": "Random (control)"}


class _RegistryKeys(Sequence):
    """A read-only, always current view of the registry's keys (plus the controls), so a
    method registered after import is evaluated like a built-in one."""

    def __init__(self, with_controls: bool) -> None:
        self._with_controls = with_controls

    def _keys(self) -> tuple[str, ...]:
        return tuple(METHODS) + (CONTROLS if self._with_controls else ())

    def __getitem__(self, index):  # untyped: Sequence's is overloaded (an index, a slice)
        return self._keys()[index]

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return repr(self._keys())


class _RegistryLabels(Mapping):
    """Method key -> label, read from the registry at each lookup."""

    def __getitem__(self, key: str) -> str:
        if key in METHODS:
            return METHODS[key].label
        return _CONTROL_LABELS[key]

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(METHODS) + CONTROLS)

    def __len__(self) -> int:
        return len(METHODS) + len(CONTROLS)


CAM_METHODS: Sequence[str] = _RegistryKeys(with_controls=False)
ALL_METHODS: Sequence[str] = _RegistryKeys(with_controls=True)
METHOD_LABELS: Mapping[str, str] = _RegistryLabels()
DEFAULT_CURVE_STEPS = 20
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))
# The random control is Gaussian-smoothed so that it has blobs of about the size of an
# upsampled 14 x 14 CAM (sigma = side / 28, 8 px at 224), a fairer control than
# per-pixel noise.
RANDOM_SIGMA_FRACTION = 1 / 28
# Deletion replaces pixels by a Gaussian blur of the image (sigma in pixels at the model's
# input size), the canvas insertion starts from (Petsiuk et al. 2018 use it for
# insertion). RISE's constant-0 deletion baseline paints black holes, which a defect
# classifier reads as defects: on the demo models the "defective" probability goes to 1
# at every step for every map, so all deletion AUCs come out equal.
BLUR_SIGMA = 5.0

Progress = Callable[[int, int], None]
"""``progress(done, total)``: images finished (resumed ones included) out of all."""


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` without repeats, in their order; ValueError if one is neither a registered
    CAM method nor a control, or if there is none."""
    chosen = list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(ALL_METHODS)}")
    if not chosen:
        raise ValueError("no method to evaluate")
    return chosen
