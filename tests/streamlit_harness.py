"""How the tests run Streamlit's AppTest like a real server."""

from __future__ import annotations


def compile_pages_once() -> None:
    """AppTest gives every run a fresh ``ScriptCache``, so each run parsed, magic-rewrote and
    compiled the page script again (~20 ms for the Compare page); a server compiles it once
    per process. Every cache made from now on shares one table of compiled pages. The
    pages are not edited while the tests run."""
    from streamlit.runtime.scriptrunner import script_cache

    cache_class = script_cache.ScriptCache
    if getattr(cache_class, "_shared_by_tests", False):
        return
    shared: dict = {}
    original_init = cache_class.__init__

    def init(self) -> None:
        original_init(self)
        self._cache = shared

    cache_class.__init__ = init
    cache_class._shared_by_tests = True


def sessions_with_grid_painted() -> None:
    """A session's first page run draws the charts below the grid only once the browser
    reports the grid drawn (``dashboard/components/after_paint.py``), which AppTest, running
    no JavaScript, never does. Every AppTest session from now on starts as if its browser
    had (``GRID_PAINTED`` set); a test of the first run itself removes it."""
    from streamlit.testing.v1 import AppTest

    from dashboard.components.after_paint import GRID_PAINTED

    if getattr(AppTest, "_grid_painted_by_tests", False):
        return
    original_init = AppTest.__init__

    def init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self.session_state[GRID_PAINTED] = True

    AppTest.__init__ = init
    AppTest._grid_painted_by_tests = True
