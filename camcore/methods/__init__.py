"""The registry of CAM methods: every consumer (``Explainer.compute``, the plain
functions, the dashboard's grid, charts and tables, the evaluation) iterates it.

A method is described once, by a :class:`MethodSpec`: its key, label, family, what
it needs from the model, and a function that turns the shared tensors (a
:class:`~camcore.methods.base.CamInputs`) into a raw map. The engine applies ReLU
and the [0, 1] scaling afterwards, the same for every method (pytorch-grad-cam's
``base_cam.py`` works the same way: methods override only their weights).

Adding a method is one module that defines ``SPEC = MethodSpec(...)`` and one line
in :data:`_BUILTIN` below - or, from outside the package, ``register(spec)``.
"""

from __future__ import annotations

from typing import Any

from camcore.methods import (
    ablation_cam,
    eigen_cam,
    grad_cam,
    grad_cam_plus_plus,
    hires_cam,
    layer_cam,
    score_cam,
    xgrad_cam,
)
from camcore.methods.base import FAMILIES, NEEDS, CamInputs, MethodSpec

_BUILTIN: tuple[MethodSpec, ...] = (
    grad_cam.SPEC,
    grad_cam_plus_plus.SPEC,
    score_cam.SPEC,
    score_cam.FASTER_SPEC,
    layer_cam.SPEC,
    xgrad_cam.SPEC,
    hires_cam.SPEC,
    eigen_cam.SPEC,
    ablation_cam.SPEC,
)

METHODS: dict[str, MethodSpec] = {spec.key: spec for spec in _BUILTIN}
"""Every known method by key, in display order."""

ORIGINAL_STUDY: tuple[str, ...] = ("grad_cam", "grad_cam_plus_plus", "score_cam", "faster_score_cam")
"""The four methods of the 2019 Faster-Score-CAM study: the dashboard's default columns."""


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (``replace=True`` to redefine a key)."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"expected a MethodSpec, got {type(spec).__name__}")
    if spec.key in METHODS and not replace:
        raise ValueError(f"a method {spec.key!r} is already registered")
    METHODS[spec.key] = spec
    return spec


def unregister(key: str) -> None:
    """Remove a method added with :func:`register` (built-in methods stay)."""
    if key in {spec.key for spec in _BUILTIN}:
        raise ValueError(f"{key!r} is a built-in method and cannot be removed")
    METHODS.pop(key, None)


def unavailable_reason(spec: MethodSpec, backend: Any) -> str | None:
    """Why ``spec`` cannot run on ``backend`` (a :class:`camcore.backends.Backend`): the first
    need whose provider requires a capability the backend lacks, in the backend's words
    (e.g. "needs gradients — not available for onnx models"); None if it can run."""
    from camcore.passes import capability_of

    for need in sorted(spec.needs):
        capability = capability_of(need)
        if capability is not None and capability not in backend.capabilities:
            return backend.missing(capability)
    return None


def available_methods(backend: Any) -> list[str]:
    """The keys of the methods ``backend`` can serve, in display order."""
    return [key for key, spec in METHODS.items() if unavailable_reason(spec, backend) is None]


def get(key: str) -> MethodSpec:
    """The spec of ``key``; ValueError naming the known keys otherwise."""
    spec = METHODS.get(key) if isinstance(key, str) else None
    if spec is None:
        raise ValueError(f"unknown method {key!r}; choose one of {list(METHODS)}")
    return spec


__all__ = [
    "FAMILIES", "METHODS", "NEEDS", "ORIGINAL_STUDY", "CamInputs", "MethodSpec", "available_methods", "get",
    "register", "unavailable_reason", "unregister",
]
