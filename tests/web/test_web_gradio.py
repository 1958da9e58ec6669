"""The Gradio app's functions on real media: a clip made from a face photo with a sine audio track, a photo.

The effect is the full `stream.effect.Effect` with tiny random networks (MediaPipe landmarks are real).
One test also drives the launched app through gradio_client on 127.0.0.1 (in a loopback-only namespace).
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from web_netns import rerun_in_netns

FPS = 12
N_FRAMES = 12
SAMPLE_RATE = 44100


def make_face_clip(face_path: Path, out: Path, n: int = N_FRAMES, fps: int = FPS) -> Path:
    """An H.264 mp4 of the face (320×240, slight motion) with a 440 Hz AAC sine track of the same length."""
    import av
    import cv2

    from web.loadtest import moving_face_frames

    frames = moving_face_frames(cv2.imread(str(face_path)), size=(320, 240), n=n)
    with av.open(str(out), "w") as container:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 320, 240, "yuv420p"
        aus = container.add_stream("aac", rate=SAMPLE_RATE)
        aus.layout = "mono"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="bgr24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for p in vs.encode(vf):
                container.mux(p)
        for p in vs.encode():
            container.mux(p)
        total = int(SAMPLE_RATE * n / fps)
        t = np.arange(total) / SAMPLE_RATE
        wave = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
        for start in range(0, total, 1024):
            chunk = wave[start:start + 1024]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            for p in aus.encode(af):
                container.mux(p)
        for p in aus.encode():
            container.mux(p)
    return out


def probe(path: Path) -> dict:
    """Decode the whole file: video frame count and rate, audio stream and its decoded duration."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        rate = float(vs.average_rate)
        n = sum(1 for _ in c.decode(vs))
    with av.open(str(path)) as c:
        audio = c.streams.audio[0] if c.streams.audio else None
        samples = sum(f.samples for f in c.decode(audio)) if audio is not None else 0
        sr = audio.codec_context.sample_rate if audio is not None else None
    return {"frames": n, "fps": rate, "audio": audio is not None, "audio_s": samples / sr if sr else 0.0}


@pytest.fixture(scope="module")
def tiny_effect():
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets

    _, E, deltas = build_tiny_nets()
    return Effect(EffectConfig(device="cpu"), encoder=E, directions=deltas)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory, faces_dir) -> Path:
    return make_face_clip(faces_dir / "01.jpg", tmp_path_factory.mktemp("clip") / "face.mp4")


def test_edit_clip_keeps_frames_rate_and_audio(tiny_effect, face_clip, tmp_path):
    from web.gradio_edit import edit_clip, make_controls

    src = probe(face_clip)
    assert src == {**src, "frames": N_FRAMES, "audio": True} and abs(src["fps"] - FPS) < 1e-6
    seen = []
    out = edit_clip(tiny_effect, face_clip, tmp_path / "edited.mp4",
                    make_controls(tiny_effect, "smile", 3.0, animate=True, period_s=1.0),
                    progress=lambda frac, text: seen.append(frac))
    assert out["frames"] == N_FRAMES and out["audio"]
    got = probe(out["path"])
    assert got["frames"] == N_FRAMES
    assert abs(got["fps"] - FPS) < 1e-6
    assert got["audio"] and abs(got["audio_s"] - src["audio_s"]) < 0.1, (got, src)
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    # the faces were edited (not a copy of the input): compare decoded frames over the face
    import av
    with av.open(str(face_clip)) as a, av.open(str(out["path"])) as b:
        fa = [f.to_ndarray(format="bgr24") for f in a.decode(video=0)]
        fb = [f.to_ndarray(format="bgr24") for f in b.decode(video=0)]
    face = (slice(60, 180), slice(80, 240))
    diffs = [np.abs(x[face].astype(np.float32) - y[face]).mean() for x, y in zip(fa, fb)]
    assert max(diffs) > 5, diffs


def test_photo_micromotion_frames_follow_t(tiny_effect, faces_dir, tmp_path):
    from web.gradio_edit import render_image

    photo = tmp_path / "face.png"
    import cv2
    cv2.imwrite(str(photo), cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (320, 240)))
    out = render_image(tiny_effect, photo, "smile", 4.0, n_frames=5, fps=12, out_dir=tmp_path, warmup=1)
    frames = out["frames"]
    assert len(frames) == 5 and all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
    face = (slice(60, 180), slice(80, 240))
    d = [np.abs(f[face].astype(np.float32) - frames[0][face]).mean() for f in frames]
    assert d[-1] > 5 and d[-1] > d[2] > d[0] == 0, d        # V0 + α·t·ΔV: further from V0 as t grows
    assert probe(out["video"])["frames"] == 2 * 5 - 2        # forth and back
    from PIL import Image
    with Image.open(out["gif"]) as gif:
        assert gif.n_frames == 2 * 5 - 2


def test_uploads_refused_with_a_message(tmp_path, faces_dir, face_clip):
    from web.gradio_uploads import Limits, UploadRefused, check_image_upload, check_video_upload

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(UploadRefused, match="not a readable video"):
        check_video_upload(text)
    jpeg_as_mp4 = tmp_path / "photo.mp4"
    jpeg_as_mp4.write_bytes((faces_dir / "01.jpg").read_bytes())
    with pytest.raises(UploadRefused, match="no video stream"):
        check_video_upload(jpeg_as_mp4)
    with pytest.raises(UploadRefused, match="not a video type"):
        check_video_upload(faces_dir / "01.jpg")
    with pytest.raises(UploadRefused, match="over the 0.01 MB limit"):
        check_video_upload(face_clip, Limits(max_video_mb=0.01))
    with pytest.raises(UploadRefused, match="over the 0.5 s limit"):
        check_video_upload(face_clip, Limits(max_clip_s=0.5))
    assert check_video_upload(face_clip)["frames"] == N_FRAMES
    with pytest.raises(UploadRefused, match="not a photo type"):
        check_image_upload(face_clip)
    fake_png = tmp_path / "x.png"
    fake_png.write_bytes(b"\x89PNG not really")
    with pytest.raises(UploadRefused, match="could not be read"):
        check_image_upload(fake_png)
    with pytest.raises(UploadRefused, match="over the 0.001 MB limit"):
        check_image_upload(faces_dir / "01.jpg", Limits(max_image_mb=0.001))
    with pytest.raises(UploadRefused, match="no photo"):
        check_image_upload(None)
    # Gradio's FileData dict (events wired with preprocess=False hand it over untouched)
    assert check_video_upload({"path": str(face_clip), "orig_name": "face.mp4"})["frames"] == N_FRAMES
    assert check_image_upload({"path": str(faces_dir / "01.jpg")}).ndim == 3


@pytest.fixture(scope="module")
def upload_bombs(tmp_path_factory):
    from hostile_media import fast_long_clip, huge_frame_clip, huge_png

    d = tmp_path_factory.mktemp("bombs")
    return {"photo": huge_png(d / "huge.png"), "clip": huge_frame_clip(d / "huge.mp4"),
            "fast": fast_long_clip(d / "fast.mp4")}


@pytest.mark.parametrize("kind, call, refusal", [
    ("photo", "check_image_upload(p)", "'huge.png' declares images of 13000×13000 pixels"),
    ("clip", "check_video_upload(p)", "'huge.mp4' declares frames of 8192×8192 pixels"),
    ("fast", "check_video_upload(p)", "'fast.mp4' declares 1000 frames per second"),
    ("fast", "check_video_upload(p, Limits(max_fps=1000))", "'fast.mp4' declares 30000 frames, over the 18000"),
])
def test_upload_bombs_refused_from_their_headers_before_decoding(upload_bombs, kind, call, refusal):
    """Issue 15: a 164 kB PNG of 13000² cost +1 GB before its refusal, an 8192² mp4 (198 kB) and a 30000-frame
    1000 fps clip were accepted. Now each is refused from its header; peak memory measured in a fresh process."""
    from hostile_media import peak_rss_growth

    setup = ("import av, cv2, numpy, PIL.Image\n"
             "from web.gradio_uploads import Limits, check_image_upload, check_video_upload\n"
             f"p = {str(upload_bombs[kind])!r}")
    got = peak_rss_growth(setup, call)
    assert got["outcome"].startswith(f"UploadRefused: {refusal}"), got
    assert got["growth_mb"] < 48, got


def test_webcam_session_edits_rgb_frames(tiny_effect, faces_dir):
    import cv2

    from web.gradio_edit import WebcamSession

    rgb = cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (320, 240))[..., ::-1].copy()
    session = WebcamSession(tiny_effect)
    try:
        outs = [session.step(rgb, "smile", 4.0, animate=False) for _ in range(2)]
        assert all(o.shape == rgb.shape and o.dtype == np.uint8 for o in outs)
        assert np.abs(outs[-1].astype(np.float32) - rgb).mean() > 1
        assert session.step(None, "smile", 1.0, False) is None
        with pytest.raises(ValueError, match="unknown direction"):
            session.step(rgb, "frown", 1.0, False)
    finally:
        session.close()


def test_gradio_api_clip_photo_and_refusals_over_loopback(request, tiny_effect, face_clip, faces_dir, tmp_path):
    """Launch the app on 127.0.0.1 and call its /clip and /photo endpoints with gradio_client (loopback namespace)."""
    if rerun_in_netns(request, timeout=300):
        return
    import os

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from gradio_client import Client, handle_file

    import cv2

    from web.gradio_app import build_app
    from web.loadtest import free_port

    face_photo = tmp_path / "small.jpg"
    cv2.imwrite(str(face_photo), cv2.resize(cv2.imread(str(faces_dir / "01.jpg")), (320, 240)))
    port = free_port()
    app = build_app(tiny_effect)
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        video, summary = client.predict(handle_file(str(face_clip)), "smile", 3.0, True, 2.0, api_name="/clip")
        path = video["video"] if isinstance(video, dict) else video
        got = probe(Path(path))
        assert got["frames"] == N_FRAMES and abs(got["fps"] - FPS) < 1e-6 and got["audio"]
        assert f"{N_FRAMES} frames" in summary and "audio kept" in summary
        text = tmp_path / "notes.mp4"
        text.write_text("not a video")
        with pytest.raises(Exception, match="not a readable video"):
            client.predict(handle_file(str(text)), "smile", 3.0, True, 2.0, api_name="/clip")
        # a photo at α 9.5 (beyond the slider's starting [0, 5]: any |α| <= 100 in every door), the status beside
        # it; a non-image gets this app's one line, no paths
        photo = tmp_path / "face.jpg"
        photo.write_bytes(face_photo.read_bytes())
        status, gifs, files, frames = client.predict([handle_file(str(photo))], "smile", 9.5, 2, api_name="/photo")
        assert "'face.jpg': 1 face edited in 2 of 2 frames" in status, status
        assert len(gifs) == 1 and len(files) == 2 and len(frames) == 2
        notes = tmp_path / "notes.jpg"
        notes.write_text("not a photo")
        with pytest.raises(Exception) as refused:
            client.predict([handle_file(str(notes))], "smile", 3.0, 4, api_name="/photo")
        message = str(refused.value)
        assert "'notes.jpg' could not be read as an image" in message and "/" not in message, message
    finally:
        app.close()


def test_alpha_slider_follows_the_chosen_direction(tmp_path):
    """Each tab's α slider starts at the first direction's suggested range and, on a direction change, takes
    the new direction's range and default (from its file's metadata; fallback [0, 5] without one)."""
    import torch

    from directions.files import Direction, load, save
    from stream.effect import Effect, EffectConfig
    from tiny_weights import build_tiny_nets
    from web.gradio_app import build_app
    from web.gradio_edit import alpha_slider_for

    G, E, _ = build_tiny_nets()
    metas = {"a_official": {"method": "official", "alpha_range": [0.0, 10.0], "alpha_default": 5.0},
             "b_video": {"method": "video", "alpha_range": [0.0, 2.0]},
             "c_bare": {}}
    gen = torch.Generator().manual_seed(5)
    dirs = [load(save(Direction(n, torch.randn(G.num_ws, G.w_dim, generator=gen), m), tmp_path / n))
            for n, m in metas.items()]
    effect = Effect(EffectConfig(device="cpu"), encoder=E, directions=dirs)
    assert alpha_slider_for(effect, "a_official") == {"minimum": 0.0, "maximum": 10.0, "step": 0.1, "value": 5.0}
    assert alpha_slider_for(effect, "b_video") == {"minimum": 0.0, "maximum": 2.0, "step": 0.02, "value": 1.0}
    assert alpha_slider_for(effect, "c_bare") == {"minimum": 0.0, "maximum": 5.0, "step": 0.05, "value": 2.5}
    assert alpha_slider_for(effect, None)["maximum"] == 5.0

    app = build_app(effect)
    sliders = [b for b in app.blocks.values() if type(b).__name__ == "Slider" and b.label == "α (strength)"]
    assert len(sliders) == 3 and all((s.minimum, s.maximum, s.value) == (0.0, 10.0, 5.0) for s in sliders)
    changes = [fn for fn in app.fns.values()
               if any(t[1] == "change" for t in fn.targets) and fn.outputs and fn.outputs[0] in sliders]
    assert len(changes) == 3 and {id(fn.outputs[0]) for fn in changes} == {id(s) for s in sliders}
    for fn in changes:
        assert type(fn.inputs[0]).__name__ == "Dropdown"
        update = fn.fn("b_video")
        assert (update.minimum, update.maximum, update.step, update.value) == (0.0, 2.0, 0.02, 1.0)
        assert fn.fn("c_bare").maximum == 5.0


def test_gradio_door_refuses_a_bad_limit_before_loading_anything(capsys, monkeypatch):
    """--max-driver-frames < 2 is one line and exit 2, before any network or direction is loaded."""
    import stream.effect
    from web.gradio import main

    def no_load(*args, **kwargs):
        raise AssertionError("the effect was loaded before the flags were checked")

    monkeypatch.setattr(stream.effect.Effect, "open", no_load)
    assert main(["--demo", "--max-driver-frames", "1"]) == 2
    assert "--max-driver-frames must be >= 2" in capsys.readouterr().err
