"""The per-image journal that makes an evaluation resumable."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Mapping

logger = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".rows.jsonl"
_JOURNAL_VERSION = 1


def journal_path(out: str | os.PathLike[str]) -> Path:
    """Where the per-image journal of ``out`` lives: ``<out>.rows.jsonl``."""
    return Path(str(out) + JOURNAL_SUFFIX)


class Journal:
    """Append-only JSON-lines record of finished images, durable line by line.

    Line 1 is ``{"version", "config"}``; every other line is one image:
    ``{"id", "rows": [...]}`` or ``{"id", "error", "item"}``. The last record of an id
    wins (an image that failed may be retried and succeed).
    """

    def __init__(self, path: Path, config: Mapping[str, Any], overwrite: bool = False) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        config = json.loads(json.dumps(config))  # normalize (tuples -> lists) for comparison
        if overwrite or not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as handle:
                self._append(handle, {"version": _JOURNAL_VERSION, "config": config})
        else:
            self._load(config)
        self._handle: IO[str] = open(self.path, "a", encoding="utf-8")

    def _load(self, config: Mapping[str, Any]) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            logger.warning("%s: dropping a partially written last line (%d bytes)", self.path, len(data) - end)
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        lines = data[:end].decode("utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or "config" not in header:
            raise ValueError(f"{self.path}: not an evaluation journal; delete it or pass --overwrite")
        if header["config"] != config:
            changed = sorted(
                key for key in set(config) | set(header["config"]) if config.get(key) != header["config"].get(key)
            )
            raise ValueError(
                f"{self.path} holds results of another configuration (differs in: {', '.join(changed)}); "
                "use another --out, or --overwrite to start over"
            )
        for line_no, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                self.records[str(record["id"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s:%d: unreadable record skipped; that image will be redone", self.path, line_no)

    @staticmethod
    def _append(handle: IO[str], record: Mapping[str, Any]) -> None:
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def done(self, item_id: str) -> bool:
        return "rows" in self.records.get(item_id, {})

    def add(self, record: dict[str, Any]) -> None:
        self._append(self._handle, record)
        self.records[str(record["id"])] = record

    def close(self) -> None:
        self._handle.close()


class MemoryJournal:
    """A :class:`Journal` that keeps its records in memory only (a run without an output
    file): the same ``records``, ``done``, ``add`` and ``close``."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def done(self, item_id: str) -> bool:
        return "rows" in self.records.get(item_id, {})

    def add(self, record: dict[str, Any]) -> None:
        self.records[str(record["id"])] = record

    def close(self) -> None:
        pass
