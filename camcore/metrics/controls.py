"""Control maps for the sanity of a comparison: a method should beat maps that know
nothing about the model.

* :func:`random_map` - uniform or smoothed noise;
* :func:`control_maps` - the Sobel edge map of the image and a random map;
* :func:`flag_below_controls` - which methods fail to beat every control on a metric.

The model-parameter randomization check (Adebayo et al. 2018) is in
:mod:`camcore.metrics.sanity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

__all__ = ["random_map", "control_maps", "flag_below_controls"]


def random_map(
    shape: tuple[int, int], seed: int | None = None, sigma: float = 0.0
) -> np.ndarray:
    """Random-saliency control: float32 ``shape`` map in ``[0, 1]``.

    With ``sigma == 0`` (default) pixels are i.i.d. uniform on ``[0, 1)``. With
    ``sigma > 0`` the noise is Gaussian-smoothed (``sigma`` in pixels) to make blob-like
    maps closer in texture to upsampled CAMs, then min-max rescaled to ``[0, 1]``.
    A method that does not beat this control carries no information about the model
    (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").
    """
    rng = np.random.default_rng(seed)
    noise = rng.random((int(shape[0]), int(shape[1])), dtype=np.float32)
    if sigma <= 0:
        return noise
    smooth = cv2.GaussianBlur(noise, (0, 0), float(sigma))
    lo, hi = float(smooth.min()), float(smooth.max())
    if hi <= lo:
        return np.zeros_like(smooth)
    return ((smooth - lo) / (hi - lo)).astype(np.float32)


def control_maps(
    image: np.ndarray, seed: int | None = None, sigma: float = 0.0
) -> dict[str, np.ndarray]:
    """The two control maps for ``image`` (``(H, W[, C])``): ``{"sobel", "random"}``.

    ``"sobel"`` is :func:`camcore.methods.sobel.sobel_gradient` (an edge detector that
    ignores the model), ``"random"`` is :func:`random_map` with ``seed`` and ``sigma``.
    """
    # Imported here so that importing camcore.metrics never pulls in the methods package.
    from camcore.methods.sobel import sobel_gradient

    sobel = sobel_gradient(image)
    return {"sobel": sobel, "random": random_map(sobel.shape, seed=seed, sigma=sigma)}


def flag_below_controls(
    summary: Mapping[str, Mapping[str, float]],
    metric: str,
    higher_is_better: bool = True,
    controls: Sequence[str] = ("sobel", "random"),
) -> dict[str, bool]:
    """Flag methods that fail to strictly beat every control on ``metric``.

    ``summary[method][metric]`` is a data-set-level score (e.g. mean insertion AUC, or
    mean deletion AUC with ``higher_is_better=False``). Returns ``{method: flagged}`` for
    every non-control method; ``flagged`` is True when the method ties or loses against
    at least one control, or when its score is NaN. Raises ``KeyError`` if a control or
    a method lacks the metric.
    """
    missing = [c for c in controls if c not in summary]
    if missing:
        raise KeyError(f"controls missing from summary: {missing}")
    control_scores = [float(summary[c][metric]) for c in controls]
    flags: dict[str, bool] = {}
    for method, scores in summary.items():
        if method in controls:
            continue
        value = float(scores[metric])
        if higher_is_better:
            beats = all(value > c for c in control_scores)
        else:
            beats = all(value < c for c in control_scores)
        # NaN comparisons are False, so a NaN score (or NaN control) is flagged.
        flags[method] = not beats
    return flags
