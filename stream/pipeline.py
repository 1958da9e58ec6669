"""Asynchronous latest-frame pipeline: capture -> latest-frame slot (size 1) -> engine worker -> output slot (size 1).

When the engine is slower than the camera, the frame waiting in the slot is REPLACED by the newer one and
counted as dropped: nothing is ever queued without bound, so latency stays at about one engine time and memory
at a few frames, however long the stream runs. Every submitted frame is accounted for:
`frames_in == processed + dropped` once the pipeline has stopped (with `drain=True`).

    pipe = LatestFramePipeline(lambda f: effect.process(f, controls, state), on_output=sink.write,
                               stage_fn=state.stats, overlay=True)
    pipe.start()
    pipe.feed(source_frames, fps=30)        # or pipe.submit(frame) from your own capture loop
    pipe.stop()
    print(pipe.stats())

Stats: fps_in / fps_out (sliding window), latency (capture -> output, moving average) and per-stage ms
(`wait` in the slot, `process`, `total`, plus the effect's stages from `stage_fn`), dropped, errors.
An exception in `process_fn` passes that frame through unchanged, is counted and logged once per kind.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

_EMA = 0.1
_FPS_WINDOW = 30


@dataclass
class _Item:
    frame: np.ndarray
    t_capture: float
    index: int


class _Rate:
    """Frames per second over the last `_FPS_WINDOW` events."""

    def __init__(self):
        self.times: deque = deque(maxlen=_FPS_WINDOW)

    def tick(self, t: float) -> None:
        self.times.append(t)

    def fps(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


class LatestFramePipeline:
    """Capture and processing decoupled by a size-1, overwriting slot; one engine worker thread.

    process_fn: frame uint8 [H, W, 3] -> frame (e.g. `lambda f: effect.process(f, controls, state)`).
    on_output:  called from the worker with (frame_out, info dict) for every processed frame (a sink).
    overlay:    draw "in/out fps, dropped, latency" on the output frames (cv2.putText; on a copy).
    stage_fn:   () -> dict with "stage_ms" (e.g. `StreamState.stats`): merged into `stats()["stage_ms"]`.
    clock:      seconds, monotonic (injectable for tests).
    latency_log: how many recent (index, latency ms) pairs `latencies()` keeps (bounded).
    """

    def __init__(
        self,
        process_fn: Callable[[np.ndarray], np.ndarray],
        on_output: Callable[[np.ndarray, dict], Any] | None = None,
        overlay: bool = False,
        stage_fn: Callable[[], dict] | None = None,
        clock: Callable[[], float] = time.monotonic,
        latency_log: int = 4096,
        name: str = "micromotion",
    ):
        self.process_fn = process_fn
        self.on_output = on_output
        self.overlay = bool(overlay)
        self.stage_fn = stage_fn
        self.clock = clock
        self.name = name
        self._cond = threading.Condition()
        self._slot: _Item | None = None
        self._out: tuple[np.ndarray, dict] | None = None
        self._out_cond = threading.Condition()
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._feeder: threading.Thread | None = None
        self.frames_in = 0
        self.processed = 0
        self.dropped = 0
        self.output_dropped = 0   # outputs overwritten before anyone read them with get_output (info only)
        self.errors: Counter = Counter()
        self._logged: set = set()
        self._rate_in, self._rate_out = _Rate(), _Rate()
        self.stage_ms: dict[str, float] = {}
        self._latencies: deque = deque(maxlen=int(latency_log))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LatestFramePipeline":
        if self._worker is not None:
            raise RuntimeError("pipeline already started; make a new one to restart")
        self._worker = threading.Thread(target=self._work, name=f"{self.name}-engine", daemon=True)
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
            log.warning("engine worker still busy after %.1f s; leaving it (daemon thread)", timeout)

    def __enter__(self) -> "LatestFramePipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def feeding(self) -> bool:
        """True while a background `feed(..., block=False)` is still submitting frames."""
        return self._feeder is not None and self._feeder.is_alive()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive() and not self._stopping

    # ------------------------------------------------------------------ capture side
    def submit(self, frame: np.ndarray, t_capture: float | None = None) -> bool:
        """Put a frame in the slot. Returns True if it replaced a frame the engine had not taken (a drop)."""
        t = self.clock() if t_capture is None else t_capture
        with self._cond:
            if self._stopping:
                raise RuntimeError("pipeline is stopped")
            replaced = self._slot is not None
            if replaced:
                self.dropped += 1
            self._slot = _Item(frame, t, self.frames_in)
            self.frames_in += 1
            self._rate_in.tick(t)
            self._cond.notify()
        return replaced

    def feed(self, frames: Iterable[np.ndarray], fps: float | None = None, block: bool = True) -> None:
        """Submit frames from an iterable (a source), paced at `fps` when given (files), else as they come.

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
                self.submit(frame)
            except RuntimeError:  # stopped while feeding
                break

    # ------------------------------------------------------------------ output side
    def get_output(self, timeout: float | None = None) -> tuple[np.ndarray, dict] | None:
        """The newest processed (frame, info), waiting up to `timeout` s; None if nothing arrived."""
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
            t_start = self.clock()
            try:
                out = self.process_fn(item.frame)
            except Exception as exc:  # noqa: BLE001 -- the stream goes on
                out = item.frame
                self._count_error(exc)
            t_end = self.clock()
            self.processed += 1
            self._rate_out.tick(t_end)
            latency = (t_end - item.t_capture) * 1e3
            self._latencies.append((item.index, latency))
            self._record("wait", (t_start - item.t_capture) * 1e3)
            self._record("process", (t_end - t_start) * 1e3)
            self._record("total", latency)
            info = {"index": item.index, "t_capture": item.t_capture, "latency_ms": latency}
            if self.overlay:
                out = self.draw_overlay(out)
            with self._out_cond:
                if self._out is not None:
                    self.output_dropped += 1
                self._out = (out, info)
                self._out_cond.notify_all()
            if self.on_output is not None:
                try:
                    self.on_output(out, info)
                except Exception as exc:  # noqa: BLE001 -- a failing sink must not stop the engine
                    self._count_error(exc, where="output")

    def _record(self, stage: str, ms: float) -> None:
        prev = self.stage_ms.get(stage)
        self.stage_ms[stage] = ms if prev is None else (1 - _EMA) * prev + _EMA * ms

    def _count_error(self, exc: BaseException, where: str = "process") -> None:
        kind = f"{where}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:80]}"
        self.errors[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("%s failed (frame passed through; logged once per kind)", kind, exc_info=exc)

    # ------------------------------------------------------------------ stats
    def latencies(self) -> list[tuple[int, float]]:
        """Recent (frame index, capture -> output latency ms) pairs, oldest first (bounded)."""
        return list(self._latencies)

    def stats(self) -> dict:
        stage_ms = dict(self.stage_ms)
        if self.stage_fn is not None:
            try:
                extra = self.stage_fn() or {}
                stage_ms.update(extra.get("stage_ms", {}))
            except Exception:  # noqa: BLE001
                pass
        return {
            "frames_in": self.frames_in,
            "processed": self.processed,
            "dropped": self.dropped,
            "output_dropped": self.output_dropped,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "fps_in": self._rate_in.fps(),
            "fps_out": self._rate_out.fps(),
            "latency_ms": self.stage_ms.get("total", 0.0),
            "stage_ms": stage_ms,
        }

    def draw_overlay(self, frame: np.ndarray) -> np.ndarray:
        """A copy of the frame with "in/out fps, dropped, latency" drawn in its top-left corner."""
        import cv2  # noqa: PLC0415

        out = frame.copy()
        s = self.stats()
        text = (f"in {s['fps_in']:.1f} fps  out {s['fps_out']:.1f} fps  "
                f"drop {s['dropped']}  {s['latency_ms']:.0f} ms")
        for color, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(out, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, thick, cv2.LINE_AA)
        return out


__all__ = ["LatestFramePipeline"]
