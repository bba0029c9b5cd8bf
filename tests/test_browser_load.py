"""Load: 8 browser sessions at once against one server, each driving a different flow
(demo models, samples, an upload, a method set, max_N moves, the Dataset page).

0 errors, 0 console errors, each session's grid shows its own image and model (checked
when it is done and again when all are), and nothing an upload brought is left in the
server's temporary folder. The p50/p95 time to a full grid is printed; ``scripts/load_16.py``
runs 16 sessions as a benchmark. The flows are in ``tests/load_flows.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import browser_helpers as browser
import load_flows
from browser_checks import require_browser

from camcore.demos import list_demos

pytestmark = pytest.mark.browser
SESSIONS = 8


def test_eight_sessions_at_once_keep_their_own_grids_without_errors(tmp_path: Path) -> None:
    require_browser()
    if not {"vgg_defect", "resnet_defect"} <= set(list_demos()):
        pytest.skip("the demo models are not installed (make train-demos)")
    flows = load_flows.sessions(SESSIONS, tmp_path)
    assert len({s.name for s in flows}) == SESSIONS and any(not s.grid for s in flows)
    server_tmp = load_flows.server_temporary_folder()
    try:
        with browser.serve(env={"TMPDIR": str(server_tmp)}) as url, browser.open_browser(1400, 900) as (_, new_page):
            figures = load_flows.run(url, new_page, flows, timeout_s=420)
            left_behind = sorted(os.listdir(server_tmp))
    finally:
        for leftover in server_tmp.iterdir():
            leftover.unlink() if leftover.is_file() else None
        server_tmp.rmdir() if not any(server_tmp.iterdir()) else None
    print("\n" + json.dumps({k: v for k, v in figures.items() if k != "problems"}, indent=1))
    assert not figures["problems"], figures["problems"]
    assert figures["grids"] == sum(s.grid for s in flows)  # every Compare session drew its grid
    assert left_behind == [], left_behind  # uploads stayed in memory
