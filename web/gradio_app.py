"""The Gradio app: photos → micromotion clips, clip → edited clip with its audio, webcam → live edit, and
reenactment: driver clip + target photo → the target moving like the driver, or the webcam driving the photo
(`web.gradio_reenact`).

The work lives in plain functions (testable without a browser): `check_image_upload`, `check_video_upload`,
`micromotion_frames`, `render_image`, `edit_clip`, `WebcamSession`; `build_app` only wires them to Gradio components,
with the words of `web.gradio_status` beside each output. All frames here are uint8 [H, W, 3] BGR except at the
Gradio boundary (RGB).

Every event is wired with `preprocess=False`: the handlers get Gradio's raw payloads (FileData dicts, numbers,
strings) and check them here, so a bad upload gets this app's one-line message (never Gradio's "Could not preprocess
input" with temporary paths), and α is bounded only by `stream.controls.MAX_ALPHA`, as in every door -- never by
the range a slider happened to be built with (a direction's suggested range is a UI hint).
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
    max_photos: int = 8              # photos in one go
    max_photo_frames: int = 48       # frames of one photo's micromotion (t = 0 → 1)
    work_side: int = 1024            # photos are edited with their longest side at most this (larger: scaled down)
    gif_side: int = 480              # longest side of a micromotion GIF
    frame_side: int = 256            # longest side of each frame in the frames gallery
    max_driver_frames: int = 1800    # most frames of a reenactment's driver clip (60 s at 30 fps)

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


def upload_name(value) -> str:
    """The file name a user gave an upload (Gradio's `orig_name`), else the file's own name; never a folder."""
    if isinstance(value, dict) and value.get("orig_name"):
        return Path(str(value["orig_name"])).name
    path = _upload_path(value)
    return path.name if path is not None else "?"


def upload_list(value) -> list:
    """The uploads of a multi-file input: [] for none, a single upload as a list of one."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v]
    return [value]


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


def whole_number(what: str, value, lo: int, hi: int) -> int:
    """`value` as an int in [lo, hi] (a raw API payload may be a float); one-line ValueError otherwise."""
    from stream.controls import finite

    number = finite(what, value, lo, hi)
    if number != int(number):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def fit_within(image: np.ndarray, side: int) -> np.ndarray:
    """`image` (uint8 [H, W, 3]) scaled down so that its longest side is at most `side` (never up)."""
    import cv2

    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    k = side / max(h, w)
    return cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


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
    session = effect.new_session()
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
    uploaded = check_image_upload(image_path, limits)
    image = fit_within(uploaded, limits.work_side)
    size = (image.shape[1], image.shape[0])
    resized = ((uploaded.shape[1], uploaded.shape[0]), size) if image is not uploaded else None
    del uploaded
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
    total = info["frames"] or (int(info["duration_s"] * info["fps"]) if info["duration_s"] else None)
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
        self.driver.push(np.ascontiguousarray(frame_rgb[..., ::-1]))
        got = self.driver.get_output(timeout=timeout_s)
        if got is None:
            return None
        out, info = got
        self.status = info["status"]
        return np.ascontiguousarray(out[..., ::-1])

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


# ------------------------------------------------------------------------------------------- the app

PHOTO_HINT = "Upload one or more face photos, pick a direction and press Render."
CLIP_HINT = "Upload a clip with a face, pick a direction and press Edit clip."
WEBCAM_HINT = "Waiting for the camera: click it, allow it and press record; the live state shows here."


def one_line(exc: BaseException, what: str) -> str:
    """The user's message for an exception met while serving `what`: the project's own one-line refusals as they
    are; anything else only by its type (its text may hold temporary paths), the details go to the log."""
    if isinstance(exc, ValueError):            # UploadRefused, controls, counts: written for users
        from web.gradio_status import file_names_only

        return file_names_only(str(exc))
    if isinstance(exc, FileNotFoundError):     # a file that vanished between upload and use: paths stay private
        return f"the {what} was not received; upload it again"
    log.error("%s failed", what, exc_info=exc)
    return f"the {what} could not be processed ({type(exc).__name__}); the server log has the details"


def build_app(effect, notice: str | None = None, limits: Limits = Limits()):
    """The Gradio Blocks app around `effect` (tabs: Photo, Clip, Webcam, Reenact, Reenact live), each with a status
    beside its output. `notice`: an extra line for the banner (the effect's own state is always shown)."""
    import gradio as gr

    from web.gradio_status import clip_lines, effect_lines, markdown, result_status, tab_status

    names = list(effect.available_directions)
    default = names[0] if names else None
    banner = effect_lines(effect.info) + ([notice] if notice and notice != effect.notice else [])

    def refuse(exc: BaseException, what: str):
        raise gr.Error(one_line(exc, what), print_exception=False) from None

    def on_photos(files, direction, alpha, n_frames, progress=gr.Progress()):
        try:
            items = upload_list(files)
            if not items:
                raise UploadRefused("no photo given; upload one or more face photos (jpg or png)")
            if len(items) > limits.max_photos:
                raise UploadRefused(f"{len(items)} photos given, over the limit of {limits.max_photos} at once; "
                                    f"upload at most {limits.max_photos}")
            n = whole_number("frames", n_frames, 2, limits.max_photo_frames)
            make_controls(effect, direction or None, alpha)      # refuse bad controls before any work
        except Exception as exc:  # noqa: BLE001 -- the door's boundary: one line, never a traceback
            refuse(exc, "photo")
        lines, refused, gifs, downloads, thumbs = [], [], [], [], []
        for k, item in enumerate(items):
            name = upload_name(item)

            def step(fraction: float, text: str, k: int = k, name: str = name) -> None:
                progress((k + fraction) / len(items), desc=f"photo {k + 1} of {len(items)} '{name}': {text}")

            try:
                out = render_image(effect, item, direction or None, alpha, n, limits=limits, progress=step)
            except UploadRefused as exc:
                refused.append(f"not used: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001
                refuse(exc, "photo")
            lines.append(out["line"])
            gifs.append((str(out["gif"]), out["name"]))
            downloads += [str(out["video"]), str(out["gif"])]
            thumbs += [(np.ascontiguousarray(f[..., ::-1]), f"{out['name']} t={i / (n - 1):.2f}")
                       for i, f in enumerate(out["thumbs"])]
        if not gifs:
            raise gr.Error(" / ".join(r.removeprefix("not used: ") for r in refused), print_exception=False)
        return result_status(effect.info, lines + refused), gifs, downloads, thumbs

    def on_clip(video, direction, alpha, animate, period_s, progress=gr.Progress()):
        try:
            controls = make_controls(effect, direction or None, alpha, animate=animate, period_s=period_s)
            out_path = Path(tempfile.mkdtemp(prefix="micromotion-")) / "edited.mp4"
            result = edit_clip(effect, video, out_path, controls,
                               progress=lambda f, text: progress(f, desc=text), limits=limits)
        except Exception as exc:  # noqa: BLE001 -- the door's boundary (UploadRefused while decoding included)
            refuse(exc, "clip")
        return str(result["path"]), result_status(effect.info, clip_lines(result))

    def on_webcam(frame, direction, alpha, animate, period_s, session):
        try:
            make_controls(effect, direction or None, alpha, animate=animate, period_s=period_s)
            rgb = webcam_frame(cam, frame)
        except Exception as exc:  # noqa: BLE001
            refuse(exc, "camera frame")
        if session is None:
            session = WebcamSession(effect)
        out = session.step(rgb, direction or None, alpha, animate, period_s)
        return out, session.line, session

    def close_session(session):
        if session is not None:
            session.close()

    with gr.Blocks(title="micromotion") as app:
        gr.Markdown("# micromotion\nStyleGAN micromotions of a face: smile, eyes closing, head turn, anger, aging.")
        if banner:
            gr.Markdown(markdown(f"**{line}**" for line in banner), elem_id="banner")

        def direction_picker():
            return gr.Dropdown(choices=names, value=default, label="direction", info=None if names else
                               "none installed" if effect.info.available else "none: no networks to edit with")

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
                    photos = gr.File(file_count="multiple", file_types=["image"],
                                     label=f"face photos (up to {limits.max_photos})", elem_id="photo-input")
                    p_dir = direction_picker()
                    p_alpha = alpha_slider(p_dir)
                    p_n = gr.Slider(4, limits.max_photo_frames, value=16, step=1, label="frames",
                                    elem_id="photo-frames")
                    p_go = gr.Button("Render micromotion", variant="primary")
                with gr.Column():
                    p_status = gr.Markdown(tab_status(effect.info, PHOTO_HINT), elem_id="photo-status", min_height=90,
                                           container=True, padding=True)
                    p_gifs = gr.Gallery(label="micromotions (GIF), one per photo", columns=2, height="max-content",
                                        object_fit="contain")
                    p_files = gr.File(label="downloads: mp4 + GIF", file_count="multiple")
                    p_frames = gr.Gallery(label="frames: V0 + α·t·ΔV, t = 0 → 1", columns=4, height="max-content",
                                          object_fit="contain")
            p_go.click(on_photos, [photos, p_dir, p_alpha, p_n], [p_status, p_gifs, p_files, p_frames],
                       api_name="photo", preprocess=False, show_progress_on=p_status)

        with gr.Tab("Clip"):
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label="clip (its audio is kept)", sources=["upload"], elem_id="clip-input")
                    c_dir = direction_picker()
                    c_alpha = alpha_slider(c_dir)
                    c_anim = gr.Checkbox(value=True, label="animate (t sweeps 0 → 1 → 0)")
                    c_period = gr.Slider(0.5, 6.0, value=2.0, step=0.1, label="period (s)")
                    c_go = gr.Button("Edit clip", variant="primary")
                with gr.Column():
                    c_status = gr.Markdown(tab_status(effect.info, CLIP_HINT), elem_id="clip-status", min_height=90,
                                           container=True, padding=True)
                    c_out = gr.Video(label="edited clip")
            c_go.click(on_clip, [clip, c_dir, c_alpha, c_anim, c_period], [c_out, c_status], api_name="clip",
                       preprocess=False, show_progress_on=c_status)

        with gr.Tab("Webcam"):
            session = gr.State(None, time_to_live=3600, delete_callback=close_session)
            with gr.Row():
                cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera")
                with gr.Column():
                    w_out = gr.Image(label="edited", elem_id="webcam-output")
                    w_status = gr.Markdown(tab_status(effect.info, WEBCAM_HINT),
                                           elem_id="webcam-status")
            with gr.Row():
                w_dir = direction_picker()
                w_alpha = alpha_slider(w_dir)
                w_anim = gr.Checkbox(value=True, label="animate")
                w_period = gr.Slider(0.5, 6.0, value=2.0, step=0.1, label="period (s)")
            cam.stream(on_webcam, [cam, w_dir, w_alpha, w_anim, w_period, session], [w_out, w_status, session],
                       stream_every=0.1, concurrency_limit=4, api_name="webcam", preprocess=False,
                       show_progress="hidden")

        reenact_tabs(gr, effect, limits, refuse)
    return app


REENACT_HINT = ("Upload a driver clip (its face's motion and audio drive the photo) and a target photo, then press "
                "Reenact.")
REENACT_LIVE_HINT = ("Upload a target photo, then start the camera: it calibrates on your face (start with a "
                     "neutral face, then move your head), then drives the photo.")


def reenact_option_inputs(gr, effect, live: bool) -> list:
    """The options a reenactment depends on, as inputs in `web.gradio_reenact.reenact_options`'s order:
    rank, layers, β, reference, smoothing, method, paste mode. The sliders' ranges are hints: the handlers take
    what `reenact_options` takes (rank <= MAX_RANK, smoothing <= MAX_SMOOTHING, any finite β)."""
    from web.gradio_reenact import LIVE_PASTE_MODES, METHODS, PASTE_MODES

    num_ws = getattr(getattr(effect, "editor", None), "num_ws", None)
    every = f"all {num_ws}" if num_ws else "all"
    reference = ("calibration latent of the neutral pose; empty: the first" if live else
                 "driver frame of the neutral pose; empty: the first frame with a face")
    return [gr.Slider(1, 16, value=4, step=1, label="rank", info="motion subspace dimension per W+ layer"),
            gr.Textbox(value="", label="layers A:B", placeholder=f"e.g. 0:8 (empty: {every} W+ layers)",
                       info="W+ layers that move: A to B−1"),
            gr.Number(value=1.0, label="β", info="strength of the motion (1: the driver's amplitude)"),
            gr.Textbox(value="", label="reference", placeholder="empty: the first", info=reference),
            gr.Slider(0, 10, value=0, step=0.5, label="smoothing σ (frames)",
                      info="temporal Gaussian" + (" (looks one latent ahead live)" if live else "")),
            gr.Radio(list(METHODS), value="rpca", label="method",
                     info="robust PCA subspace, plain PCA, or the raw offsets"),
            gr.Radio(list(LIVE_PASTE_MODES if live else PASTE_MODES), value="residual", label="paste",
                     info="residual: photo + G(w) − G(V); replace: G(w)" + ("" if live else "; none: G(w) alone"))]


def reenact_tabs(gr, effect, limits: Limits, refuse) -> None:
    """The "Reenact" tab (driver clip + target photo → video) and the "Reenact live" tab (the webcam drives the
    photo), inside the app's Blocks. Their work is `web.gradio_reenact`'s."""
    from stream.controls import finite
    from web.gradio_reenact import (NotReenacted, ReenactNetworks, ReenactWebcam, check_paste_mode, live_key,
                                    reenact_clip, reenact_options)
    from web.gradio_status import markdown, reenact_lines, reenact_live_line, reenact_tab_status

    networks = ReenactNetworks(effect)

    def on_reenact(driver, target, rank, layers, beta, reference, smoothing, method, paste_mode,
                   progress=gr.Progress()):
        try:
            options = reenact_options(rank, layers, beta, reference, smoothing, method)
            result = reenact_clip(networks, driver, target, options, check_paste_mode(paste_mode), limits=limits,
                                  progress=lambda fraction, text: progress(fraction, desc=text))
        except NotReenacted as exc:     # what the work found: said beside the output
            return None, markdown([f"**not reenacted**: {exc}"]), None, None
        except Exception as exc:  # noqa: BLE001 -- the door's boundary: one line, never a traceback
            refuse(exc, "reenactment")
        video = str(result["video"])
        return video, markdown(reenact_lines(result)), [video, str(result["sidecar"])], result["summary"]

    def on_reenact_camera(frame, target, rank, layers, beta, reference, smoothing, method, paste_mode,
                          calibration, calibration_s, live):
        """One webcam frame. Never raises (it runs ten times a second): what is wrong is the status line."""
        try:
            options = reenact_options(rank, layers, beta, reference, smoothing, method)
            check_paste_mode(paste_mode, live=True)
            calibration = whole_number("calibration latents", calibration, 2, 1000)
            calibration_s = finite("calibration seconds", calibration_s, 0.0, 60.0)
            rgb = webcam_frame(r_cam, frame)
            if not target:
                raise UploadRefused("no target photo given; upload the face photo the camera should drive")
            if live is None or not live.fits(live_key(target, paste_mode, calibration, calibration_s), options):
                if live is not None:
                    live.close()
                live = None
                live = ReenactWebcam(effect, target, options, paste_mode, calibration, calibration_s, limits)
        except Exception as exc:  # noqa: BLE001 -- bad options, a refused target photo, a bad frame
            return None, reenact_live_line(None, problem=one_line(exc, "camera frame")), live
        out = live.step(rgb, options)
        return out, live.line, live

    def on_recalibrate(live):
        if live is None:
            return reenact_live_line(None, problem="nothing to recalibrate yet: upload a target photo and start "
                                                   "the camera")
        live.recalibrate()
        return "**calibrating**: recalibrating: start with a neutral face, then move your head"

    def close_live(live):
        if live is not None:
            live.close()

    with gr.Tab("Reenact"):
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    driver = gr.Video(label="driver clip (motion + audio)", sources=["upload"],
                                      elem_id="reenact-driver", height=280)
                    target = gr.Image(label="target photo (face to animate)", sources=["upload"],
                                      type="filepath", elem_id="reenact-target", height=280)
                options = reenact_option_inputs(gr, effect, live=False)
                go = gr.Button("Reenact", variant="primary")
            with gr.Column():
                status = gr.Markdown(reenact_tab_status(effect.info, REENACT_HINT), elem_id="reenact-status",
                                     min_height=90, container=True, padding=True)
                out = gr.Video(label="the target, driven (the driver's frames, rate and audio)",
                               elem_id="reenact-output", height=420)
                files = gr.File(label="downloads: mp4 + its metadata (.json)", file_count="multiple")
                summary = gr.JSON(label="options and fit (also in the video's comment tag)", open=True,
                                  elem_id="reenact-summary")
        go.click(on_reenact, [driver, target, *options], [out, status, files, summary], api_name="reenact",
                 preprocess=False, show_progress_on=status, concurrency_limit=1)   # one job at a time

    with gr.Tab("Reenact live"):
        live = gr.State(None, time_to_live=3600, delete_callback=close_live)
        with gr.Row():
            r_cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera (the driver)",
                             elem_id="reenact-live-camera")
            with gr.Column():
                r_out = gr.Image(label="the target, driven", elem_id="reenact-live-output")
                r_status = gr.Markdown(reenact_tab_status(effect.info, REENACT_LIVE_HINT),
                                       elem_id="reenact-live-status")
                recalibrate = gr.Button("Recalibrate")
        with gr.Row():
            r_target = gr.Image(label="target photo", sources=["upload"], type="filepath",
                                elem_id="reenact-live-target")
            with gr.Column():
                r_options = reenact_option_inputs(gr, effect, live=True)
                r_calibration = gr.Slider(5, 120, value=40, step=1, label="calibration latents",
                                          info="driver latents the motion is learned from")
                r_calibration_s = gr.Slider(0, 20, value=4, step=0.5, label="calibration seconds",
                                            info="...spread over at least this long")
        r_cam.stream(on_reenact_camera, [r_cam, r_target, *r_options, r_calibration, r_calibration_s, live],
                     [r_out, r_status, live], stream_every=0.1, concurrency_limit=4, api_name="reenact_webcam",
                     preprocess=False, show_progress="hidden")
        recalibrate.click(on_recalibrate, [live], [r_status], api_name="reenact_recalibrate", queue=False)


def webcam_frame(cam, payload) -> np.ndarray | None:
    """A raw webcam payload (Gradio's ImageData dict, as events with `preprocess=False` get it) → uint8 RGB."""
    if payload is None:
        return None
    from gradio.data_classes import ImageData

    return cam.preprocess(payload if isinstance(payload, ImageData) else ImageData.model_validate(payload))
