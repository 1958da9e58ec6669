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
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Tuple, Union

import numpy as np

from stream.closing import Closeable
from stream.frames import check_frame

if TYPE_CHECKING:
    from stream.probe import Limits

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

    The headers are checked against ``limits`` before a frame is decoded (:mod:`stream.probe`), the decoder is
    given the pixel limit (FFmpeg ``max_pixels``), and decoding stops with `UploadRefused` once the clip proves
    longer than the frame / duration limits.

    Damaged data never ends the clip: a packet the decoder rejects is skipped and counted
    (``packets_failed``); frame slots left empty by it are counted in ``frames_lost`` and, with ``fill_lost``,
    filled by repeating the previous good frame (the first good one for slots before it) at the slot's
    timestamp, so a file job written at the source rate keeps its length and its audio in sync
    (``frames_filled``). Slots missing at the end are counted, not filled: the output then ends there and the
    sink cuts the audio at the same point (frame-threaded decoding, kept for speed, may swallow the error of a
    damaged *last* packet: such a frame is then missing at the end without being counted). A read error ends
    the pass as if the file ended there.
    :meth:`damage` gives the one-line report for the user. Gaps in the timestamps with no decoding failure
    nearby (variable frame rate) are left alone.

    ``audio`` is the input's first audio stream (``av.audio.stream.AudioStream``) or None; a
    :class:`stream.sinks.FileSink` given ``audio_from=source.path`` copies it to its output.
    """

    FAILURE_HORIZON = 16  # frames after a decoding failure within which a timestamp gap is blamed on it

    def __init__(self,
                 path: Union[str, os.PathLike],       # The file.
                 loop: bool = False,                  # Restart at the end (endless source).
                 limits: Optional["Limits"] = None,   # stream.probe.Limits; None: its defaults.
                 fill_lost: bool = True,              # Repeat the previous frame for undecodable ones.
                 ):
        from stream.probe import Limits, check_bytes, check_video, open_container, video_info

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        self.loop = bool(loop)
        self.limits = limits if limits is not None else Limits()
        self.fill_lost = bool(fill_lost)
        size = check_bytes(self.path, self.limits)
        self._container = open_container(self.path)
        try:
            self.info = video_info(self._container, self.path, size)
            check_video(self.info, self.limits)
        except BaseException:
            self._container.close()
            raise
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"
        if self.limits.max_pixels is not None:  # a frame larger than the header said fails to decode
            self._video.codec_context.options = {"max_pixels": str(int(self.limits.max_pixels))}
        self.width, self.height = self.info.width, self.info.height
        rate = self._video.average_rate or self._video.guessed_rate or self._video.base_rate
        self.fps = float(rate) if rate else None
        self.rate: Optional[Fraction] = Fraction(rate) if rate else None
        self.frame_count = self.info.frames
        self.audio = self._container.streams.audio[0] if self._container.streams.audio else None
        self.frames_decoded = 0  # frames the decoder delivered
        self.frames_lost = 0     # frame slots without a decodable picture (filled or missing at the end)
        self.frames_filled = 0   # of those, slots given the previous good frame
        self.packets_failed = 0  # packets the decoder rejected
        self.read_error: Optional[str] = None  # why reading stopped early, if it did
        self._first_error: Optional[str] = None
        self._pending = 0        # failures not yet matched with a gap in the timestamps
        self._since_failure = 0  # frames yielded since the last failure

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def damage(self) -> Optional[str]:
        """One line about undecodable data met so far (None: none). E.g. "3 frame(s) of 'a.mp4' could not be
        decoded (damaged data) and were replaced by the previous frame, so the sound stays in sync"."""
        if not (self.frames_lost or self.packets_failed or self.read_error):
            return None
        name = self.path.name
        text = f"{self.frames_lost} frame(s) of '{name}' could not be decoded (damaged data)"
        if self.frames_filled:
            text += (f"; {self.frames_filled} were replaced by the previous frame so the sound stays in sync"
                     if self.frames_filled != self.frames_lost else
                     " and were replaced by the previous frame, so the sound stays in sync")
        if self.read_error:
            text += f"; the file could not be read past that point ({self.read_error})"
        return text

    def _note_failure(self, exc: Exception) -> str:
        """Count an undecodable packet (logged: the first as a warning); returns its one-line detail."""
        self.packets_failed += 1
        self._pending += 1
        self._since_failure = 0
        detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        if self._first_error is None:
            self._first_error = detail
            logger.warning("%s: skipping undecodable data (%s); the frames lost are counted", self.path.name,
                           detail)
        else:
            logger.debug("%s: undecodable packet (%s)", self.path.name, detail)
        return detail

    def _decoded(self) -> Iterator:
        """Decoded `av.VideoFrame`s of one pass; packets the decoder rejects are counted and skipped."""
        import av

        packets = self._container.demux(self._video)
        flushed = False
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:  # the container itself is damaged: stop reading here
                self.read_error = self._note_failure(exc)
                break
            flushed = packet.size == 0
            try:
                frames = self._video.decode(packet)
            except av.error.FFmpegError as exc:
                self._note_failure(exc)
                continue
            yield from frames
        if not flushed:
            try:
                yield from self._video.decode(None)
            except av.error.FFmpegError as exc:
                self._note_failure(exc)

    def _start_time(self) -> Optional[float]:
        st, tb = self._video.start_time, self._video.time_base
        return float(st * tb) if st is not None and tb is not None else None

    def _check_decoded(self, frame, slots: int, t: float, start: float) -> None:
        """`UploadRefused` when the decoded clip exceeds what the header passed for (frames, duration, side)."""
        from stream.probe import UploadRefused, check_frame_size

        lim, name = self.limits, self.path.name
        if lim.max_frames is not None and slots > lim.max_frames:
            raise UploadRefused(f"'{name}' holds more than {lim.max_frames} frames (its header declared "
                                f"{self.info.frames or 'no count'}); trim it first")
        if lim.max_duration_s is not None and t - start > lim.max_duration_s + 1.0:
            raise UploadRefused(f"the clip '{name}' runs past {lim.max_duration_s:g} s (its header declared "
                                f"{self.info.duration_s or 'no duration'}); trim it first")
        if (frame.width, frame.height) != (self.width, self.height):
            check_frame_size(name, frame.width, frame.height, lim, "frame")

    def _pass(self) -> Iterator[Frame]:
        """One pass over the file: decoded frames, with lost slots filled (see the class docstring)."""
        step = 1.0 / self.fps if self.fps else None
        start = self._start_time()
        prev_img, prev_t, slots, index = None, None, 0, 0
        failures_at_start = self.packets_failed
        for frame in self._decoded():
            t = frame.time if frame.time is not None else index * (step or 1 / 30)
            index += 1
            self._check_decoded(frame, slots + 1, t, start or 0.0)
            image = frame.to_ndarray(format="bgr24")
            self.frames_decoded += 1
            if self._pending and self._since_failure > self.FAILURE_HORIZON:
                self._pending = 0  # that failure left no gap (concealed by the decoder)
            missing = 0
            if self._pending and step:
                if prev_t is not None:
                    missing = max(0, round((t - prev_t) / step) - 1)
                elif start is not None:
                    missing = max(0, round((t - start) / step))
            if missing:
                self._pending = 0
                self.frames_lost += missing
                slots += missing
                if self.fill_lost:
                    fill = prev_img if prev_img is not None else image
                    base = prev_t if prev_t is not None else start - step
                    for k in range(1, missing + 1):
                        self.frames_filled += 1
                        yield fill.copy(), base + k * step
            self._since_failure += 1
            slots += 1
            prev_img, prev_t = image, t
            yield image, t
        if self.packets_failed > failures_at_start:
            if slots == 0:
                from stream.probe import UploadRefused

                raise UploadRefused(f"no frame of '{self.path.name}' could be decoded ({self._first_error}); the "
                                    f"file is damaged or its codec is not supported -- re-encode it (H.264 mp4)")
            expected = self.frame_count or self.info.frames_estimated
            if expected and expected > slots:  # lost at the end: counted, not filled
                self.frames_lost += expected - slots
        self._pending = 0

    def __iter__(self) -> Iterator[Frame]:
        offset = 0.0
        while True:
            last_t, count = 0.0, 0
            for image, t in self._pass():
                last_t, count = t, count + 1
                yield image, offset + t
            if not self.loop or count == 0:
                return
            offset += last_t + 1.0 / (self.fps or 30.0)
            self._container.seek(0)

    def close(self) -> None:
        self._container.close()


def read_image(path: Union[str, os.PathLike], limits: Optional["Limits"] = None) -> np.ndarray:
    """An image file as uint8 [H, W, 3] BGR, its header checked against ``limits`` before decoding.

    limits: `stream.probe.Limits` (None: its defaults). Raises FileNotFoundError, or `UploadRefused` (a
    ValueError) for a file that is not a jpg / png / bmp / webp image or declares too many pixels.
    """
    import cv2

    from stream.probe import Limits, UploadRefused, probe_image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    limits = limits if limits is not None else Limits()
    info = probe_image(path, limits)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies the EXIF orientation (may swap H and W)
    if image is None:
        raise UploadRefused(f"'{path.name}' could not be read as an image (its {info.format} data is damaged); "
                            f"give a jpg or png photo")
    if sorted(image.shape[:2]) != sorted((info.height, info.width)):
        raise UploadRefused(f"'{path.name}' decodes to {image.shape[1]}×{image.shape[0]} but declares "
                            f"{info.width}×{info.height}; re-save it as a plain jpg or png")
    return image


class ImageSource(Source):
    """A still image, yielded ``repeat`` times at ``fps`` (repeat=None: endless, e.g. a test pattern camera)."""

    def __init__(self,
                 path: Union[str, os.PathLike],       # The picture (jpg, png, bmp, webp).
                 repeat: Optional[int] = 1,            # How many frames; None: endless.
                 fps: float = 30.0,                    # Timestamp rate of the repeated frames.
                 limits: Optional["Limits"] = None,    # stream.probe.Limits checked on the header; None: defaults.
                 ):
        self.path = Path(path)
        self.image = read_image(self.path, limits)
        self.height, self.width = self.image.shape[:2]
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
            frame = check_frame(frame, "a write_y4m frame")
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
