"""python -m stream: argument errors, no virtual camera device (exit 2 + how to get one), no weights (a file job
writes nothing and exits 3 with the one download command; a live output tracks the face and shows the command)."""
from __future__ import annotations

import numpy as np
import pytest

from stream.__main__ import main
from stream.effect import DOWNLOAD_COMMAND


@pytest.fixture()
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROMOTION_HOME", str(tmp_path / "home"))
    return tmp_path


def test_no_virtual_camera_device_exits_2_with_help(faces_dir, no_weights, capsys):
    rc = main(["--image", str(faces_dir / "01.jpg"), "--virtual-camera", "--direction", "smile", "--alpha", "3"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "virtual camera" in err and "v4l2loopback" in err


def test_usage_errors_exit_2(faces_dir, capsys):
    img = str(faces_dir / "01.jpg")
    assert main(["--image", img]) == 2
    assert "choose an output" in capsys.readouterr().err
    assert main(["--image", img, "--out", "x.mp4", "--direction", "a", "--direction", "b",
                 "--alpha", "1", "--alpha", "2", "--alpha", "3"]) == 2
    assert "--alpha" in capsys.readouterr().err
    assert main(["--image", "/nonexistent/face.jpg", "--out", "x.mp4"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--camera", "0", "--image", img, "--out", "x.mp4"])  # one source only


def test_file_job_without_weights_writes_nothing_and_exits_3_with_the_command(faces_dir, no_weights, capsys):
    import cv2

    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (256, 256), interpolation=cv2.INTER_AREA)
    src = no_weights / "face.png"
    cv2.imwrite(str(src), face)
    out = no_weights / "out.mp4"
    rc = main(["--image", str(src), "--out", str(out), "--frames", "3", "--direction", "smile", "--alpha", "3",
               "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 3
    assert DOWNLOAD_COMMAND in captured.err and "nothing written" in captured.err
    assert not out.exists(), "a file job that could edit nothing must not write the user's video"


class _Recorder:
    """pyvirtualcam backend keeping the frames it is sent (no device needed)."""

    sent: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height = width, height

    def send(self, frame):
        _Recorder.sent.append(frame.copy())

    def close(self):
        pass

    def device(self):
        return "recorder0"

    def native_fourcc(self):
        return None


def test_virtual_camera_through_the_driver_shows_tracking_and_the_command(faces_dir, no_weights, capsys):
    import re

    import cv2
    from pyvirtualcam.camera import BACKENDS, register_backend

    face = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (256, 256), interpolation=cv2.INTER_AREA)
    src = no_weights / "face.png"
    cv2.imwrite(str(src), face)
    register_backend("mm-recorder", _Recorder)
    _Recorder.sent = []
    try:
        rc = main(["--image", str(src), "--virtual-camera", "--vcam-backend", "mm-recorder", "--frames", "6",
                   "--fps", "30", "--device", "cpu", "--overlay"])
    finally:
        BACKENDS.pop("mm-recorder", None)
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, out
    assert DOWNLOAD_COMMAND in captured.err and "tracking only" in captured.err
    m = re.search(r"frames in (\d+), processed (\d+), dropped (\d+), written (\d+)", out)
    frames_in, processed, dropped, written = map(int, m.groups())
    assert frames_in == 6 and processed + dropped == 6
    assert len(_Recorder.sent) == written and 1 <= written <= processed
    assert _Recorder.sent[0].size == face.size  # pyvirtualcam hands the backend a flat buffer
