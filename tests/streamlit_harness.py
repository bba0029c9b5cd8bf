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
