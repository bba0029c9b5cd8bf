"""Defaults shared by the library, the evaluation and the dashboard (no heavy imports)."""

from __future__ import annotations

DEFAULT_MAX_N = 10
"""Faster-Score-CAM's default number of channels (``max_n``): the most important channels
whose masked passes it runs (Score-CAM runs one per channel)."""

__all__ = ["DEFAULT_MAX_N"]
