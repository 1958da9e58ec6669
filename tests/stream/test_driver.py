"""stream.driver: latest-frame slot, drops counted exactly, bounded memory and latency, errors, clean stop.

The driver runs anything with a session's `process(frame, t_capture) -> Output`; here a `Walk` wraps a plain
function (the real Session is tested in test_session.py and end to end in test_live_path.py).
The "60-second run at 30 fps" is fast-forwarded: time is scaled down by SPEEDUP (the frame interval and the
walk time shrink together), so the 1800 frames of a minute take a few real seconds. The walk is 3x slower
than the frame interval. No assertion is about speed; they are about what the driver keeps and counts.
"""
from __future__ import annotations

import logging
import threading
import time
import tracemalloc

import numpy as np
import pytest

from stream.driver import FrameDriver
from stream.session import Output
from stream.status import FrameStatus


class Walk:
    """A session stand-in: `process` applies `fn` to the frame; `stats` reports a fixed stage time."""

    def __init__(self, fn):
        self.fn = fn

    def process(self, frame, t_capture=None):
        return Output(self.fn(frame), FrameStatus("running", message="walking"))

    def stats(self):
        return {"stage_ms": {"encode": 4.0}}


def LatestFramePipeline(fn, **kw):  # noqa: N802 -- the driver around a plain function
    return FrameDriver(Walk(fn), **kw)

FPS = 30
SECONDS = 60
SPEEDUP = 20                      # 60 s of stream in ~3 s
INTERVAL = 1.0 / FPS / SPEEDUP    # 1.67 ms between frames
ENGINE = 3 * INTERVAL             # the engine is 3x slower than the camera


def slow_engine(frame):
    time.sleep(ENGINE)
    out = frame.copy()
    out[0, 0, 0] = 255
    return out


def test_sixty_seconds_slow_engine_bounded_memory_latency_and_exact_drops():
    shape = (120, 160, 3)
    n_frames = FPS * SECONDS
    outputs = []
    pipe = LatestFramePipeline(slow_engine, on_output=lambda f, info: outputs.append(info["index"]))

    def frames():
        for i in range(n_frames):
            f = np.empty(shape, np.uint8)   # a fresh frame each time, as a camera gives
            f.fill(i % 251)
            yield f

    tracemalloc.start()
    try:
        pipe.start()
        pipe.feed(frames(), fps=FPS * SPEEDUP)
        pipe.stop(drain=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    s = pipe.stats()
    # every frame is either processed or counted as dropped, exactly
    assert s["frames_in"] == n_frames
    assert s["processed"] + s["dropped"] == n_frames
    assert s["dropped"] > n_frames / 3      # the engine could not keep up: frames were dropped...
    assert s["processed"] == len(outputs)   # ...and every processed one came out
    assert outputs == sorted(outputs)       # in capture order
    # memory: a handful of frames at most (an unbounded queue would hold ~hundreds of them here)
    frame_bytes = int(np.prod(shape))
    assert peak < 40 * frame_bytes, f"peak {peak / 1e6:.1f} MB for {frame_bytes / 1e3:.0f} kB frames"
    # latency does not grow: the last quarter is not slower than the first (an unbounded queue: ~seconds)
    lat = [ms for _, ms in pipe.latencies()]
    q = len(lat) // 4
    first, last = float(np.mean(lat[:q])), float(np.mean(lat[-q:]))
    assert last < 3 * first + 50 * ENGINE * 1e3, (first, last)
    assert s["driver_errors"]["errors"] == 0 and s["fps_in"] > 0 and s["fps_out"] > 0


def test_fast_engine_drops_nothing_with_paced_feed():
    seen = []
    pipe = LatestFramePipeline(lambda f: f, on_output=lambda f, info: seen.append(info["index"]))
    pipe.start()
    for i in range(20):
        pipe.push(np.full((4, 4, 3), i, np.uint8))
        deadline = time.monotonic() + 5
        while len(seen) <= i and time.monotonic() < deadline:  # wait for the engine: then nothing can drop
            time.sleep(0.001)
    pipe.stop()
    assert seen == list(range(20)) and pipe.dropped == 0


def test_latest_frame_wins_and_drop_count_exact():
    gate = threading.Event()
    got = []

    def engine(frame):
        gate.wait(5)
        return frame

    pipe = LatestFramePipeline(engine, on_output=lambda f, info: got.append(int(f[0, 0, 0])))
    pipe.start()
    pipe.push(np.full((2, 2, 3), 0, np.uint8))
    time.sleep(0.05)  # the worker takes frame 0 and blocks in the engine
    replaced = [pipe.push(np.full((2, 2, 3), i, np.uint8)) for i in range(1, 6)]
    assert replaced == [False, True, True, True, True]
    gate.set()
    pipe.stop(drain=True)
    assert got == [0, 5]  # only the newest waiting frame is processed
    assert pipe.stats()["dropped"] == 4 and pipe.frames_in == 6


def test_stop_without_drain_counts_the_pending_frame():
    gate = threading.Event()
    pipe = LatestFramePipeline(lambda f: (gate.wait(5), f)[1])
    pipe.start()
    pipe.push(np.zeros((2, 2, 3), np.uint8))
    time.sleep(0.05)
    pipe.push(np.zeros((2, 2, 3), np.uint8))  # waits in the slot
    gate.set()
    pipe.stop(drain=False)
    s = pipe.stats()
    assert s["frames_in"] == 2 and s["processed"] + s["dropped"] == 2
    with pytest.raises(RuntimeError, match="stopped"):
        pipe.push(np.zeros((2, 2, 3), np.uint8))


def test_engine_exception_passes_through_counted_logged_once(caplog):
    def engine(frame):
        if frame[0, 0, 0] in (2, 3):
            raise RuntimeError("engine hiccup")
        return frame + 1

    outs = []
    pipe = LatestFramePipeline(engine, on_output=lambda f, info: outs.append(int(f[0, 0, 0])))
    with caplog.at_level(logging.ERROR, logger="stream.driver"):
        pipe.start()
        for i in range(6):
            pipe.push(np.full((2, 2, 3), i, np.uint8))
            deadline = time.monotonic() + 5
            while pipe.processed <= i and time.monotonic() < deadline:
                time.sleep(0.001)
        pipe.stop()
    assert outs == [1, 2, 2, 3, 5, 6]  # frames 2 and 3 passed through unchanged; the stream went on
    assert pipe.stats()["driver_errors"]["errors"] == 2
    assert sum("engine hiccup" in r.getMessage() for r in caplog.records) == 1


def test_overlay_and_get_output_and_stage_fn():
    pipe = LatestFramePipeline(lambda f: f, overlay=True)
    pipe.start()
    frame = np.zeros((64, 320, 3), np.uint8)
    pipe.push(frame)
    out, info = pipe.get_output(timeout=5)
    pipe.stop()
    assert out.shape == frame.shape and out.any() and not frame.any()  # text drawn on a copy
    assert info["index"] == 0 and info["latency_ms"] >= 0 and info["status"].message == "walking"
    s = pipe.stats()
    assert s["stage_ms"]["encode"] == 4.0 and {"wait", "process", "total"} <= set(s["stage_ms"])
    assert pipe.get_output(timeout=0.01) is None


def test_feed_in_background_thread_stops_cleanly():
    pipe = LatestFramePipeline(lambda f: f)
    pipe.start()

    def endless():
        while True:
            yield np.zeros((2, 2, 3), np.uint8)

    pipe.feed(endless(), fps=500, block=False)
    time.sleep(0.1)
    pipe.stop()
    assert not pipe.running and pipe._feeder is not None and not pipe._feeder.is_alive()
    s = pipe.stats()
    assert s["frames_in"] == s["processed"] + s["dropped"] and s["frames_in"] > 0
