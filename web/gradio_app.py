"""The Gradio app: photo → micromotion clip, clip → edited clip with its audio, webcam → live edit.

The work lives in plain functions (testable without a browser): `check_image_upload`, `check_video_upload`,
`micromotion_frames`, `render_image`, `edit_clip`, `WebcamSession`; `build_app` only wires them to Gradio components.
All frames here are uint8 [H, W, 3] BGR except at the Gradio boundary (RGB).
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stream.probe import UploadRefused  # re-exported: the one refusal type, from stream up to the doors

log = logging.getLogger("web.gradio")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".y4m"}


@dataclass
class Limits:
    """What uploads may be (checked from the files' headers before anything is decoded: `stream.probe`)."""

    max_image_mb: float = 20.0       # photo upload limit
    max_video_mb: float = 200.0      # clip upload limit
    max_clip_s: float = 300.0        # clip duration limit (seconds)
    max_side: int = 4096             # largest photo side / clip frame side accepted (pixels)
    max_pixels: int = 4096 * 4096    # largest photo / clip frame (width × height)
    max_frames: int = 18_000         # most frames in a clip (300 s at 60 fps)
    max_fps: float = 240.0           # highest average frame rate of a clip

    def probe_limits(self, kind: str):
        """The `stream.probe.Limits` for a "photo" or a "clip" upload."""
        from stream.probe import Limits as ProbeLimits

        mb = self.max_image_mb if kind == "photo" else self.max_video_mb
        return ProbeLimits(max_bytes=math.ceil(mb * 2**20), max_side=self.max_side, max_pixels=self.max_pixels,
                           max_frames=self.max_frames, max_fps=self.max_fps, max_duration_s=self.max_clip_s)


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


def _upload_path(value) -> Path | None:
    """The file of an upload: a path, or Gradio's FileData dict ({"path": ...}) when an event is wired with
    `preprocess=False` (so Gradio never opens the file before these checks)."""
    if isinstance(value, dict):
        value = value.get("path")
    return Path(value) if value else None


def check_image_upload(path, limits: Limits = Limits()) -> np.ndarray:
    """Read an uploaded photo as uint8 [H, W, 3] BGR; `UploadRefused` for a non-image or an oversized one.

    Size, type and declared pixel count are checked from the file and its header before it is decoded.
    """
    from stream.sources import read_image

    path = _upload_path(path)
    if path is None:
        raise UploadRefused("no photo given; upload a face photo (jpg or png)")
    if not path.is_file():
        raise UploadRefused(f"the photo '{path.name}' was not received; upload it again")
    if _size_mb(path) > limits.max_image_mb:
        raise UploadRefused(f"the photo is {_size_mb(path):.1f} MB, over the {limits.max_image_mb:g} MB limit; "
                            "upload a smaller image")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UploadRefused(f"'{path.name}' is not a photo type this app takes; upload "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))}")
    return read_image(path, limits.probe_limits("photo"))


def check_video_upload(path, limits: Limits = Limits()) -> dict:
    """Probe an uploaded clip; returns {"path", "fps", "frames", "duration_s", "width", "height", "audio"}.

    `UploadRefused` for a non-video (including a still image), an oversized, over-long, too fast or too large
    clip -- all read from the headers (`stream.probe.probe_video`), nothing decoded.
    """
    from stream.probe import probe_video

    path = _upload_path(path)
    if path is None:
        raise UploadRefused("no clip given; upload a video (mp4, mov, webm, mkv)")
    if not path.is_file():
        raise UploadRefused(f"the clip '{path.name}' was not received; upload it again")
    if _size_mb(path) > limits.max_video_mb:
        raise UploadRefused(f"the clip is {_size_mb(path):.1f} MB, over the {limits.max_video_mb:g} MB limit; "
                            "upload a shorter or smaller clip")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UploadRefused(f"'{path.name}' is not a video type this app takes; upload "
                            f"{', '.join(sorted(VIDEO_SUFFIXES))}")
    info = probe_video(path, limits.probe_limits("clip"))
    return {"path": path, "fps": info.fps or 30.0, "frames": info.frames, "duration_s": info.duration_s,
            "width": info.width, "height": info.height, "audio": info.audio}


# ------------------------------------------------------------------------------------------- effect


def make_controls(effect, direction: str | None, alpha: float, **kw):
    """Controls for one direction at strength α (no direction → no edit)."""
    directions = {direction: float(alpha)} if direction else {}
    return effect.parse_controls({"directions": directions, **kw})


def alpha_slider_for(effect, direction: str | None) -> dict:
    """Slider settings {"minimum", "maximum", "step", "value"} for `direction`: the suggested range and default
    from its file's metadata (`web.hints.alpha_hint`; fallback [0, 5]). A hint only: every door accepts any
    finite |α| <= 100."""
    from web.hints import alpha_hint

    info = effect.direction_info().get(direction) if direction else None
    h = alpha_hint(info)
    return {"minimum": h["min"], "maximum": h["max"], "step": h["step"], "value": h["default"]}


def micromotion_frames(effect, image_bgr: np.ndarray, direction: str | None, alpha: float,
                       n_frames: int = 16, warmup: int = 5) -> list[np.ndarray]:
    """The paper's micromotion of one photo: frame i is V0 + α·t_i·ΔV with t_i = i / (n_frames − 1).

    One session throughout: `warmup` frames at t = 0 first let a ReStyle encoder converge on the still photo (its
    temporal mode refines the inversion frame after frame), then t sweeps 0 → 1, each frame with its own edit.
    Returns `n_frames` uint8 [H, W, 3] BGR frames.
    """
    if n_frames < 2:
        raise ValueError(f"n_frames must be at least 2, got {n_frames}")
    session = effect.new_session()
    try:
        session.set_controls(make_controls(effect, direction, alpha, t=0.0))
        for _ in range(warmup):
            session.process(image_bgr, wait=True)
        frames = []
        for i in range(n_frames):
            session.set_controls(make_controls(effect, direction, alpha, t=i / (n_frames - 1)))
            frames.append(np.array(session.process(image_bgr, wait=True).frame, copy=True))
        return frames
    finally:
        session.close()


def write_gif(frames_bgr: list[np.ndarray], path, fps: float) -> Path:
    """An endlessly looping GIF of the frames."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f[..., ::-1])) for f in frames_bgr]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def write_mp4(frames_bgr: list[np.ndarray], path, fps: float, audio_from=None) -> Path:
    from stream.sinks import FileSink

    with FileSink(path, fps=fps, audio_from=audio_from) as sink:
        for f in frames_bgr:
            sink.write(f)
    return Path(path)


def render_image(effect, image_path, direction: str | None, alpha: float, n_frames: int = 16,
                 fps: float = 12.0, out_dir=None, limits: Limits = Limits(), warmup: int = 5) -> dict:
    """Photo upload → {"video": mp4 path, "gif": gif path, "frames": [BGR frames]} (forth and back)."""
    image = check_image_upload(image_path, limits)
    frames = micromotion_frames(effect, image, direction, alpha, n_frames, warmup)
    out = Path(out_dir or tempfile.mkdtemp(prefix="micromotion-"))
    stem = f"micromotion-{uuid.uuid4().hex[:6]}"
    forth_and_back = frames + frames[-2:0:-1]
    video = write_mp4(forth_and_back, out / f"{stem}.mp4", fps)
    gif = write_gif(forth_and_back, out / f"{stem}.gif", fps)
    return {"video": video, "gif": gif, "frames": frames}


def edit_clip(effect, in_path, out_path, controls, progress: Callable[[float, str], Any] | None = None,
              limits: Limits = Limits()) -> dict:
    """Clip upload → edited clip at the same frame rate and size, with the input's audio (the CLI's file job,
    `stream.jobs.edit_file`). `progress(fraction, text)` is called as frames are done.
    Returns {"path", "frames", "fps", "audio", "seconds", "edited", "no_face", "damage"}."""
    from stream.jobs import edit_file
    from stream.sources import VideoFileSource

    info = check_video_upload(in_path, limits)
    total = info["frames"] or (int(info["duration_s"] * info["fps"]) if info["duration_s"] else None)

    def on_frame(n: int) -> None:
        if progress is not None and (n % 5 == 0 or n == total):
            progress(min(n / total, 1.0) if total else 0.0, f"frame {n}" + (f" of {total}" if total else ""))

    with VideoFileSource(info["path"]) as source:
        result = edit_file(source, effect, controls, out_path, fps=source.fps or info["fps"], progress=False,
                           audio_from=info["path"] if info["audio"] else None, on_frame=on_frame)
    return {"path": Path(out_path), "frames": result.frames, "fps": info["fps"], "audio": info["audio"],
            "seconds": round(result.seconds, 2), "edited": result.edited, "no_face": result.no_face,
            "damage": result.damage}


class WebcamSession:
    """Per-browser-session live edit for the webcam tab: its own Session behind the one latest-frame driver."""

    def __init__(self, effect):
        from stream.driver import FrameDriver

        self.effect = effect
        self.session = effect.new_session()
        self.driver = FrameDriver(self.session).start()
        self.status = None

    def step(self, frame_rgb: np.ndarray | None, direction: str | None, alpha: float, animate: bool,
             period_s: float = 2.0, timeout_s: float = 5.0) -> np.ndarray | None:
        """One webcam frame (RGB, as Gradio gives it) → the edited frame (RGB); None if no frame came out."""
        if frame_rgb is None:
            return None
        self.session.set_controls(make_controls(self.effect, direction, alpha, animate=bool(animate),
                                                period_s=float(period_s)))
        self.driver.push(np.ascontiguousarray(frame_rgb[..., ::-1]))
        got = self.driver.get_output(timeout=timeout_s)
        if got is None:
            return None
        out, info = got
        self.status = info["status"]
        return np.ascontiguousarray(out[..., ::-1])

    def close(self) -> None:
        if self.session is not None:
            self.driver.stop(drain=False)
            self.session.close()
            self.session = None


# ------------------------------------------------------------------------------------------- the app


def build_app(effect, notice: str | None = None, limits: Limits = Limits()):
    """The Gradio Blocks app around `effect` (three tabs: Photo, Clip, Webcam)."""
    import gradio as gr

    names = list(effect.available_directions)
    default = names[0] if names else None

    def refuse(exc: Exception):
        raise gr.Error(str(exc), print_exception=False)

    def on_image(path, direction, alpha, n_frames, progress=gr.Progress()):
        progress(0.0, desc="rendering")
        try:
            out = render_image(effect, path, direction or None, alpha, int(n_frames), limits=limits)
        except (UploadRefused, ValueError) as exc:
            refuse(exc)
        gallery = [np.ascontiguousarray(f[..., ::-1]) for f in out["frames"]]
        return str(out["video"]), str(out["gif"]), gallery

    def on_clip(path, direction, alpha, animate, period_s, progress=gr.Progress()):
        try:
            controls = make_controls(effect, direction or None, alpha, animate=bool(animate),
                                     period_s=float(period_s))
            out_path = Path(tempfile.mkdtemp(prefix="micromotion-")) / "edited.mp4"
            result = edit_clip(effect, path, out_path, controls,
                               progress=lambda f, text: progress(f, desc=text), limits=limits)
        except (UploadRefused, ValueError, FileNotFoundError) as exc:
            refuse(exc)
        summary = (f"{result['frames']} frames at {result['fps']:.2f} fps, "
                   f"audio {'kept' if result['audio'] else 'none in the input'}, {result['seconds']} s")
        return str(result["path"]), summary

    def on_webcam(frame, direction, alpha, animate, period_s, session):
        if session is None:
            session = WebcamSession(effect)
        try:
            return session.step(frame, direction or None, alpha, animate, period_s), session
        except ValueError as exc:
            refuse(exc)

    def close_session(session):
        if session is not None:
            session.close()

    with gr.Blocks(title="micromotion") as app:
        gr.Markdown("# micromotion\nStyleGAN micromotions of a face: smile, eyes closing, head turn, anger, aging.")
        if notice:
            gr.Markdown(f"**{notice}**")

        def direction_picker():
            return gr.Dropdown(choices=names, value=default, label="direction",
                               info=None if names else "no direction files installed")

        def alpha_slider(direction_box):
            """An α slider whose range and value follow the direction picked in `direction_box`."""
            slider = gr.Slider(**alpha_slider_for(effect, default), label="α (strength)",
                               info="suggested range of the chosen direction")
            direction_box.change(lambda d: gr.Slider(**alpha_slider_for(effect, d or None)), direction_box, slider,
                                 api_visibility="private", queue=False)
            return slider

        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(type="filepath", label="face photo", sources=["upload"])
                    p_dir = direction_picker()
                    p_alpha = alpha_slider(p_dir)
                    p_n = gr.Slider(4, 48, value=16, step=1, label="frames")
                    p_go = gr.Button("Render micromotion", variant="primary")
                with gr.Column():
                    p_video = gr.Video(label="micromotion (mp4)")
                    p_gif = gr.Image(label="micromotion (gif)", type="filepath")
                    p_frames = gr.Gallery(label="frames: V0 + α·t·ΔV, t = 0 → 1", columns=8)
            p_go.click(on_image, [photo, p_dir, p_alpha, p_n], [p_video, p_gif, p_frames], api_name="photo")

        with gr.Tab("Clip"):
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label="clip (its audio is kept)", sources=["upload"])
                    c_dir = direction_picker()
                    c_alpha = alpha_slider(c_dir)
                    c_anim = gr.Checkbox(value=True, label="animate (t sweeps 0 → 1 → 0)")
                    c_period = gr.Slider(0.5, 6.0, value=2.0, step=0.1, label="period (s)")
                    c_go = gr.Button("Edit clip", variant="primary")
                with gr.Column():
                    c_out = gr.Video(label="edited clip")
                    c_info = gr.Markdown()
            c_go.click(on_clip, [clip, c_dir, c_alpha, c_anim, c_period], [c_out, c_info], api_name="clip")

        with gr.Tab("Webcam"):
            session = gr.State(None, time_to_live=3600, delete_callback=close_session)
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera")
                w_out = gr.Image(label="edited")
            with gr.Row():
                w_dir = direction_picker()
                w_alpha = alpha_slider(w_dir)
                w_anim = gr.Checkbox(value=True, label="animate")
                w_period = gr.Slider(0.5, 6.0, value=2.0, step=0.1, label="period (s)")
            cam.stream(on_webcam, [cam, w_dir, w_alpha, w_anim, w_period, session], [w_out, session],
                       stream_every=0.1, concurrency_limit=4, api_name="webcam")
    return app
