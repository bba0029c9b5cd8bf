"""Error handling shared by the components: camcore's messages, never a traceback."""

from __future__ import annotations

import logging
from typing import Any, Callable

import streamlit as st

log = logging.getLogger("camstudio")


class Failed:
    """Returned by :func:`attempt` when the call failed (the error is already shown)."""

    def __bool__(self) -> bool:
        return False


FAILED = Failed()


def attempt(what: str, fn: Callable[..., Any], *args: Any, where: Any = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or ``FAILED`` after showing a short ``st.error``.

    ValueError / TypeError carry camcore's user-facing messages and are shown as is;
    anything else gets a one-line message (the traceback goes to the server log only).
    Streamlit's own control-flow exceptions (rerun, stop) are BaseExceptions and pass.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the UI must never show a traceback
        show_error(what, exc, where)
    return FAILED


def show_error(what: str, exc: Exception, where: Any = None) -> None:
    """A short st.error for ``exc``: camcore's message for ValueError/TypeError, else
    the exception type only (the traceback goes to the server log)."""
    target = st if where is None else where
    if isinstance(exc, (ValueError, TypeError)):
        target.error(f"{what}: {exc}", icon=":material/error:")
    else:
        log.error("%s failed", what, exc_info=exc)
        target.error(
            f"{what}: unexpected {type(exc).__name__}. Details are in the server log.", icon=":material/error:"
        )


def failed(value: Any) -> bool:
    return value is FAILED
