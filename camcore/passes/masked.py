"""Score-CAM's masked passes (Wang et al. 2020, sec. 4, eq. 3-4): the model's scores for
the input masked by each channel's upsampled, min-max normalized activation map, run in
order of decreasing channel std (Faster-Score-CAM's criterion) and kept with their full
score vectors, so any later ``max_n`` or class costs no model pass.

Which channels need a pass is decided here (:func:`plan_channels`): an all-zero channel's
term w_k A^k is 0 whatever w_k, so it needs none; constant channels give an all-zero mask,
so one pass on the zero input serves them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from camcore.passes.base import CallRecord, PassContext, Progress, Provider, clamp_max_n, one_row_per_copy
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
        n = arguments["n"]
        raw, preprocessing = context.options.get("raw_image"), context.options.get("preprocessing")
        if (raw is None) != (preprocessing is None):
            raise ValueError("raw_image and preprocessing go together: give both or neither")
        raw = None if raw is None else self.engine.prepare(raw)
        state = self._state(context.prepared, context.layer, raw, preprocessing, context.call)
        n = clamp_max_n(n, state.plan.n_channels)
        source = context.prepared.x if raw is None else raw.x
        self._run(state, source, context.layer, n, preprocessing, context.progress, context.call)
        return state.rows(n)

    @staticmethod
    def state_key(prepared: Prepared, layer: str, precision: str, masking: Any = "input") -> tuple:
        return ("score", layer, prepared.key, masking, precision)

    def _state(self, prepared: Prepared, layer: str, raw: Prepared | None, preprocessing: str | None,
               call: CallRecord) -> ScoreState:
        masking = "input" if raw is None else ("raw", preprocessing, raw.key)
        precision = self.engine.pass_precision(prepared, layer)
        key = self.state_key(prepared, layer, precision, masking)
        state = self.engine.cache.get(key)
        if state is None:
            activations = self.engine.activations_of(prepared, layer, call)
            k = activations.shape[-1]
            state = ScoreState(
                activations=activations,
                plan=plan_channels(activations),
                scores=np.full((k, self.engine.backend.n_classes), np.nan, np.float32),
                done=np.zeros(k, bool),
                precision=precision,
            )
            self.engine.cache.put(key, state)
        return state

    def _run(self, state: ScoreState, source: np.ndarray, layer: str, n: int, preprocessing: str | None,
             progress: Progress | None, call: CallRecord) -> None:
        """Run the masked passes the first ``n`` channels still need, in batches."""
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
        done = 0
        if progress is not None:
            progress(0, total)
        start = time.perf_counter()
        if zero_todo:
            zero = np.zeros((1, *maps.shape[1:]), np.float32)
            state.zero_scores = backend.masked_scores(source, layer, zero, preprocessing, state.precision)[0]
            done += 1
            if progress is not None:
                progress(done, total)
        for begin in range(0, todo.size, batch_size):
            channels = todo[begin : begin + batch_size]
            scores = backend.masked_scores(source, layer, maps[channels], preprocessing, state.precision)
            state.scores[channels] = one_row_per_copy(scores, channels.size, "Score-CAM")
            state.done[channels] = True
            done += channels.size
            if progress is not None:
                progress(done, total)
        seconds = time.perf_counter() - start
        state.seconds_per_pass = seconds / total
        call.spent("masked passes", seconds, total)
