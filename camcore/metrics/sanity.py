"""Model-parameter randomization sanity check (Adebayo et al. 2018, "Sanity Checks for
Saliency Maps", NeurIPS; cascading model-parameter randomization).

An explanation of a model should depend on that model. The check copies the model,
re-draws at random the weights of every layer from the output down to and including the
explained layer, recomputes the map on the copy and compares it with the original map:

* :func:`spearman_correlation` - rank correlation of the two maps (average ranks for ties;
  written here rather than calling ``scipy.stats.spearmanr``: equal to 1e-17 and 2.0-2.7x
  faster on the maps the check compares, 4.2 vs 11.2 ms at 224 x 224 and 26 vs 60 ms at
  512 x 512, by ``scripts/bench_numerics.py``; scipy is not a dependency of camcore);
* :func:`ssim` - structural similarity (Wang et al. 2004), Gaussian window sigma 1.5.

Both are computed on the two maps upsampled (:func:`camcore.maps.upsample`) to the model's
input size, the maps a user sees. A method **passes** when both are below
:data:`SANITY_THRESHOLD` (0.5): Spearman tells whether the map's global ordering survived,
SSIM whether its local structure (blobs, edges) did, and a map that keeps either one once
the weights it is supposed to explain are noise reflects the input more than the model.
Adebayo et al. read similarity curves and give no numeric cut-off; 0.5, halfway between
unrelated (0) and identical (1), is this project's.

One exception: when exactly one of the two maps is constant (typically a gradient CAM
whose weighted sum is negative everywhere on the random model, so the ReLU leaves a blank
map), Spearman alone decides (it is 0 then, see :func:`spearman_correlation`). SSIM
averages over windows, and in a sparse CAM most windows are flat background that a blank
map matches, so SSIM stays near 1 (0.99 measured on a toy model) although the map
vanished. A model-independent map can never go blank by randomization, so the exception
cannot let one pass.

Only :func:`randomized_copy` and :func:`parameter_randomization` need Keras; they import it
when called so that ``import camcore.metrics`` stays free of TensorFlow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import cv2
import numpy as np

from camcore.maps import as_map, upsample
from camcore.metrics.base import Column, Metric, MetricInputs, RunContext

if TYPE_CHECKING:
    import keras

__all__ = [
    "SANITY_THRESHOLD",
    "SSIM_SIGMA",
    "MapFn",
    "SanityResult",
    "spearman_correlation",
    "ssim",
    "randomized_copy",
    "parameter_randomization",
    "compare_maps",
    "RandomizedMaps",
    "SANITY_SPEARMAN",
    "SANITY_SSIM",
    "SANITY_PASS",
    "METRIC",
]

SANITY_THRESHOLD: float = 0.5
SSIM_SIGMA: float = 1.5
"""Standard deviation (pixels) of SSIM's Gaussian window (Wang et al. 2004, sec. III-C)."""

# Wang et al. 2004 use an 11x11 window for sigma 1.5 (radius ~3.3 sigma) and these
# stabilizing constants C1 = (K1 L)^2, C2 = (K2 L)^2, eq. 13.
_SSIM_RADIUS_PER_SIGMA = 5 / 1.5
_SSIM_K1, _SSIM_K2 = 0.01, 0.03

MapFn = Callable[["keras.Model", np.ndarray, str, int], np.ndarray]
"""``(model, x, layer, class_index) -> 2-D map in [0, 1]``: a method as a plain function."""


@dataclass(frozen=True, eq=False)  # holds arrays: element-wise == has no single truth value
class SanityResult:
    """Outcome of :func:`parameter_randomization`.

    ``original`` / ``randomized`` are the method's maps (at the method's resolution) on the
    user's model and on the randomized copy; ``randomized_layers`` lists the layers whose
    weights were re-drawn, by path, from the output down.
    """

    method: str
    layer: str
    class_index: int
    spearman: float
    ssim: float
    passed: bool
    randomized_layers: list[str]
    original: np.ndarray
    randomized: np.ndarray


# ------------------------------------------------------------------- similarity


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a flat array; tied values share the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts).astype(np.float64)
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def _same_shape_maps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a64, b64 = as_map(a), as_map(b)
    if a64.shape != b64.shape:
        raise ValueError(f"maps must have the same shape, got {a64.shape} and {b64.shape}")
    return a64, b64


def spearman_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape.

    Pearson correlation of the maps' pixel ranks, tied values getting their average
    rank (Spearman 1904). A constant map orders nothing, so the correlation is undefined;
    here it is 1.0 when the two maps are identical (the map did not change) and 0.0
    otherwise, never NaN.
    """
    a64, b64 = _same_shape_maps(a, b)
    ra, rb = _average_ranks(a64.ravel()), _average_ranks(b64.ravel())
    da, db = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denominator == 0.0:
        return 1.0 if np.array_equal(a64, b64) else 0.0
    return float(np.clip((da * db).sum() / denominator, -1.0, 1.0))


def ssim(
    a: np.ndarray, b: np.ndarray, *, sigma: float = SSIM_SIGMA, data_range: float = 1.0
) -> float:
    """Mean structural similarity of two maps of the same shape (Wang et al. 2004,
    "Image Quality Assessment: From Error Visibility to Structural Similarity", eq. 13).

    Local means, variances and covariance are Gaussian-weighted (``sigma`` pixels, window
    radius ``round(sigma * 5 / 1.5)``: the paper's 11x11 window for sigma 1.5, normalized
    to unit sum); ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = data_range``; the
    mean is taken over the positions where the window lies inside the map (no padding),
    so each map side must be at least the window size. Identical maps give 1.0, constant
    maps included (the constants keep every ratio defined).
    """
    a64, b64 = _same_shape_maps(a, b)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError("sigma must be > 0")
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError("data_range must be > 0")
    radius = max(1, int(round(sigma * _SSIM_RADIUS_PER_SIGMA)))
    size = 2 * radius + 1
    h, w = a64.shape
    if h < size or w < size:
        raise ValueError(
            f"maps of {h}x{w} are smaller than the {size}x{size} SSIM window; upsample them"
        )
    g = cv2.getGaussianKernel(size, float(sigma), cv2.CV_64F)
    window = g @ g.T

    def local_mean(v: np.ndarray) -> np.ndarray:
        out = cv2.filter2D(v, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT)
        return out[radius : h - radius, radius : w - radius]  # drop padded windows

    mu_a, mu_b = local_mean(a64), local_mean(b64)
    var_a = local_mean(a64 * a64) - mu_a * mu_a
    var_b = local_mean(b64 * b64) - mu_b * mu_b
    cov = local_mean(a64 * b64) - mu_a * mu_b
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    return float(index.mean())


# ----------------------------------------------------------------- randomization


def _layers_in_graph_order(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, layer) of every layer in graph order, nested models entered: the paths
    are those of :attr:`camcore.adapter.ModelAdapter.layers` ("inner/layer")."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            yield from _layers_in_graph_order(layer, path + "/")
        else:
            yield path, layer


def randomized_copy(
    model: keras.Model, layer: str, *, seed: int | np.random.Generator | None = 0
) -> tuple[keras.Model, list[str]]:
    """A copy of ``model`` whose weights from the output down to ``layer`` are random.

    Adebayo et al. 2018, cascading model-parameter randomization, taken down to the
    explained layer: ``keras.models.clone_model`` plus the user's weights (the user's
    model is not touched), then every layer at or after ``layer`` in graph order (nested
    models entered, paths "inner/layer") gets each of its learnt weight tensors re-drawn
    from a Gaussian with that tensor's own mean and standard deviation, matched exactly.
    Keeping the scale matters: drawn at a fixed or zero scale the activations would
    shrink or vanish and every map would change (or go blank) whatever the method, so
    the check would pass everything. Non-learnt state (batch-norm moving statistics) is
    kept: it describes the data, and a re-drawn variance could turn negative. Layers of a
    frozen (``trainable=False``) backbone are randomized too.

    Returns ``(copy, randomized_layers)``, the paths of the layers whose weights were
    re-drawn, from the output down. ``seed`` feeds ``numpy.random.default_rng``.
    """
    import keras

    paths = [path for path, _ in _layers_in_graph_order(model)]
    if layer not in paths:
        raise ValueError(f"layer {layer!r} not found; last layers: {', '.join(paths[-8:])}")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    walk = list(_layers_in_graph_order(clone))
    stop = [path for path, _ in walk].index(layer)
    rng = np.random.default_rng(seed)
    randomized: list[str] = []
    for path, copy_layer in reversed(walk[stop:]):
        # Only the copy is touched: a frozen layer hides its learnt weights from
        # trainable_weights, unfreezing tells them apart from its moving statistics.
        copy_layer.trainable = True
        tensors = copy_layer.trainable_weights
        for variable in tensors:
            values = np.asarray(variable.numpy(), dtype=np.float64)
            mean, std = float(values.mean()), float(values.std())
            draw = rng.standard_normal(values.shape)
            if draw.size > 1 and draw.std() > 0:
                draw = (draw - draw.mean()) / draw.std()
            else:
                draw = np.zeros_like(draw)
            variable.assign((mean + std * draw).astype(variable.dtype))
        if tensors:
            randomized.append(path)
    if not randomized:
        raise ValueError(f"no weights at or above layer {layer!r} to randomize")
    return clone, randomized


def compare_maps(original: np.ndarray, randomized: np.ndarray, size: tuple[int, int],
                 threshold: float = SANITY_THRESHOLD) -> tuple[float, float, bool]:
    """(Spearman, SSIM, passed) of two maps upsampled to ``size``, by the rule of the
    module docstring (both below ``threshold``, or one map blank and Spearman below it)."""
    a, b = upsample(np.asarray(original, np.float32), size), upsample(np.asarray(randomized, np.float32), size)
    rho, structure = spearman_correlation(a, b), ssim(a, b)
    one_blank = (np.ptp(a) == 0) != (np.ptp(b) == 0)
    passed = rho < threshold and (structure < threshold or one_blank)
    return rho, structure, bool(passed)


def parameter_randomization(
    model: keras.Model,
    x: np.ndarray,
    layer: str,
    class_index: int,
    method: str | MapFn | Sequence[str | MapFn] = "grad_cam",
    *,
    seed: int | np.random.Generator | None = 0,
    max_n: int | None = None,
    threshold: float = SANITY_THRESHOLD,
) -> SanityResult | list[SanityResult]:
    """Adebayo et al. 2018's model-parameter randomization check for one map.

    Computes ``method``'s map of ``class_index`` at ``layer`` on ``model`` and on
    :func:`randomized_copy` (``seed``), then their :func:`spearman_correlation` and
    :func:`ssim` on both maps upsampled to the model's input size. ``passed`` is True
    when both are below ``threshold`` (default 0.5), or when exactly one of the maps is
    constant and Spearman is below it (see the module docstring): the map changed with
    the model. The same class is explained on both models.

    ``method`` is a key of ``camcore.METHODS`` (run as
    ``camcore.Explainer(m).compute(method, x, layer, class_index, max_n=max_n)``) or a
    plain function ``(model, x, layer, class_index) -> map in [0, 1]``, e.g. a control
    map that ignores the model and should therefore fail. A list of methods shares one
    randomized copy (the expensive part) and returns a list of results.
    """
    from camcore.explainer import Explainer

    methods: list[str | MapFn] = list(method) if isinstance(method, (list, tuple)) else [cast("str | MapFn", method)]
    explainer = Explainer(model)
    explainer.layer_info(layer)
    index = explainer.check_class(class_index)
    clone, randomized_layers = randomized_copy(model, layer, seed=seed)
    pair = (explainer, Explainer(clone))
    size = explainer.input_shape[:2]
    results = []
    for one in methods:
        original, randomized = (_map_of(runner, one, x, layer, index, max_n) for runner in pair)
        rho, structure, passed = compare_maps(original, randomized, size, threshold)
        name = str(getattr(one, "__name__", "custom")) if callable(one) else str(one)
        results.append(
            SanityResult(name, layer, index, rho, structure, passed, randomized_layers, original, randomized)
        )
    return results if isinstance(method, (list, tuple)) else results[0]


def _map_of(explainer: Any, method: str | MapFn, x: np.ndarray, layer: str, class_index: int,
            max_n: int | None) -> np.ndarray:
    """``method``'s map of ``x`` on the explainer's model: a registered method by key, or a
    plain function of the model."""
    if callable(method):
        cam = method(explainer.model, x, layer, class_index)
    else:
        cam = explainer.compute(method, x, layer, class_index, max_n=max_n).cam
    return np.asarray(cam, dtype=np.float32)


# ------------------------------------------------------------ the registry entry

SANITY_SPEARMAN = Column("sanity_spearman", "sanity Spearman",
                         "Sanity check: Spearman correlation with the randomized model's map", False, fmt="{:.2f}")
SANITY_SSIM = Column("sanity_ssim", "sanity SSIM", "Sanity check: SSIM with the randomized model's map", False,
                     fmt="{:.2f}")
SANITY_PASS = Column("sanity_pass", "sanity pass %", "Sanity check passed", True, summary="rate",
                     summary_name="sanity_pass_rate", fmt="{:.0f}")


class RandomizedMaps:
    """A run's CAM maps on one :func:`randomized_copy` of its model (seeded by the run's
    seed), the registry's sanity-check state. Built once per run; every CAM method is
    traced on a noise image here, so no image's metric time pays for it."""

    def __init__(self, context: RunContext) -> None:
        from camcore.explainer import Explainer

        copy, _ = randomized_copy(context.model, context.layer, seed=context.seed)
        self.context = context
        self.explainer = Explainer(copy, cache_size=8, precision=context.precision)
        # one map at a time: each starts from an empty cache, as the run's own maps do
        self._lock = threading.Lock()
        height, width = context.input_size
        noise = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
        x = context.preprocess(noise)
        for method in context.methods:
            self.map(method, x)

    def map(self, method: str, x: np.ndarray, class_index: int | None = None) -> np.ndarray | None:
        """``method``'s map of ``x`` on the randomized copy for ``class_index`` (default the
        run's; a second model of another class count explains its top-1 on each image);
        None for a control."""
        if method not in self.context.methods:
            return None
        index = self.context.class_index if class_index is None else class_index
        with self._lock:
            self.explainer.clear_cache()
            found = self.explainer.compute(method, x, self.context.layer, index, self.context.max_n)
        return found.cam


def _compute(inputs: MetricInputs) -> dict[str, float]:
    maps: RandomizedMaps = inputs.state
    randomized = maps.map(inputs.method, inputs.x, inputs.class_index)
    if randomized is None:
        return {}
    rho, structure, passed = compare_maps(inputs.cam, randomized, maps.context.input_size)
    return {SANITY_SPEARMAN.name: rho, SANITY_SSIM.name: structure, SANITY_PASS.name: float(passed)}


METRIC = Metric(
    key="sanity",
    label="Sanity check",
    columns=(SANITY_SPEARMAN, SANITY_SSIM, SANITY_PASS),
    compute=_compute,
    optional=True,
    prepare=RandomizedMaps,
    help="each CAM recomputed on one copy of the model with random top layers, seeded by the run's seed "
    "(Adebayo et al. 2018; slower)",
)
