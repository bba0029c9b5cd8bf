"""Benchmark the dashboard in a real browser: time to the first full grid and to a max_N change.

    python -m dashboard.bench [--runs 3] [--screenshot out.png] [--browser-only]

Starts ``streamlit run dashboard/app.py`` on a free local port, drives headless Chromium
(``/usr/bin/chromium``, or ``$CHROMIUM``) with Playwright, and prints a table:

* cold first grid: a fresh server's first page load, until the whole grid, the charts
  and the downloads are drawn (model loading, compiling and every model pass included);
* warm page load: a new page on the warm server (maps come from the explainer's cache);
* new image: choosing another bundled sample on a warm server (every model pass
  included, compiling excluded);
* max_N change: one ArrowRight on the slider until the Faster-Score-CAM panel shows the
  new map, and until its fragment run has finished;
* script only: the same flows through Streamlit's AppTest, without a browser: the
  page script's own time (the browser numbers add page loading, rendering, fetching).

Warm numbers are the minimum over ``--runs`` after a warm-up; these machines are shared.
The helpers (``serve``, ``open_browser``, ``wait_idle`` ...) are reused by
``tests/test_browser.py``.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
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
FSC_PANELS = ".st-key-fsc_panels"
MAX_N_LABEL = "max_N (Faster-Score-CAM channels)"
DOWNLOADS = 4  # download buttons: drawn last, so their presence means the page is complete


def chromium_path() -> str:
    return os.environ.get("CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(port: int | None = None, timeout: float = 90.0, env: dict | None = None) -> Iterator[str]:
    """Run the dashboard on 127.0.0.1:port (a free one by default); yield its URL."""
    port = port or free_port()
    log = tempfile.TemporaryFile()
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
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
                raise RuntimeError(f"streamlit exited with {process.returncode}:\n{log.read().decode(errors='replace')}")
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


def wait_full_grid(page, timeout_ms: float = 180_000) -> None:
    """Wait until the grid, the charts and the downloads are all drawn and the run is over."""
    page.wait_for_function(
        f"""() => document.querySelectorAll('[data-testid=stDownloadButton]').length >= {DOWNLOADS}
              && document.querySelectorAll('{FSC_PANELS} [data-testid=stImage] img').length >= 4
              && !document.querySelector('{GRID} [data-testid=stProgress]')""",
        timeout=timeout_ms,
        polling=50,
    )
    wait_idle(page, timeout_ms)


def fsc_state(page) -> tuple[str, str]:
    """(first Faster-Score-CAM image's src, the column's header caption)."""
    return page.evaluate(
        f"""() => {{
            const img = document.querySelector('{FSC_PANELS} [data-testid=stImage] img');
            const cap = document.querySelector('.st-key-fsc_header [data-testid=stCaptionContainer]');
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
            const cap = document.querySelector('.st-key-fsc_header [data-testid=stCaptionContainer]');
            return img && img.getAttribute('src') !== old && img.complete
                && cap && cap.innerText.startsWith('max_N = ' + n + ' ·') && !cap.innerText.includes('computing');
        }}""",
        arg=[old_src, n],
        timeout=timeout_ms,
        polling=20,
    )


def slider_value(page) -> int:
    return int(page.get_by_role("slider", name=MAX_N_LABEL).get_attribute("aria-valuetext"))


# ------------------------------------------------------------------- benchmark
def _time_page_load(new_page, url: str) -> float:
    page = new_page()
    try:
        start = time.perf_counter()
        page.goto(url)
        wait_full_grid(page)
        return time.perf_counter() - start
    finally:
        page.close()


def _time_new_image(page, texture: str) -> float:
    start = time.perf_counter()
    page.get_by_role("combobox", name="Texture").click()
    page.get_by_role("option", name=texture.capitalize(), exact=True).click()
    page.wait_for_timeout(50)
    wait_full_grid(page)
    return time.perf_counter() - start


def _time_max_n(page) -> tuple[float, float]:
    old_src, _ = fsc_state(page)
    n = slider_value(page) + 1
    start = time.perf_counter()
    move_max_n(page)
    wait_fsc_changed(page, old_src, n)
    panel = time.perf_counter() - start
    wait_idle(page)
    return panel, time.perf_counter() - start


def run_benchmark(runs: int = 3, screenshot: Path | None = None) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"cold": [], "warm": [], "new_image": [], "max_n_panel": [], "max_n_done": []}
    with serve() as url, open_browser() as (_, new_page):
        results["cold"].append(_time_page_load(new_page, url))
        _time_page_load(new_page, url)  # warm-up
        for _ in range(runs):
            results["warm"].append(_time_page_load(new_page, url))
        page = new_page()
        page.goto(url)
        wait_full_grid(page)
        from camcore.samples import load_sample_index

        textures = list(dict.fromkeys(info.texture for info in load_sample_index()))
        for texture in textures[1 : runs + 1]:  # each a texture (so an image) not seen yet
            results["new_image"].append(_time_new_image(page, texture))
        _time_max_n(page)  # warm-up
        for _ in range(runs + 2):
            panel, done = _time_max_n(page)
            results["max_n_panel"].append(panel)
            results["max_n_done"].append(done)
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        page.close()
    return results


def run_script_timings(runs: int = 3) -> dict[str, list[float]]:
    """The same flows without a browser (Streamlit's AppTest, in this process): the time
    the page's script itself takes, which the browser numbers add page loading,
    rendering and image fetching to."""
    from streamlit.testing.v1 import AppTest

    from camcore.samples import load_sample_index

    results: dict[str, list[float]] = {"script_warm": [], "script_new_image": [], "script_max_n": []}
    at = AppTest.from_file(str(APP), default_timeout=300).run()  # warm-up: load, compile, compute
    for _ in range(runs):
        start = time.perf_counter()
        AppTest.from_file(str(APP), default_timeout=300).run()
        results["script_warm"].append(time.perf_counter() - start)
    textures = list(dict.fromkeys(info.texture for info in load_sample_index()))
    # other samples than the browser run uses, so that nothing is cached yet
    for texture in textures[1 : runs + 1]:
        start = time.perf_counter()
        at.selectbox(key="texture").select(texture).run()
        at.radio(key="sample").set_value(f"{texture}_defective_2").run()
        results["script_new_image"].append(time.perf_counter() - start)
    for n in range(11, 11 + runs + 2):
        start = time.perf_counter()
        at.slider(key="max_n").set_value(n).run()
        results["script_max_n"].append(time.perf_counter() - start)
    return results


def format_table(results: dict[str, list[float]]) -> str:
    names = {
        "cold": "browser: first full grid, fresh server (load + compile + compute)",
        "warm": "browser: first full grid, new page (maps cached)",
        "new_image": "browser: full grid after choosing another sample",
        "max_n_panel": "browser: max_N +1 → Faster-Score-CAM panel updated",
        "max_n_done": "browser: max_N +1 → fragment run finished (charts too)",
        "script_warm": "script only: full page run (maps cached)",
        "script_new_image": "script only: another sample (two reruns, every model pass)",
        "script_max_n": "script only: max_N change (fragment rerun)",
    }
    lines = ["| measurement | min (s) | runs |", "|---|---:|---:|"]
    for key, label in names.items():
        values = results.get(key) or []
        if values:
            lines.append(f"| {label} | {min(values):.3f} | {len(values)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per warm case (default 3)")
    parser.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the page here")
    parser.add_argument("--browser-only", action="store_true", help="skip the script-only (AppTest) timings")
    args = parser.parse_args(argv)
    if not Path(chromium_path()).exists():
        print(f"chromium not found at {chromium_path()} (set CHROMIUM)", file=sys.stderr)
        return 2
    results = run_benchmark(max(args.runs, 1), args.screenshot)
    if not args.browser_only:
        results |= run_script_timings(max(args.runs, 1))
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
