"""python -m stream.soak: a real-time soak of the latest-frame pipeline with a deliberately slow engine.

Feeds a 30 fps clip (a file, or a generated moving face picture) in real time for `--seconds` through
`stream.pipeline.LatestFramePipeline` whose engine takes `--engine-ms` per frame (a sleep plus a real copy of
the frame), and prints, every `--every` seconds: resident memory, frames in / processed / dropped, and the
median capture-to-output latency of that interval. Pass = memory flat, latency flat, and
frames_in == processed + dropped at the end. A benchmark script, not a test: it takes wall time on purpose.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak from getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def clip_frames(path: str | None, size=(480, 640)) -> Iterator[np.ndarray]:
    """Frames forever: the clip looped (BGR uint8), or a generated 30 fps picture with a moving square."""
    if path:
        from stream.sources import VideoFileSource  # noqa: PLC0415

        while True:
            with VideoFileSource(path) as src:
                for frame, _t in src:
                    yield frame
    h, w = size
    base = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    i = 0
    while True:
        frame = base.copy()
        x = (i * 4) % (w - 80)
        frame[200:280, x:x + 80] = 255
        yield frame
        i += 1


def soak(seconds: float, engine_ms: float, fps: float = 30.0, clip: str | None = None, every: float = 10.0) -> dict:
    from stream.pipeline import LatestFramePipeline  # noqa: PLC0415

    def slow_engine(frame: np.ndarray) -> np.ndarray:
        time.sleep(engine_ms / 1e3)
        return frame.copy()

    pipe = LatestFramePipeline(slow_engine, overlay=True)
    pipe.start()
    frames = clip_frames(clip)
    t0 = time.monotonic()
    next_report, rows = every, []
    period = 1.0 / fps
    n = 0
    rss0 = rss_mb()
    while (now := time.monotonic() - t0) < seconds:
        pipe.submit(next(frames))
        n += 1
        if now >= next_report:
            s = pipe.stats()
            recent = [ms for _i, ms in pipe.latencies()[-int(every * fps):]]
            rows.append({"t_s": round(now, 1), "rss_mb": round(rss_mb(), 1), "frames_in": s["frames_in"],
                         "processed": s["processed"], "dropped": s["dropped"],
                         "latency_ms_median": round(statistics.median(recent), 1) if recent else None})
            print(f"{rows[-1]['t_s']:>6.1f} s  rss {rows[-1]['rss_mb']:>7.1f} MB  in {s['frames_in']:>5}  "
                  f"processed {s['processed']:>5}  dropped {s['dropped']:>5}  "
                  f"latency {rows[-1]['latency_ms_median']} ms", flush=True)
            next_report += every
        time.sleep(max(0.0, (n * period) - (time.monotonic() - t0)))
    pipe.stop(drain=True)
    s = pipe.stats()
    return {"benchmark": "stream.soak", "seconds": seconds, "fps": fps, "engine_ms": engine_ms, "rss_start_mb":
            round(rss0, 1), "rows": rows, "frames_in": s["frames_in"], "processed": s["processed"],
            "dropped": s["dropped"], "errors": s["errors"],
            "accounted": s["frames_in"] == s["processed"] + s["dropped"]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.soak", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--engine-ms", type=float, default=100.0, help="time the slow engine takes per frame")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--clip", default=None, help="video file to loop (default: a generated 640x480 picture)")
    p.add_argument("--every", type=float, default=10.0, help="report interval in seconds")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    result = soak(args.seconds, args.engine_ms, args.fps, args.clip, args.every)
    print(f"frames in {result['frames_in']} = processed {result['processed']} + dropped {result['dropped']}: "
          f"{'yes' if result['accounted'] else 'NO'}; errors {result['errors']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
