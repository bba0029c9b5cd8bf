"""An evaluation in a background thread: progress at any time, cancel between images.

For the dashboard, whose page must stay responsive during a long run. The thread runs
:func:`camcore.evaluation.evaluate` with a journal in its own temporary folder
(:class:`~camcore.evaluation.archives.SessionFolder`); a cancel is noticed by the
progress callback after the image in flight, which stops the run, and the images
finished so far are read back from the journal - so a cancelled run still has a
results table. The folder is removed when the thread ends.

The thread holds only the job, not the :class:`BackgroundEvaluation` handle: when the
handle is garbage-collected (e.g. the Streamlit session that kept it ended) the run is
cancelled.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from typing import Any, Sequence

import pandas as pd

from camcore.evaluation.archives import RUN_PREFIX, SessionFolder
from camcore.evaluation.journal import journal_path
from camcore.evaluation.runner import evaluate, results_table
from camcore.evaluation.sources import EvalItem
from camcore.evaluation.spec import ModelSpec

logger = logging.getLogger(__name__)


class EvaluationCancelled(Exception):
    """Raised by the progress callback of a cancelled run, between two images."""


def journal_table(out: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The results table of the images recorded in the journal of ``out`` so far (the
    journal's format: :class:`camcore.evaluation.Journal`; a pair run's with both models'
    columns), None when it holds none."""
    try:
        lines = journal_path(out).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    records: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:  # line 1 is the configuration
        try:
            record = json.loads(line)
            records[str(record["id"])] = record  # the last record of an image wins
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a torn last line
    if not records:
        return None
    return results_table(list(records.values()), None)


class _Job:
    """What the thread works on and reports into."""

    def __init__(self, model: ModelSpec, items: Sequence[EvalItem], methods: Sequence[str],
                 options: dict[str, Any], parent: str | os.PathLike[str] | None) -> None:
        self.model, self.items, self.methods = model, list(items), list(methods)
        self.options, self.parent = options, parent
        self.cancel_requested = threading.Event()
        self.finished = threading.Event()
        self.done = 0
        self.total = len(self.items)
        self.table: pd.DataFrame | None = None
        self.cancelled = False
        self.error: str | None = None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.cancel_requested.is_set() and done < total:
            raise EvaluationCancelled

    def run(self) -> None:
        folder = SessionFolder(RUN_PREFIX, self.parent)
        out = folder.path / "results.parquet"
        try:
            self.table = evaluate(self.model, self.items, self.methods, out=out, overwrite=True,
                                  progress=self.progress, **self.options)
        except EvaluationCancelled:
            self.cancelled = True
            self.table = journal_table(out)
        except Exception as exc:  # noqa: BLE001 - reported to the page, which shows it
            logger.error("background evaluation failed", exc_info=exc)
            self.error = str(exc) if isinstance(exc, (ValueError, TypeError)) else f"unexpected {type(exc).__name__}"
            self.table = journal_table(out)
        finally:
            folder.close()
            self.finished.set()


class BackgroundEvaluation:
    """:func:`camcore.evaluation.evaluate` of ``items`` in a daemon thread.

    ``options`` are ``evaluate``'s keyword arguments (``max_n``, ``metrics``, ``seed`` ...)
    but ``out``, ``overwrite`` and ``progress``. Read ``done`` / ``total`` while it runs;
    once ``finished``, ``table`` holds the results (of the finished images if
    ``cancelled``; None if none finished) and ``error`` the message of a failed run.
    """

    def __init__(
        self,
        model: ModelSpec,
        items: Sequence[EvalItem],
        methods: Sequence[str],
        *,
        parent: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        for reserved in ("out", "overwrite", "progress"):
            if reserved in options:
                raise TypeError(f"BackgroundEvaluation sets {reserved}= itself")
        self._job = _Job(model, items, methods, options, parent)
        self._thread = threading.Thread(target=self._job.run, name="camstudio-evaluation", daemon=True)
        weakref.finalize(self, self._job.cancel_requested.set)

    def start(self) -> BackgroundEvaluation:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop after the image being evaluated; the finished ones are kept."""
        self._job.cancel_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished or ``timeout`` seconds passed; True when finished."""
        return self._job.finished.wait(timeout)

    @property
    def cancel_requested(self) -> bool:
        return self._job.cancel_requested.is_set()

    @property
    def finished(self) -> bool:
        return self._job.finished.is_set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.finished

    @property
    def done(self) -> int:
        return self._job.done

    @property
    def total(self) -> int:
        return self._job.total

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled

    @property
    def error(self) -> str | None:
        return self._job.error

    @property
    def table(self) -> pd.DataFrame | None:
        return self._job.table
