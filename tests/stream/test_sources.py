import numpy as np
import pytest

from stream import sources as S


def _pattern(i, h=96, w=128):
    """A frame that encodes its index: a bright square moving right, on a colour ramp."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None]
    frame[..., 1] = 80
    frame[20:40, 4 * i:4 * i + 20] = 255
    return frame


def test_y4m_round_trip_through_pyav_and_opencv(tmp_path):
    import cv2

    frames = [_pattern(i) for i in range(12)]
    path = tmp_path / "clip.y4m"
    assert S.write_y4m(frames, path, fps=25) == 12
    assert path.read_bytes().startswith(b"YUV4MPEG2 W128 H96 F25:1")
    with S.open_source(str(path)) as src:
        assert isinstance(src, S.VideoFileSource)
        assert (src.width, src.height, src.fps) == (128, 96, 25.0)
        got = list(src)
    assert len(got) == 12
    assert np.allclose([t for _, t in got], np.arange(12) / 25)
    for (frame, _), want in zip(got, frames):
        assert np.abs(frame.astype(int) - want).mean() < 4  # 4:2:0 chroma subsampling only
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read()
    cap.release()
    assert ok and np.abs(first.astype(int) - frames[0]).mean() < 4


def test_y4m_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        S.write_y4m([np.zeros((5, 6, 3), np.uint8)], tmp_path / "a.y4m")
    with pytest.raises(ValueError, match="the first was"):
        S.write_y4m([np.zeros((4, 6, 3), np.uint8), np.zeros((6, 6, 3), np.uint8)], tmp_path / "b.y4m")
    with pytest.raises(ValueError, match="no frames"):
        S.write_y4m([], tmp_path / "c.y4m")


def test_image_source(tmp_path, faces_dir):
    src = S.open_source(faces_dir / "mona_lisa.jpg", repeat=3, fps=10)
    assert isinstance(src, S.ImageSource) and (src.width, src.height) == (460, 686)
    items = list(src)
    assert [t for _, t in items] == [0.0, 0.1, 0.2]
    assert all(f.shape == (686, 460, 3) and f.dtype == np.uint8 for f, _ in items)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        S.ImageSource(bad)
    with pytest.raises(FileNotFoundError):
        S.ImageSource(tmp_path / "missing.jpg")


def test_video_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        S.VideoFileSource(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="cannot read video"):
        S.VideoFileSource(junk)


def test_video_source_loop(tmp_path):
    path = tmp_path / "clip.y4m"
    S.write_y4m([_pattern(i) for i in range(4)], path, fps=20)
    with S.VideoFileSource(path, loop=True) as src:
        it = iter(src)
        times = [next(it)[1] for _ in range(10)]
    assert np.allclose(times, np.arange(10) / 20)


def test_webcam_missing_device_error():
    import glob

    if glob.glob("/dev/video*"):
        pytest.skip("this machine has video devices")
    with pytest.raises(RuntimeError, match="cannot open webcam 7"):
        S.open_source("7")
