"""The Gradio app's reenactment (issue 13): a driver clip, or the webcam, moves the face of a target photo.

    options = reenact_options(rank, layers, beta, reference, smoothing, method)   # raw payloads → ReenactOptions
    networks = ReenactNetworks(effect)            # the encoder + generator the clip job runs with (see its doc)
    result = reenact_clip(networks, driver, target, options, paste_mode, limits=..., progress=...)
    live = ReenactWebcam(effect, target, options, paste_mode, calibration, calibration_s)   # the webcam drives it
    live.step(frame_rgb, options) -> the target photo animated (RGB); live.line; live.recalibrate(); live.close()

The clip job is `stream.reenact_job.run_job` (the CLI's: driver frame count, rate and audio kept, the options and
the fit saved in the video's comment tag and in OUT.json); the live path is `stream.reenact_live.ReenactSession`
behind the one latest-frame `stream.driver.FrameDriver`. This module only checks raw payloads, bounds the work
(`web.gradio_uploads.Limits`) and keeps server paths out of what it saves and says.

Two kinds of "no": a payload no door accepts (a bad upload, an option out of range) is a ValueError -- the app
refuses it in one line; what the work itself finds (networks missing, no face in the target photo, no face in any
driver frame, too few face frames for the rank) is `NotReenacted`, said beside the output. Frames are uint8
[H, W, 3] BGR except at the Gradio boundary (RGB).
"""
from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from stream.reenact_calibration import LIVE_PASTE_MODES
from stream.reenact_job import PASTE_MODES   # the clip job's; live: LIVE_PASTE_MODES

log = logging.getLogger("web.gradio")

METHODS = ("rpca", "pca", "none")
MAX_RANK = 64             # motion subspace dimension (the fit also needs more face frames than the rank)
MAX_SMOOTHING = 50.0      # temporal σ in frames (the kernel spans ±3σ frames: bounded work)
BATCH = 8                 # driver frames per network call


class NotReenacted(Exception):
    """What the work found that stops it (networks missing, no face in the target, ...): one line for the user."""


# ------------------------------------------------------------------------------------------------ options


def number(what: str, value) -> float:
    """`value` (a raw payload) as a finite float; one-line ValueError otherwise (strings and bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def reenact_options(rank, layers, beta, reference, smoothing, method):
    """The options a reenactment depends on, from raw payloads → `directions.reenact.ReenactOptions`.

    rank: whole number in [1, MAX_RANK]; layers: "A:B" / "A:" / "" (all) text; beta: any finite number (as in the
    CLI); reference: blank (the first frame with a face) or a whole number >= 0 (`reference_frame`); smoothing: σ in frames in
    [0, MAX_SMOOTHING]; method: rpca | pca | none. One-line ValueError naming the option otherwise.
    """
    from directions.reenact import ReenactOptions, parse_layers
    from stream.controls import finite
    from web.gradio_uploads import whole_number

    if method not in METHODS:
        raise ValueError(f"method {method!r} is unknown; use one of {', '.join(METHODS)}")
    if layers is not None and not isinstance(layers, str):
        raise ValueError(f"layers must be text A:B (W+ layers A to B-1, empty: all), got {layers!r}")
    try:
        parsed = parse_layers(layers)
    except ValueError as exc:
        raise ValueError(without_flags(str(exc))) from None
    return ReenactOptions(
        rank=whole_number("rank", rank, 1, MAX_RANK),
        layers=parsed,
        beta=number("beta", beta),
        reference=reference_frame(reference),
        smoothing=finite("smoothing", smoothing, 0.0, MAX_SMOOTHING),
        method=method)


def reference_frame(value) -> int | None:
    """The reference frame from a raw payload: None / "" (blank) → None (the first frame with a face); a whole
    number >= 0, as a number or as the text of one (the field is a text box: blank must stay possible)."""
    from web.gradio_uploads import whole_number

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError(f"reference frame must be a whole number >= 0 or blank (the first frame with a face), "
                             f"got {value!r}")
        value = int(value.strip())
    return whole_number("reference frame", value, 0, 10**9)


def check_paste_mode(mode, live: bool = False) -> str:
    modes = LIVE_PASTE_MODES if live else PASTE_MODES
    if mode not in modes:
        raise ValueError(f"paste mode {mode!r} is unknown{' live' if live else ''}; use one of {', '.join(modes)}")
    return mode


def without_flags(text: str) -> str:
    """A message written for the CLI, in the app's words: "--rank 3" → "rank 3" (the app has fields, not flags)."""
    import re

    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", " "), text)


# ------------------------------------------------------------------------------------------------ networks


def unavailable_line(info) -> str | None:
    """Why this effect cannot reenact (None: it can): the effect's notice and the command that fixes it."""
    from directions.setup import SETUP_COMMAND
    from web.gradio_status import file_names_only

    if info.state == "demo":
        return (f"demo effect: reenactment needs the StyleGAN networks; fetch them with `{SETUP_COMMAND}` and start "
                "without --demo")
    if info.available:
        return None
    notice = file_names_only(info.notice or info.state.replace("_", " "))
    command = getattr(info, "command", None)
    return notice if not command or command in notice else f"{notice} Fix: `{command}`"


class ReenactNetworks:
    """The encoder E and generator G the clip job runs with, and what is saved about them.

    The effect's own when its editor lives in this process (`Editor.E` / `.G`): no second copy in memory, the
    device and precision of the live edits (fp16 on CUDA under "auto"; saved in the metadata). Otherwise (the
    editor behind a remote backend) loaded once, on first use, with `stream.reenact_job.load_networks` from the
    effect's config at fp32 -- the CLI's clip precision. `NotReenacted` when the effect has no networks (missing,
    --tracking-only, --demo) or they cannot be loaded.
    """

    def __init__(self, effect):
        self.effect = effect
        self._loaded: tuple | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[Any, Any, dict]:
        """(E, G, metadata about them: source, names, sha256, device, precision)."""
        info = self.effect.info
        line = unavailable_line(info)
        if line:
            raise NotReenacted(line)
        editor = getattr(self.effect, "editor", None)
        E, G = getattr(editor, "E", None), getattr(editor, "G", None)
        if E is not None and G is not None:
            return E, G, self._meta(E, G, "the effect's", info.device_type, info.precision)
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> tuple[Any, Any, dict]:
        from stream.reenact_job import load_networks

        config = self.effect.config
        try:
            E, G, device = load_networks(config.encoder, config.generator, config.device or "auto", "fp32")
        except (FileNotFoundError, ValueError) as exc:   # missing weights (with their command), other checkpoints
            from web.gradio_status import file_names_only

            raise NotReenacted(f"the networks could not be loaded: {file_names_only(str(exc))}") from None
        log.info("reenactment networks loaded on %s (the editor is not in this process)", device)
        return E, G, self._meta(E, G, "loaded for reenactment", str(device), "fp32")

    def _meta(self, E, G, source: str, device: str, precision: str) -> dict:
        from engine.checkpoints import source_sha256

        config = getattr(self.effect, "config", None)
        encoder = getattr(config, "encoder", None)
        generator = getattr(config, "generator", None)
        return {"networks": source,
                "encoder": Path(str(encoder)).name if encoder else None,
                "encoder_kind": getattr(E, "kind", None),
                "encoder_sha256": source_sha256(E),
                "generator": Path(str(generator)).name if generator else "the encoder's decoder",
                "generator_sha256": source_sha256(G),
                "device": str(device), "precision": str(precision)}


# ------------------------------------------------------------------------------------------------ the clip job


# stage → (start, span) of the whole bar: the target, the driver's inversion, the fit, the render
STAGES = {"target": (0.02, 0.03), "invert": (0.05, 0.5), "fit": (0.56, 0.04), "render": (0.6, 0.38)}


def stage_progress(progress, options) -> Any:
    """`run_job`'s on_progress(stage, done, total) → progress(fraction of the whole job, text)."""
    def on_progress(stage: str, done: int, total: int | None) -> None:
        start, span = STAGES[stage]
        if stage == "target":
            progress(start, "finding and inverting the target face")
        elif stage == "fit":
            rank = "" if options.method == "none" else f", rank {options.rank}"
            progress(start, f"learning the driver's motion ({options.method}{rank})")
        else:
            what = "inverting driver frame" if stage == "invert" else "rendering frame"
            fraction = min(done / total, 1.0) if total else 0.0
            progress(start + span * fraction, f"{what} {done}" + (f" of {total}" if total else ""))
    return on_progress


def reenact_clip(networks: ReenactNetworks, driver, target, options, paste_mode: str = "residual",
                 out_dir=None, limits=None, progress=None) -> dict:
    """Driver clip + target photo (uploads: paths or Gradio FileData dicts) → a video of the target moving like
    the driver: the driver's frame count, rate and audio; the options and the fit in its comment tag and OUT.json.

    The target is edited with its longest side at most `limits.work_side` (scaled down if larger, as in the photo
    tab); the driver must have at most `limits.max_driver_frames` frames (more by its header → UploadRefused; no
    more than that many are ever decoded: "cut" says the limit was reached). `progress(fraction, text)` follows the stages.
    Returns {"video", "sidecar" (paths), "frames", "fps", "audio", "held", "cut", "seconds" (per stage),
    "metadata" (what the tag holds), "summary" (the sidecar's JSON), "names" ((driver, target) upload names),
    "size" ((w, h) edited), "resized" (((w, h) uploaded, (w, h) edited) | None), "paste_mode"}.
    Raises UploadRefused / ValueError (a payload no door takes) or NotReenacted (what the work found).
    """
    import cv2

    from directions.reenact import resolve_layers
    from stream.reenact_job import run_job
    from web.gradio_uploads import Limits, UploadRefused, check_video_upload, load_work_photo, upload_name

    limits = limits or Limits()
    report = progress or (lambda fraction, text: None)
    check_paste_mode(paste_mode)
    E, G, net_meta = networks.get()
    resolve_layers(options.layers, G.num_ws)        # ValueError: a layer range this generator does not have
    report(0.0, "reading the driver clip")
    dname, tname = upload_name(driver), upload_name(target)
    info = check_video_upload(driver, limits)
    n = info["frame_count"]
    if n is not None and n > limits.max_driver_frames:
        raise UploadRefused(f"the driver clip '{dname}' has {n} frames, over the reenactment limit of "
                            f"{limits.max_driver_frames}; upload a shorter clip")
    report(0.01, "reading the target photo")
    photo, resized = load_work_photo(target, limits)
    size = (photo.shape[1], photo.shape[0])
    out = Path(out_dir or tempfile.mkdtemp(prefix="micromotion-reenact-"))
    work = Path(tempfile.mkdtemp(prefix="target-", dir=out))
    target_file = work / f"{Path(tname).stem[:40] or 'target'}.png"
    cv2.imwrite(str(target_file), photo)
    video = out / f"{Path(tname).stem[:30]}-driven-by-{Path(dname).stem[:30]}-{uuid.uuid4().hex[:6]}.mp4"
    extra = {**net_meta, "door": "gradio", "driver": dname, "target": tname, "target_size": list(size),
             "target_uploaded_size": list(resized[0]) if resized else None,
             "max_driver_frames": limits.max_driver_frames}
    try:
        job = run_job(info["path"], target_file, video, E, G, options, paste_mode=paste_mode, batch=BATCH,
                      max_frames=limits.max_driver_frames, progress=False, extra_meta=extra,
                      on_progress=stage_progress(report, options))
    except ValueError as exc:          # no face in the target / in any driver frame, too few face frames, ...
        text = str(exc).replace(str(target_file), f"'{tname}'").replace(str(info["path"]), f"'{dname}'")
        from web.gradio_status import file_names_only

        raise NotReenacted(file_names_only(without_flags(text))) from None
    finally:
        target_file.unlink(missing_ok=True)
        work.rmdir()
    report(1.0, "done")
    summary = json.loads(job.sidecar.read_text(encoding="utf-8"))
    return {"video": job.out, "sidecar": job.sidecar, "frames": job.frames, "fps": job.fps, "audio": job.audio,
            "held": job.held, "cut": job.frames >= limits.max_driver_frames,
            "seconds": {k: round(v, 2) for k, v in job.seconds.items()}, "metadata": job.metadata,
            "summary": summary, "names": (dname, tname), "size": size, "resized": resized, "paste_mode": paste_mode}


# ------------------------------------------------------------------------------------------------ live


class ReenactWebcam:
    """Per-browser-session live reenactment: the webcam's face drives the target photo through a
    `stream.reenact_live.ReenactSession` behind the one latest-frame `stream.driver.FrameDriver`.

    Built for one target and one (paste mode, calibration) -- `key` says which; options (rank, layers, β,
    reference, smoothing, method) change live: `step(frame, options)` hands new ones to the session's
    `set_options` (β at once, the rest refit). A target without a face (or options the live path refuses) leave no
    session: `line` says why and `step` returns None.
    """

    def __init__(self,
                 effect,                                   # stream.effect.Effect (its backend and config)
                 target,                                   # upload (path / FileData dict) of the target photo
                 options,                                  # directions.reenact.ReenactOptions
                 paste_mode: str = "residual",             # residual | replace
                 calibration: int = 40,                    # driver latents the motion is learned from
                 calibration_s: float = 4.0,               # ... spread over at least this many seconds
                 limits=None):                             # web.gradio_uploads.Limits (the target's working size)
        from stream.driver import FrameDriver
        from web.gradio_uploads import Limits, load_work_photo, upload_name

        self.effect = effect
        self.key = live_key(target, paste_mode, calibration, calibration_s)
        self.options = options
        self.name = upload_name(target)
        self.session = self.driver = None
        self.status = None             # the last output's stream.status.FrameStatus
        self.problem: str | None = None  # why there is no session (shown as the line)
        photo, _ = load_work_photo(target, limits or Limits())
        try:
            self.session = effect.new_reenact_session(photo, options, paste_mode=check_paste_mode(paste_mode, True),
                                                      calibration=int(calibration),
                                                      calibration_s=float(calibration_s))
        except ValueError as exc:      # no face in the target, rank/reference beyond the calibration window
            from web.gradio_status import file_names_only

            self.problem = file_names_only(without_flags(str(exc))).replace("the target photo", f"'{self.name}'")
            return
        self.driver = FrameDriver(self.session, name="gradio-reenact").start()

    def fits(self, key: tuple, options) -> bool:
        """True when this object serves `key` (`live_key`) with `options`: same target, paste mode and calibration,
        and -- when it could not start -- the same options it could not start with (new ones may start it)."""
        return key == self.key and (self.session is not None or options == self.options)

    def step(self, frame_rgb: np.ndarray | None, options=None, timeout_s: float = 5.0) -> np.ndarray | None:
        """One webcam frame (RGB) → the target photo animated (RGB), None if no session or no output yet.
        `options` (ReenactOptions) replace the session's when they differ (a refit runs in the background)."""
        if self.session is None or frame_rgb is None:
            return None
        if options is not None and options != self.session.options:
            try:
                self.session.set_options(options)
                self.problem = None
            except ValueError as exc:
                self.problem = without_flags(str(exc))
        from web.gradio_edit import rgb_through_driver

        got = rgb_through_driver(self.driver, frame_rgb, timeout_s)
        if got is None:
            return None
        out_rgb, self.status = got
        return out_rgb

    def recalibrate(self) -> None:
        if self.session is not None:
            self.session.recalibrate()

    @property
    def line(self) -> str:
        """The status line: the live state (calibrating n/N, driving with the pose's age, driver lost: holding the
        last pose, ...) in `stream.status`'s words, or why there is no session / why new options were refused."""
        from web.gradio_status import reenact_live_line

        return reenact_live_line(self.status, self.effect.info, self.problem, self.name)

    def close(self) -> None:
        if self.driver is not None:
            self.driver.stop(drain=False)
            self.driver = None
        if self.session is not None:
            self.session.close()
            self.session = None


def live_key(target, paste_mode, calibration, calibration_s) -> tuple:
    """What a live session is built for: a change of any of these builds a new one."""
    from web.gradio_uploads import upload_path

    return (str(upload_path(target)), paste_mode, calibration, calibration_s)
