import glob

import numpy as np
import pytest

from stream.sinks import VirtualCameraSink, VirtualCameraUnavailable


class RecordingBackend:
    """A pyvirtualcam backend (the interface of pyvirtualcam.camera.Backend) that keeps what it is sent."""
    instances = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        import pyvirtualcam
        from pyvirtualcam.util import decode_fourcc

        self.width, self.height, self.fps, self.device_name = width, height, fps, device
        self.fmt = pyvirtualcam.PixelFormat(decode_fourcc(fourcc)).name
        self.frames = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def close(self):
        self.closed = True

    def send(self, frame):
        self.frames.append(frame.copy())

    def device(self):
        return self.device_name or "recording0"

    def native_fourcc(self):
        return None


class RgbOnlyBackend(RecordingBackend):
    def __init__(self, *, fourcc, **kw):
        import pyvirtualcam
        from pyvirtualcam.util import decode_fourcc

        if decode_fourcc(fourcc) != pyvirtualcam.PixelFormat.RGB.value:
            raise RuntimeError(f"pixel format {decode_fourcc(fourcc)} not supported")
        super().__init__(fourcc=fourcc, **kw)


@pytest.fixture()
def backends():
    from pyvirtualcam.camera import BACKENDS, register_backend

    register_backend("recording", RecordingBackend)
    register_backend("rgb-only", RgbOnlyBackend)
    RecordingBackend.instances.clear()
    yield
    BACKENDS.pop("recording", None)
    BACKENDS.pop("rgb-only", None)


def _frames(n, w=64, h=48):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_recording_backend_receives_frames_at_size_and_rate(backends):
    frames = _frames(5)
    with VirtualCameraSink(64, 48, fps=25, backend="recording") as cam:
        for f in frames:
            cam.write(f)
        assert cam.frames_sent == 5 and cam.device == "recording0"
    rec = RecordingBackend.instances[-1]
    assert (rec.width, rec.height, rec.fps) == (64, 48, 25.0)
    assert rec.fmt == "BGR" and rec.closed
    assert len(rec.frames) == 5
    for got, want in zip(rec.frames, frames):
        assert np.array_equal(got.reshape(48, 64, 3), want)  # BGR passed through unchanged


def test_rgb_only_backend_gets_converted_frames(backends):
    frames = _frames(2)
    with VirtualCameraSink(64, 48, fps=30, backend="rgb-only") as cam:
        for f in frames:
            cam.write(f)
    rec = RecordingBackend.instances[-1]
    assert rec.fmt == "RGB"
    assert np.array_equal(rec.frames[0].reshape(48, 64, 3), frames[0][..., ::-1])


def test_wrong_frame_size_and_backend(backends):
    with VirtualCameraSink(64, 48, backend="recording") as cam:
        with pytest.raises(ValueError, match="64×48"):
            cam.write(np.zeros((48, 65, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown virtual camera backend"):
        VirtualCameraSink(64, 48, backend="nope")


def test_no_device_error_explains_how_to_get_one():
    import platform

    if platform.system() != "Linux" or glob.glob("/dev/video*"):
        pytest.skip("needs a Linux machine without video devices")
    with pytest.raises(VirtualCameraUnavailable) as info:
        VirtualCameraSink(640, 480, fps=30)
    message = str(info.value)
    assert "modprobe v4l2loopback devices=1 exclusive_caps=1" in message
    assert "v4l2loopback-dkms" in message and "OBS" in message
    assert "\n" not in message
