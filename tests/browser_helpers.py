"""Playwright helpers for the real-browser tests and ``scripts/bench_dashboard.py``.

Start the dashboard in a child ``streamlit run`` on a free local port (``serve``), drive
headless Debian Chromium (``/usr/bin/chromium`` or ``$CHROMIUM``; never a downloaded
browser) and wait for Streamlit's runs to finish (``wait_idle``, ``wait_full_grid``).

Tests import it as ``browser_helpers`` (pytest puts tests/ on the path); the benchmark,
run as ``python -m scripts.bench_dashboard`` from the repository root, as
``tests.browser_helpers``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from dashboard.cli import app_path
from dashboard.components.grid import ROWS

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GRID = ".st-key-grid"
FSC_PANELS = ".st-key-faster_score_cam_panels"
MAX_N_LABEL = "max_N (Faster-Score-CAM channels)"
ANALYSIS_PENDING = ".st-key-analysis_pending"  # the note below the grid until its charts are drawn
DOWNLOADS = 6  # download buttons (grid, maps, timings, settings, report, localize settings): drawn last,
# so their presence means the page is complete


def chromium_path() -> str:
    return os.environ.get("CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(port: int | None = None, timeout: float = 90.0, env: dict | None = None,
          warm: bool = False) -> Iterator[str]:
    """Run the dashboard on 127.0.0.1:port (a free one by default); yield its URL.

    ``warm=True`` starts it the way ``cam-studio run`` / ``make run`` do (the default page
    warmed in the background); otherwise plain ``streamlit run``."""
    port = port or free_port()
    log = tempfile.TemporaryFile()
    launcher = [sys.executable, "-m", "dashboard.cli", "run"] if warm else \
        [sys.executable, "-m", "streamlit", "run", str(app_path())]
    command = [
        *launcher,
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"streamlit exited with {process.returncode}:\n{log.read().decode(errors='replace')}"
                )
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@contextlib.contextmanager
def open_browser(width: int = 1600, height: int = 1000):
    """(playwright browser, page factory) on headless Debian Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:

            def new_page():
                return browser.new_page(viewport={"width": width, "height": height})

            yield browser, new_page
        finally:
            browser.close()


def watch_cache_references(page) -> list[str]:
    """The hashes of every reference to the browser's message cache the server sends this
    page (filled as frames arrive); none while the app turns that cache off
    (dashboard/.streamlit/config.toml says why)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    references: list[str] = []

    def received(payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            message = ForwardMsg.FromString(bytes(payload))
            if message.WhichOneof("type") == "ref_hash":
                references.append(message.ref_hash)

    page.on("websocket", lambda socket: socket.on("framereceived", received))
    return references


def wait_idle(page, timeout_ms: float = 120_000) -> None:
    """Wait until Streamlit has finished the current run (see shared/browser-testing.md)."""
    page.wait_for_timeout(250)
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid=stApp]');
            return app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
                && app.getAttribute('data-test-script-state') === 'notRunning'
                && !document.querySelector('[data-testid=stStatusWidget]')
                && !document.querySelector('[data-testid=stSkeleton]');
        }""",
        timeout=timeout_ms,
        polling=50,
    )


GRID_DRAWN_JS = f"""() => {{
    const grid = document.querySelector('{GRID}');
    // a progress bar, an element still loading, a tile of the run before (a stale empty
    // slot shows nothing), a gray tile that a map replaces in this run
    const unfinished = '[data-testid=stProgress], [data-testid=stSkeleton], '
        + '[data-stale=true]:not(:has([data-testid=stEmpty])), [data-waiting=true]';
    if (!grid || grid.querySelector(unfinished)) return false;
    const images = [...grid.querySelectorAll('[data-testid=stImage] img')];
    return document.querySelectorAll('{FSC_PANELS} [data-testid=stImage] img').length >= {len(ROWS)}
        && images.every(image => image.complete && image.naturalWidth > 0)
        && (!!document.querySelector('{ANALYSIS_PENDING}')
            || document.querySelectorAll('[data-testid=stDownloadButton]').length >= {DOWNLOADS});
}}"""


def wait_grid_drawn(page, timeout_ms: float = 180_000) -> None:
    """Wait until the whole grid is drawn: every column's tiles decoded (the max_N column's
    too), no tile still loading, queued, computing or left over from the run before, and
    the run that drew it past the grid (below it: the note of a session's first run, or the
    downloads). Checked every animation frame: the benchmark's first-grid times end here.
    After a change that reruns the page, first :func:`wait_run_started`: until then the
    grid of the run before is complete."""
    page.wait_for_function(GRID_DRAWN_JS, timeout=timeout_ms, polling="raf")


def wait_run_started(page, timeout_ms: float = 30_000) -> None:
    """Wait until the grid shows a run has started (a tile left from the run before, or the
    page running), checked every animation frame."""
    page.wait_for_function(
        f"""() => document.querySelector('[data-testid=stApp]').getAttribute('data-test-script-state') === 'running'
              || !!document.querySelector('{GRID} [data-stale=true]')""",
        timeout=timeout_ms,
        polling="raf",
    )


def wait_full_grid(page, timeout_ms: float = 180_000) -> None:
    """Wait until the whole grid is drawn (:func:`wait_grid_drawn`), then the analysis below
    it (its charts follow the grid in a session's first run), the downloads, and the run
    is over."""
    wait_grid_drawn(page, timeout_ms)
    page.wait_for_function(
        f"""() => !document.querySelector('{ANALYSIS_PENDING}')
              && document.querySelectorAll('[data-testid=stDownloadButton]').length >= {DOWNLOADS}""",
        timeout=timeout_ms,
        polling=50,
    )
    wait_idle(page, timeout_ms)


def fsc_state(page) -> tuple[str, str]:
    """(first Faster-Score-CAM image's src, the column's header caption)."""
    return page.evaluate(
        f"""() => {{
            const img = document.querySelector('{FSC_PANELS} [data-testid=stImage] img');
            const cap = document.querySelector('.st-key-faster_score_cam_header [data-testid=stCaptionContainer]');
            return [img ? img.getAttribute('src') : '', cap ? cap.innerText : ''];
        }}"""
    )


def move_max_n(page, key: str = "ArrowRight") -> None:
    slider = page.get_by_role("slider", name=MAX_N_LABEL)
    slider.focus()
    slider.press(key)


def wait_fsc_changed(page, old_src: str, n: int, timeout_ms: float = 60_000) -> None:
    """Wait until the Faster-Score-CAM panel shows the map for max_N = n."""
    page.wait_for_function(
        f"""([old, n]) => {{
            const img = document.querySelector('{FSC_PANELS} [data-testid=stImage] img');
            const cap = document.querySelector('.st-key-faster_score_cam_header [data-testid=stCaptionContainer]');
            return img && img.getAttribute('src') !== old && img.complete
                && cap && cap.innerText.startsWith('max_N = ' + n + ' ·') && !cap.innerText.includes('computing');
        }}""",
        arg=[old_src, n],
        timeout=timeout_ms,
        polling=20,
    )


def slider_value(page) -> int:
    return int(page.get_by_role("slider", name=MAX_N_LABEL).get_attribute("aria-valuetext"))


def select_all_methods(page) -> None:
    """Click every registered method the page does not show yet (the sidebar's pills), then
    wait until the grid with every column is drawn."""
    from camcore.methods import METHODS, ORIGINAL_STUDY

    pills = page.locator(".st-key-methods")
    for key, spec in METHODS.items():
        if key not in ORIGINAL_STUDY:
            pills.get_by_role("button", name=spec.label, exact=True).click()
            wait_idle(page)
    wait_full_grid(page)


def switch_on_second_model(page) -> None:
    """Click the sidebar's "Compare with a second model" toggle (its label: the switch
    itself is covered by Streamlit's styling)."""
    page.locator(".st-key-compare_b").get_by_text("Compare with a second model").click()


def wait_pair_grid(page, methods, timeout_ms: float = 240_000) -> None:
    """Wait until every comparison column (``pair_<method>``) shows its three tiles and its
    table, the downloads are drawn and no progress bar is left."""
    page.wait_for_function(
        """(methods) => methods.every(m => {
                const box = document.querySelector('.st-key-pair_' + m);
                return box && box.querySelectorAll('[data-testid=stImage] img').length >= 3
                    && box.querySelector('[data-testid=stTable]');
            })
            && document.querySelectorAll('[data-testid=stDownloadButton]').length >= 4
            && !document.querySelector('.st-key-grid [data-testid=stProgress]')""",
        arg=list(methods),
        timeout=timeout_ms,
        polling=50,
    )
    wait_idle(page, timeout_ms)


def pair_state(page, method: str) -> tuple[list[str], str]:
    """(the srcs of a comparison column's tiles, its header caption)."""
    return page.evaluate(
        """(m) => {
            const box = document.querySelector('.st-key-pair_' + m);
            const images = box ? [...box.querySelectorAll('[data-testid=stImage] img')] : [];
            const cap = box ? box.querySelector('[data-testid=stCaptionContainer]') : null;
            return [images.map(i => i.getAttribute('src')), cap ? cap.innerText : ''];
        }""",
        method,
    )
