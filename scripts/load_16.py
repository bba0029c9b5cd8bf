"""Benchmark: N concurrent browser sessions (16 by default) against one dashboard server.

    python -m scripts.load_16 [--sessions 16] [--cold] [--cold-browser] [--one-context] [--url URL]
                              [--json out.json]

Run it from the repository root after ``pip install -e .`` (the tests' helpers import as
``tests.browser_helpers`` / ``tests.load_flows``). The server starts as ``cam-studio run``
does (the default page warmed while it starts; ``--cold``: plain ``streamlit run``) and
gets 20 s to warm up; then every session opens at once and drives its flow
(``tests/load_flows.py``: 8 kinds of flow, sessions 9..16 repeat them on other samples).

The browser is one headless Chromium, each session a page of its own (a fresh context).
During the warm-up it opens the app once, as the team's browsers have before
(``--cold-browser``: not, so every page also pays the browser's first start, ~5 CPU-s
each on this page, 2026-12-07). The sessions' browsers run on the server's two cores here,
where a team's run on their own machines: the script reports the CPU each side used, and
``--url`` drives a server started elsewhere (``cam-studio run --server.address 0.0.0.0``
on the server machine) so that the browsers do not share its cores.

Prints the time to each session's first full grid (p50 / p95 / max; every tile drawn, as
``scripts/bench_dashboard.py`` times it) and to its complete first page (the charts and the
downloads below the grid too), the time of the changes made after it (another model,
method set, max_N moves, uploads) and of the moves on cached maps, the wall time, the
server's peak RSS, the CPU seconds of the server, the browser and the machine, and every
problem (errors, console errors, a session showing another's image). Times are taken in
the pages (``tests/load_flows.py``). Exit status 1 when there is a problem; queueing is not one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tests import browser_helpers as browser
from tests import load_flows


def server_process(url: str) -> psutil.Process | None:
    """The process listening on the server's port (the peak RSS is sampled from it)."""
    port = int(url.rsplit(":", 1)[1])
    for proc in psutil.Process().children(recursive=True):
        try:
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in proc.net_connections("inet")):
                return proc
        except psutil.Error:
            continue
    return None


def _process_kind(process: psutil.Process) -> str:
    """"server", a Chromium process by its ``--type`` (renderer, gpu-process, utility; "browser"
    for the main one), or "driver" (Playwright)."""
    try:
        command = process.cmdline()
    except psutil.Error:
        return "driver"
    if not any("chrom" in part for part in command[:1]):
        return "driver"
    kinds = [part.split("=", 1)[1] for part in command if part.startswith("--type=")]
    return kinds[0] if kinds else "browser"


def cpu_seconds(server: psutil.Process | None) -> dict[str, float]:
    """CPU seconds so far of the server (with its children), of everything else this script
    started (the browsers, by Chromium process type, and Playwright) and of the whole
    machine: where a saturated run's time went."""
    def used(process: psutil.Process) -> float:
        try:
            times = process.cpu_times()
            return times.user + times.system
        except psutil.Error:
            return 0.0

    server_tree = [server, *server.children(recursive=True)] if server is not None else []
    server_pids = {process.pid for process in server_tree}
    others = [p for p in psutil.Process().children(recursive=True) if p.pid not in server_pids]
    machine = psutil.cpu_times()
    figures = {"server": sum(map(used, server_tree)), "browsers": sum(map(used, others)),
               "machine": machine.user + machine.system + getattr(machine, "nice", 0.0)}
    for process in others:
        kind = _process_kind(process)
        figures[f"browsers: {kind}"] = figures.get(f"browsers: {kind}", 0.0) + used(process)
        if kind == "renderer":
            figures[f"renderer {process.pid}"] = used(process)
    return figures


def _open_once(url: str, new_page) -> None:
    """The app's default page in a page of the browser, to its last element, then closed."""
    page = new_page()
    try:
        page.goto(url, wait_until="commit")
        browser.wait_full_grid(page, timeout_ms=300_000)
    finally:
        page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.load_16", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--cold", action="store_true", help="plain streamlit run, no warm-up")
    parser.add_argument("--url", default=None,
                        help="a dashboard already running (e.g. `cam-studio run --server.address 0.0.0.0` on "
                             "another machine, so the browsers do not share its cores); no server is started, "
                             "its CPU is not measured")
    parser.add_argument("--one-context", action="store_true",
                        help="every session a tab of one browser context (one cache), not a context of its own")
    parser.add_argument("--cold-browser", action="store_true",
                        help="the sessions' pages are the browser's first (not opened once during the warm-up)")
    parser.add_argument("--warm-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="camstudio-load-"))
    flows = load_flows.sessions(args.sessions, folder)
    peak = {"rss_mb": 0.0}
    server_here = browser.serve(warm=not args.cold) if args.url is None else contextlib.nullcontext(args.url)
    with server_here as url, browser.open_browser(1400, 900) as (chromium, new_page):
        if args.one_context:
            context = chromium.new_context(viewport={"width": 1400, "height": 900})
            new_page = context.new_page
        server = server_process(url)
        warm_until = time.monotonic() + (0 if args.cold or args.url else args.warm_seconds)
        if not args.cold_browser:
            _open_once(url, new_page)
        time.sleep(max(0.0, warm_until - time.monotonic()))
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set() and server is not None:
                try:
                    peak["rss_mb"] = max(peak["rss_mb"], server.memory_info().rss / 2**20)
                except psutil.Error:
                    return
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        before = cpu_seconds(server)
        figures = load_flows.run(url, new_page, flows, timeout_s=1800, renderer_metrics=True)
        after = cpu_seconds(server)
        stop.set()
        sampler.join(2)
    figures["server_peak_rss_mb"] = round(peak["rss_mb"])
    figures["sessions_run"] = args.sessions
    figures["browser"] = "cold" if args.cold_browser else "opened the app once before"
    pages = figures.get("renderer_metrics", {}).values()
    spent = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")
    figures["renderer_seconds"] = {what: round(sum(page.get(what, 0.0) for page in pages), 1) for what in spent}
    figures["cpu_s"] = {what: round(after[what] - before.get(what, 0.0), 1) for what in after}
    print(json.dumps(figures, indent=1))
    print(
        f"\n{args.sessions} sessions: first full grid p50 {figures['first_grid_p50_s']:.1f} s, "
        f"p95 {figures['first_grid_p95_s']:.1f} s, max {figures['first_grid_max_s']:.1f} s; complete first page "
        f"p50 {figures['first_page_p50_s']:.1f} s, p95 {figures['first_page_p95_s']:.1f} s; changes p50 "
        f"{figures['change_p50_s']:.1f} s, p95 {figures['change_p95_s']:.1f} s; moves on cached maps p50 "
        f"{figures['cached_change_p50_s']:.2f} s, p95 {figures['cached_change_p95_s']:.2f} s; "
        f"wall {figures['wall_s']:.0f} s; "
        f"server peak RSS {figures['server_peak_rss_mb']} MB; CPU seconds: server {figures['cpu_s']['server']}, "
        f"browsers {figures['cpu_s']['browsers']}, whole machine {figures['cpu_s']['machine']}; "
        f"the pages' main threads (s): {figures['renderer_seconds']}; "
        f"{len(figures['problems'])} problems"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
