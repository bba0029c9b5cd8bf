"""An image the Ray actors never return must not silently go missing from the results: a
pool whose worker drops one item makes the window fail with a message naming it, after the
images that did come back are journaled. (No cluster: the pool's results are replaced by a
stream that loses one row, which is what a dropped item looks like to the driver.)"""

from __future__ import annotations

import pickle

import pytest

from camcore.evaluation import ray_runner
from camcore.evaluation.journal import MemoryJournal


class _Rows:
    def __init__(self, rows):
        self._rows = rows

    def iter_rows(self):
        return iter(self._rows)


class _DroppingPool:
    """A pool whose worker evaluates every image but drops ``lost`` (and runs one twice)."""

    def __init__(self, lost: str) -> None:
        self.lost = lost

    def results(self, ray, payloads):
        records = [{"id": p["id"], "rows": [{"image_id": p["id"]}]} for p in payloads if p["id"] != self.lost]
        rows = [{"id": r["id"], "record": pickle.dumps(r)} for r in records]
        return _Rows(rows + rows[:1])  # a retried image finishes twice: counted once


def test_an_image_no_actor_returned_fails_the_window_after_the_others_are_saved():
    payloads = [{"id": f"img{i}"} for i in range(4)]
    journal = MemoryJournal()
    tally = ray_runner._Tally(journal, 0, len(payloads), None)
    with pytest.raises(RuntimeError, match=r"Ray returned no result for 1 image\(s\) \(e.g. img2\)"):
        ray_runner._run_window(None, _DroppingPool("img2"), payloads, tally)
    assert sorted(journal.records) == ["img0", "img1", "img3"] and tally.finished == 3


def test_a_window_where_every_image_came_back_passes():
    payloads = [{"id": f"img{i}"} for i in range(3)]
    journal = MemoryJournal()
    ray_runner._run_window(None, _DroppingPool("none"), payloads, ray_runner._Tally(journal, 0, 3, None))
    assert sorted(journal.records) == ["img0", "img1", "img2"]
