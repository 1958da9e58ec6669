"""The one latest-frame driver every door uses: capture -> slot (size 1) -> worker -> session -> output.

    driver = FrameDriver(session, on_output=sink_write, overlay=True).start()
    driver.push(frame)                      # from the door's capture loop / track / callback, at the camera's rate
    driver.get_output(timeout)              # or on_output(frame, info) from the worker for every frame out
    driver.stop()

A newer frame REPLACES one still waiting in the slot (counted as dropped): nothing queues, latency stays at one
frame's walk. The session's walk is the cheap part (tracking + paste); the networks run in the editor's own worker
(`stream.serving`), so output keeps the camera's rate while edits refresh at the editor's. Every frame pushed is
accounted for: once stopped with drain=True, frames_in == processed + dropped.

`info` for each output: {"index", "t_capture", "latency_ms", "status" (stream.status.FrameStatus), "meta"} -- meta
is whatever the door pushed with the frame (e.g. a WebRTC frame's pts and time_base).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from stream.errors import ErrorCounter
from stream.stats import ema
from stream.status import draw_status

log = logging.getLogger(__name__)
_FPS_WINDOW = 30


@dataclass
class _Item:
    frame: Any
    t_capture: float
    index: int
    meta: Any


class Rate:
    """Events per second over the last `_FPS_WINDOW` events."""

    def __init__(self):
        self.times: deque = deque(maxlen=_FPS_WINDOW)

    def tick(self, t: float) -> None:
        self.times.append(t)

    def fps(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


class FrameDriver:
    """One stream's latest-frame loop around a `stream.session.Session` (see the module docstring)."""

    def __init__(self,
                 session,                                    # .process(frame, t_capture) -> Output(frame, status)
                 on_output: Callable[[np.ndarray, dict], Any] | None = None,  # called from the worker per output
                 overlay: bool = False,                      # draw the status line and fps on the output frames
                 prepare: Callable[[Any], np.ndarray] | None = None,  # pushed item -> uint8 BGR frame (in the worker)
                 clock: Callable[[], float] = time.monotonic,  # seconds, monotonic (injectable for tests)
                 latency_log: int = 4096,                    # recent (index, latency ms) pairs kept (bounded)
                 name: str = "micromotion"):
        self.session = session
        self.on_output = on_output
        self.overlay = bool(overlay)
        self.prepare = prepare
        self.clock = clock
        self.name = name
        self.errors = ErrorCounter(log, "output passed through")
        self._cond = threading.Condition()
        self._slot: _Item | None = None
        self._out: tuple[np.ndarray, dict] | None = None
        self._out_cond = threading.Condition()
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._feeder: threading.Thread | None = None
        self.frames_in = self.processed = self.dropped = 0
        self._rate_in, self._rate_out = Rate(), Rate()
        self.stage_ms: dict[str, float] = {}
        self._latencies: deque = deque(maxlen=int(latency_log))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FrameDriver":
        if self._worker is not None:
            raise RuntimeError("driver already started; make a new one to restart")
        self._worker = threading.Thread(target=self._work, name=f"{self.name}-driver", daemon=True)
        self._worker.start()
        return self

    def stop(self, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop feeding and the worker. drain=True processes the frame still in the slot; False drops it."""
        with self._cond:
            self._stopping = True
            if not drain and self._slot is not None:
                self._slot = None
                self.dropped += 1
            self._cond.notify_all()
        for th in (self._feeder, self._worker):
            if th is not None and th is not threading.current_thread():
                th.join(timeout)
        if self._worker is not None and self._worker.is_alive():
            log.warning("driver worker still busy after %.1f s; leaving it (daemon thread)", timeout)

    def __enter__(self) -> "FrameDriver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def feeding(self) -> bool:
        """True while a background `feed(..., block=False)` is still pushing frames."""
        return self._feeder is not None and self._feeder.is_alive()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive() and not self._stopping

    # ------------------------------------------------------------------ capture side
    def push(self, frame: Any, t_capture: float | None = None, meta: Any = None) -> bool:
        """Put a frame in the slot. Returns True if it replaced a frame the worker had not taken (a drop)."""
        t = self.clock() if t_capture is None else t_capture
        with self._cond:
            if self._stopping:
                raise RuntimeError("driver is stopped")
            replaced = self._slot is not None
            if replaced:
                self.dropped += 1
            self._slot = _Item(frame, t, self.frames_in, meta)
            self.frames_in += 1
            self._rate_in.tick(t)
            self._cond.notify()
        return replaced

    def feed(self, frames: Iterable[np.ndarray], fps: float | None = None, block: bool = True) -> None:
        """Push frames from an iterable (a source), paced at `fps` when given (files), else as they come.

        block=False runs the feeding in a capture thread (`stop()` ends it).
        """
        if not block:
            self._feeder = threading.Thread(target=self.feed, args=(frames, fps, True),
                                            name=f"{self.name}-capture", daemon=True)
            self._feeder.start()
            return
        interval = 1.0 / fps if fps else 0.0
        next_t = time.perf_counter()
        for frame in frames:
            if self._stopping:
                break
            if interval:
                delay = next_t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_t = max(next_t + interval, time.perf_counter() - interval)
            try:
                self.push(frame)
            except RuntimeError:  # stopped while feeding
                break

    # ------------------------------------------------------------------ output side
    def get_output(self, timeout: float | None = None) -> tuple[np.ndarray, dict] | None:
        """The newest (frame, info), waiting up to `timeout` s; None if nothing arrived."""
        with self._out_cond:
            if self._out is None:
                self._out_cond.wait(timeout)
            out, self._out = self._out, None
        return out

    # ------------------------------------------------------------------ worker
    def _take(self) -> _Item | None:
        with self._cond:
            while self._slot is None and not self._stopping:
                self._cond.wait()
            item, self._slot = self._slot, None
            return item

    def _work(self) -> None:
        while True:
            item = self._take()
            if item is None:  # stopping and nothing left
                return
            self._step(item)

    def _step(self, item: _Item) -> None:
        t_start = self.clock()
        frame = item.frame
        status = None
        try:
            frame = self.prepare(frame) if self.prepare is not None else frame
            result = self.session.process(frame, item.t_capture)
            frame, status = result.frame, result.status
        except Exception as exc:  # noqa: BLE001 -- the stream goes on with the frame as it came
            self.errors.count(exc, where="process")
        t_end = self.clock()
        self.processed += 1
        self._rate_out.tick(t_end)
        latency = (t_end - item.t_capture) * 1e3
        self._latencies.append((item.index, latency))
        self._record("wait", (t_start - item.t_capture) * 1e3)
        self._record("process", (t_end - t_start) * 1e3)
        self._record("total", latency)
        info = {"index": item.index, "t_capture": item.t_capture, "latency_ms": latency, "status": status,
                "meta": item.meta}
        if self.overlay and isinstance(frame, np.ndarray):
            frame = self.draw_overlay(frame, status)
        with self._out_cond:
            self._out = (frame, info)
            self._out_cond.notify_all()
        if self.on_output is not None:
            try:
                self.on_output(frame, info)
            except Exception as exc:  # noqa: BLE001 -- a failing sink must not stop the stream
                self.errors.count(exc, where="output")

    def _record(self, stage: str, ms: float) -> None:
        self.stage_ms[stage] = ema(self.stage_ms.get(stage), ms)

    # ------------------------------------------------------------------ stats
    def latencies(self) -> list[tuple[int, float]]:
        """Recent (frame index, capture -> output latency ms) pairs, oldest first (bounded)."""
        return list(self._latencies)

    def stats(self) -> dict:
        """Driver counters and rates, merged with the session's stats (stage ms, edits, errors, state)."""
        session = {}
        try:
            session = self.session.stats()
        except Exception:  # noqa: BLE001 -- stats are best effort
            log.debug("session.stats failed", exc_info=True)
        stage_ms = {**session.get("stage_ms", {}), **self.stage_ms}
        return {**session, "frames_in": self.frames_in, "processed": self.processed, "dropped": self.dropped,
                "fps_in": self._rate_in.fps(), "fps_out": self._rate_out.fps(),
                "latency_ms": self.stage_ms.get("total", 0.0), "stage_ms": stage_ms,
                "driver_errors": self.errors.as_dict(),
                "errors_total": session.get("errors", 0) + self.errors.total}   # the session's and the driver's

    def draw_overlay(self, frame: np.ndarray, status=None) -> np.ndarray:
        """A copy of the frame with the status line and "in/out fps, dropped, latency" drawn top-left."""
        text = (f"in {self._rate_in.fps():.1f} fps  out {self._rate_out.fps():.1f} fps  drop {self.dropped}  "
                f"{self.stage_ms.get('total', 0.0):.0f} ms")
        return draw_status(frame, status.message if status is not None else "", text)
