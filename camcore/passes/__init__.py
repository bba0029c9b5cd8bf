"""Pass providers, one module per kind of model pass, keyed by the ``needs`` names methods
declare (:mod:`camcore.passes.base` says what a provider is).

* ``"gradients"`` - :mod:`~camcore.passes.gradients` (one forward+backward, shared);
* ``"masked_passes"`` - :mod:`~camcore.passes.masked` (Score-CAM, channel by channel);
* ``"ablation_passes"`` - :mod:`~camcore.passes.ablation` (Ablation-CAM);
* ``"activations"`` is served by the engine itself (every kind builds on it).

A method that needs a new kind of input (SS-CAM's noisy passes, say) is one provider
module, registered with :func:`register_provider`, plus one method module.
"""

from __future__ import annotations

from camcore.passes.ablation import AblationPasses
from camcore.passes.base import CallRecord, NeedsModelPass, PassContext, Provider
from camcore.passes.gradients import GradientPasses
from camcore.passes.masked import MaskedPasses

PROVIDERS: dict[str, type[Provider]] = {cls.need: cls for cls in (GradientPasses, MaskedPasses, AblationPasses)}
"""Provider classes by the need they serve."""

BUILTIN_NEEDS = ("activations", *PROVIDERS)


def needs() -> tuple[str, ...]:
    """Every need a method may declare: "activations" and the registered providers'."""
    return ("activations", *PROVIDERS)


def register_provider(cls: type[Provider], *, replace: bool = False) -> type[Provider]:
    """Add a provider class for ``cls.need`` (``replace=True`` to redefine one)."""
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"expected a Provider subclass, got {cls!r}")
    if cls.need == "activations" or (cls.need in PROVIDERS and not replace):
        raise ValueError(f"a provider for {cls.need!r} is already registered")
    PROVIDERS[cls.need] = cls
    return cls


def unregister_provider(need: str) -> None:
    """Remove a provider added with :func:`register_provider` (built-in ones stay)."""
    if need in BUILTIN_NEEDS:
        raise ValueError(f"{need!r} is a built-in provider and cannot be removed")
    PROVIDERS.pop(need, None)


def capability_of(need: str) -> str | None:
    """The backend capability the provider of ``need`` requires (None: required passes only)."""
    cls = PROVIDERS.get(need)
    return None if cls is None else cls.capability


__all__ = [
    "BUILTIN_NEEDS", "PROVIDERS", "CallRecord", "NeedsModelPass", "PassContext", "Provider", "capability_of",
    "needs", "register_provider", "unregister_provider",
]
