"""Recent log records as data, for ``tail_logs``: a bounded ring buffer on the ``streamlib`` logger.

Every record of the ``streamlib`` loggers (the runtime's failures, ready actors' warnings,
the agent tools' own events) is kept as a plain dict -- sequence number, time, level,
logger, message, the actor's path where one is known, and the exception's type and text
-- in a ring of ``capacity`` records: old records fall off, nothing grows. The actor path
comes from ``extra={"actor": path}`` when the code logging gave one, else from
:func:`streamlib.current_actor` (the actor whose hook is running), else from the first
argument that looks like an actor path (the runtime's messages start with it).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from typing import Any

from streamlib import current_actor

__all__ = ["LogBuffer", "LogRecordDict"]

LogRecordDict = dict[str, Any]

_PATH = re.compile(r"^(/[^\s/:()]+)+$")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _actor_of(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "actor", None)
    if isinstance(explicit, str):
        return explicit
    actor = current_actor()
    if actor is not None:
        return actor.path
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args[:2]:
        if isinstance(arg, str) and _PATH.match(arg):
            return arg
    return None


class LogBuffer(logging.Handler):
    """The last ``capacity`` records of ``logger`` (default: ``streamlib`` and its children)
    that pass the logger's own level (WARNING unless the program configured logging
    otherwise), plus the events :meth:`add` records."""

    def __init__(self, capacity: int = 2000, logger: str = "streamlib", level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.capacity = capacity
        self._records: deque[LogRecordDict] = deque(maxlen=capacity)
        self._seq = 0
        self._lock_records = threading.Lock()
        self._logger = logging.getLogger(logger)
        self._logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        entry: LogRecordDict = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
            "actor": _actor_of(record),
        }
        event = getattr(record, "event", None)
        if isinstance(event, str):
            entry["event"] = event
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["exception"] = {"type": type(exc).__name__, "message": str(exc)}
        self._append(entry)

    def add(self, level: str, message: str, actor: str | None = None, event: str | None = None) -> None:
        """Record an event directly (the agent tools' own: defined, spawned, connected ...),
        without passing it through Python logging (and so without printing it anywhere)."""
        entry: LogRecordDict = {
            "time": time.time(),
            "level": level,
            "logger": "streamlib.agents",
            "message": message,
            "actor": actor,
        }
        if event is not None:
            entry["event"] = event
        self._append(entry)

    def _append(self, entry: LogRecordDict) -> None:
        with self._lock_records:
            self._seq += 1
            entry["seq"] = self._seq
            self._records.append(entry)

    def tail(
        self, limit: int = 50, actor: str | None = None, level: str | None = None, since: int = 0
    ) -> list[LogRecordDict]:
        """The newest ``limit`` records, oldest first: only those of ``actor`` (a path; its
        subtree included), at ``level`` or above, with a sequence number above ``since``."""
        floor = _LEVELS.get((level or "debug").lower(), 0)
        prefix = actor.rstrip("/") + "/" if actor else None
        with self._lock_records:
            records = list(self._records)
        picked = [
            r
            for r in records
            if r["seq"] > since
            and _LEVELS.get(r["level"], 0) >= floor
            and (prefix is None or (r["actor"] is not None and (r["actor"] + "/").startswith(prefix)))
        ]
        return picked[-limit:] if limit > 0 else []

    def close(self) -> None:
        self._logger.removeHandler(self)
        super().close()

    def __repr__(self) -> str:
        return f"<LogBuffer {len(self._records)}/{self.capacity} records, last seq {self._seq}>"
