"""The gradient family's pass: one forward+backward per (image, layer, class) returning the
layer's activations A and dy_c/dA, shared by Grad-CAM, Grad-CAM++, LayerCAM, XGrad-CAM and
HiResCAM (Selvaraju et al. 2017, eq. 1: the gradient of the class score with respect to the
feature maps)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from camcore.passes.base import PassContext, Provider, finite_scores


class GradientPasses(Provider):
    need = "gradients"
    capability = "gradients"

    def read(self, context: PassContext, **arguments: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """(A (h, w, K), dy_c/dA (h, w, K), c); a class hint of -1 is top-1, chosen in the pass."""
        engine, call = self.engine, context.call
        key = ("gradient", context.layer, context.prepared.key, context.class_hint)
        cached = engine.cache.get(key)
        if cached is None:
            call.need_pass()
            with engine.flight(key):
                cached = engine.cache.get(key)  # computed meanwhile by another thread?
                if cached is None:
                    return self._run(context, key)
        call.reused.append("forward+backward shared with earlier gradient methods")
        return cached

    def _run(self, context: PassContext, key: tuple) -> tuple[np.ndarray, np.ndarray, int]:
        engine, call, prepared, layer = self.engine, context.call, context.prepared, context.layer
        start = time.perf_counter()
        activations, gradients, scores, chosen = engine.backend.gradients(prepared.x, layer, context.class_hint)
        finite_scores(scores)
        result = (activations, gradients, chosen)
        engine.cache.put(("gradient", layer, prepared.key, chosen), result)
        if key[-1] != chosen:  # asked as top-1: found again under that name too
            engine.cache.put(key, result)
        engine.cache.put(("activations", layer, prepared.key), activations)
        engine.cache.put(("scores", prepared.key), scores)
        call.spent("forward+gradients", time.perf_counter() - start, 1)
        return result
