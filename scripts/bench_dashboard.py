"""Benchmark the dashboard in a real browser: time to the first full grid and to a max_N change.

    python -m scripts.bench_dashboard [--runs 3] [--screenshot out.png] [--browser-only]

Run it from the repository root, after ``pip install -e .`` (``make bench-dashboard``):
``-m`` puts the root on the path, so the browser helpers the tests use import as
``tests.browser_helpers`` and nothing edits sys.path. Starts ``streamlit run
dashboard/app.py`` on a free local port, drives headless Chromium (``/usr/bin/chromium``,
or ``$CHROMIUM``) with Playwright, and prints a table:

* cold first grid: a fresh server's first page load, until the whole grid is drawn
  (every tile decoded: ``wait_grid_drawn``; model loading, compiling and every model pass
  included), for a plain ``streamlit run`` server and for ``cam-studio run`` (``make
  run``), which warms the default page while the server starts - the visitor arriving at
  once, or 20 s after the server answered; and until the charts and downloads below the
  grid are drawn too (a session's first run draws them once the browser has drawn the
  grid: ``dashboard/components/after_paint.py``);
* warm page load: a new page on the warm server (maps come from the explainer's cache),
  the same two times;
* new image: choosing another bundled sample on a warm server, from the click on the
  list's option until the new grid is drawn, and until its charts are too (every model
  pass included, compiling excluded);
* max_N change: one ArrowRight on the slider until the Faster-Score-CAM panel shows the
  new map, and until its fragment run has finished;
* script only: the same flows through Streamlit's AppTest, without a browser: the
  page script's own time (the browser numbers add page loading, rendering, fetching).

Each row: minimum, median and maximum over ``--runs`` (warm cases after a warm-up); these
machines are shared.
The helpers (``serve``, ``open_browser``, ``wait_idle`` ...) are shared with the
browser tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from dashboard.cli import app_path
from tests.browser_helpers import (
    chromium_path,
    fsc_state,
    move_max_n,
    open_browser,
    serve,
    slider_value,
    wait_fsc_changed,
    wait_full_grid,
    wait_grid_drawn,
    wait_idle,
    wait_run_started,
)


# ------------------------------------------------------------------- benchmark
def _time_page_load(new_page, url: str) -> tuple[float, float]:
    """(seconds until the whole grid is drawn, until the charts and downloads are too)."""
    page = new_page()
    try:
        start = time.perf_counter()
        page.goto(url)
        wait_grid_drawn(page)
        grid = time.perf_counter() - start
        wait_full_grid(page)
        return grid, time.perf_counter() - start
    finally:
        page.close()


def _time_new_image(page, texture: str) -> tuple[float, float]:
    """(seconds from choosing ``texture`` until the whole new grid is drawn, until its charts
    and downloads are too)."""
    combobox = page.get_by_role("combobox", name="Texture")
    # below the sidebar's fold: a click that first scrolls the sidebar had its list close again
    combobox.scroll_into_view_if_needed()
    page.wait_for_timeout(200)
    combobox.click()
    option = page.get_by_role("option", name=texture.capitalize(), exact=True)
    option.wait_for()
    start = time.perf_counter()
    option.click()
    wait_run_started(page)
    wait_grid_drawn(page)
    grid = time.perf_counter() - start
    wait_full_grid(page)
    return grid, time.perf_counter() - start


def _time_max_n(page) -> tuple[float, float]:
    old_src, _ = fsc_state(page)
    n = slider_value(page) + 1
    start = time.perf_counter()
    move_max_n(page)
    wait_fsc_changed(page, old_src, n)
    panel = time.perf_counter() - start
    wait_idle(page)
    return panel, time.perf_counter() - start


def run_cold_starts(runs: int = 3) -> dict[str, list[float]]:
    """The first visit to a fresh server, started as ``streamlit run`` (nothing warmed) and
    as ``cam-studio run`` / ``make run`` (the default page warmed while the server starts):
    the visitor arrives the moment the server answers its health check, or 20 s later
    (server start included in neither: the time is the visitor's wait)."""
    cases = (("cold", False, 0.0), ("cold_warmed", True, 0.0), ("cold_warmed_20s", True, 20.0))
    results: dict[str, list[float]] = {name: [] for key, _, _ in cases for name in (key, f"{key}_full")}
    for _ in range(runs):
        for key, warm, delay in cases:
            with serve(warm=warm) as url, open_browser() as (_, new_page):
                time.sleep(delay)
                grid, full = _time_page_load(new_page, url)
                results[key].append(grid)
                results[f"{key}_full"].append(full)
    return results


def run_benchmark(runs: int = 3, screenshot: Path | None = None) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"warm": [], "warm_full": [], "new_image": [], "new_image_full": [],
                                       "max_n_panel": [], "max_n_done": []}
    with serve() as url, open_browser() as (_, new_page):
        _time_page_load(new_page, url)  # the cold load: run_cold_starts measures it
        _time_page_load(new_page, url)  # warm-up
        for _ in range(runs):
            grid, full = _time_page_load(new_page, url)
            results["warm"].append(grid)
            results["warm_full"].append(full)
        page = new_page()
        page.goto(url)
        wait_full_grid(page)
        from camcore.samples import load_sample_index

        textures = list(dict.fromkeys(info.texture for info in load_sample_index()))
        for texture in textures[1 : runs + 1]:  # each a texture (so an image) not seen yet
            grid, full = _time_new_image(page, texture)
            results["new_image"].append(grid)
            results["new_image_full"].append(full)
        _time_max_n(page)  # warm-up
        for _ in range(runs + 2):
            panel, done = _time_max_n(page)
            results["max_n_panel"].append(panel)
            results["max_n_done"].append(done)
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        page.close()
    return results


def _painted(app_test):
    """An AppTest session whose browser has drawn the grid (AppTest runs no JavaScript):
    its runs draw the charts, as a real session's do after its first."""
    from dashboard.components.after_paint import GRID_PAINTED

    app_test.session_state[GRID_PAINTED] = True
    return app_test


def run_script_timings(runs: int = 3) -> dict[str, list[float]]:
    """The same flows without a browser (Streamlit's AppTest, in this process): the time
    the page's script itself takes, which the browser numbers add page loading,
    rendering and image fetching to."""
    from streamlit.testing.v1 import AppTest

    from camcore.samples import load_sample_index

    results: dict[str, list[float]] = {"script_first": [], "script_warm": [], "script_new_image": [],
                                       "script_max_n": []}
    at = _painted(AppTest.from_file(str(app_path()), default_timeout=300)).run()  # warm-up: load, compile, compute
    for _ in range(runs):
        start = time.perf_counter()
        AppTest.from_file(str(app_path()), default_timeout=300).run()
        results["script_first"].append(time.perf_counter() - start)
        start = time.perf_counter()
        _painted(AppTest.from_file(str(app_path()), default_timeout=300)).run()
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
        "cold": "browser: first full grid, fresh `streamlit run` server (load + compile + compute)",
        "cold_full": "browser: … and its charts and downloads",
        "cold_warmed": "browser: first full grid, fresh `cam-studio run` server, visitor at once",
        "cold_warmed_full": "browser: … and its charts and downloads",
        "cold_warmed_20s": "browser: first full grid, fresh `cam-studio run` server, visitor 20 s after start",
        "cold_warmed_20s_full": "browser: … and its charts and downloads",
        "warm": "browser: first full grid, new page (maps cached)",
        "warm_full": "browser: … and its charts and downloads",
        "new_image": "browser: full grid after choosing another sample (from the option's click)",
        "new_image_full": "browser: … and its charts and downloads",
        "max_n_panel": "browser: max_N +1 → Faster-Score-CAM panel updated",
        "max_n_done": "browser: max_N +1 → fragment run finished (charts too)",
        "script_first": "script only: a session's first run, the grid without its charts (maps cached)",
        "script_warm": "script only: full page run with the charts (maps cached)",
        "script_new_image": "script only: another sample (two reruns, every model pass)",
        "script_max_n": "script only: max_N change (fragment rerun)",
    }
    lines = ["| measurement | min (s) | median (s) | max (s) | runs |", "|---|---:|---:|---:|---:|"]
    for key, label in names.items():
        values = results.get(key) or []
        if values:
            lines.append(f"| {label} | {min(values):.3f} | {statistics.median(values):.3f} | {max(values):.3f} "
                         f"| {len(values)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per warm case (default 3)")
    parser.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the page here")
    parser.add_argument("--browser-only", action="store_true", help="skip the script-only (AppTest) timings")
    args = parser.parse_args(argv)
    if not Path(chromium_path()).exists():
        print(f"chromium not found at {chromium_path()} (set CHROMIUM)", file=sys.stderr)
        return 2
    results = run_cold_starts(max(args.runs, 1)) | run_benchmark(max(args.runs, 1), args.screenshot)
    if not args.browser_only:
        results |= run_script_timings(max(args.runs, 1))
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
