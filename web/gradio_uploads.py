"""The Gradio app's uploads and raw payloads: what a photo or a clip upload may be (`Limits`), read and checked from
the files' headers before anything is decoded (`check_image_upload`, `check_video_upload`), the names users gave
them, whole numbers from raw API payloads, and photos scaled to a working size.

Every Gradio event is wired with `preprocess=False` (`web.gradio_app`): handlers get Gradio's raw payloads (FileData
dicts, numbers, strings) and check them here, so a bad upload gets this app's one-line `UploadRefused`. Frames are
uint8 [H, W, 3] BGR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.probe import UploadRefused  # re-exported: the one refusal type, from stream up to the doors

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


def upload_path(value) -> Path | None:
    """The file of an upload: a path, or Gradio's FileData dict ({"path": ...}) when an event is wired with
    `preprocess=False` (so Gradio never opens the file before these checks)."""
    if isinstance(value, dict):
        value = value.get("path")
    return Path(value) if value else None


def upload_name(value) -> str:
    """The file name a user gave an upload (Gradio's `orig_name`), else the file's own name; never a folder."""
    if isinstance(value, dict) and value.get("orig_name"):
        return Path(str(value["orig_name"])).name
    path = upload_path(value)
    return path.name if path is not None else "?"


def upload_list(value) -> list:
    """The uploads of a multi-file input: [] for none, a single upload as a list of one."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v]
    return [value]


def _received(value, noun: str, kind: str, max_mb: float, suffixes, missing: str, smaller: str) -> Path:
    """The uploaded file's path once it is there, within `max_mb` and of a type in `suffixes`; `UploadRefused`
    naming the `noun` ("photo", "clip") and what to do (`missing`, `smaller`) otherwise. Nothing is read."""
    path = upload_path(value)
    if path is None:
        raise UploadRefused(f"no {noun} given; {missing}")
    if not path.is_file():
        raise UploadRefused(f"the {noun} '{path.name}' was not received; upload it again")
    if _size_mb(path) > max_mb:
        raise UploadRefused(f"the {noun} is {_size_mb(path):.1f} MB, over the {max_mb:g} MB limit; {smaller}")
    if path.suffix.lower() not in suffixes:
        raise UploadRefused(f"'{path.name}' is not a {kind} type this app takes; upload {', '.join(sorted(suffixes))}")
    return path


def check_image_upload(path, limits: Limits = Limits()) -> np.ndarray:
    """Read an uploaded photo as uint8 [H, W, 3] BGR; `UploadRefused` for a non-image or an oversized one.

    Size, type and declared pixel count are checked from the file and its header before it is decoded.
    """
    from stream.sources import read_image

    path = _received(path, "photo", "photo", limits.max_image_mb, IMAGE_SUFFIXES,
                     missing="upload a face photo (jpg or png)", smaller="upload a smaller image")
    return read_image(path, limits.probe_limits("photo"))


def load_work_photo(value, limits: Limits = Limits()) -> tuple[np.ndarray, tuple | None]:
    """An uploaded photo (`check_image_upload`) at the app's working size: (uint8 [H, W, 3] BGR scaled to fit
    `limits.work_side`, ((uploaded W, H), (worked W, H)) when it was scaled, else None)."""
    uploaded = check_image_upload(value, limits)
    photo = fit_within(uploaded, limits.work_side)
    if photo is uploaded:
        return photo, None
    return photo, ((uploaded.shape[1], uploaded.shape[0]), (photo.shape[1], photo.shape[0]))


def check_video_upload(path, limits: Limits = Limits()) -> dict:
    """Probe an uploaded clip; returns {"path", "fps", "frames", "frame_count", "duration_s", "width", "height",
    "audio"} ("frames": declared, else None; "frame_count": declared, else estimated from duration and rate).

    `UploadRefused` for a non-video (including a still image), an oversized, over-long, too fast or too large
    clip -- all read from the headers (`stream.probe.probe_video`), nothing decoded.
    """
    from stream.probe import probe_video

    path = _received(path, "clip", "video", limits.max_video_mb, VIDEO_SUFFIXES,
                     missing="upload a video (mp4, mov, webm, mkv)", smaller="upload a shorter or smaller clip")
    info = probe_video(path, limits.probe_limits("clip"))
    return {"path": path, "fps": info.fps or 30.0, "frames": info.frames, "frame_count": info.frame_count,
            "duration_s": info.duration_s, "width": info.width, "height": info.height, "audio": info.audio}


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
