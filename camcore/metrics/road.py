"""ROAD: Remove And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML).

Removed pixels are filled by noisy linear imputation instead of a constant baseline, so
the shape of the removed region does not leak class information; :func:`road_curve`
evaluates the model on the imputed images.

Why a hand-written solver. The imputation's sparse linear system is solved here with
multigrid-preconditioned conjugate gradients (numpy / OpenCV only, :class:`_ImputationGrid`),
not with ``scipy.sparse.linalg.spsolve`` as the ROAD authors do, because it is clearly
faster on the evaluation's sizes and gives the same image. ``scripts/bench_numerics.py``
(one ROAD curve = the 9 removal percentages of a CAM-like map; seconds of CPU time on one
thread, min of 3, both timed in the same run; numpy 2.4.6, scipy 1.17.1, 2 shared cores):

==========  ========  =====  =======================  ===============  ==========
size        channels  order  multigrid CG (here), s   spsolve, s       here faster
==========  ========  =====  =======================  ===============  ==========
224 x 224   1         MoRF   0.34                     1.20             3.5x
224 x 224   1         LeRF   0.40                     1.37             3.4x
224 x 224   3         MoRF   0.91                     1.40             1.5x
224 x 224   3         LeRF   0.93                     1.25             1.3x
512 x 512   1         MoRF   1.80                     13.78            7.7x
512 x 512   1         LeRF   2.00                     11.66            5.8x
512 x 512   3         MoRF   5.39                     12.23            2.3x
512 x 512   3         LeRF   6.17                     10.94            1.8x
==========  ========  =====  =======================  ===============  ==========

The imputed images differ by at most 1.8e-7 (float32 rounding). A direct factorization
fills in with the hole's area (90 % of a 512 x 512 image: ~14 s), while each V-cycle costs
one pass over the hole; it is never slower, 3.4-7.7x faster on gray images (DAGM textures,
the demo models: the evaluation's main case) and at 512 x 512, and ~1.4x on 224 x 224 RGB,
where the factorization is shared by the three channels and the iterations are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from camcore.metrics._common import (
    PredictFn,
    as_image,
    as_mask,
    batched_scores,
    checked_map,
    pixel_rank,
)
from camcore.metrics.base import Column, Curve, Metric, MetricInputs, RunContext
from camcore.metrics.faithfulness import curve_row
from camcore.preprocess import INPUT_RANGE

__all__ = [
    "DEFAULT_ROAD_PERCENTAGES",
    "NOISE_FRACTION",
    "ROAD_KERNEL",
    "noisy_linear_impute",
    "road_curve",
    "ROAD_MORF_AUC",
    "ROAD_LERF_AUC",
    "ROAD_MORF_CURVE",
    "ROAD_LERF_CURVE",
    "METRIC",
]

DEFAULT_ROAD_PERCENTAGES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# ROAD's noisy linear imputation stencil (Rong et al. 2022): a removed pixel is
# the weighted mean of its 8 neighbours, 1/6 for the 4 direct and 1/12 for the 4 diagonal
# ones (the weights sum to 1 in the interior).
ROAD_KERNEL = np.array(
    [[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=np.float64
)


# Grids in the imputation solver are stored as (C, h + 1, w): channels share the matrix and
# are solved together, and the extra all-zero row below each channel plane separates the
# planes, so one 2-D filter2D call over the (C * (h + 1), w) view computes every channel's
# neighbour sums without mixing channels (the separator is never an unknown).


def _neighbour_sum(v: np.ndarray) -> np.ndarray:
    """Sum of ``ROAD_KERNEL``-weighted neighbours of every pixel of a (C, h + 1, w) grid.

    Zero padding drops neighbours outside the image.
    """
    c, rows, w = v.shape
    flat = np.ascontiguousarray(v).reshape(c * rows, w)
    return cv2.filter2D(flat, -1, ROAD_KERNEL, borderType=cv2.BORDER_CONSTANT).reshape(
        c, rows, w
    )


def _planes(a: np.ndarray) -> np.ndarray:
    """(h, w) or (h, w, C) -> (C, h + 1, w) float64 with a zero separator row."""
    a3 = a[..., None] if a.ndim == 2 else a
    h, w, c = a3.shape
    out = np.zeros((c, h + 1, w), np.float64)
    out[:, :h] = np.moveaxis(a3, -1, 0)
    return out


_STENCIL_OFFSETS = tuple(
    (dy, dx, float(ROAD_KERNEL[dy + 1, dx + 1]))
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dy, dx) != (0, 0)
)


class _ImputationGrid:
    """One level of the geometric-multigrid preconditioner for ROAD's imputation system.

    The operator is ``L = D - A`` on the unknown (removed) pixels: ``A`` holds the 1/6 and
    1/12 neighbour weights, ``D`` the in-image weight sum of each pixel, and kept pixels
    act as Dirichlet boundary. Plain CG needs on the order of one iteration per pixel of
    hole diameter (200-400 for a 50% hole at 224x224); a V-cycle preconditioner makes
    that ~10, nearly independent of the hole size (Briggs, Henson & McCormick, "A Multigrid
    Tutorial", 2nd ed., ch. 3-4).

    Coarse level: 2x2 blocks whose pixels are all unknown (so the coarse problem keeps a
    Dirichlet boundary and stays non-singular), re-discretized with the same stencil;
    bilinear prolongation ``P`` and restriction ``P^T``, with the same Jacobi sweeps
    before and after (weight 1, which damps the stencil's high frequencies by 3x): that
    keeps the preconditioner symmetric positive definite, as CG requires.
    """

    _SWEEPS = 2
    _DENSE_MAX = 64  # unknowns up to which a level is solved exactly
    _DENSE_MAX_THIN = 1024  # same, for a level too thin to coarsen further

    def __init__(self, removed: np.ndarray) -> None:
        h, w = removed.shape
        self.h, self.w = h, w
        self.mask = _planes(removed.astype(np.float64))
        weight_sum = _neighbour_sum(_planes(np.ones((h, w))))
        self.diag = weight_sum * self.mask
        self.inv_diag = np.divide(
            self.mask, weight_sum, out=np.zeros_like(self.mask), where=self.mask > 0
        )
        self.coarse: _ImputationGrid | None = None
        self.dense_inverse: np.ndarray | None = None
        self.unknown_index = np.flatnonzero(np.pad(removed, ((0, 1), (0, 0))))
        n = self.unknown_index.size
        if n <= self._DENSE_MAX:
            self.dense_inverse = np.linalg.inv(self._dense_matrix(removed))
        elif min(h, w) > 8:
            hc, wc = (h + 1) // 2, (w + 1) // 2
            padded = np.ones((2 * hc, 2 * wc), bool)
            padded[:h, :w] = removed
            coarse = np.asarray(padded.reshape(hc, 2, wc, 2).all(axis=(1, 3)))
            # No all-unknown block means scattered unknowns next to known pixels: well
            # conditioned, smoothing alone preconditions it.
            if coarse.any():
                self.coarse = _ImputationGrid(coarse)
        elif n <= self._DENSE_MAX_THIN:
            self.dense_inverse = np.linalg.inv(self._dense_matrix(removed))

    def _dense_matrix(self, removed: np.ndarray) -> np.ndarray:
        h, w = removed.shape
        index = np.full((h, w), -1, np.int64)
        ys, xs = np.nonzero(removed)
        index[ys, xs] = np.arange(ys.size)
        matrix = np.diag(self.diag[0, :h][ys, xs])
        for dy, dx, weight in _STENCIL_OFFSETS:
            ny, nx = ys + dy, xs + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            rows, cols = np.nonzero(ok)[0], index[ny[ok], nx[ok]]
            keep = cols >= 0
            matrix[rows[keep], cols[keep]] -= weight
        return matrix

    def apply(self, v: np.ndarray) -> np.ndarray:
        """``L v`` for ``v`` that is zero off the unknowns."""
        out = _neighbour_sum(v)
        out *= self.mask
        np.subtract(self.diag * v, out, out=out)
        return out

    def _smooth(self, r: np.ndarray, e: np.ndarray, sweeps: int) -> np.ndarray:
        for _ in range(sweeps):
            e += (r - self.apply(e)) * self.inv_diag
        return e

    def _prolong(self, coarse_e: np.ndarray) -> np.ndarray:
        # Bilinear 2x interpolation between cell centres (weights 3/4 and 1/4, edge cells
        # replicated); separable, rows then columns.
        e = coarse_e[:, :-1]
        c, hc, wc = e.shape
        f = np.empty((c, 2 * hc, wc))
        even, odd = f[:, 0::2], f[:, 1::2]
        np.multiply(e, 0.75, out=even)
        even[:, 1:] += 0.25 * e[:, :-1]
        even[:, 0] += 0.25 * e[:, 0]
        np.multiply(e, 0.75, out=odd)
        odd[:, :-1] += 0.25 * e[:, 1:]
        odd[:, -1] += 0.25 * e[:, -1]
        g = np.empty((c, 2 * hc, 2 * wc))
        even, odd = g[:, :, 0::2], g[:, :, 1::2]
        np.multiply(f, 0.75, out=even)
        even[:, :, 1:] += 0.25 * f[:, :, :-1]
        even[:, :, 0] += 0.25 * f[:, :, 0]
        np.multiply(f, 0.75, out=odd)
        odd[:, :, :-1] += 0.25 * f[:, :, 1:]
        odd[:, :, -1] += 0.25 * f[:, :, -1]
        out = np.zeros((c, self.h + 1, self.w))
        np.multiply(g[:, : self.h, : self.w], self.mask[:, : self.h], out=out[:, : self.h])
        return out

    def _restrict(self, r: np.ndarray) -> np.ndarray:
        # Exact transpose of _prolong (required for a symmetric preconditioner).
        coarse = self.coarse
        if coarse is None:
            raise RuntimeError("restriction needs a coarse grid")
        hc, wc = coarse.h, coarse.w
        c = r.shape[0]
        g = np.zeros((c, 2 * hc, 2 * wc))
        g[:, : self.h, : self.w] = (r * self.mask)[:, : self.h]
        even, odd = g[:, :, 0::2], g[:, :, 1::2]
        f = 0.75 * (even + odd)
        f[:, :, :-1] += 0.25 * even[:, :, 1:]
        f[:, :, 0] += 0.25 * even[:, :, 0]
        f[:, :, 1:] += 0.25 * odd[:, :, :-1]
        f[:, :, -1] += 0.25 * odd[:, :, -1]
        even, odd = f[:, 0::2], f[:, 1::2]
        e = 0.75 * (even + odd)
        e[:, :-1] += 0.25 * even[:, 1:]
        e[:, 0] += 0.25 * even[:, 0]
        e[:, 1:] += 0.25 * odd[:, :-1]
        e[:, -1] += 0.25 * odd[:, -1]
        out = np.zeros((c, hc + 1, wc))
        out[:, :hc] = e
        return out * coarse.mask

    def precondition(self, r: np.ndarray) -> np.ndarray:
        """One symmetric V-cycle: an approximation of ``L^-1 r``."""
        if self.dense_inverse is not None:
            c = r.shape[0]
            flat = r.reshape(c, -1)
            out = np.zeros_like(flat)
            out[:, self.unknown_index] = flat[:, self.unknown_index] @ self.dense_inverse
            return out.reshape(r.shape)
        e = self._smooth(r, r * self.inv_diag, self._SWEEPS - 1)
        if self.coarse is None:
            # No coarse grid (e.g. scattered pixels): the problem is well conditioned
            # and a few more sweeps are enough.
            return self._smooth(r, e, self._SWEEPS)
        e += self._prolong(self.coarse.precondition(self._restrict(r - self.apply(e))))
        return self._smooth(r, e, self._SWEEPS)


def _solve_imputation(img: np.ndarray, rem: np.ndarray, rtol: float, max_iter: int) -> np.ndarray:
    """Solve ROAD's imputation system (see :func:`noisy_linear_impute`) with
    multigrid-preconditioned conjugate gradients.

    Returns float64 (H, W, C) holding the solution on removed pixels and 0 elsewhere.
    """
    h = img.shape[0]
    grid = _ImputationGrid(rem)
    known = _planes(img) * _planes((~rem).astype(np.float64))
    b = grid.mask * _neighbour_sum(known)

    def dot(a: np.ndarray, b_: np.ndarray) -> np.ndarray:
        return np.einsum("chw,chw->c", a, b_)

    u = np.zeros_like(b)
    r = b.copy()
    z = grid.precondition(r)
    p = z.copy()
    rz = dot(r, z)
    limit = rtol * np.sqrt(dot(b, b))
    for _ in range(max_iter):
        if np.all(np.sqrt(dot(r, r)) <= limit):
            break
        ap = grid.apply(p)
        pap = dot(p, ap)
        # A converged channel has p == 0; keep it frozen instead of dividing 0 by 0.
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)[:, None, None]
        u += alpha * p
        r -= alpha * ap
        z = grid.precondition(r)
        rz_new = dot(r, z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)[:, None, None]
        p = z + beta * p
        rz = rz_new
    return np.moveaxis(u[:, :h], 0, -1)


def _hole_box(removed: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of the removed pixels grown by one pixel, clipped to the image.

    Only the removed pixels and their direct neighbours enter the imputation system, so
    solving on this box is exact and much cheaper for small holes (the image-border weight
    renormalization is unaffected: the box is clipped exactly where the image ends).
    """
    ys, xs = np.nonzero(removed)
    y0, y1 = max(int(ys.min()) - 1, 0), min(int(ys.max()) + 2, removed.shape[0])
    x0, x1 = max(int(xs.min()) - 1, 0), min(int(xs.max()) + 2, removed.shape[1])
    return slice(y0, y1), slice(x0, x1)


def noisy_linear_impute(
    image: np.ndarray,
    removed: np.ndarray,
    noise_std: float = 0.01,
    seed: int | np.random.Generator | None = None,
    *,
    rtol: float = 1e-8,
    max_iter: int = 1000,
) -> np.ndarray:
    """Replace the ``removed`` pixels of ``image`` by ROAD's noisy linear imputation.

    Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods" (ICML): every removed pixel must equal the weighted mean of its 8
    neighbours, weight 1/6 for direct and 1/12 for diagonal neighbours, which gives one
    sparse linear system per channel; known neighbours enter the right-hand side. At the
    image border, neighbours outside the image are dropped and the remaining weights
    renormalized to sum to 1. Gaussian noise ``N(0, noise_std^2)`` (in units of
    ``image``; 0.01 suits inputs scaled to about unit range - scale it for 0..255 or
    caffe-style inputs) is then added to the imputed pixels only.

    Multiplying row ``i`` by its weight sum ``d_i`` makes the system ``(D - A) u = b``
    symmetric positive definite (a Dirichlet graph Laplacian) whenever at least one pixel
    is kept, so it is solved with conjugate gradients preconditioned by a geometric
    multigrid V-cycle (numpy/OpenCV only, all channels at once; ~10 iterations, about
    0.04 s per gray 224x224 image whatever the hole shape; why not scipy: the module
    docstring) until the residual is below ``rtol`` times the right-hand side, or for at
    most ``max_iter`` iterations.

    ``image`` is ``(H, W)``, ``(H, W, C)`` or ``(1, H, W, C)``; ``removed`` a bool
    ``(H, W)`` mask. Returns float32 with the shape of ``image``. Raises ``ValueError``
    if every pixel is removed (the system is then singular).
    """
    arr = np.asarray(image)
    out_shape = arr.shape
    if arr.ndim == 2:
        arr = arr[..., None]
    img = as_image(arr).astype(np.float64)
    rem = as_mask(removed)
    if rem.shape != img.shape[:2]:
        raise ValueError(f"removed mask {rem.shape} does not match image {img.shape[:2]}")
    if noise_std < 0:
        raise ValueError("noise_std must be >= 0")
    if not rem.any():
        return img.astype(np.float32).reshape(out_shape)
    if rem.all():
        raise ValueError("cannot impute: every pixel is removed")

    result = img.copy()
    box = _hole_box(rem)
    solution = _solve_imputation(img[box], rem[box], rtol, max_iter)
    result[box] = np.where(rem[box][..., None], solution, img[box])
    if noise_std > 0:
        rng = np.random.default_rng(seed)
        result[rem] += rng.normal(0.0, noise_std, size=(int(rem.sum()), img.shape[2]))
    return result.astype(np.float32).reshape(out_shape)


def road_curve(
    predict_fn: PredictFn,
    x: np.ndarray,
    saliency: np.ndarray,
    class_index: int,
    percentages: Sequence[float] = DEFAULT_ROAD_PERCENTAGES,
    order: Literal["morf", "lerf"] = "morf",
    noise_std: float = 0.01,
    seed: int | None = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """ROAD: class probability after Remove And Debias at each removal percentage.

    Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods" (ICML): for each ``p`` in ``percentages``, the
    ``round(p * H * W)`` pixels first in the ``order`` are removed and filled by
    :func:`noisy_linear_impute` (which avoids the class-information leak of constant
    baselines), and the model is evaluated on the imputed image (no retraining).
    ``order="morf"`` removes Most Relevant First (decreasing saliency; a faithful map
    makes the curve drop fast, lower is better), ``"lerf"`` Least Relevant First
    (increasing saliency; higher is better). Ties keep raster order. Returns float64 of
    ``len(percentages)``; percentages must lie in ``[0, 1)``. ``seed`` fixes the
    imputation noise (one generator consumed across the percentages in order).
    """
    img = as_image(x)
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    pcts = np.asarray(percentages, dtype=np.float64)
    if pcts.ndim != 1 or pcts.size == 0 or np.any((pcts < 0) | (pcts >= 1)):
        raise ValueError("percentages must be a non-empty 1-D sequence in [0, 1)")
    rank = pixel_rank(checked_map(saliency, img.shape[:2]), descending=(order == "morf"))
    counts = np.rint(pcts * rank.size).astype(np.int64)
    if np.any(counts >= rank.size):
        raise ValueError("a percentage rounds to removing every pixel")
    rng = np.random.default_rng(seed)
    imputed = np.stack(
        [noisy_linear_impute(img, rank < k, noise_std=noise_std, seed=rng) for k in counts]
    )
    return batched_scores(
        predict_fn, lambda idx: imputed[idx], len(imputed), class_index, batch_size
    )



# ------------------------------------------------------------ the registry entry

NOISE_FRACTION = 0.01
"""ROAD's imputation noise in the evaluation: 1 % of the model input's value range
(:data:`camcore.preprocess.INPUT_RANGE`); Rong et al. 2022 use 0.01 on inputs of about
unit range."""

ROAD_MORF_AUC = Column("road_morf_auc", "ROAD MoRF ↓", "ROAD MoRF AUC", False, distribution=True,
                       worst="highest ROAD MoRF AUC")
ROAD_LERF_AUC = Column("road_lerf_auc", "ROAD LeRF ↑", "ROAD LeRF AUC", True, distribution=True,
                       worst="lowest ROAD LeRF AUC")
ROAD_MORF_CURVE = Curve("road_morf", "fraction of pixels removed, most relevant first",
                        "class probability (lower AUC is better)")
ROAD_LERF_CURVE = Curve("road_lerf", "fraction of pixels removed, least relevant first",
                        "class probability (higher AUC is better)")
_ORDERS: tuple[tuple[Literal["morf", "lerf"], Curve, Column], ...] = (
    ("morf", ROAD_MORF_CURVE, ROAD_MORF_AUC),
    ("lerf", ROAD_LERF_CURVE, ROAD_LERF_AUC),
)


def _noise_std(context: RunContext) -> float:
    return NOISE_FRACTION * INPUT_RANGE.get(context.preprocessing, 1.0)


def _compute(inputs: MetricInputs) -> dict[str, float]:
    row: dict[str, float] = {}
    for order, curve, area in _ORDERS:
        values = road_curve(inputs.predict_fn, inputs.x, inputs.saliency, inputs.class_index, order=order,
                            noise_std=float(inputs.state))
        row.update(curve_row(curve, area, values, DEFAULT_ROAD_PERCENTAGES))
    return row


METRIC = Metric(
    key="road",
    label="ROAD",
    columns=(ROAD_MORF_AUC, ROAD_LERF_AUC),
    curves=(ROAD_MORF_CURVE, ROAD_LERF_CURVE),
    compute=_compute,
    optional=True,
    prepare=_noise_std,
    help="remove and debias, most and least relevant first (Rong et al. 2022; slower)",
)
