"""Long per-channel work, shared fairly: a :class:`PassScheduler` runs the batches of every
session's per-channel passes (Score-CAM's masked passes, Ablation-CAM's ablations) on one
worker thread, one batch at a time, taking turns between owners (sessions).

Why one worker: a batch already uses every core (TensorFlow's intra-op threads), so two
Score-CAMs running side by side only contend; interleaving their batches gives each session
its turn and keeps the machine's throughput. Why batches: they are the unit a caller can
give up on. The caller waits in its own thread and sees progress there (Streamlit's script
thread: its ``st`` calls must happen there); when the caller stops waiting - an exception
in its progress callback, which is how Streamlit interrupts a superseded run, or
:meth:`Ticket.cancel` - the job's remaining batches are dropped, so a request the user
changed no longer keeps the cores busy.

Reads never wait here: a map whose passes are cached is served by the explainer without a
job. Two sessions asking for the same passes share them through the explainer's per-key
flights (:meth:`camcore.Explainer.flight`): the second waits for the first's job, then finds
the passes done.

    >>> scheduler = PassScheduler()
    >>> reports = []                     # (done, total) as the caller saw them, first and last always
    >>> scheduler.run("session-1", [lambda: None] * 3, progress=lambda done, total: reports.append((done, total)))
    >>> reports[0], reports[-1]
    ((0, 3), (3, 3))
    >>> scheduler.close()
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Callable, Hashable, Sequence

Step = Callable[[], None]
Progress = Callable[[int, int], None]

__all__ = ["JobCancelled", "PassScheduler", "run_inline"]


class JobCancelled(Exception):
    """The job was cancelled before all its steps ran."""


class _Job:
    def __init__(self, owner: Hashable, steps: Sequence[Step], sizes: Sequence[int] | None) -> None:
        self.owner = owner
        self.steps: deque[tuple[Step, int]] = deque(zip(steps, sizes or [1] * len(steps)))
        self.total = sum(size for _, size in self.steps)
        self.done = 0  # in units of ``sizes`` (e.g. model passes)
        self.error: BaseException | None = None
        self.cancelled = False
        self.finished = threading.Event()

    def close(self, error: BaseException | None = None) -> None:
        self.error = error
        self.steps.clear()
        self.finished.set()


def run_inline(steps: Sequence[Step], progress: Progress | None = None, sizes: Sequence[int] | None = None) -> None:
    """The steps in this thread, in order (an explainer without a scheduler)."""
    sizes = list(sizes or [1] * len(steps))
    total, done = sum(sizes), 0
    if progress is not None:
        progress(0, total)
    for step, size in zip(steps, sizes):
        step()
        done += size
        if progress is not None:
            progress(done, total)


class PassScheduler:
    """One worker thread running the steps of many owners' jobs, one step at a time, the
    owners taking turns (round robin; an owner's jobs run in the order submitted).

    Args:
        poll_seconds: how often a waiting caller looks at its job's progress.
    """

    def __init__(self, poll_seconds: float = 0.05) -> None:
        self.poll_seconds = poll_seconds
        self._queues: OrderedDict[Hashable, deque[_Job]] = OrderedDict()
        self._condition = threading.Condition()
        self._closed = False
        self.steps_run = 0
        self._worker = threading.Thread(target=self._work, name="camcore-pass-scheduler", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------ the caller's side
    def run(self, owner: Hashable, steps: Sequence[Step], progress: Progress | None = None,
            sizes: Sequence[int] | None = None) -> None:
        """Run ``steps`` on the worker for ``owner`` and wait for them here, calling
        ``progress(done, total)`` in this thread as they finish (counted in ``sizes``, one
        per step by default, e.g. the model passes of each batch). Anything ``progress``
        raises (or a KeyboardInterrupt while waiting) cancels the job's remaining steps and
        is raised again; a step's exception is raised here."""
        job = self._submit(owner, steps, sizes)
        try:
            reported = -1
            if progress is not None:
                progress(0, job.total)
                reported = 0
            while not job.finished.wait(self.poll_seconds):
                if progress is not None and job.done != reported:
                    reported = job.done
                    progress(reported, job.total)
        except BaseException:
            self.cancel(job)
            raise
        if job.error is not None:
            raise job.error
        if job.cancelled:
            raise JobCancelled(f"cancelled after {job.done} of {job.total} steps")
        if progress is not None and reported != job.total:
            progress(job.total, job.total)

    def _submit(self, owner: Hashable, steps: Sequence[Step], sizes: Sequence[int] | None) -> _Job:
        job = _Job(owner, steps, sizes)
        with self._condition:
            if self._closed:
                raise RuntimeError("the pass scheduler is closed")
            if not job.steps:
                job.finished.set()
                return job
            self._queues.setdefault(owner, deque()).append(job)
            self._condition.notify()
        return job

    def cancel(self, job: _Job) -> None:
        """Drop ``job``'s steps not yet started (the one running finishes)."""
        with self._condition:
            if job.finished.is_set():
                return
            job.cancelled = True
            queue = self._queues.get(job.owner)
            if queue is not None and job in queue and job is not (queue[0] if queue else None):
                queue.remove(job)
                if not queue:
                    del self._queues[job.owner]
                job.close()
            else:
                job.steps.clear()  # the worker closes it after its current step

    def pending(self) -> dict[Hashable, int]:
        """Steps waiting, by owner (for tests and status displays)."""
        with self._condition:
            counts = {owner: sum(len(job.steps) for job in queue) for owner, queue in self._queues.items()}
            return {owner: count for owner, count in counts.items() if count}

    def close(self) -> None:
        """Stop the worker after its current step; pending jobs are cancelled."""
        with self._condition:
            self._closed = True
            for queue in self._queues.values():
                for job in queue:
                    job.cancelled = True
                    job.close()
            self._queues.clear()
            self._condition.notify_all()
        self._worker.join(timeout=60)

    # ------------------------------------------------------------ the worker's side
    def _next(self) -> tuple[_Job, tuple[Step, int]] | None:
        """The next step, the owners taking turns; None when closed."""
        with self._condition:
            while True:
                if self._closed:
                    return None
                while self._queues:
                    owner, queue = next(iter(self._queues.items()))
                    job = queue[0]
                    if not job.steps:  # cancelled while queued first, or done
                        queue.popleft()
                        job.close()
                        if not queue:
                            del self._queues[owner]
                        continue
                    self._queues.move_to_end(owner)  # the next turn is another owner's
                    return job, job.steps.popleft()
                self._condition.wait()

    def _work(self) -> None:
        while True:
            picked = self._next()
            if picked is None:
                return
            job, (step, size) = picked
            try:
                step()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                with self._condition:
                    self._finish(job, exc)
                continue
            with self._condition:
                self.steps_run += 1
                job.done += size
                if not job.steps:
                    self._finish(job, None)

    def _finish(self, job: _Job, error: BaseException | None) -> None:
        queue = self._queues.get(job.owner)
        if queue is not None and job in queue:
            queue.remove(job)
            if not queue:
                del self._queues[job.owner]
        job.close(error)
