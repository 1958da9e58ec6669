"""A Session: the ONE owner of a stream's state -- its face tracker (tracks, per-face memories, cached edits),
controls, clock, counters, stage timings and errors. A door makes one per camera / browser peer / clip and closes it.

The walk of one frame (`Session.process`), at the camera's rate::

    faces = tracker.track(frame)                 landmarks -> smoothing -> FFHQ align (crops + inverse transforms)
    collect()                                    a finished edit goes to its faces' tracks (memory + cached edit)
    submit(faces)                                no edit in flight -> send this frame's faces to the editor
    compose(frame, faces)                        paste each face's freshest edit on THIS frame's alignment if it is
                                                 younger than the staleness bound; else the face passes through

The residual G(w') - G(w) lives in aligned-crop coordinates, so a re-pasted edit follows the head. With
`wait=True` (files, `Effect.process`) the frame's own edit is awaited: every frame gets a fresh edit.
"""
from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from stream import status as st
from stream.closing import Closeable
from stream.controls import Controls, animation_t
from stream.editor import FaceJob
from stream.frames import check_frame
from stream.errors import ErrorCounter
from stream.options import EffectConfig
from stream.stats import SessionCounters

log = logging.getLogger(__name__)


@dataclass
class CachedEdit:
    """A face's freshest edit, kept on its track."""

    edit: np.ndarray        # uint8 [S, S, 3] BGR G(w')
    base: np.ndarray        # uint8 [S, S, 3] BGR G(w)
    t_capture: float        # session-clock time of the frame the edit was computed from


@dataclass
class _InFlight:
    future: Any             # concurrent.futures.Future of [FaceEdit]
    tracks: list            # the tracks whose faces were sent, in job order
    generations: list       # their generations then (a jump since -> the result is dropped)
    t_capture: float
    t_submit: float


@dataclass
class Output:
    """What `Session.process` returns."""

    frame: np.ndarray       # uint8 [H, W, 3] BGR; the input object itself when nothing was pasted
    status: st.FrameStatus


class EditorStream(Closeable):
    """What every stream at the editor holds (`Session`; `stream.reenact_live.ReenactSession`): its backend and its
    place in the editor's queue (`id`), clock, face tracker, counters, errors, last status and the one pass in
    flight (`_inflight`: an object with a `.future` of [FaceEdit])."""

    def __init__(self,
                 backend,                                   # stream.serving backend (submit/cancel/info)
                 config: EffectConfig,                      # max faces, smoothing, aligner, ... (the tracker's)
                 landmarker_factory: Callable[[], Any] | None,  # () -> detect(frame) -> [[478, 2]]; None: MediaPipe
                 clock: Callable[[], float],                # seconds (tests pass a fake)
                 stream_id: str | None,                     # its name in the editor's queue (None: a random one)
                 logger: logging.Logger,                    # where its errors are logged (once per kind)
                 offline: bool = False):                    # a file/photo job: aligned as the encoders were trained
        self.backend = backend
        self.info = backend.info
        self.config = config
        self.id = stream_id or uuid.uuid4().hex[:8]
        self.clock = clock
        self.tracker = make_tracker(config, self.info.crop_size, landmarker_factory, self.info.device_type, offline)
        self.counters = SessionCounters()
        self.errors = ErrorCounter(logger)
        self.last_status = st.FrameStatus(st.WAITING)
        self._inflight: Any = None

    def _finished(self, block: bool) -> tuple | None:
        """(the pass in flight, its [FaceEdit]) once it is done (block=True waits for it); it is then no longer in
        flight. None while it runs, when none is, or when it was cancelled or failed (a failure is counted as an
        "edit" error: the stream goes on)."""
        job = self._inflight
        if job is None or (not block and not job.future.done()):
            return None
        self._inflight = None
        try:
            return job, job.future.result()
        except CancelledError:
            return None
        except Exception as exc:  # noqa: BLE001 -- the editor failed on this stream's pass: only it misses an edit
            self.errors.count(exc, where="edit")
            return None

    def process(self, frame: np.ndarray, t_capture: float | None = None, wait: bool = False) -> Output:
        """One frame in, one frame out with its status (`_step`: the subclass's walk). Never raises for a frame that
        fails: counted in `stats()["errors"]`, its output is `_failed_output(frame)` with an error status.
        ValueError only for a frame that is not uint8 [H, W, 3]. wait=True awaits this frame's own pass."""
        frame = check_frame(frame)
        t_capture = self.clock() if t_capture is None else t_capture
        self.counters.frames += 1
        try:
            out, status = self._step(frame, t_capture, wait)
        except Exception as exc:  # noqa: BLE001 -- one bad frame must not end the stream
            kind = self.errors.count(exc)
            status = st.FrameStatus(st.ERROR, message=st.describe(st.ERROR, error=kind))
            out = self._failed_output(frame)
        self.last_status = status
        return Output(out, status)

    def _step(self, frame: np.ndarray, t_capture: float, wait: bool) -> tuple:
        """(output frame, FrameStatus) of one checked frame."""
        raise NotImplementedError

    def _failed_output(self, frame: np.ndarray) -> np.ndarray:
        """What a frame whose walk raised shows: the camera's frame, untouched."""
        return frame

    def _no_face(self) -> st.FrameStatus:
        """No face to use in this frame: too small (counted), or none found."""
        if self.tracker.too_small:
            self.counters.too_small += 1
            return st.FrameStatus(st.FACE_TOO_SMALL, message=st.describe(st.FACE_TOO_SMALL))
        self.counters.no_face += 1
        return st.FrameStatus(st.NO_FACE, message=st.describe(st.NO_FACE))

    @property
    def closed(self) -> bool:
        """True once `close()` ran (the tracker is freed then)."""
        return self.tracker is None

    def close(self) -> None:
        """Free the tracker (MediaPipe graph), the faces' memories, and this stream's place in the editor queue.
        Closing twice is harmless."""
        self.backend.cancel(self.id)
        if self._inflight is not None:
            self._inflight.future.cancel()
            self._inflight = None
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            tracker.reset()
            tracker.close()


class Session(EditorStream):
    """One stream. `process(frame)` -> `Output`; `set_controls(...)`; `stats()`; `close()`."""

    def __init__(self,
                 backend,                                   # stream.serving backend (submit/cancel/info)
                 config: EffectConfig | None = None,        # max faces, smoothing, staleness, paste size, ...
                 controls: Controls | None = None,          # starting controls (default: no direction, residual)
                 landmarker_factory: Callable[[], Any] | None = None,  # () -> detect(frame) -> [[478, 2]]
                 clock: Callable[[], float] = time.monotonic,  # seconds; animation, ages (tests pass a fake)
                 stream_id: str | None = None,
                 offline: bool = False):                    # a file/photo job (`EffectConfig.aligner_for`)
        config = config or EffectConfig()
        self.controls = controls or Controls(paste_mode=config.paste_mode)
        self.staleness_s = config.staleness_for(backend.info.device_type) / 1e3
        super().__init__(backend, config, landmarker_factory, clock, stream_id, log, offline)
        self._t0: float | None = None

    # ------------------------------------------------------------------ controls
    def set_controls(self, controls: Controls | Mapping) -> Controls:
        """Validate (against the editor's directions) and apply; returns the controls as applied."""
        if isinstance(controls, Mapping):
            controls = Controls.from_dict(controls, self.info.direction_names)
        else:
            controls.validate(self.info.direction_names)
        self.controls = controls
        return controls

    @property
    def max_faces(self) -> int:
        """Faces edited per frame in this stream (largest first)."""
        return self.tracker.max_faces if self.tracker is not None else self.config.max_faces

    def set_max_faces(self, n) -> int:
        """Edit at most `n` faces per frame in this stream: 1 <= n <= config.max_faces (the door's cap, which the
        face detector was built for). One-line ValueError otherwise; returns n."""
        cap = self.config.max_faces
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cap:
            raise ValueError(f"max_faces must be an integer in [1, {cap}], got {n!r} "
                             f"(the server allows {cap}: start it with --max-faces N for more)")
        if self.tracker is not None:
            self.tracker.max_faces = n
        return n

    # ------------------------------------------------------------------ the frame
    # process(frame) (EditorStream): one frame in, one frame out (same shape, uint8); a frame that fails passes
    # through, counted.
    def _step(self, frame: np.ndarray, t_capture: float, wait: bool):
        if not self.controls.enabled:
            self.counters.disabled += 1
            return frame, st.FrameStatus(st.OFF, message=st.describe(st.OFF))
        return self._walk(frame, t_capture, wait)

    def _walk(self, frame: np.ndarray, t_capture: float, wait: bool):
        faces = self.tracker.track(frame, t_capture)
        self.counters.record_stages(self.tracker.timing)
        self._collect(block=False)
        if not faces:
            return frame, self._no_face()
        self.counters.tracked += 1
        if not self.info.available:
            return draw_tracking(frame, faces), self._status(self.info.state, faces, notice=self.info.notice)
        if self._inflight is None:
            self._submit(faces, t_capture)
        if wait:  # this frame's own edit: never stale, however long it took
            self._collect(block=True)
            return self._compose(frame, faces, bound_s=float("inf"))
        return self._compose(frame, faces, bound_s=self.staleness_s)

    def _status(self, state: str, faces: list, edited: int = 0, age_ms: float | None = None,
                notice: str | None = None) -> st.FrameStatus:
        message = st.describe(state, faces=edited or len(faces), edit_age_ms=age_ms,
                              bound_ms=self.staleness_s * 1e3, notice=notice)
        return st.FrameStatus(state, faces=len(faces), edited_faces=edited, edit_age_ms=age_ms, message=message)

    # ------------------------------------------------------------------ edits
    def _submit(self, faces: list, t_capture: float) -> None:
        t = animation_t(self.controls, self._elapsed())
        self.counters.t = t
        coef = self.controls.coefficients(self.info.direction_names, t)
        jobs = [FaceJob(f.aligned.crop, coef, f.track.memory) for f in faces]
        tracks = [f.track for f in faces]
        future = self.backend.submit(self.id, jobs)
        self._inflight = _InFlight(future, tracks, [tr.generation for tr in tracks], t_capture, self.clock())

    def _collect(self, block: bool) -> None:
        """Move a finished edit onto its tracks (block=True waits for it)."""
        done = self._finished(block)
        if done is None:
            return
        job, edits = done
        for track, generation, e in zip(job.tracks, job.generations, edits):
            if track.generation != generation:  # the face jumped meanwhile: this edit belongs to the old pose
                continue
            track.memory = e.memory
            track.edit = CachedEdit(e.edit, e.base, job.t_capture)
        self.counters.record_edit(edits[0].timing if edits else {}, (self.clock() - job.t_submit) * 1e3)

    def _compose(self, frame: np.ndarray, faces: list, bound_s: float):
        """Paste every face's edit that is at most `bound_s` old on this frame's alignment."""
        from stream.face.paste import paste_faces  # noqa: PLC0415

        t0 = time.perf_counter()
        now = self.clock()
        pick = [(f, now - f.track.edit.t_capture) for f in faces if f.track.edit is not None]
        fresh = [(f, age) for f, age in pick if age <= bound_s]
        if not fresh:
            state = st.STALE if pick else st.WAITING
            self.counters.count_state(state)
            age = max(a for _, a in pick) * 1e3 if pick else None
            return frame, self._status(state, faces, age_ms=age)
        out = paste_faces(frame, [f.track.edit.edit for f, _ in fresh], [f.aligned for f, _ in fresh],
                          mode=self.controls.paste_mode, base_crops=[f.track.edit.base for f, _ in fresh],
                          masks=[self._mask(f.aligned) for f, _ in fresh])
        age_ms = max(a for _, a in fresh) * 1e3
        self.counters.record_pasted(age_ms, (time.perf_counter() - t0) * 1e3)
        state = st.RUNNING if self.info.direction_names else st.DIRECTIONS_MISSING
        return out, self._status(state, faces, edited=len(fresh), age_ms=age_ms)

    def _mask(self, aligned):
        """The feathered face mask at this stream's feather (`stream.face.paste.paste_mask`)."""
        from stream.face.paste import paste_mask  # noqa: PLC0415

        return paste_mask(aligned, self.config.feather_px)

    def _elapsed(self) -> float:
        now = self.clock()
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    # ------------------------------------------------------------------ lifecycle and stats
    @property
    def faces(self) -> list:
        """The tracks followed now (their memories and cached edits)."""
        return self.tracker.tracks if self.tracker is not None else []

    def reset(self) -> None:
        """Forget faces, memories and edits (e.g. a scene cut); counters stay."""
        self.tracker.reset()

    def stats(self) -> dict:
        """Counters, stage timings (ms, moving averages), errors and the last status."""
        return {**self.counters.as_dict(), "faces": len(self.faces), "resets": getattr(self.tracker, "resets", 0),
                **self.errors.as_dict(), "state": self.last_status.state, "message": self.last_status.message,
                "controls": self.controls.to_dict(), "max_faces": self.max_faces}


def make_tracker(config: EffectConfig, crop_size: int, landmarker_factory: Callable[[], Any] | None = None,
                 device_type: str = "cpu", offline: bool = False):
    """A per-stream `stream.face.tracking.FaceTracker` aligning at the editor's crop size with the config's aligner
    for the editor's device and the kind of stream (`EffectConfig.aligner_for`)."""
    from stream.face.tracking import FaceTracker  # noqa: PLC0415

    landmarker = landmarker_factory() if landmarker_factory is not None else None
    return FaceTracker(max_faces=config.max_faces, align_size=crop_size, min_eye_dist_px=config.min_eye_dist_px,
                       smooth=config.smoothing, landmarker=landmarker, reset_threshold=config.reset_threshold,
                       aligner=config.aligner_for(device_type, offline))


def draw_tracking(frame: np.ndarray, faces: list) -> np.ndarray:
    """Tracking-only output: each face's hull and every 4th landmark (the notice is the door's overlay)."""
    import cv2  # noqa: PLC0415

    out = frame.copy()
    for face in faces:
        pts = np.round(face.landmarks).astype(np.int32)
        cv2.polylines(out, [cv2.convexHull(pts)], True, (0, 255, 0), 2, cv2.LINE_AA)
        for x, y in pts[::4]:
            cv2.circle(out, (int(x), int(y)), 1, (0, 200, 255), -1)
    return out
