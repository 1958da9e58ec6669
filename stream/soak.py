"""python -m stream.soak: a real-time soak of the live path with a deliberately slow editor.

Feeds a 30 fps clip (a file, or a real face photo moving: `stream.clips`) in real time for `--seconds` through the
product's live path -- `FrameDriver` -> `Session` (MediaPipe tracking, staleness, paste-back) -> `BatchingBackend`
-> an editor that takes `--engine-ms` per pass (`stream.demo.TintEditor`, no weights needed) -- and prints, every
`--every` seconds: resident memory, frames in / out / dropped, edits, the oldest edit shown and the median
capture-to-output latency. Pass = memory flat, latency flat, output at the input rate, no edit shown older than
the staleness bound, and frames_in == processed + dropped at the end. A benchmark script: it takes wall time.
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


def clip_frames(path: str | None) -> Iterator[np.ndarray]:
    """Frames forever: the clip looped (BGR uint8), or the shared face photo moving (`stream.clips`)."""
    if not path:
        from stream.clips import moving_face_clip  # noqa: PLC0415

        yield from moving_face_clip()
        return
    from stream.sources import VideoFileSource  # noqa: PLC0415

    with VideoFileSource(path, loop=True) as src:   # a clip with no frame ends the loop instead of spinning
        for frame, _t in src:
            yield frame


def soak(seconds: float, engine_ms: float, fps: float = 30.0, clip: str | None = None, every: float = 10.0,
         staleness_ms: float = 3000.0) -> dict:
    """Run the live path in real time; returns the report (see the module docstring)."""
    from stream.controls import Controls  # noqa: PLC0415
    from stream.demo import TintEditor  # noqa: PLC0415
    from stream.driver import FrameDriver  # noqa: PLC0415
    from stream.effect import Effect  # noqa: PLC0415
    from stream.options import EffectConfig  # noqa: PLC0415

    config = EffectConfig(device="cpu", staleness_ms=staleness_ms, max_faces=1)
    effect = Effect(config, editor=TintEditor(delay_ms=engine_ms), batching=True)
    session = effect.new_session(controls=Controls(directions={"smile": 4.0}))
    driver = FrameDriver(session, overlay=True).start()
    frames = clip_frames(clip)
    t0 = time.monotonic()
    next_report, rows, n, rss0 = every, [], 0, rss_mb()
    try:
        while (now := time.monotonic() - t0) < seconds:
            driver.push(next(frames))
            n += 1
            if now >= next_report:
                rows.append(_row(driver, now, every, fps))
                next_report += every
            time.sleep(max(0.0, (n / fps) - (time.monotonic() - t0)))
    finally:
        driver.stop(drain=True)
        session.close()
        effect.close()
    s = driver.stats()
    return {"benchmark": "stream.soak", "seconds": seconds, "fps": fps, "engine_ms": engine_ms,
            "staleness_ms": staleness_ms, "rss_start_mb": round(rss0, 1), "rows": rows,
            "frames_in": s["frames_in"], "processed": s["processed"], "dropped": s["dropped"],
            "edits": s["edits"], "edited_frames": s["edited"], "max_edit_age_ms": round(s["max_edit_age_ms"], 1),
            "errors": s["errors_total"],
            "accounted": s["frames_in"] == s["processed"] + s["dropped"]}


def _row(driver, now: float, every: float, fps: float) -> dict:
    s = driver.stats()
    recent = [ms for _i, ms in driver.latencies()[-int(every * fps):]]
    row = {"t_s": round(now, 1), "rss_mb": round(rss_mb(), 1), "frames_in": s["frames_in"],
           "processed": s["processed"], "dropped": s["dropped"], "edits": s["edits"],
           "fps_out": round(s["fps_out"], 1), "max_edit_age_ms": round(s["max_edit_age_ms"], 1),
           "latency_ms_median": round(statistics.median(recent), 1) if recent else None}
    print(f"{row['t_s']:>6.1f} s  rss {row['rss_mb']:>7.1f} MB  in {row['frames_in']:>5}  out {row['processed']:>5}  "
          f"dropped {row['dropped']:>4}  edits {row['edits']:>4}  out {row['fps_out']:>4} fps  "
          f"oldest edit {row['max_edit_age_ms']} ms  latency {row['latency_ms_median']} ms", flush=True)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream.soak", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="how long to run, in real time (default 60)")
    p.add_argument("--engine-ms", type=float, default=300.0, help="time one editor pass takes (default 300)")
    p.add_argument("--fps", type=float, default=30.0, help="camera rate fed in (default 30)")
    p.add_argument("--staleness-ms", type=float, default=3000.0, help="staleness bound (default 3000)")
    p.add_argument("--clip", default=None, help="video file to loop (default: the shared face photo, moving)")
    p.add_argument("--every", type=float, default=10.0, help="report interval in seconds (default 10)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = p.parse_args(argv)
    result = soak(args.seconds, args.engine_ms, args.fps, args.clip, args.every, args.staleness_ms)
    print(f"frames in {result['frames_in']} = processed {result['processed']} + dropped {result['dropped']}: "
          f"{'yes' if result['accounted'] else 'NO'}; edits {result['edits']}; oldest edit shown "
          f"{result['max_edit_age_ms']} ms (bound {result['staleness_ms']:g}); errors {result['errors']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
