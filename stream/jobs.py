"""The CLI's two kinds of work, on the product's pieces (Session, FrameDriver, sinks):

* `edit_file(source, effect, controls, out)` -- a file job: every frame in order, each with its own fresh edit
  (`Session.process(wait=True)`), written with the source's audio; a progress bar; a `JobResult`;
* `run_live(source, effect, controls, outputs)` -- a live run: frames pushed at the camera's (or the file's) rate
  through the latest-frame driver, outputs written from this thread (GUI toolkits need it for the preview);
  state changes reported on stderr.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from stream.closing import Closeable
from stream.status import draw_status

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a run did, for the CLI's summary line."""

    frames: int = 0          # frames read
    written: int = 0         # frames written to the outputs
    edited: int = 0          # frames with an edit pasted
    no_face: int = 0         # frames without a (big enough) face
    dropped: int = 0         # live: frames replaced in the driver's slot before their turn
    errors: int = 0          # frames that failed and passed through
    seconds: float = 0.0
    states: dict = field(default_factory=dict)   # state -> frames
    damage: str | None = None                    # what the source lost to damage (one line), None when intact

    def summary(self) -> str:
        return (f"frames in {self.frames}, processed {self.frames - self.dropped}, dropped {self.dropped}, "
                f"written {self.written}, edited {self.edited}, no face {self.no_face}, errors {self.errors}, "
                f"{self.seconds:.1f} s")


class StatusReporter:
    """Prints the effect's state to stderr when it changes (one line, not every frame)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.last: str | None = None

    def __call__(self, status) -> None:
        if status is None or status.state == self.last:
            return
        self.last = status.state
        print(f"[micromotion] {status.message}", file=self.stream, flush=True)


def edit_file(source, effect, controls, out_path, *, fps: float | None = None, max_frames: int | None = None,
              overlay: bool = False, progress: bool = True, audio_from=None,
              on_frame: Callable[[int], Any] | None = None) -> JobResult:
    """Edit every frame of `source` into `out_path` (mp4, with `audio_from`'s audio). The animation clock follows
    the source's timestamps, not the processing time. `on_frame(n)` is called after each frame (a UI's progress)."""
    from tqdm import tqdm  # noqa: PLC0415

    from stream.sinks import FileSink  # noqa: PLC0415

    now = {"t": 0.0}
    session = effect.new_session(controls=controls, clock=lambda: now["t"], offline=True)
    result, report = JobResult(), StatusReporter()
    total = max_frames or getattr(source, "frame_count", None) or None
    t0 = time.monotonic()
    try:
        with FileSink(out_path, fps=fps or source.fps or 30.0, audio_from=audio_from) as sink, \
                tqdm(total=total, desc="editing", unit="frame", disable=not progress) as bar:
            for frame, t in source:
                now["t"] = t
                out = session.process(frame, t_capture=t, wait=True)
                report(out.status)
                _count(result, out.status)
                sink.write(draw_status(out.frame, out.status.message) if overlay else out.frame)
                result.written += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame(result.written)
                if max_frames is not None and result.frames >= max_frames:
                    break
    finally:
        session.close()
    result.seconds = time.monotonic() - t0
    result.errors = session.errors.total
    damage = getattr(source, "damage", None)
    result.damage = damage() if callable(damage) else None
    return result


def _count(result: JobResult, status) -> None:
    result.frames += 1
    result.states[status.state] = result.states.get(status.state, 0) + 1
    if status.edited_faces:
        result.edited += 1
    if status.state in ("no_face", "face_too_small"):
        result.no_face += 1


class LiveOutputs(Closeable):
    """The live run's sinks (virtual camera, preview window, file), opened together, closed together."""

    def __init__(self, sinks: list):
        self.sinks = sinks
        self.quit = False

    @classmethod
    def open(cls, width: int, height: int, fps: float, *, virtual_camera: bool = False, vcam_backend=None,
             vcam_device=None, preview: bool = False, out=None, audio_from=None) -> "LiveOutputs":
        """Open what was asked for; on any failure the ones already open are closed and the error raised."""
        from stream import sinks as sk  # noqa: PLC0415

        opened: list = []
        try:
            if virtual_camera:
                opened.append(sk.VirtualCameraSink(width, height, fps, backend=vcam_backend, device=vcam_device))
            if preview:
                opened.append(sk.PreviewSink())
            if out:
                opened.append(sk.FileSink(out, fps=fps, audio_from=audio_from))
        except Exception:
            for s in opened:
                s.close()
            raise
        return cls(opened)

    def write(self, frame) -> None:
        for s in self.sinks:
            if s.write(frame) is False:  # the preview window was closed
                self.quit = True

    def take_keys(self) -> list[int]:
        """Keys pressed in the preview window since the last call (stream.control.apply_key)."""
        keys = []
        for s in self.sinks:
            pressed = getattr(s, "pressed", None)
            if pressed:
                keys.extend(pressed)
                pressed.clear()
        return keys

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def run_live(source, effect, controls, outputs: LiveOutputs, *, fps: float | None = None,
             max_frames: int | None = None, overlay: bool = False, control=None) -> JobResult:
    """Push the source's frames (paced at `fps` when given) through a session's latest-frame driver; write each
    output as it comes. Stops at the end of the source, after `max_frames`, on Ctrl-C or when the preview closes.
    `control` (stream.control.ControlServer) gets the session and driver; preview keys change the controls."""
    from stream.control import apply_key  # noqa: PLC0415
    from stream.driver import FrameDriver  # noqa: PLC0415

    session = effect.new_session(controls=controls)
    driver = FrameDriver(session, overlay=overlay).start()
    if control is not None:
        control.attach(session, driver)
    result, report = JobResult(), StatusReporter()
    t0 = time.monotonic()

    def keys() -> None:
        for key in outputs.take_keys():
            said = apply_key(session, key)
            if said:
                print(f"[micromotion] {said}", file=sys.stderr, flush=True)

    drive_live(driver, source, outputs, lambda got: _write(got, outputs, result, report), fps=fps,
               max_frames=max_frames, between=keys)
    if control is not None:
        control.detach()
    stats = driver.stats()
    session.close()
    result.frames, result.dropped = stats["frames_in"], stats["dropped"]
    result.edited, result.no_face = stats["edited"], stats["no_face"] + stats["too_small"]
    result.errors = stats["errors_total"]
    result.seconds = time.monotonic() - t0
    return result


def drive_live(driver, source, outputs: LiveOutputs, on_output: Callable[[Any], None], *, fps: float | None = None,
               max_frames: int | None = None, seconds: float | None = None,
               clock: Callable[[], float] = time.monotonic, between: Callable[[], None] | None = None) -> None:
    """The live loop of every camera job: feed the source's frames (paced at `fps` when given) to a started
    `stream.driver.FrameDriver` and hand each `get_output()` result (None when nothing came) to `on_output` as it
    comes, until the source ends, `max_frames` source frames or `seconds` have passed, `outputs.quit` (the preview
    closed) or Ctrl-C; then stop the driver, draining the frame in flight to `on_output`. `between()` runs after
    each poll (e.g. the preview's keys)."""
    t0 = clock()

    def frames():
        for i, (frame, _ts) in enumerate(source):
            if outputs.quit or (max_frames is not None and i >= max_frames) or \
                    (seconds is not None and clock() - t0 >= seconds):
                return
            yield frame

    driver.feed(frames(), fps=fps, block=False)
    try:
        while driver.feeding and not outputs.quit:
            on_output(driver.get_output(timeout=0.05))
            if between is not None:
                between()
    except KeyboardInterrupt:
        log.info("stopped (Ctrl-C)")
    outputs.quit = True
    driver.stop(drain=True)
    on_output(driver.get_output(timeout=0))


def _write(got, outputs: LiveOutputs, result: JobResult, report: StatusReporter) -> None:
    if got is None:
        return
    frame, info = got
    report(info["status"])
    outputs.write(frame)
    result.written += 1
