"""One way of counting and reporting errors: by kind (type + first line), logged once per kind, with totals.

Every place that keeps a stream going after a failure (a session's frame, the editor's batch, a driver's sink,
a web peer) counts with an `ErrorCounter`, so every door reports errors the same way.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter


def error_kind(exc: BaseException, where: str | None = None) -> str:
    """'RuntimeError: first line of the message' (80 chars), prefixed with 'where: ' when given."""
    head = (str(exc).splitlines() or [""])[0][:80]
    kind = f"{type(exc).__name__}: {head}"
    return f"{where}: {kind}" if where else kind


class ErrorCounter:
    """Counts exceptions by kind; logs the first of each kind with its traceback (thread-safe)."""

    def __init__(self,
                 logger: logging.Logger,          # where the first occurrence of each kind is logged
                 what: str = "frame passed through unchanged"):  # what happened to the work that failed
        self.logger = logger
        self.what = what
        self.by_kind: Counter = Counter()
        self.last: str | None = None      # the newest kind (for a door's status line)
        self._lock = threading.Lock()

    def count(self, exc: BaseException, where: str | None = None) -> str:
        """Record one failure; returns its kind."""
        kind = error_kind(exc, where)
        with self._lock:
            first = kind not in self.by_kind
            self.by_kind[kind] += 1
            self.last = kind
        if first:
            self.logger.error("%s after %s (logged once per kind; counted in stats)", self.what, kind, exc_info=exc)
        return kind

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def as_dict(self) -> dict:
        """{"errors": total, "errors_by_kind": {kind: count}, "last_error": kind | None}."""
        with self._lock:
            return {"errors": sum(self.by_kind.values()), "errors_by_kind": dict(self.by_kind),
                    "last_error": self.last}
