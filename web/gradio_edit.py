"""The Gradio app's edit tabs, as plain functions (testable without a browser): photo → its micromotion
(`micromotion_frames`, `render_image`: mp4 + GIF + frames), clip → edited clip with its audio (`edit_clip`), webcam →
live edit (`WebcamSession`), and the controls and α slider of a direction (`make_controls`, `alpha_slider_for`).
`web.gradio_app.build_app` wires them to Gradio components; uploads are checked by `web.gradio_uploads`.

Frames are uint8 [H, W, 3] BGR except at the Gradio boundary (RGB). α is bounded only by
`stream.controls.MAX_ALPHA`, as in every door -- never by the range a slider happened to be built with.
"""
from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from web.gradio_uploads import Limits, check_video_upload, fit_within, load_work_photo, upload_name

Progress = Callable[[float, str], Any]      # progress(fraction in [0, 1], text)


def make_controls(effect, direction: str | None, alpha, **kw):
    """Controls for one direction at strength α (no direction → no edit). ValueError (one line) for an unknown
    direction or an α that is not a finite number within ±`stream.controls.MAX_ALPHA` -- the bound of every door."""
    directions = {direction: alpha} if direction else {}
    return effect.parse_controls({"directions": directions, **kw})


def alpha_slider_for(effect, direction: str | None) -> dict:
    """Slider settings {"minimum", "maximum", "step", "value"} for `direction`: the suggested range and default
    from its file's metadata (`web.hints.alpha_hint`; fallback [0, 5]). A hint only: every door accepts any
    finite |α| <= 100."""
    from web.hints import alpha_hint

    info = effect.direction_info().get(direction) if direction else None
    h = alpha_hint(info)
    return {"minimum": h["min"], "maximum": h["max"], "step": h["step"], "value": h["default"]}


@dataclass
class Micromotion:
    """One photo's micromotion: frame i is V0 + α·t_i·ΔV, t_i = i / (n − 1)."""

    frames: list        # n uint8 [H, W, 3] BGR frames
    statuses: list      # n stream.status.FrameStatus, one per frame (no face, too small, running, ...)


def micromotion_frames(effect, image_bgr: np.ndarray, direction: str | None, alpha: float,
                       n_frames: int = 16, warmup: int = 5, progress: Progress | None = None) -> Micromotion:
    """The paper's micromotion of one photo: frame i is V0 + α·t_i·ΔV with t_i = i / (n_frames − 1).

    One session throughout: `warmup` frames at t = 0 first let a ReStyle encoder converge on the still photo (its
    temporal mode refines the inversion frame after frame), then t sweeps 0 → 1, each frame with its own edit.
    `progress(fraction, text)` is called after every frame (warm-up included).
    """
    if n_frames < 2:
        raise ValueError(f"n_frames must be at least 2, got {n_frames}")
    steps = warmup + n_frames
    session = effect.new_session(offline=True)
    try:
        session.set_controls(make_controls(effect, direction, alpha, t=0.0))
        for k in range(warmup):
            session.process(image_bgr, wait=True)
            if progress is not None:
                progress((k + 1) / steps, f"settling the inversion {k + 1} of {warmup}")
        frames, statuses = [], []
        for i in range(n_frames):
            session.set_controls(make_controls(effect, direction, alpha, t=i / (n_frames - 1)))
            out = session.process(image_bgr, wait=True)
            frames.append(np.array(out.frame, copy=True))
            statuses.append(out.status)
            if progress is not None:
                progress((warmup + i + 1) / steps, f"frame {i + 1} of {n_frames}")
        return Micromotion(frames, statuses)
    finally:
        session.close()


def write_gif(frames_bgr: list[np.ndarray], path, fps: float) -> Path:
    """An endlessly looping GIF of the frames, each with its own 256-colour palette (fast octree quantization:
    ~8× faster than PIL's default for the same look)."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f[..., ::-1])).quantize(256, method=Image.Quantize.FASTOCTREE)
              for f in frames_bgr]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def write_mp4(frames_bgr: list[np.ndarray], path, fps: float, audio_from=None) -> Path:
    from stream.sinks import FileSink

    with FileSink(path, fps=fps, audio_from=audio_from) as sink:
        for f in frames_bgr:
            sink.write(f)
    return Path(path)


def render_image(effect, image_path, direction: str | None, alpha: float, n_frames: int = 16,
                 fps: float = 12.0, out_dir=None, limits: Limits = Limits(), warmup: int = 5,
                 progress: Progress | None = None) -> dict:
    """Photo upload → its micromotion, forth and back, every output bounded by `limits`:

    {"name": the upload's file name, "video": mp4 path (edited size), "gif": gif path (≤ gif_side),
     "frames": [n BGR frames at the edited size (≤ work_side)], "thumbs": [n BGR frames ≤ frame_side],
     "statuses": [n FrameStatus], "size": (w, h) edited, "resized": ((w, h) uploaded, (w, h) edited) | None,
     "line": one line saying what happened (web.gradio_status.photo_line)}.

    A photo larger than `limits.work_side` is edited scaled down to it. `progress(fraction, text)` follows the
    frames, then the writing of the mp4 and GIF. UploadRefused for an upload that is not a photo it can take.
    """
    from web.gradio_status import photo_line

    name = upload_name(image_path)
    report = progress or (lambda fraction, text: None)
    report(0.0, "reading the photo")
    image, resized = load_work_photo(image_path, limits)
    size = (image.shape[1], image.shape[0])
    motion = micromotion_frames(effect, image, direction, alpha, n_frames, warmup,
                                progress=lambda f, text: report(0.9 * f, text))
    out = Path(out_dir or tempfile.mkdtemp(prefix="micromotion-"))
    stem = f"{Path(name).stem[:40]}-micromotion-{uuid.uuid4().hex[:6]}"
    forth_and_back = motion.frames + motion.frames[-2:0:-1]
    report(0.92, "writing the mp4")
    video = write_mp4(forth_and_back, out / f"{stem}.mp4", fps)
    report(0.96, "writing the GIF")
    gif = write_gif([fit_within(f, limits.gif_side) for f in forth_and_back], out / f"{stem}.gif", fps)
    report(1.0, "done")
    return {"name": name, "video": video, "gif": gif, "frames": motion.frames,
            "thumbs": [fit_within(f, limits.frame_side) for f in motion.frames], "statuses": motion.statuses,
            "size": size, "resized": resized, "line": photo_line(name, motion.statuses, resized)}


def edit_clip(effect, in_path, out_path, controls, progress: Progress | None = None,
              limits: Limits = Limits()) -> dict:
    """Clip upload → edited clip at the same frame rate and size, with the input's audio (the CLI's file job,
    `stream.jobs.edit_file`). `progress(fraction, text)` is called as frames are done.
    Returns {"path", "frames", "fps", "audio", "seconds", "edited", "no_face", "states" ({state: frames}),
    "damage" (one line about frames lost to damaged data, or None)}. UploadRefused (also while decoding: a clip
    longer than its header said, or one of which no frame decodes) for a clip it cannot take."""
    from stream.jobs import edit_file
    from stream.sources import VideoFileSource

    info = check_video_upload(in_path, limits)
    total = info["frame_count"]
    if progress is not None:
        progress(0.0, "reading the clip" + (f" ({total} frames)" if total else ""))

    def on_frame(n: int) -> None:
        if progress is not None:
            progress(min(n / total, 1.0) if total else 0.0, f"frame {n}" + (f" of {total}" if total else ""))

    with VideoFileSource(info["path"], limits=limits.probe_limits("clip")) as source:
        result = edit_file(source, effect, controls, out_path, fps=source.fps or info["fps"], progress=False,
                           audio_from=info["path"] if info["audio"] else None, on_frame=on_frame)
    return {"path": Path(out_path), "frames": result.frames, "fps": info["fps"], "audio": info["audio"],
            "seconds": round(result.seconds, 2), "edited": result.edited, "no_face": result.no_face,
            "states": dict(result.states), "damage": result.damage}


def rgb_through_driver(driver, frame_rgb: np.ndarray, timeout_s: float):
    """Push one RGB frame (uint8 [H, W, 3], as Gradio gives it) into a latest-frame `stream.driver.FrameDriver`:
    (its output as RGB uint8, that output's `stream.status.FrameStatus`), or None when none came within
    `timeout_s`."""
    driver.push(np.ascontiguousarray(frame_rgb[..., ::-1]))
    got = driver.get_output(timeout=timeout_s)
    if got is None:
        return None
    out, info = got
    return np.ascontiguousarray(out[..., ::-1]), info["status"]


class WebcamSession:
    """Per-browser-session live edit for the webcam tab: its own Session behind the one latest-frame driver."""

    def __init__(self, effect):
        from stream.driver import FrameDriver

        self.effect = effect
        self.session = effect.new_session()
        self.driver = FrameDriver(self.session).start()
        self.status = None          # the last output's stream.status.FrameStatus (None before the first)

    def step(self, frame_rgb: np.ndarray | None, direction: str | None, alpha: float, animate: bool,
             period_s: float = 2.0, timeout_s: float = 5.0) -> np.ndarray | None:
        """One webcam frame (RGB, as Gradio gives it) → the edited frame (RGB); None if no frame came out.
        ValueError (one line) for controls no door accepts; nothing is pushed then."""
        if frame_rgb is None:
            return None
        self.session.set_controls(make_controls(self.effect, direction, alpha, animate=animate,
                                                period_s=period_s))
        got = rgb_through_driver(self.driver, frame_rgb, timeout_s)
        if got is None:
            return None
        out_rgb, self.status = got
        return out_rgb

    @property
    def line(self) -> str:
        """The tab's status line: the live state and the edit's age (`web.gradio_status.webcam_line`)."""
        from web.gradio_status import webcam_line

        return webcam_line(self.status, self.effect.info)

    def close(self) -> None:
        if self.session is not None:
            self.driver.stop(drain=False)
            self.session.close()
            self.session = None
