"""The pass scheduler: a cached read never waits behind another session's Score-CAM, a
superseded job stops (its remaining batches never run), owners take turns, two sessions
asking for the same passes share them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_backends import SIZE, ToyBackend

import camcore
from camcore.scheduler import JobCancelled, PassScheduler


class GatedBackend(ToyBackend):
    """A toy backend whose batched forwards can be held at a gate, and which records which
    owner's thread... no: which inputs it ran (the worker runs every batch)."""

    def __init__(self) -> None:
        super().__init__(seed=7)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def forward(self, batch, precision="fp32"):
        if len(batch) > 1 or not self.gate.is_set():  # masked batches (and single passes) wait at the gate
            self.entered.set()
            assert self.gate.wait(30), "gate never opened"
        self.batches.append(len(batch))
        return super().forward(batch, precision)


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, SIZE, SIZE, 1)).astype(np.float32)


@pytest.fixture
def scheduler():
    scheduler = PassScheduler(poll_seconds=0.01)
    yield scheduler
    scheduler.close()


def _in_thread(fn):
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_cached_read_returns_while_another_sessions_long_job_is_held(scheduler):
    backend = GatedBackend()
    explainer = camcore.Explainer(backend, batch_size=1, scheduler=scheduler)
    cached = explainer.compute("faster_score_cam", _x(2), "feat", 0, max_n=2, owner="b")
    backend.gate.clear()
    backend.entered.clear()
    long_job, outcome = _in_thread(lambda: explainer.compute("score_cam", _x(1), "feat", 0, owner="a"))
    assert backend.entered.wait(30)  # session a's passes are running, held at the gate
    read, read_outcome = _in_thread(lambda: explainer.compute("faster_score_cam", _x(2), "feat", 0, max_n=2, owner="b"))
    read.join(10)
    assert not read.is_alive(), "a cached read waited behind another session's job"
    assert read_outcome["value"].cached and np.array_equal(read_outcome["value"].cam, cached.cam)
    assert long_job.is_alive() and "value" not in outcome  # still held: the read did not wait for it
    peeked = explainer.peek("score_cam", _x(1), "feat", 0)  # a read of the running job's map
    assert peeked is None  # not done: no waiting, no passes
    backend.gate.set()
    long_job.join(30)
    assert outcome["value"].cam.shape == (SIZE, SIZE)


class Superseded(Exception):
    """What Streamlit raises in a script thread whose run the user replaced."""


def test_a_superseded_job_stops_and_its_remaining_batches_never_run(scheduler):
    backend = GatedBackend()
    explainer = camcore.Explainer(backend, batch_size=1, scheduler=scheduler)
    x = _x(3)
    explainer.compute("eigen_cam", x, "feat")  # activations cached: what follows is masked passes only
    totals = []

    def progress(done, total):
        # the user changes the request while the first batch runs (held at the gate)
        totals.append(total)
        assert backend.entered.wait(10)
        raise Superseded

    backend.gate.clear()
    backend.entered.clear()
    before = len(backend.batches)
    with pytest.raises(Superseded):
        explainer.compute("score_cam", x, "feat", 0, progress=progress, owner="a")
    assert scheduler.pending() == {}  # the job's remaining batches were dropped...
    backend.gate.set()
    scheduler.run("sync", [lambda: None])  # the worker is past the held batch
    ran = len(backend.batches) - before
    assert totals[0] >= 3 and ran == 1, (ran, totals)  # ...and never ran: only the held one finished
    # the pass that ran is kept: the next request continues from it
    result = explainer.compute("score_cam", x, "feat", 0, owner="a")
    assert result.model_passes == totals[0] - 1


def _wait_until(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_owners_take_turns(scheduler):
    order: list[str] = []
    gate, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(10)

    blocker, _ = _in_thread(lambda: scheduler.run("warm-up", [hold]))
    assert started.wait(10)  # the worker is busy: what follows queues up
    jobs = [_in_thread(lambda o=o: scheduler.run(o, [lambda o=o: order.append(o)] * 4)) for o in ("a", "b")]
    _wait_until(lambda: scheduler.pending() == {"a": 4, "b": 4})
    gate.set()
    for thread, outcome in jobs:
        thread.join(10)
        assert "error" not in outcome
    blocker.join(10)
    assert order == ["a", "b"] * 4


class RecordingBackend(GatedBackend):
    """Records, for every masked batch, which image it masked."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[float] = []

    def masked_scores(self, x, layer, maps, preprocessing=None, precision="fp32"):
        self.images.append(float(x[0, 0, 0, 0]))
        return super().masked_scores(x, layer, maps, preprocessing, precision)


def test_two_sessions_score_cams_interleave_batch_by_batch(scheduler):
    backend = RecordingBackend()
    explainer = camcore.Explainer(backend, batch_size=1, scheduler=scheduler)
    images = {"a": _x(4), "b": _x(5)}
    for x in images.values():
        explainer.compute("eigen_cam", x, "feat")  # activations cached: only masked passes follow
    backend.gate.clear()
    threads = [_in_thread(lambda o=o, x=x: explainer.compute("score_cam", x, "feat", 0, owner=o))
               for o, x in images.items()]
    _wait_until(lambda: set(scheduler.pending()) == {"a", "b"} or len(scheduler.pending()) == 2)
    backend.gate.set()
    for thread, outcome in threads:
        thread.join(30)
        assert "value" in outcome, outcome
    owner_of = {float(x[0, 0, 0, 0]): o for o, x in images.items()}
    sequence = [owner_of[value] for value in backend.images]
    # after the batch that was running, the sessions alternate until one has no batch left
    tail = sequence[1:]
    switches = sum(a != b for a, b in zip(tail, tail[1:]))
    assert switches >= min(tail.count("a"), tail.count("b")) * 2 - 1, sequence


def test_a_failing_batch_reaches_its_caller_and_the_worker_goes_on(scheduler):
    def boom():
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        scheduler.run("a", [boom])
    done = []
    scheduler.run("a", [lambda: done.append(1)])
    assert done == [1]


def test_a_closed_scheduler_refuses_work_and_cancels_what_waits():
    scheduler = PassScheduler()
    scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.run("a", [lambda: None])
    assert JobCancelled.__mro__[1] is Exception
