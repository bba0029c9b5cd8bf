"""Computing one map for a grid column: through the shared explainer, with its timings
logged and a progress bar for methods that run many model passes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from dashboard import state
from dashboard.components.grid import View

if TYPE_CHECKING:  # annotations only: camcore.explainer imports TensorFlow
    from streamlit.delta_generator import DeltaGenerator

    from camcore.explainer import CamResult

Progress = Callable[[int, int], None]  # (passes done, passes in all)


def compute(view: View, method: str, max_n: int | None = None, progress: Progress | None = None) -> CamResult:
    """One CAM through the shared explainer; its timings are logged when computed."""
    result = view.explainer.compute(
        method, view.x, view.layers_for(method), view.class_index, max_n=max_n, progress=progress,
        owner=state.session_owner(),
    )
    state.timing_log().record(view.record_key(method, max_n), result)
    return result


def passes_progress(bar: DeltaGenerator, before: int = 0, text: str = "model passes") -> Progress:
    """A progress callback drawing into ``bar``; ``before`` passes were done by an earlier
    call (e.g. Faster-Score-CAM's, which Score-CAM continues)."""

    def progress(done: int, total: int) -> None:
        if total > 0:
            value = min(max((before + done) / (before + total), 0.0), 1.0)
            bar.progress(value, text=f"{text} {before + done}/{before + total}")

    return progress
