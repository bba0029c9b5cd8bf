"""Ablation-CAM's passes (Desai & Ramaswamy, WACV 2020, eq. 3): the class scores with one
channel k of the layer set to zero, for every channel that is not already all zero, run
through the backend's layer-to-scores tail (the layers before the layer run once per image
where the backend can share them)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from camcore.passes.base import PassContext, Provider, one_row_per_copy


@dataclass
class AblationState:
    """Ablation-CAM's passes for one (layer, image, precision): scores with channel k zeroed."""

    zero: np.ndarray  # (K,) all-zero channels: ablating them changes nothing
    base: np.ndarray  # (n_classes,) scores of the image, at the passes' precision
    scores: np.ndarray  # (K, n_classes); NaN = not run
    done: np.ndarray  # (K,) bool


class AblationPasses(Provider):
    need = "ablation_passes"
    capability = "layer_tail"

    def read(self, context: PassContext, **arguments: Any) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n_classes,) of the image, scores (K, n_classes) with channel k zeroed;
        all-zero channels get the image's scores)."""
        engine, call = self.engine, context.call
        if call.offline and engine.known_verdict(context.layer) is None:
            call.need_pass()
        precision = engine.pass_precision(context.prepared, context.layer)
        key = ("ablation", context.layer, context.prepared.key, precision)
        # a read (offline call) never waits for another thread's passes: it uses what is done
        with engine.flight(key, wait=not call.offline):
            state = engine.cache.get(key)
            if state is None:
                call.need_pass()
                state = self._new_state(context, key, precision)
            todo = np.flatnonzero(~state.done)
            active = int((~state.zero).sum())
            if todo.size < active:
                call.reused.append(f"{active - todo.size} ablation passes reused")
            if todo.size:
                self._run(context, state, todo, precision)
        return state.base, state.scores

    def _new_state(self, context: PassContext, key: tuple, precision: str) -> AblationState:
        engine, call, prepared, layer = self.engine, context.call, context.prepared, context.layer
        activations = engine.activations_of(prepared, layer, call)
        k = activations.shape[-1]
        if precision == "fp32":
            base = engine.scores_of(prepared, call)
        else:
            # y_c at the passes' own precision, so (y_c - y_c^k) compares like with like
            base = engine.backend.ablated_scores(prepared.x, layer, np.ones((1, k), np.float32), precision)[0]
            call.spent("ablation passes", 0.0, 1)
        zero = ~np.any(activations.reshape(-1, k) != 0.0, axis=0)
        state = AblationState(zero=zero, base=base, scores=np.full((k, engine.backend.n_classes), np.nan, np.float32),
                              done=zero.copy())
        state.scores[zero] = base
        engine.cache.put(key, state)
        return state

    def _run(self, context: PassContext, state: AblationState, todo: np.ndarray, precision: str) -> None:
        context.call.need_pass()
        engine, prepared, layer = self.engine, context.prepared, context.layer
        k = state.zero.size

        def batch(channels: np.ndarray) -> None:
            keep = np.ones((channels.size, k), np.float32)
            keep[np.arange(channels.size), channels] = 0.0
            scores = engine.backend.ablated_scores(prepared.x, layer, keep, precision)
            state.scores[channels] = one_row_per_copy(scores, channels.size, "Ablation-CAM")
            state.done[channels] = True

        batches = [todo[begin : begin + engine.batch_size] for begin in range(0, todo.size, engine.batch_size)]
        start = time.perf_counter()
        try:
            engine.run_steps(context.call.owner, [functools.partial(batch, b) for b in batches], context.progress,
                             [int(b.size) for b in batches])
        finally:
            context.call.spent("ablation passes", time.perf_counter() - start, int(state.done[todo].sum()))
