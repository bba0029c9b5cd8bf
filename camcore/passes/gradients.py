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
        if cached is not None:
            call.reused.append("forward+backward shared with earlier gradient methods")
            return cached[0], cached[1], context.class_hint
        call.need_pass()
        start = time.perf_counter()
        activations, gradients, scores, chosen = engine.backend.gradients(
            context.prepared.x, context.layer, context.class_hint
        )
        finite_scores(scores)
        engine.cache.put(("gradient", context.layer, context.prepared.key, chosen), (activations, gradients))
        engine.cache.put(("activations", context.layer, context.prepared.key), activations)
        engine.cache.put(("scores", context.prepared.key), scores)
        call.spent("forward+gradients", time.perf_counter() - start, 1)
        return activations, gradients, chosen
