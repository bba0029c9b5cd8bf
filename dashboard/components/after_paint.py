"""Sections drawn only once the browser has painted the grid above them.

Streamlit's browser client loads an element's code the first time the page shows one:
Plotly's is 4.7 MB, the data frame's 1.2 MB with Apache Arrow. Evaluating them kept the
main thread busy for seconds, and the grid's images, though already received, appeared
only after that (a new page, 2026-12-07 at load 5-7: grid at 6.2-6.9 s with the charts in
the first run, 3.1-3.8 s without them). So a session's first page run draws, below the grid, a short note and
:func:`when_drawn`, a tiny component that waits in the browser until everything inside
the grid is drawn (every image decoded, no element still loading or left from an earlier
run), then reports it; its trigger reruns the fragment that drew it, which now finds
:func:`grid_painted` true and draws the charts. The session remembers it: later runs (another
sample, max_N, a threshold) draw the charts at once, their code being loaded by then.

Streamlit's AppTest runs no JavaScript: tests set :data:`GRID_PAINTED` in the session
state themselves (``tests/streamlit_harness.py``).
"""

from __future__ import annotations

import streamlit as st

GRID_PAINTED = "_grid_painted"  # session key: True once the browser reported the grid drawn
WAIT_AT_MOST_MS = 15_000  # a grid that never settles (an image that never loads) still gets its charts

# Checked when the page changes (a DOM mutation, an image decoded), not every animation frame:
# a page waiting half a minute for its grid on a busy server kept its renderer and the
# compositor producing frames sixty times a second for nothing.
_JS = """
export default function ({ data, setTriggerValue }) {
  let queued = false, finished = false;
  const drawn = () => {
    const box = document.querySelector(data.selector);
    if (!box || box.querySelector('[data-testid=stSkeleton], [data-stale=true]')) return false;
    return [...box.querySelectorAll('img')].every((image) => image.complete);
  };
  const finish = () => {
    if (finished) return;
    finished = true;
    stop();
    setTriggerValue('drawn', true);
  };
  const check = () => {
    queued = false;
    if (!finished && drawn()) finish();
  };
  const soon = () => {
    if (!queued) { queued = true; queueMicrotask(check); }
  };
  const observer = new MutationObserver(soon);
  observer.observe(document.body, { subtree: true, childList: true, attributes: true });
  document.addEventListener('load', soon, true);  // an image decoded: it mutates nothing
  const timeout = setTimeout(finish, data.wait_ms);
  const stop = () => {
    observer.disconnect();
    document.removeEventListener('load', soon, true);
    clearTimeout(timeout);
  };
  check();
  return stop;
}
"""

_when_drawn = st.components.v2.component("camstudio_when_drawn", js=_JS)


def grid_painted() -> bool:
    """Has the browser of this session reported the grid drawn (so the charts may follow)?"""
    return bool(st.session_state.get(GRID_PAINTED))


def _mark_painted() -> None:
    st.session_state[GRID_PAINTED] = True


def when_drawn(container_key: str, key: str) -> None:
    """Report, once, when the container keyed ``container_key`` is drawn in the browser:
    sets :data:`GRID_PAINTED` and reruns the fragment (or page) this is called in."""
    _when_drawn(data={"selector": f".st-key-{container_key}", "wait_ms": WAIT_AT_MOST_MS}, key=key,
                on_drawn_change=_mark_painted)
