"""Frame sources: webcam (OpenCV), video file and y4m (PyAV), still image (OpenCV); and a y4m writer.

Every source iterates ``(frame_bgr uint8 [H, W, 3], timestamp_s float)`` and is a context manager.
:func:`open_source` picks one from a command-line style spec ("0", "clip.mp4", "face.jpg", "cam.y4m").
"""
from __future__ import annotations

import logging
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from stream.closing import Closeable

logger = logging.getLogger(__name__)

Frame = Tuple[np.ndarray, float]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jp2"}


class Source(Closeable):
    """Base: iterate (frame_bgr, timestamp_s); ``width``, ``height``, ``fps`` (None: unknown),
    ``frame_count`` (None: unknown or endless)."""
    width: int = 0
    height: int = 0
    fps: Optional[float] = None
    frame_count: Optional[int] = None

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError


class WebcamSource(Source):
    """Live camera through OpenCV. Timestamps: seconds since the source opened (monotonic clock)."""

    def __init__(self,
                 index: int = 0,                 # OpenCV device index (/dev/video<index> on Linux).
                 width: Optional[int] = None,    # Requested capture size (the camera may pick another).
                 height: Optional[int] = None,
                 fps: Optional[float] = None,    # Requested capture rate.
                 ):
        import cv2

        self.index = int(index)
        self._cap = cv2.VideoCapture(self.index)
        if not self._cap.isOpened():
            self._cap.release()
            raise RuntimeError(
                f"cannot open webcam {self.index}: check that a camera is connected and not used by another "
                f"program, or pick another index (Linux: ls /dev/video*; v4l2-ctl --list-devices)")
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, float(fps))
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or None
        self._t0 = time.monotonic()

    def read(self) -> Optional[Frame]:
        """One frame, or None when the camera delivers nothing."""
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        return frame, time.monotonic() - self._t0

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self.read()
            if item is None:
                logger.warning("webcam %d stopped delivering frames", self.index)
                return
            yield item

    def close(self) -> None:
        self._cap.release()


class VideoFileSource(Source):
    """Video file (mp4, mkv, webm, y4m, …) decoded with PyAV. Timestamps: the frames' presentation times.

    ``audio`` is the input's first audio stream (``av.audio.stream.AudioStream``) or None; a
    :class:`stream.sinks.FileSink` given ``audio_from=source.path`` copies it to its output.
    """

    def __init__(self,
                 path: Union[str, os.PathLike],   # The file.
                 loop: bool = False,              # Restart at the end (endless source).
                 ):
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        self.loop = bool(loop)
        try:
            self._container = av.open(str(self.path))
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot read video {self.path}: {e}; give a video file (mp4, mkv, webm, y4m)") from e
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{self.path} has no video stream; give a video file")
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"
        self.width = int(self._video.codec_context.width)
        self.height = int(self._video.codec_context.height)
        rate = self._video.average_rate or self._video.guessed_rate or self._video.base_rate
        self.fps = float(rate) if rate else None
        self.rate: Optional[Fraction] = Fraction(rate) if rate else None
        self.frame_count = int(self._video.frames) or None
        self.audio = self._container.streams.audio[0] if self._container.streams.audio else None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def __iter__(self) -> Iterator[Frame]:
        offset = 0.0
        while True:
            last_t, index = 0.0, 0
            for frame in self._container.decode(self._video):
                t = frame.time if frame.time is not None else index / (self.fps or 30.0)
                last_t, index = t, index + 1
                yield frame.to_ndarray(format="bgr24"), offset + t
            if not self.loop or index == 0:
                return
            offset += last_t + 1.0 / (self.fps or 30.0)
            self._container.seek(0)

    def close(self) -> None:
        self._container.close()


class ImageSource(Source):
    """A still image, yielded ``repeat`` times at ``fps`` (repeat=None: endless, e.g. a test pattern camera)."""

    def __init__(self,
                 path: Union[str, os.PathLike],  # The picture (anything cv2.imread reads).
                 repeat: Optional[int] = 1,       # How many frames; None: endless.
                 fps: float = 30.0,               # Timestamp rate of the repeated frames.
                 ):
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"image file not found: {self.path}")
        image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{self.path} is not an image OpenCV can read; give a jpg, png, bmp, webp or tiff")
        self.image = image
        self.height, self.width = image.shape[:2]
        self.fps = float(fps)
        self.repeat = repeat
        self.frame_count = repeat

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while self.repeat is None or i < self.repeat:
            yield self.image.copy(), i / self.fps
            i += 1


def open_source(spec: Union[str, int, os.PathLike], **kwargs) -> Source:
    """Source from a spec: an int or digit string → webcam index; an image suffix → :class:`ImageSource`;
    anything else → :class:`VideoFileSource` (PyAV reads y4m too)."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return WebcamSource(int(spec), **kwargs)
    path = Path(spec)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path, **kwargs)
    return VideoFileSource(path, **kwargs)


def write_y4m(frames: Iterable[np.ndarray], path: Union[str, os.PathLike], fps: float = 30.0) -> int:
    """Write BGR frames as a YUV4MPEG2 (4:2:0, BT.601) file, e.g. Chromium's fake camera input.

    Args:
        frames: iterable of uint8 [H, W, 3] BGR frames, all the same size; H and W even.
        path:   output file.
        fps:    frame rate written in the header.
    Returns:
        number of frames written.
    """
    import cv2

    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    shape = None
    with open(path, "wb") as f:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"write_y4m expects uint8 [H, W, 3] BGR frames, got {frame.dtype} "
                                 f"{list(frame.shape)}")
            if shape is None:
                shape = frame.shape
                h, w = shape[:2]
                if h % 2 or w % 2:
                    raise ValueError(f"y4m 4:2:0 needs an even frame size, got {w}×{h}; crop or pad the frames")
                f.write(f"YUV4MPEG2 W{w} H{h} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg\n"
                        .encode("ascii"))
            elif frame.shape != shape:
                raise ValueError(f"frame {count} is {list(frame.shape)}, the first was {list(shape)}")
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
            count += 1
    if count == 0:
        raise ValueError("write_y4m got no frames")
    return count
