"""In-process serving: `InlineBackend` (the caller's thread) and `BatchingBackend` (one worker, many streams).

BatchingBackend, one network pass at a time:

    sessions --submit(stream, faces)--> queue (FIFO) --worker--> gather: wait until `gather_ms` after the oldest
    request or until `max_batch` faces wait --> take requests oldest first, at most ONE per stream, while they fit
    --> editor.edit(all faces) --> each request's future gets its own faces' edits

Fairness: the oldest request always goes first and a stream never has two requests in one pass, so no stream
starves another; a request is never held back for a slow stream (nothing waits beyond the gather window).
Failure isolation: when a pass fails, each request of it is retried alone, so an exception caused by one stream's
face fails only that stream's frame.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

from stream.errors import ErrorCounter
from stream.stats import EditRate

log = logging.getLogger(__name__)


@dataclass
class _Request:
    stream_id: str
    jobs: list
    future: Future
    t_submit: float


@dataclass
class _Counters:
    batches: int = 0
    faces: int = 0
    requests: int = 0
    cancelled: int = 0
    busy_s: float = 0.0
    rate: EditRate = field(default_factory=EditRate)   # faces per second over recent passes


class InlineBackend:
    """Edits in the caller's thread, one request at a time (a lock): synchronous files and `Effect.process`."""

    def __init__(self, editor):
        self.editor = editor
        self.info = editor.info
        self.errors = ErrorCounter(log, "edit failed")
        self._lock = threading.Lock()
        self._counters = _Counters()

    def submit(self, stream_id: str, jobs: Sequence) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        t0 = time.monotonic()
        try:
            with self._lock:
                edits = self.editor.edit(list(jobs))
        except Exception as exc:  # noqa: BLE001 -- reported through the future, counted here
            self.errors.count(exc)
            future.set_exception(exc)
            return future
        _count_pass(self._counters, len(jobs), 1, time.monotonic() - t0)
        future.set_result(edits)
        return future

    def cancel(self, stream_id: str) -> None:
        pass

    def stats(self) -> dict:
        return _stats(self._counters, self.errors)

    def close(self) -> None:
        pass


class BatchingBackend:
    """One worker thread edits the faces of all streams in shared passes (see the module docstring)."""

    def __init__(self,
                 editor,                           # stream.editor.Editor (or anything with .info and .edit(jobs))
                 gather_ms: float = 4.0,           # wait this long after the oldest request for others to join
                 max_batch: int = 8,               # most faces in one pass
                 name: str = "editor"):
        self.editor = editor
        self.info = editor.info
        self.gather_s = float(gather_ms) / 1e3
        self.max_batch = int(max_batch)
        self.errors = ErrorCounter(log, "edit failed")
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._counters = _Counters()
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ sessions' side
    def submit(self, stream_id: str, jobs: Sequence) -> Future:
        """Queue one stream's faces of one frame; the future resolves to their edits (or the pass's exception)."""
        future: Future = Future()
        with self._cond:
            if self._closing:
                future.set_exception(RuntimeError("the editor is shutting down"))
                return future
            self._queue.append(_Request(stream_id, list(jobs), future, time.monotonic()))
            self._cond.notify_all()
        return future

    def cancel(self, stream_id: str) -> None:
        """Drop the stream's waiting requests (its client is gone); a pass already running finishes."""
        with self._cond:
            keep = deque(r for r in self._queue if r.stream_id != stream_id)
            dropped = [r for r in self._queue if r.stream_id == stream_id]
            self._queue = keep
        for r in dropped:
            r.future.cancel()
            self._counters.cancelled += 1

    def pending(self) -> int:
        """Requests waiting for a pass."""
        with self._cond:
            return len(self._queue)

    def stats(self) -> dict:
        return {**_stats(self._counters, self.errors), "waiting": self.pending(),
                "gather_ms": self.gather_s * 1e3, "max_batch": self.max_batch}

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker; waiting requests are cancelled."""
        with self._cond:
            self._closing = True
            dropped, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        for r in dropped:
            r.future.cancel()
        if self._worker is not threading.current_thread():
            self._worker.join(timeout)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            batch = self._gather()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _gather(self) -> list[_Request] | None:
        """Wait for work, then for the gather window; take a fair batch. None when closing."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if self._closing:
                return None
            deadline = self._queue[0].t_submit + self.gather_s
            while not self._closing and sum(len(r.jobs) for r in self._queue) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._take()

    def _take(self) -> list[_Request]:
        """Oldest first, one request per stream, while the faces fit in max_batch (a lone big request still goes)."""
        batch, streams, faces, rest = [], set(), 0, deque()
        while self._queue:
            r = self._queue.popleft()
            fits = not batch or faces + len(r.jobs) <= self.max_batch
            if r.stream_id in streams or not fits:
                rest.append(r)
                continue
            if not r.future.set_running_or_notify_cancel():  # cancelled while waiting
                continue
            batch.append(r)
            streams.add(r.stream_id)
            faces += len(r.jobs)
        self._queue = rest
        return batch

    def _run(self, batch: list[_Request]) -> None:
        t0 = time.monotonic()
        jobs = [job for r in batch for job in r.jobs]
        try:
            edits = self.editor.edit(jobs)
        except Exception as exc:  # noqa: BLE001 -- retry each request alone: only the culprit fails
            if len(batch) == 1:
                self.errors.count(exc)
                batch[0].future.set_exception(exc)
            else:
                for r in batch:
                    self._run([r])
            return
        _count_pass(self._counters, len(jobs), len(batch), time.monotonic() - t0)
        i = 0
        for r in batch:
            r.future.set_result(edits[i:i + len(r.jobs)])
            i += len(r.jobs)


def _count_pass(c: _Counters, faces: int, requests: int, seconds: float) -> None:
    c.batches += 1
    c.faces += faces
    c.requests += requests
    c.busy_s += seconds
    c.rate.add(faces)


def _stats(c: _Counters, errors: ErrorCounter) -> dict:
    return {"batches": c.batches, "faces": c.faces, "requests": c.requests, "cancelled": c.cancelled,
            "mean_batch": c.faces / c.batches if c.batches else 0.0, "edits_per_s": c.rate.per_s(),
            "busy_s": c.busy_s, **errors.as_dict()}
