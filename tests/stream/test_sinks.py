import os
from fractions import Fraction

import numpy as np
import pytest

from stream.sinks import FileSink, PreviewSink
from stream.sources import VideoFileSource

FPS = 24
N_FRAMES = 36  # 1.5 s


def _frame(i, h=120, w=160):
    frame = np.full((h, w, 3), 60, np.uint8)
    frame[30:60, 3 * i:3 * i + 30] = (40, 200, 255)
    return frame


def _make_clip_with_tone(path, audio_codec="aac", seconds=2.0, rate=48000):
    """An mp4/mkv with a 440 Hz sine audio track and a moving square, written with PyAV."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream(audio_codec, rate=rate)
        audio.layout = "mono"
        fmt = "fltp" if audio_codec == "aac" else "s16"
        t = np.arange(int(seconds * rate)) / rate
        tone = 0.3 * np.sin(2 * np.pi * 440 * t)
        samples = tone.astype(np.float32) if fmt == "fltp" else (tone * 32767).astype(np.int16)
        chunk = 1024
        for start in range(0, samples.size, chunk):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + chunk], format=fmt, layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
        for i in range(int(seconds * FPS)):
            for packet in video.encode(av.VideoFrame.from_ndarray(_frame(i % 40), format="bgr24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)


def _audio_info(path):
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(a))
        return a.codec_context.name, a.codec_context.sample_rate, samples


@pytest.mark.parametrize("container,audio_codec", [("mp4", "aac"), ("mkv", "pcm_s16le")])
def test_file_sink_round_trip_with_source_audio(tmp_path, container, audio_codec):
    src_path = tmp_path / f"source.{container}"
    _make_clip_with_tone(src_path, audio_codec)
    out_path = tmp_path / "out.mp4"
    with VideoFileSource(src_path) as src:
        assert src.has_audio and src.fps == FPS and (src.width, src.height) == (160, 120)
        written = []
        with FileSink(out_path, fps=src.fps, audio_from=src.path) as sink:
            for i, (frame, t) in enumerate(src):
                if i == N_FRAMES:
                    break
                sink.write(frame, t)
                written.append(frame)
    assert sink.frames_written == N_FRAMES
    with VideoFileSource(out_path) as back:
        assert back.fps == FPS
        assert back.frame_count == N_FRAMES
        frames = list(back)
        assert back.has_audio
    assert len(frames) == N_FRAMES
    for (frame, _), want in zip(frames, written):
        assert np.abs(frame.astype(int) - want).mean() < 3  # crf 18 re-encode
    name, rate, samples = _audio_info(out_path)
    assert name == "aac" and rate == 48000
    # Audio copied (or re-encoded) and cut at the video's end (1.5 s), within an AAC frame or two.
    assert abs(samples / rate - N_FRAMES / FPS) < 0.1


def test_file_sink_without_audio_and_odd_size(tmp_path):
    path = tmp_path / "odd.mp4"
    with FileSink(path, fps=30) as sink:
        for i in range(5):
            sink.write(_frame(i, h=61, w=81))
        with pytest.raises(ValueError, match="differs"):
            sink.write(_frame(0))
    with VideoFileSource(path) as back:
        assert (back.width, back.height) == (82, 62) and back.frame_count == 5 and not back.has_audio


def test_file_sink_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="output folder"):
        FileSink(tmp_path / "nope" / "x.mp4")
    with pytest.raises(FileNotFoundError, match="audio source"):
        FileSink(tmp_path / "x.mp4", audio_from=tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="encoder"):
        FileSink(tmp_path / "x.mp4", codec="no-such-codec")
    with pytest.raises(ValueError, match="uint8"):
        FileSink(tmp_path / "x.mp4").write(np.zeros((4, 4), np.uint8))


def test_preview_headless_error(monkeypatch):
    import platform

    if platform.system() != "Linux":
        pytest.skip("display detection is for Linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="no display"):
        PreviewSink()


def _clip_with_beep(path, rate=16000, seconds=2.0, beep=(1.5, 1.7), fps=12):
    """An mp4 with MP2 audio (FileSink re-encodes it to AAC): silence, then a 440 Hz beep at `beep` seconds."""
    import av

    n = int(seconds * rate)
    t = np.arange(n) / rate
    wave = np.where((t >= beep[0]) & (t < beep[1]), 0.5 * np.sin(2 * np.pi * 440 * t), 0).astype(np.float32)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream("mp2", rate=rate)
        audio.layout = "mono"
        for i in range(int(seconds * fps)):
            vf = av.VideoFrame.from_ndarray(_frame(i % 40), format="bgr24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for packet in video.encode(vf):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        for start in range(0, n, 1152):
            af = av.AudioFrame.from_ndarray(wave[None, start:start + 1152], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, start, Fraction(1, rate)
            for packet in audio.encode(af):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path


def test_damaged_audio_is_replaced_by_silence_and_the_rest_stays_in_sync(tmp_path):
    import av

    src = _clip_with_beep(tmp_path / "beep.mp4")
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(audio=0) if p.size]
    data = bytearray(src.read_bytes())
    for pos, size in packets[5:7]:  # ~0.36-0.5 s: two MP2 frames the decoder rejects
        data[pos:pos + size] = b"\xff" * size
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with av.open(str(damaged)) as c, pytest.raises(av.error.InvalidDataError):  # really undecodable
        list(c.decode(audio=0))
    out = tmp_path / "out.mp4"
    with VideoFileSource(damaged) as source, FileSink(out, fps=source.rate, audio_from=damaged) as sink:
        for frame, _ in source:
            sink.write(frame)
    with av.open(str(out)) as c:
        samples = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
        rate = c.streams.audio[0].codec_context.sample_rate
        start = float(c.streams.audio[0].start_time * c.streams.audio[0].time_base)
    onset = start + np.argmax(np.abs(samples) > 0.1) / rate
    assert abs(onset - 1.5) < 0.03, onset  # without the silence it would come 0.14 s early
    assert abs(samples.size / rate - 2.0) < 0.1


def test_every_stage_refuses_a_bad_frame_with_the_one_message():
    """One frame check (`stream.frames.check_frame`) behind landmarks, alignment, paste-back, sinks and y4m."""
    from stream.frames import check_frame

    good = np.zeros((4, 6, 3), np.uint8)
    assert check_frame(good) is good
    for bad, got in ((good.astype(np.float32), "float32 [4, 6, 3]"), (good[..., 0], "uint8 [4, 6]"),
                     ([[0]], "list"), (None, "NoneType")):
        with pytest.raises(ValueError) as info:
            check_frame(bad, "the frame")
        assert str(info.value).startswith(f"the frame must be a uint8 [H, W, 3] BGR array, got {got};")
