"""Reenactment on the live path: a camera's face drives the face of a target photo, at the camera's rate.

    session = effect.new_reenact_session(target_photo, ReenactOptions(rank=4, beta=1.0))   # or ReenactSession(...)
    driver = FrameDriver(session, on_output=..., overlay=True).start()    # the same driver as every door
    driver.push(camera_frame)                                             # -> (frame, info) as for a Session
    out = session.process(frame) -> Output(frame = the TARGET photo with its freshest reenacted face, status)

The session owns: the driver's face tracker (one face, temporal ReStyle memory on its track), the target (found and
aligned once; inverted by the editor, a few ReStyle steps on its crop), the calibration latents, the fitted motion
model (`directions.reenact.fit_driver`) and its `Reenactor`. It only talks to the editor through the serving
backend (`submit`/`cancel`), so it runs on every backend the plain Session runs on, batched with other streams.

One camera frame (`process`)::

    faces = tracker.track(frame)                  the driver's face, aligned at the editor's crop size
    collect()                                     a finished pass: the target's latent, the driver's latent w_k,
                                                  the render G(render_ws) -> pasted into the target photo ONCE
    submit()                                      no pass in flight -> ONE request: [target step] while the target
                                                  is being inverted, + [driver crop with render_ws = the newest
                                                  target latent]; the editor inverts w_k and renders in one pass
    output                                        the target photo with the newest render (or as it is before one)

Phases, each with its status (`stream.status`): calibrating (the target is inverted; `calibration` driver latents
are collected over at least `calibration_s` seconds, the first one being the neutral reference unless
`options.reference` says otherwise; `fit_driver` then runs in a background thread) -> driving. A driver face
that is lost (or too small) holds the last pose: one more render of the held latent, then nothing is submitted until
the face is back; the status says so. A face found again restarts its ReStyle memory from the average latent: its
first `settle` latents are not used (the pose stays held meanwhile).

Delay: the render of pass k is G(target latent from w_{k-1}) -- the pass that inverts a frame cannot also render
what that frame's latent gives, so the target's pose is one editor pass older than a plain edit would be (plus one
more latent with smoothing, whose filter looks one latent ahead). `FrameStatus.edit_age_ms` is that pose's age:
capture of the driver frame whose latent is shown -> now. Smoothing's σ counts driver latents (editor passes).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from stream import status as st
from stream.editor import FaceJob
from stream.options import EffectConfig
from stream.reenact_calibration import (CALIBRATION, CALIBRATION_S, CalibrationWindow, can_reenact,
                                        check_live_options, check_paste_mode, fit_fields)
from stream.reenact_target import find_target
from stream.session import EditorStream

log = logging.getLogger(__name__)

TARGET_STEPS = 5           # editor passes (ReStyle steps) inverting the target photo (the paper's 5 iterations)
SETTLE = 3                 # driver latents skipped after its memory restarts from the average latent


@dataclass
class _DriverTrack:
    """Kept on the driver's track (`Track.edit`, forgotten with it): latents since its memory started."""

    steps: int = 0


@dataclass
class _Pass:
    """One request in flight: its jobs' kinds ("target" | "driver" | "hold"), in job order."""

    future: Any
    kinds: list
    track: Any                    # the driver's track (driver job) or None
    generation: int
    t_capture: float              # capture time of the frame the driver crop came from
    render_t: float | None        # capture time of the driver frame whose latent is rendered (None: no render)
    t_submit: float
    epoch: int                    # the session's calibration epoch when it was sent


@dataclass
class _Shown:
    """The newest render and the target photo it was pasted into."""

    frame: np.ndarray             # uint8 [H, W, 3] BGR
    t_pose: float                 # capture time of the driver frame whose latent it shows


class ReenactSession(EditorStream):
    """One camera driving one target photo. `process(frame)` -> `Output`; `set_options`; `stats()`; `close()`."""

    def __init__(self,
                 backend,                                   # stream.serving backend (submit/cancel/info)
                 target_photo: np.ndarray,                  # uint8 [H, W, 3] BGR photo of the face to animate
                 options=None,                              # directions.reenact.ReenactOptions (rank, layers, β, ...)
                 config: EffectConfig | None = None,        # smoothing of landmarks, feather, min face size, ...
                 *,
                 paste_mode: str = "residual",              # residual: photo + G(w_t) − G(V); replace: G(w_t)
                 calibration: int = CALIBRATION,            # driver latents the motion model is learned from
                 calibration_s: float = CALIBRATION_S,      # ... spread over at least this many seconds
                 target_steps: int = TARGET_STEPS,          # ReStyle steps inverting the target (1 pass: stateless)
                 settle: int = SETTLE,                      # driver latents skipped after its memory restarts
                 landmarker_factory: Callable[[], Any] | None = None,  # driver landmarker () -> detect(frame)
                 target_landmarker=None,                    # .detect(photo) -> [[478, 2]]; None: MediaPipe still
                 clock: Callable[[], float] = time.monotonic,  # seconds (tests pass a fake)
                 stream_id: str | None = None):
        from directions.reenact import ReenactOptions  # noqa: PLC0415

        config = dataclasses.replace(config or EffectConfig(), max_faces=1)
        self.paste_mode = check_paste_mode(paste_mode)
        self.calibration = int(calibration)
        self.calibration_s = float(calibration_s)
        self.target_steps = max(1, int(target_steps))
        self.settle = max(0, int(settle))
        self.options = check_live_options(options or ReenactOptions(), self.calibration, _num_ws(backend))
        self.target = find_target(target_photo, backend.info.crop_size, target_landmarker, config.feather_px)
        super().__init__(backend, config, landmarker_factory, clock, stream_id, log)  # (the tracker: checks first)
        self.reenactor = None                 # directions.reenact.Reenactor once the motion is learned
        self.fit = None                       # directions.reenact.DriverFit
        self.fit_seconds: float | None = None
        self.held_frames = 0                  # output frames whose driver face was lost after calibration
        self._coef = np.zeros(len(self.info.direction_names), np.float32)
        self._window = CalibrationWindow(self.calibration, self.calibration_s, name=f"reenact-fit-{self.id}")
        self._epoch = 0                       # bumped by a recalibration: renders of older passes are dropped
        self._next: tuple | None = None       # (render_ws float32 [num_ws, w_dim], t_pose) to render next
        self._newest: tuple | None = None     # (w float32 [num_ws, w_dim], t_capture) the newest settled latent
        self._shown: _Shown | None = None
        self._lost = False                    # the driver's face is gone (after calibration)
        self._hold_due = False                # ... and its last pose has not been rendered yet
        self._fit_error: str | None = None    # why the last fit failed (shown until options change)
        self._pending_options = None          # set by the door's thread, applied by the frame's
        self._recalibrate = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what doors read
    @property
    def available(self) -> bool:
        """False when the editor cannot reenact (no networks, tracking only, the demo): the target is shown as is."""
        return can_reenact(self.info)

    @property
    def phase(self) -> str:
        """"calibrating" | "driving" (| the editor's state when it cannot reenact)."""
        if not self.available:
            return self.info.state
        return st.DRIVING if self.reenactor is not None else st.CALIBRATING

    def summary(self) -> dict:
        """JSON-able: options, reference, calibration frames, subspace (once fitted), paste mode, counts."""
        base = self.fit.summary(self.options) if self.fit is not None else {"options": self.options.to_dict()}
        return {**base, "paste_mode": self.paste_mode, "calibration": self.calibration,
                "calibration_s": self.calibration_s, "target_steps": self.target.steps, "settle": self.settle,
                "held_frames": self.held_frames, "fit_seconds": self.fit_seconds,
                "reenactor": None if self.reenactor is None else self.reenactor.state.to_dict()}

    # ------------------------------------------------------------------ options
    def set_options(self, options) -> Any:
        """New ReenactOptions (or a dict, see `ReenactOptions.from_dict`), applied at the next frame: β and
        smoothing restart the reenactor from the same fit; rank, layers, reference, method refit on the same
        calibration latents (in the background). Returns the options as checked."""
        from directions.reenact import ReenactOptions  # noqa: PLC0415

        if isinstance(options, Mapping):
            options = ReenactOptions.from_dict({**self.options.to_dict(), **options})
        options = check_live_options(options, self.calibration, _num_ws(self.backend))
        with self._lock:
            self._pending_options = options
        return options

    def recalibrate(self) -> None:
        """Forget the calibration and the fit: learn the driver's motion again from the next frames."""
        with self._lock:
            self._recalibrate = True

    # ------------------------------------------------------------------ the frame
    # process(frame) (EditorStream): one camera frame in; the target photo (its size, uint8 BGR, a fresh array) out
    # with the status. wait=True awaits this frame's pass (and a fit it starts): every frame gets its own pass
    # (tests, files). A frame that fails repeats the last output, counted in stats()["errors"].
    def _step(self, frame: np.ndarray, t_capture: float, wait: bool):
        status = self._walk(frame, t_capture, wait)
        return self._shown_frame(), status

    def _failed_output(self, frame: np.ndarray) -> np.ndarray:
        return self._shown_frame()

    def _shown_frame(self) -> np.ndarray:
        """The target photo with its freshest reenacted face (a copy); the photo as is before the first."""
        shown = self._shown
        self.counters.edited += shown is not None
        return (self.target.photo if shown is None else shown.frame).copy()

    def _walk(self, frame: np.ndarray, t_capture: float, wait: bool) -> st.FrameStatus:
        self._apply_pending()
        faces = self.tracker.track(frame, t_capture)
        self.counters.record_stages(self.tracker.timing)
        if not self.available:
            self.counters.tracked += bool(faces)
            message = self.info.notice if self.info.state != "demo" else DEMO_NOTICE
            return st.FrameStatus(st.NETWORKS_MISSING if self.info.state == "demo" else self.info.state,
                                  faces=len(faces), message=message)
        self._collect(block=False)
        self._poll_fit(block=False)
        face = faces[0] if faces else None
        if face is not None:
            self.counters.tracked += 1
            self._lost = self._hold_due = False
        elif self.reenactor is not None and not self._lost:
            self._lost = self._hold_due = True
        if self._inflight is None:
            self._submit(face, t_capture)
        if wait:
            self._collect(block=True)
            self._poll_fit(block=True)
        return self._status(face)

    # ------------------------------------------------------------------ passes
    def _submit(self, face, t_capture: float) -> None:
        jobs, kinds = [], []
        if not self.target.ready:
            jobs.append(FaceJob(self.target.aligned.crop, self._coef, self.target.memory))
            kinds.append("target")
        track, generation, render_t = None, 0, None
        if face is not None:
            render, self._next = self._next, None
            jobs.append(FaceJob(face.aligned.crop, self._coef, face.track.memory,
                                render_ws=None if render is None else render[0]))
            kinds.append("driver")
            track, generation = face.track, face.track.generation
            render_t = None if render is None else render[1]
        elif self._hold_due:
            # the face is gone: render the last pose once (the newest latent's, not shown yet); the target's
            # crop rides along as the pass's input and what the pass makes of it is dropped
            self._hold_due, self._next = False, None
            held = self.reenactor.step(None).numpy()
            jobs.append(FaceJob(self.target.aligned.crop, self._coef, self.target.memory, render_ws=held))
            kinds.append("hold")
            render_t = self._newest[1] if self._newest is not None else t_capture
        if not jobs:
            return
        future = self.backend.submit(self.id, jobs)
        self._inflight = _Pass(future, kinds, track, generation, t_capture, render_t, self.clock(), self._epoch)

    def _collect(self, block: bool) -> None:
        """Move a finished pass's results where they belong (block=True waits for it)."""
        done = self._finished(block)
        if done is None:
            return
        job, edits = done
        self.counters.record_edit(edits[0].timing if edits else {}, (self.clock() - job.t_submit) * 1e3)
        rendered = job.render_t is not None and job.epoch == self._epoch  # (a render of before a recalibration
        for kind, e in zip(job.kinds, edits):                             # is dropped)
            if kind == "target":
                self._target_done(e)
                continue
            if rendered:                         # "driver" with render_ws, or "hold"
                self._show(e.edit, job.render_t)
            if kind == "driver":
                self._driver_done(job, e)

    def _target_done(self, e) -> None:
        if self.target.take_pass(e, self.target_steps):
            log.info("target inverted in %d editor pass(es)", self.target.steps)
            self._maybe_fit()

    def _driver_done(self, job: _Pass, e) -> None:
        track = job.track
        if track is None or track.generation != job.generation or e.ws is None:
            return  # the face jumped meanwhile: its latent belongs to the old memory
        track.memory = e.memory
        state = track.edit if isinstance(track.edit, _DriverTrack) else _DriverTrack()
        state.steps += 1
        track.edit = state
        if e.memory is not None and state.steps <= self.settle:
            return  # still converging from the average latent
        self._newest = (e.ws, job.t_capture)
        if self.reenactor is not None:
            self._next = (self.reenactor.step(self._as_tensor(e.ws)).numpy(), job.t_capture)
        elif self._window.fitting is None and not self._window.full:
            self._add_calibration(e.ws, job.t_capture)

    def _show(self, crop: np.ndarray, t_pose: float) -> None:
        """Paste a render into the target photo (once per render; every output frame until the next reuses it)."""
        from stream.face.paste import paste_back  # noqa: PLC0415

        t0 = time.perf_counter()
        t = self.target
        frame = paste_back(t.photo, crop, t.aligned, mask=t.mask, mode=self.paste_mode,
                           base_crop=t.base if self.paste_mode == "residual" else None)
        self._shown = _Shown(frame, t_pose)
        self.counters.record_stage("paste", (time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------ calibration and fit
    def _add_calibration(self, w: np.ndarray, t: float) -> None:
        if self._window.add(w, t):
            self._maybe_fit()

    def _maybe_fit(self) -> None:
        if self._window.fitting is not None or self.reenactor is not None:
            return
        if not self._window.full or not self.target.ready:
            return
        self._start_fit(self.options)

    def _start_fit(self, options) -> None:
        """fit_driver on the calibration latents in a background thread (`CalibrationWindow.start_fit`)."""
        self._window.start_fit(options)
        self._fit_error = None

    def _poll_fit(self, block: bool) -> None:
        try:
            done = self._window.poll(block, self.options)  # a fit of older options is started again with these
        except Exception as exc:  # noqa: BLE001 -- a fit that fails (bad options) is shown, the stream goes on
            self._fit_error = self.errors.count(exc, where="calibration")
            return
        if done is not None:
            self._use_fit(*done)

    def _use_fit(self, fit, seconds: float | None) -> None:
        self.fit, self.fit_seconds = fit, seconds
        self.reenactor = fit.reenactor(self._as_tensor(self.target.ws), self.options, lookahead=1)
        log.info("driver motion learned from %d latents in %.2f s (reference %d)", fit.frames, seconds or 0.0,
                 fit.reference)
        if self._newest is not None:  # the newest latent renders next: no wait for another pass
            self._next = (self.reenactor.step(self._as_tensor(self._newest[0])).numpy(), self._newest[1])

    def _apply_pending(self) -> None:
        """Options and recalibration asked for from the door's thread, applied on the frame's."""
        with self._lock:
            options, self._pending_options = self._pending_options, None
            reset, self._recalibrate = self._recalibrate, False
        if reset:
            self._epoch += 1
            self._window.reset()
            self._fit_error = None
            self.fit = self.reenactor = None
            self._next = self._shown = None
            self._lost = self._hold_due = False
        if options is None or options == self.options:
            return
        refit = fit_fields(options) != fit_fields(self.options)   # σ too: the reference window follows it
        self.options = options
        if self._window.fitting is not None:
            return  # the fit running now is redone with these options when it ends (_poll_fit)
        if self.fit is None:
            self._maybe_fit()
            return
        if refit:
            self._start_fit(options)  # the current reenactor drives until the new fit is in
            return
        self._use_fit(self.fit, self.fit_seconds)  # β alone: the same subspace and reference

    # ------------------------------------------------------------------ status
    def _status(self, face) -> st.FrameStatus:
        faces = int(face is not None)
        if self.reenactor is None:
            if self._fit_error is not None and self._window.fitting is None:
                return st.FrameStatus(st.ERROR, faces=faces, message=st.describe(st.ERROR, error=self._fit_error))
            if face is None:
                return self._no_face()
            progress = (len(self._window.latents), self.calibration)
            return st.FrameStatus(st.CALIBRATING, faces=faces, message=st.describe(st.CALIBRATING, progress=progress))
        shown = self._shown
        age = None if shown is None else (self.clock() - shown.t_pose) * 1e3
        if face is None or self._settling(face):
            self.held_frames += 1
            why = "too small: come closer" if face is None and self.tracker.too_small else (
                "found again, settling" if face is not None else None)
            return st.FrameStatus(st.DRIVER_LOST, faces=faces, edited_faces=int(shown is not None), edit_age_ms=age,
                                  message=st.describe(st.DRIVER_LOST, notice=why))
        if shown is None:
            self.counters.waiting += 1
            return st.FrameStatus(st.WAITING, faces=faces, message=st.describe(st.WAITING))
        self.counters.edit_age_ms = age
        self.counters.max_edit_age_ms = max(self.counters.max_edit_age_ms, age)
        return st.FrameStatus(st.DRIVING, faces=faces, edited_faces=1, edit_age_ms=age,
                              message=st.describe(st.DRIVING, edit_age_ms=age))

    def _settling(self, face) -> bool:
        """True while the face's latents are not used: none yet, or its memory restarted from the average
        latent (found again, or jumped) and it has given at most `settle` of them."""
        state = face.track.edit
        steps = state.steps if isinstance(state, _DriverTrack) else 0
        return steps == 0 or (face.track.memory is not None and steps <= self.settle)

    @staticmethod
    def _as_tensor(w: np.ndarray):
        import torch  # noqa: PLC0415

        return torch.from_numpy(np.asarray(w, np.float32))

    # ------------------------------------------------------------------ lifecycle and stats
    def stats(self) -> dict:
        """The Session's counters (frames, edits, stage ms, errors, state, message) + "reenact": phase,
        calibration progress, held frames, fit seconds, options, the reenactor's state."""
        r = None if self.reenactor is None else self.reenactor.state.to_dict()
        return {**self.counters.as_dict(), "faces": len(self.tracker.tracks) if self.tracker is not None else 0,
                **self.errors.as_dict(), "state": self.last_status.state, "message": self.last_status.message,
                "reenact": {"phase": self.phase, "calibration": [len(self._window.latents), self.calibration],
                            "target_steps": self.target.steps, "target_ready": self.target.ready,
                            "held_frames": self.held_frames, "fit_seconds": self.fit_seconds,
                            "options": self.options.to_dict(), "paste_mode": self.paste_mode, "reenactor": r}}

DEMO_NOTICE = ("Demo effect: reenactment needs the StyleGAN networks; the target is shown as it is. Fetch them with "
               "`python -m directions setup` and start without --demo.")


# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _num_ws(backend) -> int | None:
    """The generator's num_ws when the backend holds the editor in this process (else checked at the fit)."""
    return getattr(getattr(backend, "editor", None), "num_ws", None)
