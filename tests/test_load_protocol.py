"""The browser-less load benchmark (scripts/load_protocol.py) against a real server: its
clients speak Streamlit's protocol well enough to draw the grid, report it drawn, move
max_N (a fragment run) and the threshold (a page run), and its checks can fail."""

from __future__ import annotations

import asyncio
import dataclasses

from scripts import load_protocol
from tests import browser_helpers as browser


def test_protocol_sessions_run_their_flows_and_catch_a_session_shown_another_sample():
    clients = load_protocol.sessions(2)  # the sample flow and the cached reader
    wrong = dataclasses.replace(load_protocol.sessions(1)[0], name="wrong", expect_sample="woven_defective_1")
    with browser.serve() as url:
        figures = asyncio.run(load_protocol.run(url, [*clients, wrong]))
    assert figures["problems"] == ["wrong: its first grid does not show woven_defective_1"]
    sample, reader = (figures["sessions"][c.name] for c in clients)
    assert 0 < sample["first_grid"] <= sample["first_page"]
    assert sample["messages"] > 20
    assert {f"cached_max_n_{k}" for k in range(1, 5)} | {"cached_threshold_1", "cached_threshold_2"} <= set(reader)
    assert any(text.startswith("max_N = 14 ·") for text in clients[1].text)  # the server took the four moves
    assert abs(load_protocol._slider_value(clients[1], "threshold") - 0.5) < 1e-9
    summary = load_protocol.summary(figures)
    assert summary["first_grid_p95_s"] >= summary["first_grid_p50_s"] > 0
