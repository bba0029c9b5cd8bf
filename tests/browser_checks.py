"""Shared guard of the real-browser tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser_helpers import chromium_path


def require_browser() -> None:
    """Skip when Chromium or Playwright is missing; fail instead under
    ``CAMSTUDIO_REQUIRE_BROWSER=1`` (set by .ci/run), so CI cannot go green by skipping."""
    problem = None
    if not (Path(chromium_path()).is_file() or shutil.which(chromium_path())):
        problem = f"Chromium not found at {chromium_path()} (set CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed"
    if problem:
        if os.environ.get("CAMSTUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (CAMSTUDIO_REQUIRE_BROWSER=1) but {problem}")
        pytest.skip(problem)
