"""The camera reenactment job (``run_camera_job``): a live source pushed through the latest-frame
``stream.driver.FrameDriver`` into a ``stream.reenact_live.ReenactSession`` (calibration, then the target driven at the
editor's rate), each output written as it comes (file, preview); it stops at the source's end, after ``max_frames`` /
``seconds``, on Ctrl-C or when the preview closes. The fit is known only after calibration, so the file is written
first and then remuxed (packets copied, nothing re-encoded) with the full metadata in its ``comment`` tag
(`stream.reenact_job.read_metadata` reads it); the sidecar ``OUT.json`` adds the session's stats.

``python -m directions reenact --camera`` is the door; the clip job is ``stream.reenact_job.run_job``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

from stream.reenact_job import METADATA_KEY, sidecar_path

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LiveReport:
    """What the camera job wrote."""

    out: Path                     # the video
    sidecar: Path                 # OUT.json
    frames: int                   # frames written (one per frame the session processed)
    frames_in: int                # frames the source gave
    dropped: int                  # frames replaced in the driver's slot before their turn (not written)
    held: int                     # frames written while the driver face was lost (pose held)
    fps: float                    # the file's frame rate (the source's)
    metadata: dict                # what was saved in the tag (the sidecar adds "stats")
    states: dict                  # state -> frames written in it
    seconds: float                # wall time


def remux_with_metadata(src, dst, metadata: dict) -> None:
    """Copy the video's packets (no re-encoding) from ``src`` to ``dst`` with container ``metadata`` tags."""
    import av  # noqa: PLC0415

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        out.metadata.update({str(k): str(v) for k, v in metadata.items()})
        streams = [s for s in inp.streams if s.type in ("video", "audio")]
        mapping = {s.index: out.add_stream_from_template(s) for s in streams}
        for packet in inp.demux(streams):
            if packet.dts is None:  # the demuxer's flush packets
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)


def run_camera_job(
    source,                                   # iterable of (frame uint8 BGR, t) (stream.sources.WebcamSource, ...)
    session,                                  # stream.reenact_live.ReenactSession (closed by the caller)
    out,                                      # output video path (.mp4)
    fps: Optional[float] = None,              # the file's frame rate (default: the source's, else 30)
    preview: bool = False,                    # also show the output in a window (q / Esc stops)
    overlay: bool = False,                    # draw the status line on the outputs
    max_frames: Optional[int] = None,         # stop after this many source frames
    seconds: Optional[float] = None,          # stop after this long
    pace: bool = False,                       # push at `fps` (a file posing as a camera); a camera paces itself
    extra_meta: Optional[dict] = None,        # more to save (networks, camera, target, ...)
    progress: bool = True,                    # tqdm bar (postfix: the status line)
    clock: Callable[[], float] = time.monotonic,
) -> LiveReport:
    """Drive the session's target from a live source; write the outputs; save the options (see the module doc)."""
    from tqdm import tqdm  # noqa: PLC0415

    from stream.driver import FrameDriver  # noqa: PLC0415
    from stream.jobs import LiveOutputs, StatusReporter, drive_live  # noqa: PLC0415

    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder {out.parent} does not exist; create it or pass another --out")
    fps = float(fps or getattr(source, "fps", None) or 30.0)
    h, w = session.target.photo.shape[:2]
    tmp = out.with_name(f".{out.stem}.partial{out.suffix or '.mp4'}")
    outputs = LiveOutputs.open(w, h, fps, preview=preview, out=tmp)
    driver = FrameDriver(session, overlay=overlay, name="reenact").start()
    states: dict = {}
    count = {"written": 0}
    report = StatusReporter() if not progress else None  # the bar's postfix shows the status otherwise
    t0 = clock()

    def write(got, bar) -> None:
        if got is None:
            return
        frame, info = got
        status = info["status"]
        if status is not None:
            states[status.state] = states.get(status.state, 0) + 1
            if report is not None:
                report(status)
            if status.message != count.get("message"):
                count["message"] = status.message
                bar.set_postfix_str(status.message, refresh=False)
        outputs.write(frame)
        count["written"] += 1
        bar.update(1)

    try:
        with tqdm(total=max_frames, desc="reenact (camera)", unit="frame", disable=not progress) as bar:
            drive_live(driver, source, outputs, lambda got: write(got, bar), fps=fps if pace else None,
                       max_frames=max_frames, seconds=seconds, clock=clock)
    finally:
        outputs.close()
    stats, written = driver.stats(), count["written"]
    meta = {"micromotion": "reenact", "live": True, **session.summary(), "fps": fps,
            "frames": written, "frames_in": stats["frames_in"], "dropped": stats["dropped"],
            **(extra_meta or {})}
    try:
        if not tmp.exists():
            raise ValueError("the source gave no frame; check the camera (or pass another --camera index)")
        remux_with_metadata(tmp, out, {METADATA_KEY: json.dumps(meta, separators=(",", ":"))})
    finally:
        if tmp.exists():
            tmp.unlink()
    side = sidecar_path(out)
    side.write_text(json.dumps({**meta, "states": states, "stats": _jsonable(stats)}, indent=2), encoding="utf-8")
    return LiveReport(out=out, sidecar=side, frames=written, frames_in=stats["frames_in"], dropped=stats["dropped"],
                      held=states.get("driver_lost", 0), fps=fps, metadata=meta, states=states,
                      seconds=clock() - t0)


def _jsonable(value):
    """Stats as JSON (statuses and other objects as their dict or text)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    to_dict = getattr(value, "to_dict", None)
    return _jsonable(to_dict()) if callable(to_dict) else str(value)
