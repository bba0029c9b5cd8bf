"""Score-CAM's masked passes (Wang et al. 2020, sec. 4, eq. 3-4): the model's scores for
the input masked by each channel's upsampled, min-max normalized activation map, run in
order of decreasing channel std (Faster-Score-CAM's criterion) and kept with their full
score vectors, so any later ``max_n`` or class costs no model pass.

Which channels need a pass is decided here (:func:`plan_channels`): an all-zero channel's
term w_k A^k is 0 whatever w_k, so it needs none; constant channels give an all-zero mask,
so one pass on the zero input serves them all.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from camcore.passes.base import PassContext, Provider, clamp_max_n, one_row_per_copy
from camcore.prepared import Prepared


@dataclass(frozen=True)
class ChannelPlan:
    """Which channels of a (h, w, K) activation need what.

    ``order``: channel indices by decreasing std (stable, so ties keep index order).
    ``zero``: all-zero channels. Their term w_k A^k is 0 whatever w_k: no pass.
    ``constant``: constant, non-zero channels. Their normalized mask is all zeros,
    so one pass on the zero input serves them all.
    """

    order: np.ndarray
    zero: np.ndarray
    constant: np.ndarray

    @property
    def n_channels(self) -> int:
        return int(self.order.size)

    def passes_needed(self, n: int) -> tuple[np.ndarray, bool]:
        """Channels of the first ``n`` (in order) that need their own masked pass,
        and whether the shared zero-input pass is needed too."""
        head = self.order[:n]
        varying = head[~self.constant[head] & ~self.zero[head]]
        needs_zero_pass = bool(np.any(self.constant[head] & ~self.zero[head]))
        return varying, needs_zero_pass


def plan_channels(activations: np.ndarray) -> ChannelPlan:
    """Rank channels by the std of their activation map (Faster-Score-CAM's criterion)."""
    flat = activations.reshape(-1, activations.shape[-1]).astype(np.float32)
    low, high = flat.min(axis=0), flat.max(axis=0)
    std = flat.std(axis=0)
    constant = high == low
    zero = constant & (high == 0.0)
    order = np.argsort(-std, kind="stable")
    return ChannelPlan(order=order, zero=zero, constant=constant)


@dataclass
class ScoreState:
    """Score-CAM's masked-pass results for one (layer, image, masking, precision)."""

    activations: np.ndarray  # (h, w, K)
    plan: ChannelPlan
    scores: np.ndarray  # (K, n_classes) pre-activation scores of X∘H^k; NaN = not run
    done: np.ndarray  # (K,) bool
    zero_scores: np.ndarray | None = None  # scores of the all-zero mask, shared by constant channels
    seconds_per_pass: float = 0.0
    precision: str = "fp32"  # of the masked passes

    def covered_prefix(self) -> int:
        """How many leading channels (in std order) need no further model pass."""
        order, plan = self.plan.order, self.plan
        ready = self.done[order] | plan.zero[order]
        if self.zero_scores is not None:
            ready |= plan.constant[order]
        missing = np.flatnonzero(~ready)
        return int(missing[0]) if missing.size else int(order.size)

    def rows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(channels, scores) of the first ``n`` channels, all-zero ones left out: they add
        0·w_k to the sum (under channel_softmax their share of the normalizer is a positive
        global factor that the [0, 1] rescale removes)."""
        channels = self.plan.order[:n]
        channels = channels[~self.plan.zero[channels]]
        scores = self.scores[channels]
        constant = self.plan.constant[channels]
        if constant.any():
            scores = scores.copy()
            scores[constant] = self.zero_scores
        return channels, scores


class MaskedPasses(Provider):
    need = "masked_passes"

    def read(self, context: PassContext, **arguments: Any) -> tuple[np.ndarray, np.ndarray]:
        """(channel indices, pre-activation scores (n', n_classes) of X∘H^k) of the first
        ``n`` channels in decreasing-std order (see :meth:`ScoreState.rows`)."""
        raw, preprocessing = context.options.get("raw_image"), context.options.get("preprocessing")
        if (raw is None) != (preprocessing is None):
            raise ValueError("raw_image and preprocessing go together: give both or neither")
        raw = None if raw is None else self.engine.prepare(raw)
        masking = "input" if raw is None else ("raw", preprocessing, raw.key)
        call = context.call
        if call.offline and self.engine.known_verdict(context.layer) is None:
            call.need_pass()  # the precision is not measured yet: nothing can be cached
        precision = self.engine.pass_precision(context.prepared, context.layer)
        key = self.state_key(context.prepared, context.layer, precision, masking)
        # a read (offline call) never waits for another thread's passes: it uses what is done
        with self.engine.flight(key, wait=not call.offline):
            state = self.engine.cache.get(key)
            if state is None:
                call.need_pass()  # an offline read stops here: no state, no passes yet
                state = self._new_state(context, key)
            n = clamp_max_n(arguments["n"], state.plan.n_channels)
            source = context.prepared.x if raw is None else raw.x
            self._run(state, source, context.layer, n, preprocessing, context)
        return state.rows(n)

    @staticmethod
    def state_key(prepared: Prepared, layer: str, precision: str, masking: Any = "input") -> tuple:
        return ("score", layer, prepared.key, masking, precision)

    def _new_state(self, context: PassContext, key: tuple) -> ScoreState:
        activations = self.engine.activations_of(context.prepared, context.layer, context.call)
        k = activations.shape[-1]
        state = ScoreState(
            activations=activations,
            plan=plan_channels(activations),
            scores=np.full((k, self.engine.backend.n_classes), np.nan, np.float32),
            done=np.zeros(k, bool),
            precision=key[-1],
        )
        self.engine.cache.put(key, state)
        return state

    def _run(self, state: ScoreState, source: np.ndarray, layer: str, n: int, preprocessing: str | None,
             context: PassContext) -> None:
        """Run the masked passes the first ``n`` channels still need, one step per batch."""
        call = context.call
        varying, needs_zero = state.plan.passes_needed(n)
        todo = varying[~state.done[varying]]
        zero_todo = needs_zero and state.zero_scores is None
        total = int(todo.size) + int(zero_todo)
        reused = int(varying.size) - int(todo.size) + int(needs_zero and not zero_todo)
        if reused:
            call.reused.append(f"{reused} masked passes reused")
        if total == 0:
            return
        call.need_pass()
        backend, batch_size = self.engine.backend, self.engine.batch_size
        maps = np.moveaxis(state.activations, -1, 0)  # (K, h, w)

        def zero_pass() -> None:
            zero = np.zeros((1, *maps.shape[1:]), np.float32)
            state.zero_scores = backend.masked_scores(source, layer, zero, preprocessing, state.precision)[0]

        def batch(channels: np.ndarray) -> None:
            scores = backend.masked_scores(source, layer, maps[channels], preprocessing, state.precision)
            state.scores[channels] = one_row_per_copy(scores, channels.size, "Score-CAM")
            state.done[channels] = True  # after the scores: a concurrent read sees both or neither

        batches = [todo[begin : begin + batch_size] for begin in range(0, todo.size, batch_size)]
        steps = ([zero_pass] if zero_todo else []) + [functools.partial(batch, b) for b in batches]
        sizes = ([1] if zero_todo else []) + [int(b.size) for b in batches]
        start = time.perf_counter()
        try:
            self.engine.run_steps(call.owner, steps, context.progress, sizes)
        finally:
            seconds = time.perf_counter() - start
            ran = int(state.done[todo].sum()) + int(zero_todo and state.zero_scores is not None)
            if ran:
                state.seconds_per_pass = seconds / ran
            call.spent("masked passes", seconds, ran)
