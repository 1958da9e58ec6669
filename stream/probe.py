"""Check an image or a video from its headers, before a single pixel is decoded.

A 164 kB PNG can declare 13000×13000 pixels (0.5 GB once decoded), a 198 kB mp4 8192×8192 frames, a small clip
30000 frames at 1000 fps. :func:`probe_image` and :func:`probe_video` read only what the file declares (PIL reads
the header lazily; PyAV opens the container with its decoders told to skip every frame) and refuse, with
:class:`UploadRefused` and one line naming the file, the cause and the fix, whatever is over :class:`Limits`.

    info = probe_image("face.png", Limits())    # -> ImageInfo(width, height, format, bytes, ...)
    info = probe_video("clip.mp4", Limits())    # -> VideoInfo(width, height, fps, frames, duration_s, ...)

A header can lie: `stream.sources.VideoFileSource` also gives the decoder the pixel limit (FFmpeg's
``max_pixels``) and stops a clip whose decoded frames exceed the frame / duration limits.
PIL and PyAV are imported inside the functions (importing this module is free).
"""
from __future__ import annotations

import logging
import math
import struct
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Union

logger = logging.getLogger(__name__)

MB = 2 ** 20
# PIL format names of the images accepted (MPO: the multi-picture JPEG many phones write). The Gradio app narrows
# uploads further by suffix (jpg, png, bmp, webp).
IMAGE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "WEBP", "TIFF", "PPM", "JPEG2000"}
# FFmpeg demuxers that read still images: such a file holds no clip, whatever its suffix.
IMAGE_CONTAINERS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif", "apng", "tiff_pipe"}


class UploadRefused(ValueError):
    """A file that is not what was asked for (type, size, length): one line saying what to give instead."""


@dataclass(frozen=True)
class Limits:
    """What an image or a video may declare. None = no limit on that quantity.

    The defaults suit files given on a command line; `web.gradio_uploads.Limits` narrows them for uploads.
    """

    max_bytes: Optional[int] = None            # file size in bytes
    max_side: Optional[int] = 4096             # longest side of an image or a video frame, pixels
    max_pixels: Optional[int] = 4096 * 4096    # width × height of an image or a video frame (16.8 MP)
    max_frames: Optional[int] = 108_000        # frames in a video (declared, else duration × rate): 1 h at 30 fps
    max_fps: Optional[float] = 240.0           # average frame rate of a video
    max_duration_s: Optional[float] = 3600.0   # duration of a video, seconds

    @classmethod
    def unlimited(cls) -> "Limits":
        """No limit at all (trusted files, tests)."""
        return cls(None, None, None, None, None, None)


@dataclass(frozen=True)
class ImageInfo:
    """What an image file declares. width/height in pixels (before any EXIF rotation); bytes = file size."""

    path: Path
    format: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares (nothing decoded).

    fps / rate:  average frame rate (None when the header gives none); `rate` exact, `fps` as float.
    frames:      frame count from the header, None when not declared (webm/mkv); `frames_estimated` then
                 holds duration × rate when both are known.
    duration_s:  the video stream's (else the container's) duration, None when unknown.
    audio:       the file has an audio stream.
    """

    path: Path
    container: str
    codec: str
    width: int
    height: int
    fps: Optional[float]
    rate: Optional[Fraction]
    frames: Optional[int]
    frames_estimated: Optional[int]
    duration_s: Optional[float]
    bytes: int
    audio: bool

    @property
    def frame_count(self) -> Optional[int]:
        """Declared frame count, else the estimate, else None."""
        return self.frames if self.frames is not None else self.frames_estimated


# ------------------------------------------------------------------------------------------------ checks


def _detail(exc: BaseException, path: Path) -> str:
    """First line of an error, without the server-side folder of the file (uploads live in temp folders)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace(str(path), path.name)[:120]


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} MP"


def check_bytes(path: Path, limits: Limits) -> int:
    """File size in bytes; `UploadRefused` when over `limits.max_bytes`, FileNotFoundError when missing."""
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    size = path.stat().st_size
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise UploadRefused(f"'{path.name}' is {size / MB:.1f} MB, over the {limits.max_bytes / MB:.3g} MB limit; "
                            f"use a smaller file")
    return size


def check_frame_size(name: str, width: int, height: int, limits: Limits, what: str = "image") -> None:
    """`UploadRefused` when a declared image / frame size is unknown or over `max_side` / `max_pixels`."""
    if width <= 0 or height <= 0:
        raise UploadRefused(f"'{name}' does not declare its {what} size; re-save it as a plain jpg/png (images) "
                            f"or H.264 mp4 (videos)")
    too_wide = limits.max_side is not None and max(width, height) > limits.max_side
    too_many = limits.max_pixels is not None and width * height > limits.max_pixels
    if too_wide or too_many:
        allowed = []
        if limits.max_side is not None:
            allowed.append(f"{limits.max_side} px a side")
        if limits.max_pixels is not None:
            allowed.append(_mp(limits.max_pixels))
        raise UploadRefused(f"'{name}' declares {what}s of {width}×{height} pixels ({_mp(width * height)}), over "
                            f"the limit of {' and '.join(allowed)}; scale it down first")


def check_video(info: VideoInfo, limits: Limits) -> None:
    """`UploadRefused` for a frame size, rate, frame count or duration over `limits` (declared values)."""
    name = info.path.name
    check_frame_size(name, info.width, info.height, limits, "frame")
    if limits.max_fps is not None and info.fps is not None and info.fps > limits.max_fps:
        raise UploadRefused(f"'{name}' declares {info.fps:g} frames per second, over the {limits.max_fps:g} fps "
                            f"limit; re-encode it at a usual rate (e.g. 30 fps)")
    count = info.frame_count
    if limits.max_frames is not None and count is not None and count > limits.max_frames:
        raise UploadRefused(f"'{name}' {'declares' if info.frames is not None else 'would hold'} {count} frames, "
                            f"over the {limits.max_frames} frame limit; trim it first")
    if limits.max_duration_s is not None and info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise UploadRefused(f"the clip '{name}' lasts {info.duration_s:.0f} s, over the {limits.max_duration_s:g} s "
                            f"limit; trim it first")


# ------------------------------------------------------------------------------------------------ images


def _webp_size(head: bytes) -> Optional[tuple[int, int]]:
    """Canvas size from a WebP header (VP8X / VP8L / VP8 chunk), None when not WebP or unreadable.

    PIL's WebP plugin hands the whole file to libwebp's animation decoder, which sizes its canvas buffers on
    open: reading the size here first keeps a hostile canvas from being allocated at all.
    """
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return None
    chunk = head[12:16]
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(head[24:27], "little")
        h = 1 + int.from_bytes(head[27:30], "little")
        return w, h
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = struct.unpack("<I", head[21:25])[0]
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def probe_image(path: Union[str, Path], limits: Limits = Limits()) -> ImageInfo:
    """Read an image's header (format, size) and check it against `limits`; nothing is decoded.

    Raises FileNotFoundError (missing file) or `UploadRefused`: unreadable / not one of `IMAGE_FORMATS`,
    over the byte, side or pixel limits.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    size = check_bytes(path, limits)
    with open(path, "rb") as fh:
        webp = _webp_size(fh.read(32))
    if webp is not None:
        check_frame_size(path.name, *webp, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # parses the header only; pixels are read by .load()
                fmt, (width, height) = im.format, im.size
    except Image.DecompressionBombError as exc:
        raise UploadRefused(f"'{path.name}' declares an image far over the limit ({_detail(exc, path)}); scale it "
                            f"down first") from None
    except UnidentifiedImageError:
        raise UploadRefused(f"'{path.name}' could not be read as an image (not a known image format); give a jpg "
                            f"or png photo") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise UploadRefused(f"'{path.name}' could not be read as an image ({_detail(exc, path)}); give a jpg or png "
                            f"photo") from None
    if fmt not in IMAGE_FORMATS:
        raise UploadRefused(f"'{path.name}' is a {fmt} image, not a photo format read here; give a jpg or png")
    check_frame_size(path.name, width, height, limits)
    return ImageInfo(path=path, format=str(fmt), width=int(width), height=int(height), bytes=size)


# ------------------------------------------------------------------------------------------------ videos


def open_container(path: Union[str, Path]):
    """`av.open` for reading with every decoder told to skip frames while the streams are probed.

    FFmpeg's stream probing (`avformat_find_stream_info`) otherwise decodes the first frames: 158 MB for one
    8192² H.264 frame. The skip applies to the probe only; a later `decode` decodes normally.
    Raises `UploadRefused` for a file FFmpeg cannot open.
    """
    import av

    path = Path(path)
    try:
        return av.open(str(path), options={"skip_frame": "all"}, metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError) as exc:
        raise UploadRefused(f"'{path.name}' is not a readable video ({_detail(exc, path)}); give an mp4, mov, webm "
                            f"or mkv clip") from None


def video_info(container, path: Union[str, Path], size: Optional[int] = None) -> VideoInfo:
    """What an open container declares about its first video stream (nothing decoded).

    Raises `UploadRefused` when the file holds no video stream (e.g. a still image under a video suffix).
    """
    path = Path(path)
    if container.format.name in IMAGE_CONTAINERS or not container.streams.video:
        raise UploadRefused(f"'{path.name}' holds no video stream; give a video clip")
    vs = container.streams.video[0]
    cc = vs.codec_context
    avg = vs.average_rate
    rate = Fraction(avg) if avg else None
    fps = float(rate) if rate else None
    duration = None
    if vs.duration is not None and vs.time_base is not None:
        duration = float(vs.duration * vs.time_base)
    elif container.duration is not None:
        duration = container.duration / 1e6
    frames = int(vs.frames) or None
    estimated = math.ceil(duration * fps - 1e-6) if frames is None and duration and fps else None
    return VideoInfo(
        path=path, container=str(container.format.name), codec=str(cc.name), width=int(cc.width or 0),
        height=int(cc.height or 0), fps=fps, rate=rate, frames=frames, frames_estimated=estimated,
        duration_s=duration, bytes=int(size if size is not None else path.stat().st_size),
        audio=bool(container.streams.audio),
    )


def probe_video(path: Union[str, Path], limits: Limits = Limits()) -> VideoInfo:
    """Read a video's headers (size, rate, frames, duration, audio) and check them against `limits`.

    Nothing is decoded (see :func:`open_container`). Raises FileNotFoundError (missing file) or `UploadRefused`:
    unreadable, no video stream, over the byte / side / pixel / fps / frame / duration limits.
    """
    path = Path(path)
    size = check_bytes(path, limits)
    container = open_container(path)
    try:
        info = video_info(container, path, size)
    finally:
        container.close()
    check_video(info, limits)
    return info


__all__ = [
    "IMAGE_CONTAINERS",
    "IMAGE_FORMATS",
    "ImageInfo",
    "Limits",
    "UploadRefused",
    "VideoInfo",
    "check_bytes",
    "check_frame_size",
    "check_video",
    "open_container",
    "probe_image",
    "probe_video",
    "video_info",
]
