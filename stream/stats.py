"""A session's counters and stage timings (moving averages): one implementation every door reads."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

EMA = 0.1     # weight of the newest sample in the moving averages
STAGES = ("landmarks", "align", "encode", "generate", "paste", "edit")   # "edit": submit -> result (ms)


def ema(previous: float | None, sample: float, weight: float = EMA) -> float:
    """Exponential moving average (the first sample starts it)."""
    return sample if previous is None else (1 - weight) * previous + weight * sample


@dataclass
class SessionCounters:
    """What happened to a stream's frames (counts) and how long each stage took (ms, moving averages)."""

    frames: int = 0          # frames processed
    tracked: int = 0         # frames with at least one face found
    edited: int = 0          # frames with at least one edit pasted
    edits: int = 0           # edits received from the editor
    waiting: int = 0         # frames with a face but no edit yet
    stale: int = 0           # frames whose newest edit was older than the bound (passed through)
    no_face: int = 0
    too_small: int = 0
    disabled: int = 0
    t: float = 0.0           # the animation's t at the newest edit request
    edit_age_ms: float | None = None       # age of the edit pasted on the newest edited frame
    max_edit_age_ms: float = 0.0           # oldest edit ever pasted (must stay under the staleness bound)
    stage_ms: dict = field(default_factory=dict)
    last_ms: dict = field(default_factory=dict)
    batch: float | None = None             # moving average of the batch size the stream's edits ran in

    def record_stage(self, stage: str, ms: float) -> None:
        self.last_ms[stage] = ms
        self.stage_ms[stage] = ema(self.stage_ms.get(stage), ms)

    def record_stages(self, timing: dict) -> None:
        for stage, ms in (timing or {}).items():
            self.record_stage(stage, ms)

    def record_edit(self, timing: dict, latency_ms: float) -> None:
        """One edit received: its pass's encode/generate ms and batch size, submit -> result latency."""
        self.edits += 1
        for key in ("encode_ms", "generate_ms"):
            if key in timing:
                self.record_stage(key[:-3], timing[key])
        if "batch" in timing:
            self.batch = ema(self.batch, float(timing["batch"]))
        self.record_stage("edit", latency_ms)

    def record_pasted(self, age_ms: float, paste_ms: float) -> None:
        self.edited += 1
        self.edit_age_ms = age_ms
        self.max_edit_age_ms = max(self.max_edit_age_ms, age_ms)
        self.record_stage("paste", paste_ms)

    def count_state(self, state: str) -> None:
        if state == "stale":
            self.stale += 1
        elif state == "waiting":
            self.waiting += 1

    def as_dict(self) -> dict:
        """Every counter and timing, by field name (the stage dicts copied)."""
        return asdict(self)


class EditRate:
    """Faces edited per second over the last `window_s` seconds: an editor backend's `edits_per_s` (thread-safe:
    passes are added by the editor's thread, the rate read by any)."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = float(window_s)
        self._done: deque = deque()     # (t_done monotonic s, faces) of recent passes or replies
        self._lock = threading.Lock()

    def add(self, faces: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._done.append((now, faces))
            self._trim(now)

    def per_s(self, now: float | None = None) -> float:
        """Faces after the window's first pass over the time since it (0 with fewer than two passes)."""
        with self._lock:
            self._trim(time.monotonic() if now is None else now)
            done = list(self._done)
        span = (done[-1][0] - done[0][0]) if len(done) > 1 else 0.0
        return sum(f for _, f in done[1:]) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._done and self._done[0][0] < now - self.window_s:
            self._done.popleft()
