"""Defaults shared by the engine, the evaluation and the dashboard (no heavy imports)."""

DEFAULT_MAX_N = 10
"""Channels Faster-Score-CAM uses unless told otherwise (the 2019 study's choice)."""

DEFAULT_BATCH_SIZE = 16
"""Images per batched pass in Score-CAM / Ablation-CAM."""
