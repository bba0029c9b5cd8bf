"""A model input prepared once: the array, the picture it came from, and its cache key.

Hashing a 224×224×3 float input with blake2b cost 0.96 ms (AMD EPYC, 2026-12-07); on a
small model whose compiled forward+backward takes 3 ms, hashing it again for every method
and cache lookup was half the time of a Grad-CAM call. A :class:`Prepared` is hashed once,
made read-only so the key stays true, and passed to every ``Explainer`` call and panel;
the hash is XXH3-128 (0.018 ms for the same 600 KB): a cache key needs no cryptographic
strength, and 128 bits keep accidental collisions out of reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash


def image_key(x: np.ndarray) -> str:
    """Content hash of an array (shape, dtype and bytes)."""
    digest = xxhash.xxh3_128(repr((x.shape, x.dtype.str)).encode())
    digest.update(np.ascontiguousarray(x).data)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Prepared:
    """A model input ``x`` (1, H, W, C) float32 (read-only), the display ``image`` it was
    made from (uint8, or None), and ``key``, the content hash of ``x``."""

    x: np.ndarray
    key: str
    image: np.ndarray | None = None

    @classmethod
    def of(cls, x: Any, image: np.ndarray | None = None) -> "Prepared":
        """Wrap ``x`` (copied to float32, made read-only, finite-checked, hashed once)."""
        if isinstance(x, Prepared):
            return x
        if isinstance(x, (list, tuple)) and len(x) == 1:
            x = x[0]
        try:
            arr = np.array(x, dtype=np.float32, copy=True)
        except (TypeError, ValueError):
            raise TypeError(f"x must be a numeric array, got {type(x).__name__}") from None
        if arr.ndim != 4 or arr.shape[0] != 1:
            raise ValueError(
                f"x must be a batch of one image (1, H, W, C), got rank {arr.ndim} shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError("x contains NaN or infinite values")
        arr.setflags(write=False)
        return cls(arr, image_key(arr), image)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape


def prepare(x: Any, image: np.ndarray | None = None) -> Prepared:
    """The :class:`Prepared` form of ``x`` (returned unchanged if it already is one)."""
    return Prepared.of(x, image)
