"""Frame sinks: a preview window (OpenCV), an mp4 file (PyAV, with the source's audio), a virtual camera
(pyvirtualcam). Each takes uint8 [H, W, 3] BGR frames through ``write(frame)`` and is a context manager.
"""
from __future__ import annotations

import logging
import os
import platform
from fractions import Fraction
from pathlib import Path
from typing import Optional, Union

import numpy as np

from stream.closing import Closeable
from stream.frames import check_frame

logger = logging.getLogger(__name__)

# Audio codecs the mp4 muxer takes as they are; anything else is re-encoded to AAC.
MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}

VIRTUAL_CAMERA_HELP = (
    "Linux: sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
    "card_label=micromotion; Windows/macOS: install OBS Studio and click 'Start Virtual Camera' once")


class Sink(Closeable):
    def write(self, frame_bgr: np.ndarray, timestamp_s: Optional[float] = None) -> None:  # pragma: no cover
        raise NotImplementedError


class PreviewSink(Sink):
    """An OpenCV window. ``write`` returns False once the user pressed q or Esc (or closed the window); other keys
    pressed are kept in ``pressed`` (the live run turns them into controls: stream.control.apply_key)."""

    def __init__(self, window: str = "micromotion"):
        if platform.system() == "Linux" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise RuntimeError("no display for a preview window (DISPLAY is not set); run without the preview "
                               "or write to a file / virtual camera instead")
        self.window = window
        self._open = False
        self.pressed: list[int] = []

    def write(self, frame_bgr: np.ndarray, timestamp_s: Optional[float] = None) -> bool:
        import cv2

        frame = check_frame(frame_bgr)
        try:
            cv2.imshow(self.window, frame)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as e:
            raise RuntimeError(f"cannot open a preview window ({str(e).strip().splitlines()[-1]}); run without "
                               "the preview or write to a file / virtual camera instead") from e
        self._open = True
        if key in (ord("q"), 27):
            return False
        if key != 255:
            self.pressed.append(key)
        return cv2.getWindowProperty(self.window, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self._open:
            import cv2

            cv2.destroyWindow(self.window)
            self._open = False


class FileSink(Sink):
    """Encode frames to a video file (H.264 mp4 by default) with PyAV, optionally with another file's audio.

    Frames get constant-rate timestamps (frame index / fps). The audio of ``audio_from`` (e.g. the input
    video) is copied packet by packet when the container takes its codec (AAC, MP3, Opus, …), otherwise
    re-encoded to AAC, and cut at the end of the written video.
    """

    def __init__(self,
                 path: Union[str, os.PathLike],                      # Output file (.mp4, .mkv, …).
                 fps: float = 30.0,                                  # Frame rate.
                 audio_from: Union[str, os.PathLike, None] = None,  # File whose first audio stream is copied.
                 codec: str = "libx264",                             # Video encoder (h264 in the av wheel).
                 crf: int = 18,                                      # x264 quality (lower = better).
                 metadata: Optional[dict] = None,                    # Container tags, e.g. {"comment": …}
                                                                     # (mp4 keeps title/comment/description…).
                 ):
        import av

        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output folder does not exist: {self.path.parent}")
        self.rate = Fraction(fps).limit_denominator(1001)
        self.fps = float(self.rate)
        self.audio_from = Path(audio_from) if audio_from is not None else None
        if self.audio_from is not None and not self.audio_from.is_file():
            raise FileNotFoundError(f"audio source not found: {self.audio_from}")
        try:
            av.codec.Codec(codec, "w")
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"video encoder {codec!r} is not in this PyAV build; use libx264 or mpeg4") from e
        self.codec = codec
        self.crf = int(crf)
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self._container = None
        self._stream = None
        self._size = None
        self._audio_src = None
        self._audio_out = None
        self._audio_copy = False
        self.frames_written = 0

    def _open(self, width: int, height: int) -> None:
        import av

        self._container = av.open(str(self.path), mode="w")
        self._container.metadata.update(self.metadata)
        options = {"crf": str(self.crf), "preset": "veryfast"} if self.codec == "libx264" else {}
        self._stream = self._container.add_stream(self.codec, rate=self.rate, options=options)
        self._stream.width = width + (width % 2)   # 4:2:0 needs even sizes: odd frames get one
        self._stream.height = height + (height % 2)  # replicated column/row
        self._stream.pix_fmt = "yuv420p"
        self._time_base = Fraction(1, 1) / self.rate  # frame pts unit (the muxer may change the stream's)
        self._stream.codec_context.time_base = self._time_base
        self._size = (height, width)
        if self.audio_from is not None:
            self._add_audio_stream()

    def write(self, frame_bgr: np.ndarray, timestamp_s: Optional[float] = None) -> None:
        """Append one frame (the timestamp is ignored: constant rate)."""
        import av
        import cv2

        frame = check_frame(frame_bgr)
        if self._container is None:
            self._open(frame.shape[1], frame.shape[0])
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[1]}×{frame.shape[0]} differs from the first frame's "
                             f"{self._size[1]}×{self._size[0]}; a video file has one size")
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = cv2.copyMakeBorder(frame, 0, frame.shape[0] % 2, 0, frame.shape[1] % 2, cv2.BORDER_REPLICATE)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        video_frame.pts = self.frames_written
        video_frame.time_base = self._time_base
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, add the audio, finish the file (idempotent)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            if self._audio_src is not None:
                self._mux_audio(duration_s=self.frames_written / self.fps)
        finally:
            self._container.close()
            self._container = None

    def _add_audio_stream(self) -> None:
        """Open ``audio_from`` and add the output audio stream (before the header is written)."""
        import av

        self._audio_src = av.open(str(self.audio_from))
        if not self._audio_src.streams.audio:
            logger.warning("%s has no audio stream; writing video only", self.audio_from)
            self._audio_src.close()
            self._audio_src = None
            return
        in_audio = self._audio_src.streams.audio[0]
        self._audio_copy = in_audio.codec_context.name in MP4_AUDIO_CODECS
        if self._audio_copy:
            self._audio_out = self._container.add_stream_from_template(in_audio)
        else:
            self._audio_out = self._container.add_stream("aac", rate=in_audio.codec_context.sample_rate)
            channels = in_audio.codec_context.channels or 2
            # AAC wants a named layout; sources like PCM in mkv may only say "1 channels".
            self._audio_out.layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, "stereo")
            self._audio_out.format = "fltp"  # what FFmpeg's AAC encoder takes

    def _mux_audio(self, duration_s: float) -> None:
        """Copy / re-encode the source audio up to ``duration_s`` seconds.

        Damaged audio never costs the file: a packet the decoder rejects is skipped, a read error ends the audio
        there (both logged). Re-encoding follows the source's timestamps: where audio is missing (skipped
        packets, or a decoder that dropped damaged data) silence of the same length is written, so everything
        after it stays in sync with the picture. Copied packets keep their own timestamps.
        """
        source = self._audio_src
        in_audio = source.streams.audio[0]
        try:
            if self._audio_copy:
                for packet in self._audio_packets(source, in_audio):
                    if packet.dts is None:  # flush packet
                        continue
                    if packet.pts is not None and float(packet.pts * packet.time_base) >= duration_s:
                        break
                    packet.stream = self._audio_out
                    self._container.mux(packet)
                return
            self._reencode_audio(source, in_audio, duration_s)
        finally:
            source.close()
            self._audio_src = None

    def _audio_packets(self, source, in_audio):
        """The audio stream's packets; a read error ends them (logged), the file stays writable."""
        import av

        packets = source.demux(in_audio)
        while True:
            try:
                yield next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                logger.warning("%s: audio unreadable from here on (%s); the rest of the output is silent",
                               self.audio_from, exc)
                return

    def _reencode_audio(self, source, in_audio, duration_s: float) -> None:
        """Decode → resample → AAC, with silence where the source's timestamps jump ahead (lost audio)."""
        import av

        out_audio = self._audio_out
        rate = out_audio.codec_context.sample_rate
        resampler = av.AudioResampler(format="fltp", layout=out_audio.layout, rate=rate)
        written = 0       # samples sent to the encoder
        origin = None     # source time of the first decoded frame (the output's 0)
        failed = 0
        for packet in self._audio_packets(source, in_audio):
            try:
                decoded = in_audio.decode(packet)
            except av.error.FFmpegError as exc:
                failed += 1
                logger.debug("%s: skipping an undecodable audio packet (%s)", self.audio_from, exc)
                continue
            for frame in decoded:
                if frame.time is not None:
                    if frame.time >= duration_s:
                        break
                    origin = frame.time if origin is None else origin
                    gap = round((frame.time - origin) * rate) - written
                    if gap > rate // 100:  # more than 10 ms missing: fill it with silence
                        written = self._encode_audio(self._silence(gap), written)
                frame.pts = None
                for converted in resampler.resample(frame):
                    written = self._encode_audio(converted, written)
            else:
                continue
            break
        for converted in resampler.resample(None):
            written = self._encode_audio(converted, written)
        for packet in out_audio.encode(None):
            self._container.mux(packet)
        if failed:
            logger.warning("%s: %d undecodable audio packet(s) replaced by silence", self.audio_from, failed)

    def _encode_audio(self, frame, written: int) -> int:
        """Encode one output-format audio frame at sample position `written`; returns the new position."""
        rate = self._audio_out.codec_context.sample_rate
        frame.pts, frame.time_base = written, Fraction(1, rate)
        for packet in self._audio_out.encode(frame):
            self._container.mux(packet)
        return written + frame.samples

    def _silence(self, samples: int):
        """`samples` of silence in the output's format (fltp, its layout and rate)."""
        import av

        out = self._audio_out
        frame = av.AudioFrame(format="fltp", layout=out.layout, samples=samples)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = out.codec_context.sample_rate
        return frame


class VirtualCameraUnavailable(RuntimeError):
    """No virtual camera device; the message says how to get one."""


class VirtualCameraSink(Sink):
    """Send frames to a virtual camera (v4l2loopback on Linux, OBS on Windows/macOS) through pyvirtualcam.

    Frames are BGR; the camera is opened in BGR when the backend takes it (pyvirtualcam converts to the
    device's native format), else in RGB with the conversion done here.
    """

    def __init__(self,
                 width: int,                     # Camera frame width (frames must have this size).
                 height: int,                    # Camera frame height.
                 fps: float = 30.0,              # Advertised frame rate.
                 backend: Optional[str] = None,  # pyvirtualcam backend name (None: the platform's).
                 device: Optional[str] = None,   # Device (e.g. /dev/video10) or camera name; None: any.
                 ):
        try:
            import pyvirtualcam
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("pyvirtualcam is not installed; pip install pyvirtualcam==0.15.0") from e
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            raise ValueError(f"unknown virtual camera backend {backend!r}; known: "
                             f"{sorted(pyvirtualcam.camera.BACKENDS)}")
        errors = []
        self._camera = None
        self._rgb = False
        for fmt in (pyvirtualcam.PixelFormat.BGR, pyvirtualcam.PixelFormat.RGB):
            try:
                self._camera = pyvirtualcam.Camera(self.width, self.height, self.fps, fmt=fmt, backend=backend,
                                                   device=device)
            except RuntimeError as e:
                errors.append(" ".join(str(e).split()))
                if "format" not in str(e).lower():  # not a format problem: no point trying RGB
                    break
            else:
                self._rgb = fmt == pyvirtualcam.PixelFormat.RGB
                break
        if self._camera is None:
            raise VirtualCameraUnavailable(f"no virtual camera available ({'; '.join(errors)}). "
                                           f"To get one — {VIRTUAL_CAMERA_HELP}")
        logger.info("virtual camera %s (%s backend) %dx%d @ %.1f fps", self._camera.device,
                    self._camera.backend, self.width, self.height, self.fps)

    @property
    def device(self) -> str:
        return self._camera.device

    @property
    def frames_sent(self) -> int:
        return self._camera.frames_sent

    def write(self, frame_bgr: np.ndarray, timestamp_s: Optional[float] = None) -> None:
        frame = check_frame(frame_bgr)
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {frame.shape[1]}×{frame.shape[0]} but the virtual camera is "
                             f"{self.width}×{self.height}; resize the frames or reopen the camera")
        if self._rgb:
            frame = frame[..., ::-1]
        self._camera.send(np.ascontiguousarray(frame))

    def sleep_until_next_frame(self) -> None:
        """Pace the caller to the camera's frame rate."""
        self._camera.sleep_until_next_frame()

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None
