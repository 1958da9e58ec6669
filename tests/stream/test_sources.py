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
    with pytest.raises(ValueError, match="could not be read as an image"):
        S.ImageSource(bad)
    with pytest.raises(FileNotFoundError):
        S.ImageSource(tmp_path / "missing.jpg")


def test_video_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        S.VideoFileSource(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="not a readable video"):
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


# ------------------------------------------------------------------------------------------------ damaged clips


GOP = 12  # hostile_media.damaged_clip's keyframe interval


def _decodable_slots(path, fps) -> set:
    """Frame slots an independent packet-by-packet decode gets out of the file (errors skipped)."""
    import av

    got = set()
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        for packet in c.demux(vs):
            try:
                got.update(round(f.time * fps) for f in vs.decode(packet))
            except av.error.InvalidDataError:
                pass
    return got


def _bar_column(frame) -> int:
    """Where `hostile_media.pattern`'s bright bar is (its left edge)."""
    return int(np.argmax(frame[48, :, 2] > 200))


@pytest.mark.parametrize("b_frames, damage", [(0, (18,)), (3, (18,)), (0, (0,)), (2, (7, 25))],
                         ids=["P-frame", "with-B-frames", "first-keyframe", "two-places"])
def test_damaged_packets_are_skipped_counted_and_filled(tmp_path, b_frames, damage):
    import av

    from hostile_media import damaged_clip, pattern

    n, fps = 36, 12
    path, _ = damaged_clip(tmp_path / "damaged.mp4", n=n, fps=fps, damage=damage, b_frames=b_frames)
    with av.open(str(path)) as c, pytest.raises(av.error.InvalidDataError):  # the decoder really fails there
        list(c.decode(video=0))
    good = _decodable_slots(path, fps)
    assert 0 < len(good) < n
    with S.VideoFileSource(path) as src:
        items = list(src)
    times = [t for _, t in items]
    assert np.allclose(times, np.arange(n) / fps)  # every slot, in order: the clip keeps its length
    assert src.frames_lost == src.frames_filled == n - len(good) and src.packets_failed == len(damage)
    assert src.frames_decoded == len(good)
    first_good, first_lost, last_lost = min(good), min(set(range(n)) - good), max(set(range(n)) - good)
    # frames outside the damaged GOPs are not predicted from damaged data (inside them B/P-frames may be)
    clean = [i for i in good if i < first_lost // GOP * GOP or i >= (last_lost // GOP + 1) * GOP]
    assert clean or damage == (7, 25)
    for i, (frame, _) in enumerate(items):
        if i in clean:  # decoded frames sit at their own slot (the bar is where pattern(i) put it)
            assert _bar_column(frame) == _bar_column(pattern(i)), i
        elif i in good:  # decoded from a damaged reference: the decoder's concealment, at its own slot
            continue
        elif i < first_good:  # lost before the first good frame: that frame stands in
            assert np.array_equal(frame, items[first_good][0])
        else:  # lost: the previous frame, repeated
            assert np.array_equal(frame, items[i - 1][0]), i
    report = src.damage()
    assert report.startswith(f"{n - len(good)} frame(s) of 'damaged.mp4' could not be decoded") and "\n" not in report


def test_lost_frames_at_the_end_are_counted_not_filled(tmp_path):
    from hostile_media import damaged_clip

    path, _ = damaged_clip(tmp_path / "tail.mp4", n=24, damage=(22,))
    with S.VideoFileSource(path) as src:
        items = list(src)
    assert src.frames_lost >= 1 and src.frames_filled == 0 and len(items) + src.frames_lost == 24
    assert np.allclose([t for _, t in items], np.arange(len(items)) / 12)


def test_fill_can_be_turned_off_and_an_undecodable_clip_is_refused(tmp_path):
    from hostile_media import damaged_clip
    from stream.probe import UploadRefused

    path, _ = damaged_clip(tmp_path / "d.mp4", n=24, damage=(12,))
    good = _decodable_slots(path, 12)
    with S.VideoFileSource(path, fill_lost=False) as src:
        assert len(list(src)) == len(good) and src.frames_lost == 24 - len(good) and src.frames_filled == 0
    dead, _ = damaged_clip(tmp_path / "dead.mp4", n=6, damage=range(6))
    with S.VideoFileSource(dead) as src, pytest.raises(UploadRefused, match="no frame of 'dead.mp4' could be decoded"):
        list(src)


def test_damaged_clip_written_with_its_audio_stays_in_sync(tmp_path):
    """Source → FileSink with the source's audio: as many frames as the input, the whole sound track."""
    import av

    from hostile_media import damaged_clip
    from stream.sinks import FileSink

    n, fps = 36, 12
    path, _ = damaged_clip(tmp_path / "talk.mp4", n=n, fps=fps, damage=(14,), audio_rate=16000)
    out = tmp_path / "out.mp4"
    with S.VideoFileSource(path) as src, FileSink(out, fps=src.rate, audio_from=path) as sink:
        for frame, _ in src:
            sink.write(frame)
    assert src.frames_lost >= 1
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        audio_s = sum(f.samples for f in c.decode(audio=0)) / 16000
    assert len(frames) == n
    assert abs(audio_s - n / fps) < 0.1, audio_s
    from hostile_media import pattern

    for i in range(2 * GOP, n):  # past the next keyframe, picture i is still shown at time i / fps
        assert abs(_bar_column(frames[i]) - _bar_column(pattern(i))) <= 1, i
